"""The daemon's presence on the bus: exported objects, and job events as signals."""

import asyncio
import logging
from typing import Any

from dbus_fast.aio import MessageBus

from gnspawn.bus.auth import Authority
from gnspawn.bus.introspection import interface_xml
from gnspawn.bus.objects import JobInterface, MachineInterface, ManagerInterface
from gnspawn.bus.signatures import SignatureCheck
from gnspawn.errors import GnspawnError
from gnspawn.jobs.record import Job
from gnspawn.jobs.recorder import HISTORY_SHOWN
from gnspawn.machines import MachineInfo
from gnspawn.manager import Manager
from gnspawn.names import (
    JOB_INTERFACE,
    MACHINE_INTERFACE,
    MANAGER_INTERFACE,
    MANAGER_PATH,
    job_path,
)

log = logging.getLogger(__name__)

INTERFACES = (
    (MANAGER_INTERFACE, ManagerInterface),
    (JOB_INTERFACE, JobInterface),
    (MACHINE_INTERFACE, MachineInterface),
)


def interface_files() -> dict[str, str]:
    """The introspection XML of each interface, by the name of the file it is installed
    as in /usr/share/dbus-1/interfaces."""
    return {f"{name}.xml": interface_xml(cls, name) for name, cls in INTERFACES}


class BusService:
    """Exports the Manager, a Job object per job, and turns job events into signals."""

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus
        self.authority = Authority(bus)
        self.signatures = SignatureCheck()
        bus.add_message_handler(self.signatures)
        self._jobs: dict[int, JobInterface] = {}
        self._machines: dict[str, MachineInterface] = {}
        self._refresh: asyncio.Task[None] | None = None
        self._refresh_again = False
        self._manager: Manager | None = None
        self._interface: ManagerInterface | None = None

    def attach(self, manager: Manager) -> None:
        self._manager = manager
        self._interface = ManagerInterface(manager, self.authority, self)
        self.signatures.learn(self._interface)
        self.bus.export(MANAGER_PATH, self._interface)
        manager.on_queue_changed = self._queue_changed

    def export_known(self) -> None:
        """Export the jobs the manager knows after its start, and the machines."""
        assert self._manager is not None
        for job in self._manager.list_jobs():
            self._export(job)
        self._refresh_machines()

    def show_machines(self, machines: list[MachineInfo]) -> None:
        """Export a Machine object per machine, update changed ones, drop vanished ones."""
        current = {machine.path: machine for machine in machines}
        for path in set(self._machines) - set(current):
            self.bus.unexport(path, self._machines.pop(path))
        for path, info in current.items():
            if (interface := self._machines.get(path)) is None:
                self._machines[path] = interface = MachineInterface(info)
                self.signatures.learn(interface)
                self.bus.export(path, interface)
            else:
                interface.update(info)

    async def settle(self) -> None:
        """Let a running look at the machines finish: a subprocess cancelled while it
        starts can hold up the event loop's shutdown."""
        if self._refresh is not None:
            await asyncio.wait([self._refresh])

    def _refresh_machines(self) -> None:
        """Look at the machines again soon (after a job changed them), once at a time.

        A request that comes while a look runs is not lost: the look that runs may have
        read the state before the change, so another one follows it.
        """
        self._refresh_again = True
        if self._refresh is not None and not self._refresh.done():
            return

        async def refresh() -> None:
            assert self._manager is not None
            while self._refresh_again:
                self._refresh_again = False
                try:
                    self.show_machines(await self._manager.list_machines())
                except GnspawnError as err:
                    log.warning("cannot list machines: %s", err)

        self._refresh = asyncio.get_running_loop().create_task(refresh())

    def _export(self, job: Job) -> JobInterface:
        if (interface := self._jobs.get(job.id)) is None:
            assert self._manager is not None
            interface = JobInterface(job, self._manager, self.authority)
            self.signatures.learn(interface)
            self.bus.export(job_path(job.id), interface)
            self._jobs[job.id] = interface
        return interface

    def export_job(self, job: Job) -> None:
        """Make an old job visible again, e.g. when GetJob asks for one from the database."""
        self._export(job)
        self._forget_old()

    def _forget_old(self) -> None:
        if len(self._jobs) <= 2 * HISTORY_SHOWN:
            return
        finished = sorted(job_id for job_id, iface in self._jobs.items() if not iface.job.active)
        for job_id in finished[: len(self._jobs) - 2 * HISTORY_SHOWN]:
            self.bus.unexport(job_path(job_id), self._jobs.pop(job_id))

    def _queue_changed(self) -> None:
        if self._interface is not None and self._manager is not None:
            queue = self._manager.queue
            self._interface.emit_properties_changed(
                {"QueuedJobs": queue.waiting, "RunningJobs": queue.running}
            )

    # Listener

    def job_new(self, job: Job) -> None:
        self._export(job)
        if self._interface is not None:
            self._interface.JobNew(job)

    def job_changed(self, job: Job, changed: dict[str, Any]) -> None:
        if (interface := self._jobs.get(job.id)) is not None:
            interface.emit_properties_changed({k: _listed(v) for k, v in changed.items()})

    def job_removed(self, job: Job) -> None:
        self._export(job)
        if self._interface is not None:
            self._interface.JobRemoved(job)
        self._forget_old()
        self._refresh_machines()

    def job_log(self, job: Job, priority: int, line: str) -> None:
        if (interface := self._jobs.get(job.id)) is not None:
            interface.LogMessage(priority, line)


def _listed(value: Any) -> Any:
    """dbus-fast takes arrays and structs as lists only; the record keeps tuples."""
    return [_listed(v) for v in value] if isinstance(value, tuple) else value
