"""The Manager and Job objects: read arguments, authorize, call the manager once, reply."""

from collections.abc import Callable
from typing import Annotated, Any

from dbus_fast.annotations import (
    DBusBool,
    DBusObjectPath,
    DBusSignature,
    DBusStr,
    DBusUInt32,
    DBusUInt64,
)
from dbus_fast.constants import PropertyAccess
from dbus_fast.service import ServiceInterface, dbus_method, dbus_property, dbus_signal

from gnspawn import __version__
from gnspawn.bus.auth import Authority
from gnspawn.bus.errors import translated
from gnspawn.jobs import Job
from gnspawn.manager import Manager
from gnspawn.names import JOB_INTERFACE, MANAGER_INTERFACE, job_path

READ = PropertyAccess.READ
JobHandle = Annotated[tuple[int, str], DBusSignature("uo")]


class ManagerInterface(ServiceInterface):
    """org.gnspawn1.Manager at /org/gnspawn1."""

    def __init__(
        self, manager: Manager, authority: Authority, export_job: Callable[[Job], None]
    ) -> None:
        super().__init__(MANAGER_INTERFACE)
        self.manager = manager
        self.authority = authority
        self.export_job = export_job

    @dbus_method()
    @translated
    async def Update(self, name: DBusStr, flags: DBusUInt64) -> JobHandle:
        uid = await self.authority.require_manage()
        job = await self.manager.update(name, flags, uid=uid)
        return job.id, job_path(job.id)

    @dbus_method()
    @translated
    async def UpdateAll(self, flags: DBusUInt64) -> Annotated[list[Any], DBusSignature("a(suo)")]:
        uid = await self.authority.require_manage()
        queued = await self.manager.update_all(flags, uid=uid)
        return [[name, job.id, job_path(job.id)] for name, job in queued]

    @dbus_method()
    @translated
    async def Rollback(self, name: DBusStr, snapshot: DBusStr, flags: DBusUInt64) -> JobHandle:
        uid = await self.authority.require_manage()
        job = await self.manager.rollback(name, snapshot, flags, uid=uid)
        return job.id, job_path(job.id)

    @dbus_method()
    @translated
    async def ListMachines(self) -> Annotated[list[Any], DBusSignature("a(sssso)")]:
        return [list(row) for row in await self.manager.list_machines()]

    @dbus_method()
    @translated
    async def ListSnapshots(self, name: DBusStr) -> Annotated[list[Any], DBusSignature("a(sttus)")]:
        return [list(row) for row in await self.manager.list_snapshots(name)]

    @dbus_method()
    @translated
    async def ListJobs(self) -> Annotated[list[Any], DBusSignature("a(ussssuo)")]:
        return [
            [job.id, job.type, job.machine, job.state, job.result, job.progress, job_path(job.id)]
            for job in self.manager.list_jobs()
        ]

    @dbus_method()
    @translated
    async def GetJob(self, id: DBusUInt32) -> DBusObjectPath:
        job = self.manager.get_job(id)
        self.export_job(job)
        return job_path(job.id)

    @dbus_method()
    @translated
    async def CancelJob(self, id: DBusUInt32) -> None:
        await self.authority.require_manage()
        self.manager.cancel(id)

    @dbus_signal()
    def JobNew(self, job: Job) -> Annotated[tuple[int, str, str, str], DBusSignature("uoss")]:
        return job.id, job_path(job.id), job.machine, job.type

    @dbus_signal()
    def JobRemoved(self, job: Job) -> Annotated[tuple[int, str, str, str], DBusSignature("uoss")]:
        return job.id, job_path(job.id), job.machine, job.result

    @dbus_property(access=READ)
    def Version(self) -> DBusStr:
        return __version__

    @dbus_property(access=READ)
    def Dataset(self) -> DBusStr:
        return self.manager.config.storage.dataset

    @dbus_property(access=READ)
    def MachinesDirectory(self) -> DBusStr:
        return str(self.manager.config.storage.machines_directory)

    @dbus_property(access=READ)
    def QueuedJobs(self) -> DBusUInt32:
        return self.manager.queue.waiting

    @dbus_property(access=READ)
    def RunningJobs(self) -> DBusUInt32:
        return self.manager.queue.running

    @dbus_property(access=READ)
    def MaxParallelJobs(self) -> DBusUInt32:
        return self.manager.queue.max_parallel


class JobInterface(ServiceInterface):
    """org.gnspawn1.Job at /org/gnspawn1/job/_<id>."""

    def __init__(self, job: Job, manager: Manager, authority: Authority) -> None:
        super().__init__(JOB_INTERFACE)
        self.job = job
        self.manager = manager
        self.authority = authority

    @dbus_method()
    @translated
    async def Cancel(self) -> None:
        await self.authority.require_manage()
        self.manager.cancel(self.job.id)

    @dbus_signal()
    def LogMessage(
        self, priority: int, line: str
    ) -> Annotated[tuple[int, str], DBusSignature("us")]:
        return priority, line

    @dbus_property(access=READ)
    def Id(self) -> DBusUInt32:
        return self.job.id

    @dbus_property(access=READ)
    def Type(self) -> DBusStr:
        return self.job.type

    @dbus_property(access=READ)
    def Machine(self) -> DBusStr:
        return self.job.machine

    @dbus_property(access=READ)
    def State(self) -> DBusStr:
        return self.job.state

    @dbus_property(access=READ)
    def Result(self) -> DBusStr:
        return self.job.result

    @dbus_property(access=READ)
    def Phase(self) -> DBusStr:
        return self.job.phase

    @dbus_property(access=READ)
    def Progress(self) -> DBusUInt32:
        return self.job.progress

    @dbus_property(access=READ)
    def PackagesDone(self) -> DBusUInt32:
        return self.job.packages_done

    @dbus_property(access=READ)
    def PackagesTotal(self) -> DBusUInt32:
        return self.job.packages_total

    @dbus_property(access=READ)
    def CurrentPackage(self) -> DBusStr:
        return self.job.current_package

    @dbus_property(access=READ)
    def Snapshot(self) -> DBusStr:
        return self.job.snapshot

    @dbus_property(access=READ)
    def RolledBack(self) -> DBusBool:
        return self.job.rolled_back

    @dbus_property(access=READ)
    def Error(self) -> DBusStr:
        return self.job.error

    @dbus_property(access=READ)
    def CreatedUSec(self) -> DBusUInt64:
        return self.job.created_usec

    @dbus_property(access=READ)
    def StartedUSec(self) -> DBusUInt64:
        return self.job.started_usec

    @dbus_property(access=READ)
    def FinishedUSec(self) -> DBusUInt64:
        return self.job.finished_usec

    @dbus_property(access=READ)
    def InitiatorUID(self) -> DBusUInt32:
        return self.job.initiator_uid
