"""Scaling: ListMachines, UpdateAll and ListJobs latency at 10, 100 and 1,000 machines
and jobs.

Machines are real datasets on zfs-fuse (Gentoo roots by their etc/gentoo-release, which
is all UpdateAll asks of a machine); jobs are finished jobs in the database, read by a
freshly started daemon. ListMachines alternates with its zfs calls run by hand, and
a ratio is the median of each round's: zfs-fuse's listing of 1,000 datasets can turn
several times slower in the middle of a run (1.5 s to 6 s), and a round's pair sees
the same speed. UpdateAll is called with the pretend flag, each time after a ListMachines
and the zfs calls by hand that it is compared with; it queues a job per machine, and
those are canceled, and the daemon left idle, before the next round.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path
from typing import NamedTuple

from common import manager_call
from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus
from footprint import add_finished_jobs

from gnspawn.errors import NoSuchJob, NotCancellable
from gnspawn.names import Flags
from testbed import Testbed, zfs

SIZES = (10, 100, 1000)
CALLS = 20
UPDATE_ALL_CALLS = 3
"""UpdateAll rounds per size: each call queues a job per machine."""
CANCEL_IN_FLIGHT = 50
IDLE_CHECKS = 5
"""Checks 0.1 s apart that find the daemon without a child process: it is idle."""
FINISHED = (NoSuchJob.dbus_name, NotCancellable.dbus_name)
"""CancelJob errors of a job that has ended already (it ran, or failed to start)."""


class Figures(NamedTuple):
    """Median latencies at one size, in seconds, median ratios of a round's pair, and
    what the calls returned."""

    machines: float
    by_hand: float
    ratio: float
    update_all: float
    queued: int
    machines_before: float
    """ListMachines in the UpdateAll rounds, each just before an UpdateAll."""
    vs_machines: float
    by_hand_before: float
    vs_by_hand: float
    jobs: float
    rows: int


def ratio(ours: list[float], baseline: list[float]) -> float:
    """The median of the rounds' ratios."""
    return statistics.median(a / b for a, b in zip(ours, baseline, strict=True))


async def timed_call(bus: MessageBus, message: Message) -> tuple[float, Message]:
    started = time.perf_counter()
    reply = await bus.call(message)
    elapsed = time.perf_counter() - started
    assert reply is not None and reply.message_type is MessageType.METHOD_RETURN, reply
    return elapsed, reply


async def list_machines(bus: MessageBus, size: int) -> float:
    elapsed, reply = await timed_call(bus, manager_call("ListMachines"))
    assert len(reply.body[0]) == size, f"{len(reply.body[0])} machines listed, {size} made"
    return elapsed


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


def manager_property(name: str) -> Message:
    return Message(
        destination="org.gnspawn1",
        path="/org/gnspawn1",
        interface="org.freedesktop.DBus.Properties",
        member="Get",
        signature="ss",
        body=["org.gnspawn1.Manager", name],
    )


def has_children(pid: int) -> bool:
    """Whether the process has a child process (a zfs call, an emerge) right now."""
    return any(tasks.read_text().strip() for tasks in Path(f"/proc/{pid}/task").glob("*/children"))


async def cancel(bus: MessageBus, jobs: list[int]) -> None:
    """Cancel the jobs, CANCEL_IN_FLIGHT calls at a time; one that ended already is fine."""
    for start in range(0, len(jobs), CANCEL_IN_FLIGHT):
        chunk = jobs[start : start + CANCEL_IN_FLIGHT]
        replies = await asyncio.gather(
            *(bus.call(manager_call("CancelJob", "u", job)) for job in chunk)
        )
        for job, reply in zip(chunk, replies, strict=True):
            assert reply is not None, job
            if reply.message_type is MessageType.ERROR:
                assert reply.error_name in FINISHED, (job, reply.error_name, reply.body)


async def idle(bus: MessageBus, pid: int) -> None:
    """Wait until no job waits or runs, and the daemon has no child process (the look
    at the machines that a finished job starts) for IDLE_CHECKS checks in a row."""
    quiet = 0
    while quiet < IDLE_CHECKS:
        await asyncio.sleep(0.1)
        counts = []
        for name in ("QueuedJobs", "RunningJobs"):
            _, reply = await timed_call(bus, manager_property(name))
            counts.append(reply.body[0].value)
        quiet = quiet + 1 if not any(counts) and not has_children(pid) else 0


