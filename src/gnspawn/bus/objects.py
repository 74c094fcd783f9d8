"""The Manager and Job objects: read arguments, authorize, call the manager once, reply."""

from typing import Annotated, Any, Protocol

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
from gnspawn.bus.errors import translated, translated_now
from gnspawn.bus.introspection import constant, outputs
from gnspawn.jobs.kinds.config import argument as config_argument
from gnspawn.jobs.record import Job
from gnspawn.machines import MachineInfo
from gnspawn.manager import Manager
from gnspawn.names import JOB_INTERFACE, MACHINE_INTERFACE, MANAGER_INTERFACE, JobType, job_path

READ = PropertyAccess.READ
JobHandle = Annotated[tuple[int, str], DBusSignature("uo")]


class Exporter(Protocol):
    """Keeps the Job and Machine objects on the bus."""

    def export_job(self, job: Job) -> None: ...
    def show_machines(self, machines: list[MachineInfo]) -> None: ...


class ManagerInterface(ServiceInterface):
    """org.gnspawn1.Manager at /org/gnspawn1."""

    def __init__(self, manager: Manager, authority: Authority, exporter: Exporter) -> None:
        super().__init__(MANAGER_INTERFACE)
        self.manager = manager
        self.authority = authority
        self.exporter = exporter

    @outputs("id", "job")
    @dbus_method()
    @translated
    async def Update(self, name: DBusStr, flags: DBusUInt64) -> JobHandle:
        uid = await self.authority.require_manage()
        job = await self.manager.request(JobType.UPDATE, name, flags, uid=uid)
        return job.id, job_path(job.id)

    @outputs("jobs")
    @dbus_method()
    @translated
    async def UpdateAll(self, flags: DBusUInt64) -> Annotated[list[Any], DBusSignature("a(suo)")]:
        uid = await self.authority.require_manage()
        queued = await self.manager.update_all(flags, uid=uid)
        # A machine that was skipped (not Gentoo, or busy) is named with job 0 and "/".
        return [[name, job.id, job_path(job.id)] if job else [name, 0, "/"] for name, job in queued]

    @outputs("id", "job")
    @dbus_method()
    @translated
    async def Sync(self, flags: DBusUInt64) -> JobHandle:
        uid = await self.authority.require_manage()
        job = self.manager.sync(flags, uid=uid)
        return job.id, job_path(job.id)

    @outputs("id", "job")
    @dbus_method()
    @translated
    async def Build(self, name: DBusStr, profile: DBusStr, flags: DBusUInt64) -> JobHandle:
        uid = await self.authority.require_manage()
        job = await self.manager.request(JobType.BUILD, name, flags, uid=uid, argument=profile)
        return job.id, job_path(job.id)

    @outputs("id", "job")
    @dbus_method()
    @translated
    async def Remove(self, name: DBusStr, flags: DBusUInt64) -> JobHandle:
        uid = await self.authority.require_manage()
        job = await self.manager.request(JobType.REMOVE, name, flags, uid=uid)
        return job.id, job_path(job.id)

    @outputs("id", "job")
    @dbus_method()
    @translated
    async def Prune(self, name: DBusStr, flags: DBusUInt64) -> JobHandle:
        uid = await self.authority.require_manage()
        job = await self.manager.request(JobType.PRUNE, name, flags, uid=uid)
        return job.id, job_path(job.id)

    @outputs("id", "job")
    @dbus_method()
    @translated
    async def Send(self, name: DBusStr, host: DBusStr, flags: DBusUInt64) -> JobHandle:
        uid = await self.authority.require_manage()
        job = await self.manager.request(JobType.SEND, name, flags, uid=uid, argument=host)
        return job.id, job_path(job.id)

    @outputs("dataset", "snapshots")
    @dbus_method()
    @translated
    async def PrepareReceive(
        self, name: DBusStr, origin: DBusStr, flags: DBusUInt64
    ) -> Annotated[tuple[str, list[str]], DBusSignature("sas")]:
        await self.authority.require_manage()
        return await self.manager.prepare_receive(
            name, origin, flags, sender=self.authority.sender()
        )

    @dbus_method()
    @translated
    async def AdoptReceived(self, name: DBusStr, origin: DBusStr, flags: DBusUInt64) -> None:
        await self.authority.require_manage()
        await self.manager.adopt_received(name, origin, flags, sender=self.authority.sender())

    @dbus_method()
    @translated
    async def DiscardReceived(self, name: DBusStr, origin: DBusStr, flags: DBusUInt64) -> None:
        await self.authority.require_manage()
        await self.manager.discard_received(name, origin, flags, sender=self.authority.sender())

    @outputs("snapshots")
    @dbus_method()
    @translated
    async def ListRetention(self, name: DBusStr) -> Annotated[list[Any], DBusSignature("a(sbs)")]:
        return [
            [v.snapshot.name, v.keep, v.reason] for v in await self.manager.retention_plan(name)
        ]

    @outputs("profiles")
    @dbus_method()
    @translated
    async def ListProfiles(self) -> Annotated[list[Any], DBusSignature("a(sss)")]:
        return [[p.name, p.repository, p.status] for p in self.manager.list_profiles()]

    @outputs("id", "job")
    @dbus_method()
    @translated
    async def Rollback(self, name: DBusStr, snapshot: DBusStr, flags: DBusUInt64) -> JobHandle:
        uid = await self.authority.require_manage()
        job = await self.manager.request(JobType.ROLLBACK, name, flags, uid=uid, argument=snapshot)
        return job.id, job_path(job.id)

    @outputs("id", "job")
    @dbus_method()
    @translated
    async def ResolveConfig(
        self, name: DBusStr, path: DBusStr, action: DBusStr, flags: DBusUInt64
    ) -> JobHandle:
        uid = await self.authority.require_manage()
        argument = config_argument(action, path)
        job = await self.manager.request(JobType.CONFIG, name, flags, uid=uid, argument=argument)
        return job.id, job_path(job.id)

    @outputs("files")
    @dbus_method()
    @translated
    async def ListConfigFiles(self, name: DBusStr) -> Annotated[list[Any], DBusSignature("a(sss)")]:
        # The files' contents are the container's, which not every local user may read.
        await self.authority.require_manage()
        return [list(row) for row in await self.manager.list_config_files(name)]

    @outputs("items")
    @dbus_method()
    @translated
    async def ListNews(self, name: DBusStr) -> Annotated[list[Any], DBusSignature("a(ssss)")]:
        # Open to every local user, as ListAttention is: the items are the host's
        # repositories', and which are unread the Attention shows already.
        return [
            [item.name, item.repository, item.title, item.body]
            for item in await self.manager.list_news(name)
        ]

    @dbus_method()
    @translated
    async def MarkNewsRead(
        self, name: DBusStr, items: Annotated[list[str], DBusSignature("as")], flags: DBusUInt64
    ) -> None:
        await self.authority.require_manage()
        await self.manager.mark_news_read(name, items, flags)

    @outputs("packages")
    @dbus_method()
    @translated
    async def ListPackages(
        self, name: DBusStr, snapshot: DBusStr
    ) -> Annotated[list[Any], DBusSignature("a(sss)")]:
        return [
            [p.package, p.version, p.slot] for p in await self.manager.list_packages(name, snapshot)
        ]

    @outputs("changes")
    @dbus_method()
    @translated
    async def DiffPackages(
        self, name: DBusStr, old: DBusStr, new: DBusStr
    ) -> Annotated[list[Any], DBusSignature("a(ssss)")]:
        return [list(change) for change in await self.manager.diff_packages(name, old, new)]

    @outputs("changes")
    @dbus_method()
    @translated_now
    def ListChanges(
        self, since_usec: DBusUInt64
    ) -> Annotated[list[Any], DBusSignature("a(sssss)")]:
        return [[machine, *change] for machine, change in self.manager.changes_since(since_usec)]

    @dbus_method()
    @translated
    async def Keep(self, name: DBusStr, snapshot: DBusStr, tag: DBusStr, flags: DBusUInt64) -> None:
        await self.authority.require_manage()
        await self.manager.keep(name, snapshot, tag, flags)

    @dbus_method()
    @translated
    async def Unkeep(self, name: DBusStr, snapshot: DBusStr, flags: DBusUInt64) -> None:
        await self.authority.require_manage()
        await self.manager.unkeep(name, snapshot, flags)

    @outputs("machines")
    @dbus_method()
    @translated
    async def ListMachines(self) -> Annotated[list[Any], DBusSignature("a(sssso)")]:
        machines = await self.manager.list_machines()
        self.exporter.show_machines(machines)
        return [list(machine.row()) for machine in machines]

    @outputs("attention")
    @dbus_method()
    @translated_now
    def ListAttention(self, name: DBusStr) -> Annotated[list[Any], DBusSignature("a(ssss)")]:
        return [list(row) for row in self.manager.list_attention(name)]

    @outputs("snapshots")
    @dbus_method()
    @translated
    async def ListSnapshots(self, name: DBusStr) -> Annotated[list[Any], DBusSignature("a(sttus)")]:
        return [list(row) for row in await self.manager.list_snapshots(name)]

    @outputs("jobs")
    @dbus_method()
    @translated_now
    def ListJobs(self) -> Annotated[list[Any], DBusSignature("a(ussssuo)")]:
        return [
            [job.id, job.type, job.machine, job.state, job.result, job.progress, job_path(job.id)]
            for job in self.manager.list_jobs()
        ]

    @outputs("job")
    @dbus_method()
    @translated_now
    def GetJob(self, id: DBusUInt32) -> DBusObjectPath:
        job = self.manager.get_job(id)
        self.exporter.export_job(job)
        return job_path(job.id)

    @dbus_method()
    @translated
    async def CancelJob(self, id: DBusUInt32) -> None:
        await self.authority.require_manage()
        self.manager.cancel(id)

    @outputs("id", "job", "machine", "type")
    @dbus_signal()
    def JobNew(self, job: Job) -> Annotated[tuple[int, str, str, str], DBusSignature("uoss")]:
        return job.id, job_path(job.id), job.machine, job.type

    @outputs("id", "job", "machine", "result")
    @dbus_signal()
    def JobRemoved(self, job: Job) -> Annotated[tuple[int, str, str, str], DBusSignature("uoss")]:
        return job.id, job_path(job.id), job.machine, job.result

    @constant
    @dbus_property(access=READ)
    def Version(self) -> DBusStr:
        return __version__

    @constant
    @dbus_property(access=READ)
    def Dataset(self) -> DBusStr:
        return self.manager.config.storage.dataset

    @constant
    @dbus_property(access=READ)
    def MachinesDirectory(self) -> DBusStr:
        return str(self.manager.config.storage.machines_directory)

    @dbus_property(access=READ)
    def QueuedJobs(self) -> DBusUInt32:
        return self.manager.queue.waiting

    @dbus_property(access=READ)
    def RunningJobs(self) -> DBusUInt32:
        return self.manager.queue.running

    @constant
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

    @outputs("priority", "line")
    @dbus_signal()
    def LogMessage(
        self, priority: int, line: str
    ) -> Annotated[tuple[int, str], DBusSignature("us")]:
        return priority, line

    @constant
    @dbus_property(access=READ)
    def Id(self) -> DBusUInt32:
        return self.job.id

    @constant
    @dbus_property(access=READ)
    def Type(self) -> DBusStr:
        return self.job.type

    @constant
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
    def PendingPackages(self) -> Annotated[list[str], DBusSignature("as")]:
        return list(self.job.pending_packages)

    @dbus_property(access=READ)
    def Notices(self) -> Annotated[list[list[str]], DBusSignature("a(ssss)")]:
        return [list(notice) for notice in self.job.notices]

    @dbus_property(access=READ)
    def TreeRevision(self) -> DBusStr:
        return self.job.tree_revision

    @dbus_property(access=READ)
    def Changes(self) -> Annotated[list[list[str]], DBusSignature("a(ssss)")]:
        return [list(change) for change in self.job.changes]

    @constant
    @dbus_property(access=READ)
    def Follows(self) -> DBusUInt32:
        return self.job.follows

    @constant
    @dbus_property(access=READ)
    def CreatedUSec(self) -> DBusUInt64:
        return self.job.created_usec

    @dbus_property(access=READ)
    def StartedUSec(self) -> DBusUInt64:
        return self.job.started_usec

    @dbus_property(access=READ)
    def FinishedUSec(self) -> DBusUInt64:
        return self.job.finished_usec

    @constant
    @dbus_property(access=READ)
    def InitiatorUID(self) -> DBusUInt32:
        return self.job.initiator_uid


