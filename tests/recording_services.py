"""Recording stand-ins for systemd and machined on the test bus.

systemd cannot run as PID 1 on the test machines, so the tests put these small
services on the private bus in its place: org.freedesktop.systemd1 records the unit
calls gnspawnd makes, org.freedesktop.machine1 answers GetMachine for the machines
named on the command line as running (their systemd-nspawn@ units active).
Each call is appended to a JSON-lines file.

    python recording_services.py [--fail METHOD UNIT RESULT]... [--signal-first]
        [--container NAME ROOT]... RECORD_FILE [RUNNING_MACHINE...]

Every unit job ends at once with JobRemoved; its result is "done" unless a --fail
names the job's method and unit, as systemd's result of a unit that fails to start
("failed"), does not stop in time ("timeout") or lacks what it needs ("dependency").
With --signal-first, JobRemoved goes out before the method's reply, as it can from
systemd when a job ends at once.

A --container machine is a real container: its unit's start runs
`systemd-nspawn --register=no --keep-unit -D ROOT` with busybox's sh as its init (ROOT
must hold /bin/busybox), its stop ends that process, a restart does both, and machined
reports the container's init as the machine's Leader, as machined does.
"""

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, cast

from dbus_fast import BusType, DBusError
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusBool, DBusObjectPath, DBusSignature, DBusStr, DBusUInt32
from dbus_fast.constants import PropertyAccess
from dbus_fast.service import ServiceInterface, dbus_method, dbus_property, dbus_signal


class Recorder:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, member: str, *args: Any) -> None:
        with self.path.open("a") as out:
            out.write(json.dumps([member, *args]) + "\n")


def unit_path(unit: str) -> str:
    """The object path systemd gives a unit: every byte but [A-Za-z0-9] as _xx."""
    escaped = re.sub(rb"[^A-Za-z0-9]", lambda m: b"_%02x" % m[0][0], unit.encode()).decode()
    return "/org/freedesktop/systemd1/unit/" + escaped


class Unit(ServiceInterface):
    """org.freedesktop.systemd1.Unit: the state the stand-in keeps for one unit."""

    def __init__(self, states: dict[str, str], unit: str) -> None:
        super().__init__("org.freedesktop.systemd1.Unit")
        self.states = states
        self.unit = unit

    @dbus_property(access=PropertyAccess.READ)
    def ActiveState(self) -> DBusStr:
        return self.states[self.unit]


INIT = 'trap "exit 0" TERM 37; while :; do /bin/busybox sleep 1; done'
"""The container's init: ends on SIGTERM and on systemd-nspawn's SIGRTMIN+3."""


class Container:
    """A real systemd-nspawn container that the stand-in's unit jobs start and stop."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        argv = ["systemd-nspawn", "--quiet", "--register=no", "--keep-unit", "-D", self.root]
        self.proc = subprocess.Popen(
            [*argv, "/bin/busybox", "sh", "-c", INIT],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # Started as systemd's start job of a notifying service ends: once the
        # container's init runs.
        deadline = time.monotonic() + 30
        while not self.leader() and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is None:
            return
        leader = self.leader()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            if leader:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(leader, signal.SIGKILL)
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def leader(self) -> int:
        """The host PID of the container's init (PID 1 in its namespace), or 0."""
        if self.proc is None or self.proc.poll() is not None:
            return 0
        pending = [self.proc.pid]
        while pending:
            pid = pending.pop()
            try:
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            nspid = next(line for line in status.splitlines() if line.startswith("NSpid:"))
            if pid != self.proc.pid and nspid.split()[-1] == "1":
                return pid
            pending += map(int, children)
        return 0


class Machine(ServiceInterface):
    """org.freedesktop.machine1.Machine of a container: its Leader."""

    def __init__(self, container: Container) -> None:
        super().__init__("org.freedesktop.machine1.Machine")
        self.container = container

    @dbus_property(access=PropertyAccess.READ)
    def Leader(self) -> DBusUInt32:
        return self.container.leader()


