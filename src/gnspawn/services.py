"""The host's service manager and machine registry (systemd, machined) over D-Bus.

Both are optional: on a host without them (or in a test bed) every call says so
instead of failing the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from gnspawn.driver import BUS, add_match, reply_to

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
    """The service answered with an error, or a unit job it ran did not succeed."""

    def __init__(self, message: str, *, name: str = "") -> None:
        super().__init__(message)
        # The D-Bus error name of the reply; "" when systemd answered with a job result.
        self.name = name


class UnitJobFailed(ServiceError):
    """systemd ended a unit job with a result other than done."""

    def __init__(self, member: str, unit: str, result: str) -> None:
        super().__init__(f"systemd's {member} job for {unit} ended with result {result}")
        self.member = member
        self.unit = unit
        self.result = result


class HostServices:
    """Calls to systemd and machined, through the daemon's own bus connection."""

    def __init__(self, bus: MessageBus | None, *, job_timeout: float = 300) -> None:
        self.bus = bus
        self.job_timeout = job_timeout
        self._jobs: dict[str, asyncio.Future[str]] = {}
        self._ended: dict[str, str] = {}
        self._subscribed = False
        if bus is not None:
            bus.add_message_handler(self._on_message)

    def _on_message(self, msg: Message) -> None:
        if (
            msg.message_type is MessageType.SIGNAL
            and msg.member == "JobRemoved"
            and msg.interface == SYSTEMD[2]
        ):
            path, result = str(msg.body[1]), str(msg.body[3])
            if (future := self._jobs.pop(path, None)) is not None and not future.done():
                future.set_result(result)
            else:
                # The signal can come before the reply that names the job.
                self._ended[path] = result
                if len(self._ended) > 256:
                    self._ended.pop(next(iter(self._ended)))

    async def _subscribe(self) -> None:
        if self._subscribed or self.bus is None:
            return
        rule = f"type='signal',sender='{SYSTEMD[0]}',interface='{SYSTEMD[2]}',member='JobRemoved'"
        await self.bus.call(add_match(rule))
        await self._call(SYSTEMD, "Subscribe")
        self._subscribed = True

    async def _unit_job(self, member: str, unit: str) -> None:
        """StartUnit/StopUnit/TryRestartUnit, waited for until systemd's job ends."""
        await self._subscribe()
        try:
            (path,) = await self._call(SYSTEMD, member, "ss", unit, "replace")
        except ServiceError as err:
            raise ServiceError(f"{member} {unit}: {err}", name=err.name) from err
        result = self._ended.pop(path, None)
        if result is None:
            future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            self._jobs[path] = future
            try:
                result = await asyncio.wait_for(future, self.job_timeout)
            except TimeoutError as err:
                raise ServiceError(
                    f"systemd's {member} job for {unit} did not end within {self.job_timeout:g} s"
                ) from err
            finally:
                self._jobs.pop(path, None)
        if result != "done":
            raise UnitJobFailed(member, unit, result)

    async def unit_active(self, unit: str) -> bool:
        """Whether systemd has the unit active; False without systemd."""
        try:
            (path,) = await self._call(SYSTEMD, "GetUnit", "s", unit)
            (state,) = await self._call(
                (SYSTEMD[0], path, "org.freedesktop.DBus.Properties"),
                "Get",
                "ss",
                "org.freedesktop.systemd1.Unit",
                "ActiveState",
            )
        except Unavailable:
            return False
        except ServiceError as err:
            if err.name == "org.freedesktop.systemd1.NoSuchUnit":
                return False
            raise
        return bool(getattr(state, "value", state) in ("active", "activating", "reloading"))

    async def try_restart(self, unit: str) -> None:
        """Restart the unit if it runs."""
        await self._unit_job("TryRestartUnit", unit)

    @contextlib.asynccontextmanager
    async def stopped(self, unit: str) -> AsyncIterator[bool]:
        """Stop an active unit for the body and start it again after; yields whether it was."""
        if not await self.unit_active(unit):
            yield False
            return
        # A failed stop raises here, before the body could change what the unit runs on.
        await self._unit_job("StopUnit", unit)
        try:
            yield True
        except BaseException:
            # The body's error is the one to report; the unit is started again all the same.
            try:
                await self._unit_job("StartUnit", unit)
            except (ServiceError, Unavailable) as err:
                log.warning("starting %s again failed: %s", unit, err)
            raise
        await self._unit_job("StartUnit", unit)

    async def _call(
        self, target: tuple[str, str, str], member: str, signature: str = "", *body: Any
    ) -> list[Any]:
        if self.bus is None:
            raise Unavailable(f"{target[0]} is not reachable")
        reply = await reply_to(self.bus, target, member, signature, *body)
        if reply.message_type is MessageType.ERROR:
            text = str(reply.body[0]) if reply.body else ""
            if reply.error_name in _ABSENT:
                raise Unavailable(f"{target[0]} is not on the bus")
            name = reply.error_name or ""
            raise ServiceError(f"{name}: {text}", name=name)
        return list(reply.body)

    async def connected(self, name: str) -> bool:
        """Whether a connection of this unique name is on the bus (True without a bus:
        nothing can be told then)."""
        if self.bus is None:
            return True
        (found,) = await self._call(BUS, "NameHasOwner", "s", name)
        return bool(found)

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

    async def machine_leader(self, name: str) -> int:
        """The host PID of the running machine's init (machined's Leader); 0 when
        machined knows no such machine."""
        try:
            (path,) = await self._call(MACHINED, "GetMachine", "s", name)
            (leader,) = await self._call(
                (MACHINED[0], str(path), "org.freedesktop.DBus.Properties"),
                "Get",
                "ss",
                "org.freedesktop.machine1.Machine",
                "Leader",
            )
        except ServiceError as err:
            if err.name == "org.freedesktop.machine1.NoSuchMachine":
                return 0
            raise
        return int(getattr(leader, "value", leader))

    async def stop(self, unit: str) -> None:
        """Stop the unit, waited for until the stop job ends."""
        await self._unit_job("StopUnit", unit)

    async def start(self, unit: str) -> None:
        """Start the unit, waited for until the start job ends."""
        await self._unit_job("StartUnit", unit)

    async def enable_and_start(self, unit: str) -> None:
        """`systemctl enable --now UNIT`, waited for until the start job ends."""
        await self._call(SYSTEMD, "EnableUnitFiles", "asbb", [unit], False, False)
        await self._call(SYSTEMD, "Reload")
        await self._unit_job("StartUnit", unit)
