"""Recording stand-ins for systemd and machined on the test bus.

systemd cannot run as PID 1 on the test machines, so the tests put these small
services on the private bus in its place: org.freedesktop.systemd1 records the unit
calls gnspawnd makes, org.freedesktop.machine1 answers GetMachine for the machines
named on the command line as running. Each call is appended to a JSON-lines file.

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
from dbus_fast.service import ServiceInterface, dbus_method


class Recorder:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, member: str, *args: Any) -> None:
        with self.path.open("a") as out:
            out.write(json.dumps([member, *args]) + "\n")


class Systemd(ServiceInterface):
    def __init__(self, record: Recorder) -> None:
        super().__init__("org.freedesktop.systemd1.Manager")
        self.record = record

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
    def StartUnit(self, name: DBusStr, mode: DBusStr) -> DBusObjectPath:
        self.record("StartUnit", name, mode)
        return "/org/freedesktop/systemd1/job/1"

    @dbus_method()
    def StopUnit(self, name: DBusStr, mode: DBusStr) -> DBusObjectPath:
        self.record("StopUnit", name, mode)
        return "/org/freedesktop/systemd1/job/2"

    @dbus_method()
    def RestartUnit(self, name: DBusStr, mode: DBusStr) -> DBusObjectPath:
        self.record("RestartUnit", name, mode)
        return "/org/freedesktop/systemd1/job/3"


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
    bus.export("/org/freedesktop/systemd1", Systemd(record))
    bus.export("/org/freedesktop/machine1", Machined(record, set(sys.argv[2:])))
    await bus.request_name("org.freedesktop.systemd1")
    await bus.request_name("org.freedesktop.machine1")
    print("ready", flush=True)
    await bus.wait_for_disconnect()


if __name__ == "__main__":
    asyncio.run(main())