class Systemd(ServiceInterface):
    """org.freedesktop.systemd1.Manager: records unit calls, ends each job at once."""

    def __init__(
        self,
        bus: MessageBus,
        record: Recorder,
        active: set[str],
        failing: dict[tuple[str, str], str],
        *,
        signal_first: bool,
        containers: dict[str, Container],
    ) -> None:
        super().__init__("org.freedesktop.systemd1.Manager")
        self.bus = bus
        self.record = record
        self.failing = failing
        self.signal_first = signal_first
        self.containers = {f"systemd-nspawn@{name}.service": c for name, c in containers.items()}
        # Units systemd has loaded, with their ActiveState; GetUnit knows only these.
        self.states: dict[str, str] = {}
        for unit in active:
            self._set_state(unit, "active")
        self.jobs = 0

    def _set_state(self, unit: str, state: str) -> None:
        new = unit not in self.states
        # Set first: exporting reads the property for ObjectManager's InterfacesAdded.
        self.states[unit] = state
        if new:
            self.bus.export(unit_path(unit), Unit(self.states, unit))

    def _job(self, member: str, unit: str, state: str) -> str:
        """A job for the unit that ends at once, leaving the unit in `state` or failed."""
        self.jobs += 1
        path = f"/org/freedesktop/systemd1/job/{self.jobs}"
        result = self.failing.get((member, unit), "done")
        if (container := self.containers.get(unit)) is not None and result == "done":
            if member in ("StopUnit", "TryRestartUnit"):
                container.stop()
            if state == "active":
                container.start()
        self._set_state(unit, state if result == "done" else "failed")
        if self.signal_first:
            self.JobRemoved(self.jobs, path, unit, result)
        else:
            # JobRemoved follows the method's reply, as it does from systemd for a job
            # that takes any time at all.
            asyncio.get_running_loop().call_soon(self.JobRemoved, self.jobs, path, unit, result)
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
        if name not in self.states:
            raise DBusError("org.freedesktop.systemd1.NoSuchUnit", f"Unit {name} not loaded.")
        return unit_path(name)

    @dbus_method()
    def StartUnit(self, name: DBusStr, mode: DBusStr) -> DBusObjectPath:
        self.record("StartUnit", name, mode)
        return self._job("StartUnit", name, "active")

    @dbus_method()
    def StopUnit(self, name: DBusStr, mode: DBusStr) -> DBusObjectPath:
        self.record("StopUnit", name, mode)
        return self._job("StopUnit", name, "inactive")

    @dbus_method()
    def TryRestartUnit(self, name: DBusStr, mode: DBusStr) -> DBusObjectPath:
        self.record("TryRestartUnit", name, mode)
        return self._job("TryRestartUnit", name, self.states.get(name, "inactive"))


class Machined(ServiceInterface):
    def __init__(
        self, record: Recorder, running: set[str], containers: dict[str, Container]
    ) -> None:
        super().__init__("org.freedesktop.machine1.Manager")
        self.record = record
        self.running = running
        self.containers = containers

    @dbus_method()
    def GetMachine(self, name: DBusStr) -> DBusObjectPath:
        self.record("GetMachine", name)
        container = self.containers.get(name)
        known = container.leader() != 0 if container is not None else name in self.running
        if not known:
            raise DBusError("org.freedesktop.machine1.NoSuchMachine", f"No machine '{name}' known")
        return f"/org/freedesktop/machine1/machine/{name}"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("record", type=Path, help="the JSON-lines file of the calls")
    parser.add_argument("running", nargs="*", help="machines whose units are active")
    parser.add_argument(
        "--fail",
        nargs=3,
        action="append",
        default=[],
        metavar=("METHOD", "UNIT", "RESULT"),
        help="end METHOD's job for UNIT with RESULT instead of done",
    )
    parser.add_argument(
        "--signal-first", action="store_true", help="send JobRemoved before the reply"
    )
    parser.add_argument(
        "--container",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "ROOT"),
        help="machine NAME is a real container of ROOT, started now",
    )
    return parser.parse_intermixed_args()


async def main() -> None:
    args = parse_args()
    record = Recorder(args.record)
    running = set(args.running)
    failing = {(method, unit): result for method, unit, result in args.fail}
    containers = {name: Container(root) for name, root in args.container}
    running |= set(containers)
    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    units = {f"systemd-nspawn@{name}.service" for name in running}
    systemd = Systemd(
        bus, record, units, failing, signal_first=args.signal_first, containers=containers
    )
    bus.export("/org/freedesktop/systemd1", systemd)
    bus.export("/org/freedesktop/machine1", Machined(record, running, containers))
    for name, container in containers.items():
        container.start()
        bus.export(f"/org/freedesktop/machine1/machine/{name}", Machine(container))
    await bus.request_name("org.freedesktop.systemd1")
    await bus.request_name("org.freedesktop.machine1")
    print("ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    # dbus-fast leaves this method without annotations.
    disconnected = asyncio.ensure_future(
        cast(Callable[[], Awaitable[None]], bus.wait_for_disconnect)()
    )
    await asyncio.wait(
        [disconnected, asyncio.ensure_future(stop.wait())], return_when=asyncio.FIRST_COMPLETED
    )
    for container in containers.values():
        container.stop()


if __name__ == "__main__":
    asyncio.run(main())