async def update_all(bus: MessageBus, pid: int, size: int) -> tuple[float, int]:
    """One UpdateAll (pretend), and how many jobs it queued: one per machine, or the
    bench fails. Its jobs are canceled and the daemon is idle again when it returns."""
    elapsed, reply = await timed_call(bus, manager_call("UpdateAll", "t", int(Flags.PRETEND)))
    jobs = sorted({job for _, job, _ in reply.body[0] if job})
    assert len(jobs) == size, f"UpdateAll queued {len(jobs)} jobs for {size} machines"
    await cancel(bus, jobs)
    await idle(bus, pid)
    return elapsed, len(jobs)


async def measure(bed: Testbed, size: int) -> Figures:
    """ListMachines alternating with its zfs calls by hand, ListJobs, then UpdateAll
    rounds, each after a ListMachines and the zfs calls by hand."""
    assert bed.daemon is not None
    pid = bed.daemon.pid
    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    try:
        await list_machines(bus, size)  # warm up, both
        zfs_listing(bed)
        machines, by_hand = [], []
        for _ in range(CALLS):
            machines.append(await list_machines(bus, size))
            by_hand.append(zfs_listing(bed))
        await timed_call(bus, manager_call("ListJobs"))
        jobs = []
        for _ in range(CALLS):
            elapsed, reply = await timed_call(bus, manager_call("ListJobs"))
            jobs.append(elapsed)
        rows = len(reply.body[0])
        # UpdateAll last: its jobs, canceled, are history that ListJobs above did not see.
        await idle(bus, pid)
        before, hand_before, updates = [], [], []
        for _ in range(UPDATE_ALL_CALLS):
            before.append(await list_machines(bus, size))
            hand_before.append(zfs_listing(bed))
            elapsed, queued = await update_all(bus, pid, size)
            updates.append(elapsed)
    finally:
        bus.disconnect()
    median = statistics.median
    return Figures(
        machines=median(machines),
        by_hand=median(by_hand),
        ratio=ratio(machines, by_hand),
        update_all=median(updates),
        queued=queued,
        machines_before=median(before),
        vs_machines=ratio(updates, before),
        by_hand_before=median(hand_before),
        vs_by_hand=ratio(updates, hand_before),
        jobs=median(jobs),
        rows=rows,
    )


def scaling(bed: Testbed) -> list[str]:
    """One row per size: ListMachines against its zfs calls by hand, UpdateAll against
    both, and ListJobs, from a daemon started fresh."""
    rows = [
        "| machines or jobs | ListMachines | its zfs calls by hand | ratio "
        "| UpdateAll (jobs queued) | vs ListMachines before it | vs zfs calls by hand "
        "| ListJobs (rows) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    bed.stop_daemon()
    bed.reset()
    # History beyond every job made here: synthetic ones and UpdateAll's canceled ones.
    history = 10 * max(SIZES) + UPDATE_ALL_CALLS * sum(SIZES)
    bed.write_config(jobs={"history": history, "max_parallel": 2, "stop_timeout": 5})
    bed.state.mkdir(parents=True, exist_ok=True)
    jobs = 0
    for size in SIZES:
        add_machines(bed, size)
        bed.start_daemon()  # creates the database
        bed.stop_daemon()
        add_finished_jobs(bed, size - jobs)
        jobs = size
        bed.start_daemon()
        f = asyncio.run(measure(bed, size))
        rows.append(
            f"| {size:,} | {f.machines * 1000:.1f} ms | {f.by_hand * 1000:.1f} ms "
            f"| {f.ratio:.2f}x | {f.update_all * 1000:.1f} ms ({f.queued:,}) "
            f"| {f.vs_machines:.2f}x ({f.machines_before * 1000:.1f} ms) "
            f"| {f.vs_by_hand:.2f}x ({f.by_hand_before * 1000:.1f} ms) "
            f"| {f.jobs * 1000:.2f} ms ({f.rows}) |"
        )
        bed.stop_daemon()
    return rows