class MachineInterface(ServiceInterface):
    """org.gnspawn1.Machine at /org/gnspawn1/machine/<escaped name>."""

    def __init__(self, info: MachineInfo) -> None:
        super().__init__(MACHINE_INTERFACE)
        self.info = info

    def update(self, info: MachineInfo) -> None:
        old = self.info
        self.info = info
        changed = {
            name: new
            for name, new, before in (
                ("State", info.state, old.state),
                ("Profile", info.profile, old.profile),
                ("Dataset", info.dataset, old.dataset),
                ("LastJob", info.last_job, old.last_job),
                ("LatestSnapshot", info.latest_snapshot, old.latest_snapshot),
                ("Attention", [list(a) for a in info.attention], [list(a) for a in old.attention]),
            )
            if new != before
        }
        if changed:
            self.emit_properties_changed(changed)

    @constant
    @dbus_property(access=READ)
    def Name(self) -> DBusStr:
        return self.info.name

    @dbus_property(access=READ)
    def State(self) -> DBusStr:
        return self.info.state

    @dbus_property(access=READ)
    def Profile(self) -> DBusStr:
        return self.info.profile

    @dbus_property(access=READ)
    def Dataset(self) -> DBusStr:
        return self.info.dataset

    @constant
    @dbus_property(access=READ)
    def Directory(self) -> DBusStr:
        return self.info.directory

    @dbus_property(access=READ)
    def LastJob(self) -> DBusUInt32:
        return self.info.last_job

    @dbus_property(access=READ)
    def LatestSnapshot(self) -> DBusStr:
        return self.info.latest_snapshot

    @dbus_property(access=READ)
    def Attention(self) -> Annotated[list[list[str]], DBusSignature("a(sss)")]:
        return [list(item) for item in self.info.attention]
