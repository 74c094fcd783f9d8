"""The manager: what every bus method does. How each kind of job runs is in gnspawn.jobs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import NamedTuple

from gnspawn import log as journal
from gnspawn import machines, packages, portage, receive
from gnspawn.config import Config, UpdatePolicy
from gnspawn.errors import Busy, InvalidArgs, NoSuchJob, NoSuchSnapshot, NotCancellable
from gnspawn.inventory import Inventory, gentoo_root, mounted_root
from gnspawn.jobs import changes, configfiles, news, runner, snapshots
from gnspawn.jobs.context import Context, Host, Request
from gnspawn.jobs.kinds import KINDS
from gnspawn.jobs.queue import Queue
from gnspawn.jobs.record import Job, LastJob, now_usec
from gnspawn.jobs.recorder import Listener, Recorder
from gnspawn.jobs.retention import Verdict
from gnspawn.jobs.store import JobStore
from gnspawn.jobs.waves import Waves
from gnspawn.machines import Machine, MachineInfo
from gnspawn.names import (
    Flags,
    JobResult,
    JobState,
    JobType,
    MachineState,
    NoticeKind,
    job_title,
    machine_path,
)
from gnspawn.packages import Change, Installed, PackageList
from gnspawn.portage import Profile
from gnspawn.services import HostServices
from gnspawn.zfs import Zfs

log = logging.getLogger(__name__)


class SnapshotInfo(NamedTuple):
    """A row of ListSnapshots: `(sttus)`."""

    name: str
    created_usec: int
    used: int
    job: int
    job_type: str


NO_JOB = LastJob(0, JobType.UPDATE, JobResult.NONE, rolled_back=False, snapshot=False)
"""The last job of a machine that has had none."""


def check_flags(flags: int, allowed: Flags) -> Flags:
    """The flags, or InvalidArgs naming the bits that are not known."""
    unknown = flags & ~int(allowed)
    if unknown:
        raise InvalidArgs(f"unknown flags 0x{unknown:x}")
    return Flags(flags)


class Manager:
    """Machines and the jobs that change them."""

    def __init__(
        self,
        config: Config,
        store: JobStore,
        zfs: Zfs,
        listener: Listener,
        services: HostServices | None = None,
    ) -> None:
        self.config = config
        self.queue = Queue(config.jobs.max_parallel, self._run, self._queue_changed)
        self.host = Host(
            config=config,
            zfs=zfs,
            services=services or HostServices(None),
            inventory=Inventory(config, zfs),
            recorder=Recorder(store, listener, config.jobs.history, _changes_root),
            queue=self.queue,
        )
        self.recorder = self.host.recorder
        self.inventory = self.host.inventory
        self._cancel_reasons: dict[int, str] = {}
        self.on_queue_changed: Callable[[], None] = lambda: None

    def _queue_changed(self) -> None:
        # on_queue_changed is set after construction, by the bus layer and the daemon.
        self.on_queue_changed()

    async def _run(self, job: Job) -> None:
        await runner.run(Context(self.host, job), self._cancel_reasons)

    # --- life --------------------------------------------------------------

    async def start(self) -> None:
        """Recover what the last run left running, then start the waiting jobs in order."""
        waiting = []
        for job in self.recorder.store.active():
            if job.state is JobState.RUNNING:
                await runner.recover(Context(self.host, job))
            else:
                waiting.append(job)
        for job in waiting:
            self.queue.add(job)

    async def stop(self) -> None:
        """Take no new work; cancel and roll back running jobs; keep the waiting ones."""
        self.queue.paused = True
        for job in self.queue.jobs:
            task = self.queue.task(job)
            if task is not None:
                self._cancel_reasons[job.id] = "the daemon was stopped"
                task.cancel()
        await self.queue.drain()

    # --- requests ------------------------------------------------------------

    async def request(
        self,
        kind: JobType,
        name: str,
        flags: int,
        *,
        uid: int,
        argument: str = "",
        follows: int = 0,
        after: int = 0,
        machine: Machine | None = None,
        marks: int = 0,
    ) -> Job:
        """Check a request of any kind and queue its job.

        `machine` is the machine from a listing the caller made already (UpdateAll);
        `marks` are flags the caller may not give but UpdateAll sets (NO_CANARY).
        `after` is a sync the job comes after (the scheduled cycle's): the job, or the
        builder job it follows, follows that sync, and is held if it fails.
        """
        machines.check_name(name)
        job_kind = KINDS[kind]
        checked = check_flags(flags, job_kind.flags) | marks
        request = Request(name, checked, argument, machine)
        argument = await job_kind.check(self.host, request)
        builders = self.config.portage.builders and not follows
        profile = await job_kind.profile(self.host, request, argument) if builders else ""
        await receive.receiver(self.host, name)  # a reception whose sender went ends
        # No await from here on: what is checked holds when the jobs are queued.
        receive.check_not_receiving(self.host, name)
        if Flags.FAIL_IF_BUSY in checked and self.queue.busy(name):
            raise Busy(f"machine {name} has a job waiting or running")
        # Like systemd's jobs: a request equal to one that has not started yet is that one;
        # but not a cycle's after its sync: the one waiting may start before the sync.
        joins = job_kind.joins_waiting and not after
        waiting = self.queue.waiting_job(name, kind) if joins else None
        if waiting is not None and _same(waiting.flags, checked) and waiting.argument == argument:
            return waiting
        if profile:
            follows = self._builder_job(profile, uid, after).id
        follows = follows or after
        return self._queue(kind, name, checked, uid=uid, argument=argument, follows=follows)

    def _builder_job(self, profile: str, uid: int, after: int = 0) -> Job:
        """The job that builds the binary packages of `profile`: the one waiting or
        running (after the sync `after`, when given), or a new one."""
        name = machines.builder_name(profile)
        active = self.queue.active_job(name, JobType.BUILDER, follows=after or None)
        if active is not None:
            return active
        return self._queue(
            JobType.BUILDER, name, Flags(0), uid=uid, argument=profile, follows=after
        )

    def sync(self, flags: int, *, uid: int) -> Job:
        """Queue a sync of the repositories, or return the one that has not started yet:
        it brings the tree this request asks for too."""
        checked = check_flags(flags, KINDS[JobType.SYNC].flags)
        waiting = self.queue.waiting_job("", JobType.SYNC)
        if waiting is not None:
            return waiting
        return self._queue(JobType.SYNC, "", checked, uid=uid, argument="")

    def _queue(
        self, kind: JobType, name: str, flags: Flags, *, uid: int, argument: str, follows: int = 0
    ) -> Job:
        job = self.recorder.new(
            Job(
                id=0,
                type=kind,
                machine=name,
                flags=flags,
                initiator_uid=uid,
                created_usec=now_usec(),
                argument=argument,
                follows=follows,
            )
        )
        self.recorder.log(job, journal.INFO, f"queued {job_title(kind, name)}")
        self.queue.add(job)
        return job

    async def prepare_receive(
        self, name: str, origin: str, flags: int, *, sender: str
    ) -> tuple[str, list[str]]:
        """PrepareReceive: where a sender's machine goes, and the snapshots here of it;
        the name is the `sender` connection's until it adopts, discards or goes."""
        check_flags(flags, Flags(0))
        return await receive.prepare(self.host, name, origin, sender)

    async def adopt_received(self, name: str, origin: str, flags: int, *, sender: str) -> None:
        """AdoptReceived: what a sender sent is a machine here now."""
        check_flags(flags, Flags(0))
        await receive.adopt(self.host, name, origin, sender)

    async def discard_received(self, name: str, origin: str, flags: int, *, sender: str) -> None:
        """DiscardReceived: what a whole send left half received goes."""
        check_flags(flags, Flags(0))
        await receive.discard(self.host, name, origin, sender)

    async def update_all(self, flags: int, *, uid: int) -> list[tuple[str, Job | None]]:
        """One update per Gentoo machine, in an order that compiles each package once.

        Machines that are not Gentoo roots, or are busy with FAIL_IF_BUSY, come back
        with no job. Each profile's builder root is updated first, and its machines
        install the binary packages it built. Without builders, the first trusted
        machine of a profile goes first instead, and the others install what it built.
        With [updates] canary (and without NO_CANARY), the first machine of each profile
        (a trusted one first) is its canary: the others wait for it, and are held when
        it fails.
        A scheduled cycle with [updates] sync syncs the repositories before all that;
        when the sync fails, the cycle's jobs end held.
        """
        checked = check_flags(
            flags, KINDS[JobType.UPDATE].flags | Flags.SCHEDULED | Flags.NO_CANARY
        )
        if Flags.SCHEDULED in checked:
            policy = self.config.updates.policy
            log.info("scheduled update of all machines, policy %s", policy)
            if policy is UpdatePolicy.NONE:
                return []
            if policy is UpdatePolicy.CHECK:
                checked |= Flags.PRETEND
        after = 0
        if Flags.SCHEDULED in checked and self.config.updates.sync:
            after = self.sync(0, uid=uid).id
        canary = (
            self.config.updates.canary
            and Flags.NO_CANARY not in checked
            and Flags.PRETEND not in checked
        )
        checked &= ~(Flags.SCHEDULED | Flags.NO_CANARY)
        # Without a canary, a wave is only the order in which binary packages are
        # built and installed: its jobs carry NO_CANARY, and are not held when the
        # first of it fails.
        marks = Flags(0) if canary else Flags.NO_CANARY
        found = await self.inventory.all()
        names = self.inventory.names(found)
        waves = Waves(self.config, found, canary=canary, pretend=Flags.PRETEND in checked)
        result: dict[str, Job | None] = {}
        for name in waves.order(names):
            machine = found.get(name)
            if machine is None or machine.root is None or not machines.is_gentoo(machine.root):
                log.info("update-all: skipping %s, not a Gentoo root", name)
                result[name] = None
                continue
            wave, follows = waves.wave(machine)
            try:
                job = await self.request(
                    JobType.UPDATE,
                    name,
                    checked,
                    uid=uid,
                    follows=follows,
                    after=after,
                    machine=machine,
                    marks=marks,
                )
            except Busy:
                log.info("update-all: skipping %s, busy", name)
                result[name] = None
                continue
            waves.queued(machine, wave, job)
            result[name] = job
        return [(name, result[name]) for name in names]

    def cancel(self, job_id: int) -> None:
        job = self.get_job(job_id)
        if not job.active:
            raise NotCancellable(f"job {job_id} has finished ({job.result})")
        task = self.queue.task(job)
        if task is None:
            self.queue.remove_waiting(job)
            self.recorder.finish(job, JobResult.CANCELED, "it had not started")
            return
        if not KINDS[job.type].cancellable or job.phase in KINDS[job.type].settled:
            raise NotCancellable(f"job {job_id} is in phase {job.phase}, which must finish")
        task.cancel()

    # --- listings -------------------------------------------------------------

    async def list_machines(self) -> list[MachineInfo]:
        """Every machine: gnspawn's datasets, and directories it did not make (foreign)."""
        found = await self.inventory.all()
        latest = await self.inventory.latest_snapshots()
        # After the awaits: a job that ended meanwhile is not shown running.
        running = {job.machine: job for job in self.queue.jobs if job.state is JobState.RUNNING}
        result = []
        for name in self.inventory.names(found):
            machine = found.get(name)
            last = self.recorder.last_job.get(name, NO_JOB)
            profile, dataset = "", ""
            if machine is None:
                state = MachineState.FOREIGN
            else:
                dataset, profile = machine.dataset, machine.profile
                if machine.root is not None and not profile:
                    profile = machines.profile_of(self.config, machine.root)
                change = self.recorder.last_change.get(name, NO_JOB)
                state = _state(machine, running.get(name), change)
            result.append(
                MachineInfo(
                    name=name,
                    state=state,
                    profile=profile,
                    last_result=last.result.value,
                    path=machine_path(name),
                    dataset=dataset,
                    directory=str(machines.directory(self.config, name)),
                    last_job=last.id,
                    latest_snapshot=latest.get(dataset, ""),
                    attention=tuple(self.recorder.attention_of(name)),
                )
            )
        return result

    def list_attention(self, name: str) -> list[tuple[str, NoticeKind, str, str]]:
        """What waits for the admin on machine `name`, or on every machine ("")."""
        if name:
            machines.check_name(name)
            names = [name]
        else:
            names = sorted(self.recorder.attention)
        return [
            (machine, kind, subject, text)
            for machine in names
            for kind, subject, text in self.recorder.attention_of(machine)
        ]

    async def list_config_files(self, name: str) -> list[tuple[str, str, str]]:
        """The config files of machine `name` with a new default waiting, as its last
        job found them and still there: (path, newest default, unified diff to it)."""
        machines.check_name(name)
        root = gentoo_root(await self.inventory.machine(name))
        kinds = self.recorder.attention.get(name, {})
        paths = [item.subject for item in kinds.get(NoticeKind.CONFIG_FILE, ())]

        def look() -> list[tuple[str, str, str]]:
            return [
                (item.path, item.newest, configfiles.diff(root, item))
                for item in configfiles.waiting(root, paths)
            ]

        return await asyncio.to_thread(look)

    async def list_news(self, name: str) -> list[news.NewsItem]:
        """The news items machine `name` has not read, as its root's lists have them
        (an update adds the relevant new ones), with what each says."""
        machines.check_name(name)
        root = gentoo_root(await self.inventory.machine(name))
        return await asyncio.to_thread(news.unread, root, self.config.portage)

    async def mark_news_read(self, name: str, items: list[str], flags: int) -> None:
        """Mark news items of machine `name` read (all when `items` is empty), as
        `eselect news read` does in its root."""
        machines.check_name(name)
        news.check_names(items)
        check_flags(flags, Flags(0))
        root = gentoo_root(await self.inventory.machine(name))
        # No await from here on: no job of the machine starts while its lists change.
        if any(job.machine == name and job.state is JobState.RUNNING for job in self.queue.jobs):
            # Its rollback would bring the items back unread.
            raise Busy(f"machine {name} has a job running")
        marked = news.mark_read(root, self.config.portage, items)
        self.recorder.settled(name, NoticeKind.NEWS, {item.name for item in marked})
        for item in marked:
            log.info("%s: news item %s marked read", name, item.name)

    async def list_snapshots(self, name: str) -> list[SnapshotInfo]:
        machines.check_name(name)
        machine = await self.inventory.machine(name)
        found = await self.host.zfs.snapshots(machine.dataset)
        found += await snapshots.failed_copies(self.host.zfs, machine)
        types = self.recorder.store.types(s.job for s in found if s.job is not None)
        return [
            SnapshotInfo(s.name, s.created_usec, s.used, s.job or 0, types.get(s.job or 0, ""))
            for s in found
        ]

    async def retention_plan(self, name: str) -> list[Verdict]:
        """The machine's snapshots with whether retention keeps each, and why."""
        machines.check_name(name)
        machine = await self.inventory.machine(name)
        plan = snapshots.plan(self.host, name, await self.host.zfs.snapshots(machine.dataset))
        copies = await snapshots.failed_copies(self.host.zfs, machine)
        return [*plan, *(Verdict(s, True, snapshots.FAILED_COPY_VERDICT) for s in copies)]

    async def package_list(self, name: str, reference: str) -> PackageList:
        """The packages of machine `name` now (`reference` ""), or as recorded with one
        of its snapshots: named by its name, the job that took it, or its tag. A
        recorded list outlives its snapshot."""
        machines.check_name(name)
        machine = await self.inventory.machine(name)
        if not reference:
            return await changes.read(gentoo_root(machine))
        if not machine.dataset:
            raise NoSuchSnapshot(f"{name} is no dataset of gnspawn's: it has no snapshots")
        short = snapshots.check_reference(machine.dataset, reference)
        store = self.recorder.store
        blob = store.package_list(f"{machine.dataset}@{short}")
        if blob is None and short.isdigit() and len(short) <= 10:  # a job id, as SQLite keeps one
            blob = (store.package_list_of_job(name, int(short)) or ("", None))[1]
        if blob is None:
            found = await self.host.zfs.snapshots(machine.dataset)
            snapshot = snapshots.find(found, machine.dataset, short)
            blob = store.package_list(snapshot.full_name)
            if blob is None:
                return await changes.read_snapshot(mounted_root(machine), snapshot.name)
        return packages.decode(blob)

    async def list_packages(self, name: str, reference: str) -> list[Installed]:
        """ListPackages: as package_list, sorted by package and slot."""
        found = await self.package_list(name, reference)
        return [found[key] for key in sorted(found)]

    async def diff_packages(self, name: str, old: str, new: str) -> list[Change]:
        """What changed from one package list of machine `name` to another ("": now)."""
        return packages.diff(await self.package_list(name, old), await self.package_list(name, new))

    def changes_since(self, since_usec: int) -> list[tuple[str, Change]]:
        """What the jobs that finished since `since_usec` changed, machine by machine,
        each machine's changes netted (an update undone by a rollback is nothing). From
        the job database alone: no machine's root is read."""
        by_machine: dict[str, list[Change]] = {}
        for machine, changed in self.recorder.store.changes_since(since_usec):
            by_machine.setdefault(machine, []).extend(changed)
        return [
            (machine, change)
            for machine in sorted(by_machine)
            for change in packages.net(by_machine[machine])
        ]

    async def keep(self, name: str, reference: str, tag: str, flags: int) -> None:
        """Pin a snapshot against retention, with a tag ("": the one it has) that
        rollbacks can name it by."""
        check_flags(flags, Flags(0))
        machines.check_name(name)
        if tag:
            snapshots.check_tag(tag)
        dataset = await self.inventory.dataset(name)
        await snapshots.keep(self.host.zfs, dataset, reference, tag)

    async def unkeep(self, name: str, reference: str, flags: int) -> None:
        """Leave a kept snapshot to retention again."""
        check_flags(flags, Flags(0))
        machines.check_name(name)
        dataset = await self.inventory.dataset(name)
        await snapshots.unkeep(self.host.zfs, dataset, reference)

    def list_profiles(self) -> list[Profile]:
        return portage.profiles(self.config.portage)

    def list_jobs(self) -> list[Job]:
        """Waiting and running jobs first, then recent history, newest first."""
        history = sorted(self.recorder.history.values(), key=lambda job: -job.id)
        return [*self.queue.jobs, *history]

    def get_job(self, job_id: int) -> Job:
        job = (
            self.queue.get(job_id)
            or self.recorder.history.get(job_id)
            or self.recorder.store.get(job_id)
        )
        if job is None:
            raise NoSuchJob(f"no job {job_id}")
        return job


def _same(flags: Flags, other: Flags) -> bool:
    """Whether two requests' flags ask for the same job (FAIL_IF_BUSY is about the asking)."""
    return flags & ~Flags.FAIL_IF_BUSY == other & ~Flags.FAIL_IF_BUSY


def _changes_root(job: Job) -> bool:
    """Whether a finished job changed (or set out to change) its machine's root: the
    last such job says whether the machine is as a job left it half done."""
    if job.type is JobType.ROLLBACK:
        return job.result is JobResult.DONE  # the machine is in a known state again
    return KINDS[job.type].protected and Flags.PRETEND not in job.flags


def _state(machine: Machine, running: Job | None, change: LastJob) -> MachineState:
    """`change`: the machine's last job that changed its root."""
    if running is not None:
        return KINDS[running.type].state
    if machine.build not in ("", "done"):
        return MachineState.INCOMPLETE
    if machine.root is None or not machines.is_gentoo(machine.root):
        return MachineState.FOREIGN
    # A failure that was rolled back, or came before anything changed (before the
    # snapshot it protects its change with), left the machine as it was: ready.
    broke = (
        change.result is JobResult.FAILED
        and KINDS[change.type].protected
        and change.snapshot
        and not change.rolled_back
    )
    return MachineState.FAILED if broke else MachineState.READY
