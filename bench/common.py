"""What every benchmark shares: the test bed, timing rounds, and the table they print."""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from dbus_fast import BusType, Message  # noqa: E402
from dbus_fast.aio import MessageBus  # noqa: E402

from gnspawn.driver import add_match  # noqa: E402
from testbed import EMERGE, Testbed, emerge_environment  # noqa: E402

ROUNDS = 7
UPDATE_ARGS = ("-1uv", "@system", "@world", "@profile")
"""What the seed's loop, and gnspawn's default [portage] update_args, ask emerge for."""


def timed(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def alternate(
    ours: Callable[[], object], baseline: Callable[[], object], rounds: int = ROUNDS
) -> tuple[list[float], list[float]]:
    """Time both, alternating, so that drift in the machine hits both alike."""
    a, b = [], []
    for _ in range(rounds):
        a.append(timed(ours))
        b.append(timed(baseline))
    return a, b


def row(what: str, ours: list[float], baseline: list[float], target: str) -> str:
    """A markdown table row: medians, spread, and the ratio that matters."""
    mo, mb = statistics.median(ours), statistics.median(baseline)
    spread = f"{min(ours) / mb:.2f} to {max(ours) / mb:.2f}" if mb else "-"
    return f"| {what} | {duration(mo)} | {duration(mb)} | {mo / mb:.2f}x | {spread} | {target} |"


def value_row(what: str, value: str, target: str = "", baseline: str = "") -> str:
    """A row for a figure that has no ratio (a size, a rate, a latency percentile)."""
    return f"| {what} | {value} | {baseline} | | | {target} |"


def duration(seconds: float) -> str:
    if seconds >= 10:
        return f"{seconds:.1f} s"
    return f"{seconds * 1000:.2f} ms"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


HEADER = (
    "| measure | gnspawn (median) | baseline (median) | ratio | ratio range | target |\n"
    "|---|---|---|---|---|---|"
)


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return kb / 1024


@contextlib.contextmanager
def peak_rss(pid: int) -> Iterator[list[float]]:
    """Sample a process's RSS every 20 ms while the body runs; yields [peak MB]."""
    peak = [rss_mb(pid)]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            with contextlib.suppress(OSError, StopIteration):
                peak[0] = max(peak[0], rss_mb(pid))

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        done.set()
        thread.join()


MANAGER = {
    "destination": "org.gnspawn1",
    "path": "/org/gnspawn1",
    "interface": "org.gnspawn1.Manager",
}


def manager_call(member: str, signature: str = "", *body: object) -> Message:
    return Message(**MANAGER, member=member, signature=signature, body=list(body))


def emerge_argv(root: Path, *options: str) -> list[str]:
    """emerge into `root` as gnspawn runs it, with `options` instead of its binpkg ones."""
    return [
        str(EMERGE),
        f"--root={root}",
        f"--sysroot={root}",
        f"--config-root={root}",
        "--color=n",
        *options,
        *UPDATE_ARGS,
    ]


def emerge_env(bed: Testbed) -> dict[str, str]:
    return {**os.environ, **emerge_environment(bed.repo), "NOCOLOR": "true"}


def emerge(bed: Testbed, root: Path, *options: str, output: Path | None = None) -> None:
    """emerge by hand, its output to a file (by default one its failure is told from),
    as a loop in a shell script would."""
    output = output or bed.dir / f"emerge-{root.name}.log"
    with output.open("wb") as log:
        result = subprocess.run(
            emerge_argv(root, *options),
            env=emerge_env(bed),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if result.returncode != 0:
        tail = output.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"emerge into {root} failed:\n{tail}")


async def update_over_the_bus(name: str, *, count_log: bool = False) -> tuple[int, int]:
    """Update through the bus, as busctl would, until JobRemoved says it is done.

    Returns the job id and, with count_log, how many LogMessage signals arrived."""
    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    removed: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    job = -1
    lines = 0

    def on_signal(msg: Message) -> None:
        nonlocal lines
        if msg.member == "LogMessage":
            lines += 1
        elif msg.member == "JobRemoved" and msg.body[0] == job and not removed.done():
            removed.set_result(msg.body[3])

    bus.add_message_handler(on_signal)
    await bus.call(add_match("type='signal',sender='org.gnspawn1',member='JobRemoved'"))
    if count_log:
        await bus.call(add_match("type='signal',sender='org.gnspawn1',member='LogMessage'"))
    reply = await bus.call(manager_call("Update", "st", name, 0))
    assert reply is not None and reply.body, reply
    job = reply.body[0]
    result = await removed
    assert result == "done", f"job {job}: {result}"
    bus.disconnect()
    return job, lines
