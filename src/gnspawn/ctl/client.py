"""A thin async client of org.gnspawn1: calls, properties and the signals of jobs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from dbus_fast import BusType, DBusError, Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from gnspawn.driver import add_match
from gnspawn.errors import BY_DBUS_NAME, GnspawnError
from gnspawn.names import BUS_NAME, JOB_INTERFACE, JOB_PATH_PREFIX, MANAGER_INTERFACE, MANAGER_PATH


class Unreachable(Exception):
    """gnspawnd cannot be reached."""


def domain_error(err: DBusError) -> Exception:
    """The D-Bus error as the exception the daemon raised, or Unreachable."""
    if err.type in BY_DBUS_NAME:
        return BY_DBUS_NAME[err.type](err.text)
    if err.type in (
        "org.freedesktop.DBus.Error.ServiceUnknown",
        "org.freedesktop.DBus.Error.NameHasNoOwner",
    ):
        return Unreachable("gnspawnd is not running (nobody owns org.gnspawn1 on the system bus)")
    if err.type == "org.freedesktop.DBus.Error.UnknownObject":
        return Unreachable(f"gnspawnd does not know that object: {err.text}")
    return GnspawnError(f"{err.type}: {err.text}")


class Client:
    """One connection to the system bus, talking to gnspawnd."""

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus
        self._signal_handlers: list[Callable[[Message], None]] = []
        bus.add_message_handler(self._dispatch)

    @classmethod
    async def connect(cls) -> Client:
        try:
            bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
        except (OSError, ValueError) as err:
            raise Unreachable(f"cannot connect to the system bus: {err}") from err
        return cls(bus)

    def close(self) -> None:
        self.bus.disconnect()

    def _dispatch(self, msg: Message) -> None:
        if msg.message_type is MessageType.SIGNAL:
            for handler in self._signal_handlers:
                handler(msg)

    async def call(
        self, path: str, interface: str, member: str, signature: str = "", *body: Any
    ) -> list[Any]:
        reply = await self.bus.call(
            Message(
                destination=BUS_NAME,
                path=path,
                interface=interface,
                member=member,
                signature=signature,
                body=list(body),
            )
        )
        assert reply is not None
        if reply.message_type is MessageType.ERROR:
            raise domain_error(
                DBusError(reply.error_name or "", str(reply.body[0]) if reply.body else "")
            )
        return list(reply.body)

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


class JobWatcher:
    """Follows jobs by their signals until each has been removed."""

    def __init__(
        self,
        on_log: Callable[[int, int, str], None],
        on_change: Callable[[int, dict[str, Any]], None],
    ) -> None:
        self.on_log = on_log
        self.on_change = on_change
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
