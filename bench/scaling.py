"""Scaling: ListMachines and ListJobs latency at 10, 100 and 1,000 machines and jobs.

Machines are real datasets on zfs-fuse (Gentoo roots by their etc/gentoo-release);
jobs are finished jobs in the database, read by a freshly started daemon.
"""

from __future__ import annotations

import asyncio
import statistics
import time

from common import manager_call
from dbus_fast import BusType
from dbus_fast.aio import MessageBus
from footprint import add_finished_jobs

from testbed import Testbed, zfs

SIZES = (10, 100, 1000)
CALLS = 20


async def call_times(member: str, calls: int) -> tuple[float, int]:
    """Median latency of `member` (after one call to warm up) and how many rows it gave."""
    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    reply = await bus.call(manager_call(member))
    assert reply is not None and reply.message_type.name == "METHOD_RETURN", reply
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        reply = await bus.call(manager_call(member))
        times.append(time.perf_counter() - started)
    bus.disconnect()
    assert reply is not None
    return statistics.median(times), len(reply.body[0])


def add_machines(bed: Testbed, upto: int) -> None:
    """Empty Gentoo roots scale0, scale1, ... until there are `upto` of them."""
    existing = len(list(bed.machines.glob("scale*")))
    for n in range(existing, upto):
        root = bed.machines / f"scale{n}"
        zfs("create", "-o", f"mountpoint={root}", f"{bed.dataset}/scale{n}")
        (root / "etc").mkdir()
        (root / "etc" / "gentoo-release").write_text("Gentoo Base System release 2.17\n")


def zfs_listing(bed: Testbed) -> float:
    """The zfs calls a ListMachines makes, run by hand: the floor under its cost."""
    props = "type,mountpoint,mounted,org.gnspawn:build,org.gnspawn:profile"
    started = time.perf_counter()
    zfs("list", "-H", "-o", "name", bed.dataset)
    zfs("get", "-H", "-p", "-r", "-d", "1", "-o", "name,property,value", props, bed.dataset)
    zfs("list", "-H", "-t", "snapshot", "-o", "name", "-r", bed.dataset)
    return time.perf_counter() - started


def scaling(bed: Testbed) -> list[str]:
    """One row per size: ListMachines (against its zfs calls by hand) and ListJobs, from
    a daemon started fresh."""
    rows = [
        "| machines or jobs | ListMachines | its zfs calls by hand | ratio | ListJobs (rows) |",
        "|---|---|---|---|---|",
    ]
    bed.stop_daemon()
    bed.reset()
    bed.write_config(jobs={"history": 10 * max(SIZES), "max_parallel": 2, "stop_timeout": 5})
    bed.state.mkdir(parents=True, exist_ok=True)
    jobs = 0
    for size in SIZES:
        add_machines(bed, size)
        bed.start_daemon()  # creates the database
        bed.stop_daemon()
        add_finished_jobs(bed, size - jobs)
        jobs = size
        bed.start_daemon()
        machines, found = asyncio.run(call_times("ListMachines", CALLS))
        assert found == size, f"{found} machines listed, {size} made"
        listed, rows_listed = asyncio.run(call_times("ListJobs", CALLS))
        by_hand = statistics.median(zfs_listing(bed) for _ in range(5))
        rows.append(
            f"| {size:,} | {machines * 1000:.1f} ms | {by_hand * 1000:.1f} ms "
            f"| {machines / by_hand:.2f}x | {listed * 1000:.2f} ms ({rows_listed}) |"
        )
        bed.stop_daemon()
    return rows
