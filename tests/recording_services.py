"""Recording stand-ins for systemd and machined on the test bus.

systemd cannot run as PID 1 on the test machines, so the tests put these small
services on the private bus in its place: org.freedesktop.systemd1 records the unit
calls gnspawnd makes, org.freedesktop.machine1 answers GetMachine for the machines
named on the command line as running (their systemd-nspawn@ units active).
Each call is appended to a JSON-lines file.

    python recording_services.py RECORD_FILE [RUNNING_MACHINE...]
"""

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Any

from dbus_fast import BusType, DBusError
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusBool, DBusObjectPath, DBusSignature, DBusStr
from dbus_fast.constants import PropertyAccess
from dbus_fast.service import ServiceInterface, dbus_method, dbus_property, dbus_signal


class Recorder:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, member: str, *args: Any) -> None:
        with self.path.open("a") as out:
            out.write(json.dumps([member, *args]) + "\n")


class Systemd(ServiceInterface):
    """org.freedesktop.systemd1.Manager: records unit calls, ends each job at once."""

    def __init__(self, record: Recorder, active: set[str]) -> None:
        super().__init__("org.freedesktop.systemd1.Manager")
        self.record = record
        self.active = active
        self.jobs = 0

    def _job(self, unit: str) -> str:
        self.jobs += 1
        path = f"/org/freedesktop/systemd1/job/{self.jobs}"
        # JobRemoved follows the method's reply, as systemd's does.
        asyncio.get_running_loop().call_soon(self.JobRemoved, self.jobs, path, unit, "done")
        return path

    @dbus_signal()
    def JobRemoved(
        self, job_id: int, path: str, unit: str, result: str
    ) -> Annotated[tuple[int, str, str, str], DBusSignature("uoss")]:
        return job_id, path, unit, result

    @dbus_method()
    def Subscribe(self) -> None:
        pass

    @dbus_method()
    def EnableUnitFiles(
        self, files: Annotated[list[str], DBusSignature("as")], runtime: DBusBool, force: DBusBool
    ) -> Annotated[tuple[bool, list[Any]], DBusSignature("ba(sss)")]:
        self.record("EnableUnitFiles", files, runtime, force)
        return True, [
            ["symlink", f"/etc/systemd/system/machines.target.wants/{f}", f] for f in files
        ]

    @dbus_method()
    def Reload(self) -> None:
        self.record("Reload")

    @dbus_method()
    def GetUnit(self, name: DBusStr) -> DBusObjectPath:
        if name not in self.active:
            raise DBusError("org.freedesktop.systemd1.NoSuchUnit", f"Unit {name} not loaded.")
        return "/org/freedesktop/systemd1/unit/" + name.replace("@", "_40").replace(
            ".", "_2e"
        ).replace("-", "_2d")

    @dbus_method()
    def StartUnit(self, name: DBusStr, mode: DBusStr) -> DBusObjectPath:
        self.record("StartUnit", name, mode)
        self.active.add(name)
        return self._job(name)

    @dbus_method()
    def StopUnit(self, name: DBusStr, mode: DBusStr) -> DBusObjectPath:
        self.record("StopUnit", name, mode)
        self.active.discard(name)
        return self._job(name)

    @dbus_method()
    def TryRestartUnit(self, name: DBusStr, mode: DBusStr) -> DBusObjectPath:
        self.record("TryRestartUnit", name, mode)
        return self._job(name)


class Unit(ServiceInterface):
    """org.freedesktop.systemd1.Unit of an active unit."""

    def __init__(self) -> None:
        super().__init__("org.freedesktop.systemd1.Unit")

    @dbus_property(access=PropertyAccess.READ)
    def ActiveState(self) -> DBusStr:
        return "active"


class Machined(ServiceInterface):
    def __init__(self, record: Recorder, running: set[str]) -> None:
        super().__init__("org.freedesktop.machine1.Manager")
        self.record = record
        self.running = running

    @dbus_method()
    def GetMachine(self, name: DBusStr) -> DBusObjectPath:
        self.record("GetMachine", name)
        if name not in self.running:
            raise DBusError("org.freedesktop.machine1.NoSuchMachine", f"No machine '{name}' known")
        return f"/org/freedesktop/machine1/machine/{name}"


async def main() -> None:
    record = Recorder(Path(sys.argv[1]))
    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    running = set(sys.argv[2:])
    units = {f"systemd-nspawn@{name}.service" for name in running}
    bus.export("/org/freedesktop/systemd1", Systemd(record, units))
    for unit in units:
        path = "/org/freedesktop/systemd1/unit/" + unit.replace("@", "_40").replace(
            ".", "_2e"
        ).replace("-", "_2d")
        bus.export(path, Unit())
    bus.export("/org/freedesktop/machine1", Machined(record, running))
    await bus.request_name("org.freedesktop.systemd1")
    await bus.request_name("org.freedesktop.machine1")
    print("ready", flush=True)
    await bus.wait_for_disconnect()


if __name__ == "__main__":
    asyncio.run(main())
