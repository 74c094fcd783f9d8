"""Footprint: RSS idle and with 10,000 finished jobs in the history; start to READY=1."""

from __future__ import annotations

import asyncio
import sqlite3
import statistics
import time

from common import manager_call, rss_mb, value_row
from dbus_fast import BusType
from dbus_fast.aio import MessageBus

from testbed import Testbed

HISTORY = 10_000


def add_finished_jobs(bed: Testbed, count: int) -> None:
    """Finished updates of the machine web, written as gnspawnd writes them."""
    db = sqlite3.connect(bed.state / "jobs.sqlite")
    now = time.time_ns() // 1000
    with db:
        db.executemany(
            "INSERT INTO jobs (type, machine, flags, initiator_uid, created_usec, argument, "
            "state, result, phase, progress, packages_done, packages_total, current_package, "
            "snapshot, rolled_back, error, started_usec, finished_usec) VALUES "
            "('update', 'web', 0, 0, ?, '', 'finished', 'done', 'cleanup', 100, 1, 1, '', "
            "?, 0, '', ?, ?)",
            [
                (now, f"{bed.dataset}/web@gnspawn-{n}-pre", now + 1000, now + 2_000_000)
                for n in range(count)
            ],
        )
    db.close()


async def list_jobs() -> int:
    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    reply = await bus.call(manager_call("ListJobs"))
    bus.disconnect()
    assert reply is not None
    return len(reply.body[0])


def ready_time(bed: Testbed) -> float:
    times = []
    for _ in range(5):
        bed.stop_daemon()
        started = time.perf_counter()
        bed.start_daemon()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def footprint(bed: Testbed) -> list[str]:
    """Idle RSS of a fresh daemon, READY time, then both again with 10,000 jobs kept."""
    ready = ready_time(bed)
    assert bed.daemon is not None
    asyncio.run(list_jobs())
    idle = rss_mb(bed.daemon.pid)
    bed.stop_daemon()
    bed.write_config(jobs={"history": 2 * HISTORY, "max_parallel": 2, "stop_timeout": 5})
    add_finished_jobs(bed, HISTORY)
    ready_history = ready_time(bed)
    assert bed.daemon is not None
    asyncio.run(list_jobs())
    with_history = rss_mb(bed.daemon.pid)
    return [
        value_row("RSS idle", f"{idle:.1f} MB", "≤ 40 MB"),
        value_row(f"RSS with {HISTORY:,} finished jobs", f"{with_history:.1f} MB", "≤ 45 MB"),
        value_row("start to READY=1", f"{ready * 1000:.0f} ms", "≤ 300 ms"),
        value_row(
            f"start to READY=1 with {HISTORY:,} finished jobs",
            f"{ready_history * 1000:.0f} ms",
            "≤ 300 ms",
        ),
    ]
