"""A thin async client of org.gnspawn1: calls, properties and the signals of jobs."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from gnspawn.driver import add_match
from gnspawn.names import BUS_NAME, JOB_INTERFACE, JOB_PATH_PREFIX, MANAGER_INTERFACE, MANAGER_PATH
from gnspawn.remote import Unreachable, call, connect_over_ssh

SYSTEM_BUS_DEFAULT = "unix:path=/run/dbus/system_bus_socket"


def no_system_bus(err: Exception) -> str:
    """Why the system bus cannot be reached: the address tried, and what to check."""
    why = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
    if address := os.environ.get("DBUS_SYSTEM_BUS_ADDRESS"):
        return (
            f"cannot connect to the system bus at {address} (DBUS_SYSTEM_BUS_ADDRESS): {why}; "
            "check that a bus listens there, or unset DBUS_SYSTEM_BUS_ADDRESS for the default "
            f"{SYSTEM_BUS_DEFAULT}"
        )
    return (
        f"cannot connect to the system bus at {SYSTEM_BUS_DEFAULT} (the default; "
        f"DBUS_SYSTEM_BUS_ADDRESS is not set): {why}; check that dbus runs "
        "('systemctl status dbus'), or set DBUS_SYSTEM_BUS_ADDRESS to the bus to use"
    )


class Client:
    """One connection to the system bus (local, or a remote one over ssh), talking to
    gnspawnd."""

    def __init__(self, bus: MessageBus, ssh: asyncio.subprocess.Process | None = None) -> None:
        self.bus = bus
        self.ssh = ssh
        self._signal_handlers: list[Callable[[Message], None]] = []
        bus.add_message_handler(self._dispatch)

    @classmethod
    async def connect(cls, host: str | None = None) -> Client:
        if host:
            bus, ssh = await connect_over_ssh(host)
            return cls(bus, ssh)
        try:
            bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
        except (OSError, ValueError) as err:
            raise Unreachable(no_system_bus(err)) from err
        return cls(bus)

    async def close(self) -> None:
        self.bus.disconnect()
        if self.ssh is not None:
            # ssh ends when its end of the socket closes; wait so that no zombie is left.
            try:
                await asyncio.wait_for(self.ssh.wait(), 5)
            except TimeoutError:
                self.ssh.kill()
                await self.ssh.wait()

    def on_job_new(self, handler: Callable[[int, str], object]) -> None:
        """Call handler(job id, machine) for each job queued from now on (after a
        subscribe)."""

        def on_signal(msg: Message) -> None:
            if msg.member == "JobNew" and msg.path == MANAGER_PATH:
                handler(int(msg.body[0]), str(msg.body[2]))

        self._signal_handlers.append(on_signal)

    def _dispatch(self, msg: Message) -> None:
        if msg.message_type is MessageType.SIGNAL:
            for handler in self._signal_handlers:
                handler(msg)

    async def call(
        self, path: str, interface: str, member: str, signature: str = "", *body: Any
    ) -> list[Any]:
        return await call(self.bus, path, interface, member, signature, *body)

    async def manager(self, member: str, signature: str = "", *body: Any) -> list[Any]:
        return await self.call(MANAGER_PATH, MANAGER_INTERFACE, member, signature, *body)

    async def properties(self, path: str, interface: str) -> dict[str, Any]:
        (props,) = await self.call(
            path, "org.freedesktop.DBus.Properties", "GetAll", "s", interface
        )
        return {key: value.value for key, value in props.items()}

    async def job_properties(self, path: str) -> dict[str, Any]:
        return await self.properties(path, JOB_INTERFACE)

    async def subscribe(self, handler: Callable[[Message], None]) -> None:
        """Receive every signal gnspawnd sends about jobs (before a call, so none is missed)."""
        self._signal_handlers.append(handler)
        rule = f"type='signal',sender='{BUS_NAME}',path_namespace='{MANAGER_PATH}'"
        reply = await self.bus.call(add_match(rule))
        assert reply is not None and reply.message_type is MessageType.METHOD_RETURN

    async def watch_jobs(self) -> JobWatcher:
        """A watcher of job signals, subscribed before any job is queued."""
        watcher = JobWatcher()
        await self.subscribe(watcher)
        return watcher

    async def until_gone(self) -> None:
        """Return when gnspawnd leaves the bus, or the bus (or the ssh under it) goes:
        then no job signal will come, and waiting for one would be waiting forever."""
        gone = asyncio.get_running_loop().create_future()

        def on_signal(msg: Message) -> None:
            ended = msg.member == "NameOwnerChanged" and msg.body[0] == BUS_NAME
            if ended and not msg.body[2] and not gone.done():
                gone.set_result(None)

        self._signal_handlers.append(on_signal)
        rule = (
            "type='signal',sender='org.freedesktop.DBus',member='NameOwnerChanged',"
            f"arg0='{BUS_NAME}'"
        )
        await self.bus.call(add_match(rule))
        disconnected = asyncio.ensure_future(
            self.bus.wait_for_disconnect()  # type: ignore[no-untyped-call]
        )
        try:
            await asyncio.wait([gone, disconnected], return_when=asyncio.FIRST_COMPLETED)
        finally:
            disconnected.cancel()


def _ignore(*args: object) -> None:
    pass


class JobWatcher:
    """Follows jobs by their signals until each has been removed."""

    def __init__(
        self,
        on_log: Callable[[int, int, str], None] = _ignore,
        on_change: Callable[[int, dict[str, Any]], None] = _ignore,
        on_finished: Callable[[int], None] = _ignore,
    ) -> None:
        self.on_log = on_log
        self.on_change = on_change
        self.on_finished = on_finished
        self.results: dict[int, str] = {}
        self._watched: set[int] = set()
        self._early: dict[int, str] = {}
        self._done = asyncio.Event()

    def watch(self, job_id: int) -> None:
        self._watched.add(job_id)
        if job_id in self._early:
            self.finished(job_id, self._early.pop(job_id))

    def finished(self, job_id: int, result: str) -> None:
        if job_id in self._watched:
            self.results[job_id] = result
            self.on_finished(job_id)
            if self._watched <= set(self.results):
                self._done.set()
        else:
            self._early[job_id] = result

    async def wait(self) -> dict[int, str]:
        if self._watched <= set(self.results):
            return self.results
        await self._done.wait()
        return self.results

    def __call__(self, msg: Message) -> None:
        path = msg.path or ""
        if msg.member == "JobRemoved" and path == MANAGER_PATH:
            self.finished(int(msg.body[0]), str(msg.body[3]))
            return
        if not path.startswith(JOB_PATH_PREFIX):
            return
        job_id = int(path[len(JOB_PATH_PREFIX) :])
        if job_id not in self._watched:
            return
        if msg.member == "LogMessage":
            self.on_log(job_id, int(msg.body[0]), str(msg.body[1]))
        elif msg.member == "PropertiesChanged":
            changed = {k: v.value if isinstance(v, Variant) else v for k, v in msg.body[1].items()}
            self.on_change(job_id, changed)
