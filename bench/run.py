"""`make bench`: run the benchmarks on the real test bed and write bench/results/latest.md.

Each figure is a ratio against a baseline measured in the same run, alternating,
over several rounds (median and range): raw `zfs snapshot`/`zfs rollback`, the bus's
own round trip (org.freedesktop.DBus.ListNames), and the same emerge run by hand.
"""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import HEADER, REPO, alternate, row
from dbus_fast import BusType, Message
from dbus_fast.aio import MessageBus

from gnspawn.driver import add_match, bus_driver
from gnspawn.zfs import Zfs
from testbed import EMERGE, Testbed, emerge_environment, zfs

RESULTS = REPO / "bench" / "results"


def snapshot_cost(bed: Testbed) -> str:
    """gnspawn's snapshot + rollback (its zfs layer) against the raw commands."""
    ds = f"{bed.dataset}/web"
    layer = Zfs()
    counter = iter(range(1_000_000))

    def ours() -> None:
        n = next(counter)
        asyncio.run(layer.snapshot(ds, f"gnspawn-{n}-pre", job=n))
        asyncio.run(layer.rollback(f"{ds}@gnspawn-{n}-pre"))

    def raw() -> None:
        n = next(counter)
        zfs("snapshot", "-o", f"org.gnspawn:job={n}", f"{ds}@raw-{n}")
        zfs("rollback", f"{ds}@raw-{n}")

    a, b = alternate(ours, raw, rounds=15)
    return row("snapshot + rollback", a, b, "≤ 1.10x")


async def latency(calls: int, in_flight: int) -> tuple[list[float], list[float]]:
    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()

    def message(ours: bool) -> Message:
        if ours:
            return Message(
                destination="org.gnspawn1",
                path="/org/gnspawn1",
                interface="org.gnspawn1.Manager",
                member="ListJobs",
            )
        return bus_driver("ListNames")

    async def batch(ours: bool) -> float:
        started = time.perf_counter()
        for _ in range(calls // in_flight):
            await asyncio.gather(*(bus.call(message(ours)) for _ in range(in_flight)))
        return (time.perf_counter() - started) / calls

    a, b = [], []
    for _ in range(5):
        a.append(await batch(True))
        b.append(await batch(False))
    bus.disconnect()
    return a, b


def bus_latency() -> list[str]:
    rows = []
    for in_flight in (1, 50):
        a, b = asyncio.run(latency(2000, in_flight))
        rows.append(row(f"ListJobs, {in_flight} in flight (per call)", a, b, "≤ 2x"))
    return rows


async def update_over_the_bus(name: str) -> None:
    """Update through the bus, as busctl would, until JobRemoved says it is done."""
    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    removed: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    job = -1

    def on_signal(msg: Message) -> None:
        if msg.member == "JobRemoved" and msg.body[0] == job and not removed.done():
            removed.set_result(msg.body[3])

    bus.add_message_handler(on_signal)
    await bus.call(add_match("type='signal',sender='org.gnspawn1',member='JobRemoved'"))
    reply = await bus.call(
        Message(
            destination="org.gnspawn1",
            path="/org/gnspawn1",
            interface="org.gnspawn1.Manager",
            member="Update",
            signature="st",
            body=[name, 0],
        )
    )
    assert reply is not None
    job = reply.body[0]
    assert await removed == "done"
    bus.disconnect()


def job_overhead(bed: Testbed) -> str:
    """One update through gnspawnd (bus call, snapshot, emerge, journal, signals) against
    the same emerge by hand on the same root; the root goes back to its start in between."""
    root = bed.machines / "web"
    ds = f"{bed.dataset}/web"
    zfs("snapshot", f"{ds}@bench-start")
    env = {**os.environ, **emerge_environment(bed.repo), "NOCOLOR": "true"}
    argv = [
        str(EMERGE),
        f"--root={root}",
        f"--sysroot={root}",
        f"--config-root={root}",
        "--color=n",
        "--usepkg=y",
        "--buildpkg=y",
        "-1uv",
        "@system",
        "@world",
        "@profile",
    ]

    def reset() -> None:
        zfs("rollback", "-r", f"{ds}@bench-start")

    def ours() -> None:
        reset()
        asyncio.run(update_over_the_bus("web"))

    def by_hand() -> None:
        reset()
        subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, check=True)

    by_hand()  # warm up: the binary package both then install
    a, b = alternate(ours, by_hand, rounds=5)
    return row("update of one container (binary package)", a, b, "≤ 1.05x")


def footprint(bed: Testbed) -> list[str]:
    assert bed.daemon is not None
    status = Path(f"/proc/{bed.daemon.pid}/status").read_text()
    rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    ready = []
    for _ in range(5):
        bed.stop_daemon()
        started = time.perf_counter()
        bed.start_daemon()
        ready.append(time.perf_counter() - started)
    return [
        f"| RSS idle | {rss / 1024:.1f} MB | | | | ≤ 40 MB |",
        f"| start to READY=1 | {statistics.median(ready) * 1000:.0f} ms | | | | ≤ 300 ms |",
    ]


def main() -> int:
    if os.geteuid() != 0:
        print("make bench needs root (zfs-fuse, mounts, journald)", file=sys.stderr)
        return 1
    sandbox = Path(tempfile.mkdtemp(prefix="gnspawn-bench-", dir="/var/tmp"))
    sandbox.chmod(0o755)
    bed = Testbed(sandbox)
    try:
        bed.seed("web")
        bed.start_daemon()
        rows = [snapshot_cost(bed), *bus_latency(), job_overhead(bed), *footprint(bed)]
    finally:
        bed.stop()
        shutil.rmtree(sandbox, ignore_errors=True)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    text = "\n".join([f"Measured {time.strftime('%Y-%m-%d')} on {machine}.", "", HEADER, *rows, ""])
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
