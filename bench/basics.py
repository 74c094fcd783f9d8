"""Snapshot cost, bus round trips and the overhead of one job, against their baselines."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable

from common import alternate, emerge_argv, emerge_env, manager_call, row, update_over_the_bus
from dbus_fast import BusType, Message
from dbus_fast.aio import MessageBus
from load import job_property

from gnspawn.driver import bus_driver
from gnspawn.zfs import Zfs
from testbed import Testbed, zfs


def snapshot_cost(bed: Testbed) -> str:
    """gnspawn's snapshot + rollback (its zfs layer) against the raw commands."""
    ds = f"{bed.dataset}/web"
    layer = Zfs()
    counter = iter(range(1_000_000))

    async def both(n: int) -> None:
        await layer.snapshot(ds, f"gnspawn-{n}-pre", job=n)
        await layer.rollback(f"{ds}@gnspawn-{n}-pre")

    def ours() -> None:
        asyncio.run(both(next(counter)))

    def raw() -> None:
        n = next(counter)
        zfs("snapshot", "-o", f"org.gnspawn:job={n}", f"{ds}@raw-{n}")
        zfs("rollback", f"{ds}@raw-{n}")

    a, b = alternate(ours, raw, rounds=15)
    return row("snapshot + rollback", a, b, "≤ 1.10x")


async def latency(what: str, calls: int, in_flight: int) -> tuple[list[float], list[float]]:
    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    ours: Callable[[], Message] = lambda: manager_call("ListJobs")  # noqa: E731
    if what != "ListJobs":
        reply = await bus.call(manager_call("ListJobs"))
        assert reply is not None and reply.body[0]
        ours = job_property(int(reply.body[0][0][0]))

    async def batch(message: Callable[[], Message]) -> float:
        started = time.perf_counter()
        for _ in range(calls // in_flight):
            await asyncio.gather(*(bus.call(message()) for _ in range(in_flight)))
        return (time.perf_counter() - started) / calls

    a, b = [], []
    for _ in range(5):
        a.append(await batch(ours))
        b.append(await batch(lambda: bus_driver("ListNames")))
    bus.disconnect()
    return a, b


def bus_latency() -> list[str]:
    rows = []
    for what in ("ListJobs", "Job property"):
        for in_flight in (1, 50):
            a, b = asyncio.run(latency(what, 2000, in_flight))
            target = "≤ 2x" if what == "ListJobs" else ""
            rows.append(row(f"{what}, {in_flight} in flight (per call)", a, b, target))
    return rows


def job_overhead(bed: Testbed) -> str:
    """One update through gnspawnd (bus call, snapshot, emerge, journal, signals) against
    the same emerge by hand on the same root; the root goes back to its start in between."""
    root = bed.machines / "web"
    ds = f"{bed.dataset}/web"
    zfs("snapshot", f"{ds}@bench-start")
    argv = emerge_argv(root, "--usepkg=y", "--buildpkg=y")

    def reset() -> None:
        zfs("rollback", "-r", f"{ds}@bench-start")

    def ours() -> None:
        reset()
        asyncio.run(update_over_the_bus("web"))

    def by_hand() -> None:
        reset()
        subprocess.run(
            argv, env=emerge_env(bed), stdin=subprocess.DEVNULL, capture_output=True, check=True
        )

    by_hand()  # warm up: the binary package both then install
    a, b = alternate(ours, by_hand, rounds=5)
    return row("update of one container (binary package)", a, b, "≤ 1.05x")
