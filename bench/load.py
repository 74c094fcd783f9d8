"""Bus latency: ListJobs and a Job property read against the bus's own ListNames,
idle and while two jobs stream emerge output at full speed (p50 and p99 per call)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from common import manager_call, percentile
from dbus_fast import BusType, Message
from dbus_fast.aio import MessageBus
from logs import Chatty

from gnspawn.driver import bus_driver
from gnspawn.names import job_path
from testbed import Testbed

CALLS = 1000


def job_property(job: int) -> Callable[[], Message]:
    return lambda: Message(
        destination="org.gnspawn1",
        path=job_path(job),
        interface="org.freedesktop.DBus.Properties",
        member="Get",
        signature="ss",
        body=["org.gnspawn1.Job", "State"],
    )


async def per_call(bus: MessageBus, message: Callable[[], Message], in_flight: int) -> list[float]:
    """Each call's latency, from send to reply, with `in_flight` calls outstanding."""

    async def one() -> float:
        started = time.perf_counter()
        reply = await bus.call(message())
        assert reply is not None and reply.message_type.name == "METHOD_RETURN", reply
        return time.perf_counter() - started

    result: list[float] = []
    for _ in range(CALLS // in_flight):
        result += await asyncio.gather(*(one() for _ in range(in_flight)))
    return result


async def measure(job: int, label: str) -> list[str]:
    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    rows = []
    try:
        for in_flight in (1, 50):
            base = await per_call(bus, lambda: bus_driver("ListNames"), in_flight)
            b50, b99 = percentile(base, 50) * 1000, percentile(base, 99) * 1000
            for what, message in (
                ("ListJobs", lambda: manager_call("ListJobs")),
                ("Job property", job_property(job)),
            ):
                ours = await per_call(bus, message, in_flight)
                o50, o99 = percentile(ours, 50) * 1000, percentile(ours, 99) * 1000
                rows.append(
                    f"| {what}, {in_flight} in flight, {label} (p50 / p99) "
                    f"| {o50:.2f} / {o99:.2f} ms | ListNames {b50:.2f} / {b99:.2f} ms "
                    f"| {o50 / b50:.2f}x | | {'≤ 2x' if what == 'ListJobs' else ''}"
                    f"{', p99 ≤ 20 ms' if label != 'idle' else ''} |"
                )
    finally:
        bus.disconnect()
    return rows


async def under_load(names: list[str]) -> tuple[list[str], bool]:
    """Start an update of each machine, measure while both stream, then wait for them."""
    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    streaming = asyncio.Event()
    lines = 0

    def on_signal(msg: Message) -> None:
        nonlocal lines
        if msg.member == "LogMessage":
            lines += 1
            if lines > 2000:
                streaming.set()

    bus.add_message_handler(on_signal)
    await bus.call(
        bus_driver("AddMatch", "s", "type='signal',sender='org.gnspawn1',member='LogMessage'")
    )
    jobs = []
    for name in names:
        reply = await bus.call(manager_call("Update", "st", name, 0))
        assert reply is not None and reply.body, reply
        jobs.append(reply.body[0])
    await asyncio.wait_for(streaming.wait(), 120)
    # The bench's own listener stops here; the jobs' lines still go to the bus.
    bus.remove_message_handler(on_signal)
    rows = await measure(jobs[0], "2 jobs streaming")
    state = await bus.call(job_property(jobs[-1])())
    assert state is not None
    still_running = state.body[0].value == "running"
    while True:
        reply = await bus.call(manager_call("ListJobs"))
        assert reply is not None
        if not any(row[3] != "finished" for row in reply.body[0] if row[0] in jobs):
            break
        await asyncio.sleep(0.5)
    bus.disconnect()
    return rows, still_running


def bus_latency_under_load(bed: Testbed) -> list[str]:
    chatty = Chatty(bed, ["chatty1", "chatty2"])
    chatty.seed()
    chatty.reset()
    # A finished job to read properties of while idle.
    idle_job = asyncio.run(_any_job())
    rows = asyncio.run(measure(idle_job, "idle"))
    loaded, still_running = asyncio.run(under_load(chatty.names))
    assert still_running, "the jobs ended before the measurement did: make them print more"
    chatty.reset()
    return [*rows, *loaded]


async def _any_job() -> int:
    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    reply = await bus.call(manager_call("ListJobs"))
    bus.disconnect()
    assert reply is not None and reply.body[0], "no job to read"
    return int(reply.body[0][0][0])
