"""The host's service manager and machine registry (systemd, machined) over D-Bus.

Both are optional: on a host without them (or in a test bed) every call says so
instead of failing the job.
"""

from __future__ import annotations

import logging
from typing import Any

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

log = logging.getLogger(__name__)

SYSTEMD = (
    "org.freedesktop.systemd1",
    "/org/freedesktop/systemd1",
    "org.freedesktop.systemd1.Manager",
)
MACHINED = (
    "org.freedesktop.machine1",
    "/org/freedesktop/machine1",
    "org.freedesktop.machine1.Manager",
)
_ABSENT = {
    "org.freedesktop.DBus.Error.ServiceUnknown",
    "org.freedesktop.DBus.Error.NameHasNoOwner",
    "org.freedesktop.DBus.Error.NoServer",
}


class Unavailable(Exception):
    """The service is not on the bus."""


class ServiceError(Exception):
    """The service answered with an error."""

    def __init__(self, name: str, text: str) -> None:
        super().__init__(f"{name}: {text}")
        self.name = name


class HostServices:
    """Calls to systemd and machined, through the daemon's own bus connection."""

    def __init__(self, bus: MessageBus | None) -> None:
        self.bus = bus

    async def _call(
        self, target: tuple[str, str, str], member: str, signature: str = "", *body: Any
    ) -> list[Any]:
        if self.bus is None:
            raise Unavailable(f"{target[0]} is not reachable")
        destination, path, interface = target
        reply = await self.bus.call(
            Message(
                destination=destination,
                path=path,
                interface=interface,
                member=member,
                signature=signature,
                body=list(body),
            )
        )
        assert reply is not None
        if reply.message_type is MessageType.ERROR:
            text = str(reply.body[0]) if reply.body else ""
            if reply.error_name in _ABSENT:
                raise Unavailable(f"{destination} is not on the bus")
            raise ServiceError(reply.error_name or "", text)
        return list(reply.body)

    async def machine_running(self, name: str) -> bool:
        """Whether machined knows a running machine of this name; False without machined."""
        try:
            await self._call(MACHINED, "GetMachine", "s", name)
        except Unavailable:
            return False
        except ServiceError as err:
            if err.name == "org.freedesktop.machine1.NoSuchMachine":
                return False
            raise
        return True

    async def enable_and_start(self, unit: str) -> None:
        """`systemctl enable --now UNIT`: raises Unavailable when systemd is not on the bus."""
        await self._call(SYSTEMD, "EnableUnitFiles", "asbb", [unit], False, False)
        await self._call(SYSTEMD, "Reload")
        await self._call(SYSTEMD, "StartUnit", "ss", unit, "replace")
