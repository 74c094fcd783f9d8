"""The manager: what every bus method does, and how each kind of job runs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, NamedTuple, Protocol, TypeVar

from gnspawn import log as journal
from gnspawn import machines, nspawn, portage, retention
from gnspawn.config import Config
from gnspawn.errors import (
    Busy,
    GnspawnError,
    InvalidArgs,
    MachineExists,
    NoSuchJob,
    NoSuchMachine,
    NoSuchProfile,
    NoSuchSnapshot,
    NotCancellable,
    NotGentoo,
    SnapshotProtected,
    StorageFailed,
)
from gnspawn.jobs import PROPERTY_NAMES, Job, JobStore, now_usec
from gnspawn.machines import Machine, MachineInfo
from gnspawn.names import (
    BUILD_PROPERTY,
    PROFILE_PROPERTY,
    SNAPSHOT_PREFIX,
    Flags,
    JobResult,
    JobState,
    JobType,
    Phase,
    machine_path,
    shown,
)
from gnspawn.portage import Profile, Progress, emerge_argv, emerge_environment, job_tag
from gnspawn.queue import Queue
from gnspawn.run import CommandFailed, Process, kill_tagged
from gnspawn.services import HostServices, ServiceError, Unavailable
from gnspawn.zfs import Snapshot, Zfs

log = logging.getLogger(__name__)
T = TypeVar("T")

KNOWN_FLAGS = Flags.FAIL_IF_BUSY | Flags.KEEP_FAILED | Flags.PRETEND
BUILD_FLAGS = Flags.FAIL_IF_BUSY | Flags.KEEP_FAILED | Flags.RESUME
BUILD_STEPS = ("created", "configured", "emerge-nodeps", "emerge", "done")
"""A build's steps in order; the dataset's org.gnspawn:build names the last one finished."""
RUNNING_STATES = {
    JobType.UPDATE: "updating",
    JobType.BUILD: "building",
    JobType.ROLLBACK: "rolling-back",
    JobType.REMOVE: "removing",
    JobType.PRUNE: "pruning",
}
HISTORY_SHOWN = 100
"""Finished jobs ListJobs shows after the active ones."""


class Listener(Protocol):
    """Who hears about jobs: the bus layer."""

    def job_new(self, job: Job) -> None: ...
    def job_changed(self, job: Job, changed: dict[str, Any]) -> None: ...
    def job_removed(self, job: Job) -> None: ...
    def job_log(self, job: Job, priority: int, line: str) -> None: ...


class SnapshotInfo(NamedTuple):
    """A row of ListSnapshots: `(sttus)`."""

    name: str
    created_usec: int
    used: int
    job: int
    job_type: str


class JobFailed(GnspawnError):
    """A step of a job failed; the message says which and why."""


def check_flags(flags: int, allowed: Flags = KNOWN_FLAGS) -> Flags:
    """The flags, or InvalidArgs naming the bits that are not known."""
    unknown = flags & ~int(allowed)
    if unknown:
        raise InvalidArgs(f"unknown flags 0x{unknown:x}")
    return Flags(flags)


async def uncancellable(work: Awaitable[T]) -> T:
    """Finish `work` even if the caller is cancelled meanwhile, then pass the cancel on."""
    task = asyncio.ensure_future(work)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                raise
            cancelled = True
            continue
        if cancelled:
            raise asyncio.CancelledError
        return result


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
        self.store = store
        self.zfs = zfs
        self.listener = listener
        self.services = services or HostServices(None)
        self.queue = Queue(config.jobs.max_parallel, self._run, self._queue_changed)
        self._history: dict[int, Job] = {}
        self._last_job: dict[str, tuple[int, JobResult]] = {}
        self._listing: asyncio.Future[dict[str, Machine]] | None = None
        self._cancel_reason: dict[int, str] = {}
        self._runners: dict[JobType, Callable[[Job], Coroutine[Any, Any, JobResult]]] = {
            JobType.UPDATE: self._run_update,
            JobType.ROLLBACK: self._run_rollback,
            JobType.BUILD: self._run_build,
            JobType.REMOVE: self._run_remove,
            JobType.PRUNE: self._run_prune,
        }
        self._recoverers: dict[
            JobType, Callable[[Job], Coroutine[Any, Any, tuple[JobResult, str]]]
        ] = {
            JobType.UPDATE: self._recover_changes,
            JobType.BUILD: self._recover_changes,
            JobType.ROLLBACK: self._recover_rollback,
            JobType.REMOVE: self._recover_remove,
            JobType.PRUNE: self._recover_prune,
        }
        self.on_queue_changed: Callable[[], None] = lambda: None

    def _queue_changed(self) -> None:
        # on_queue_changed is set after construction, by the bus layer and the daemon.
        self.on_queue_changed()

    # --- life --------------------------------------------------------------

    async def start(self) -> None:
        """Recover from the last run, then start the waiting jobs in their order."""
        self._last_job = self.store.last_jobs()
        for job in self.store.recent(HISTORY_SHOWN):
            self._history[job.id] = job
        waiting = []
        for job in self.store.active():
            if job.state is JobState.RUNNING:
                await self._recover(job)
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
                self._cancel_reason[job.id] = "the daemon was stopped"
                task.cancel()
        await self.queue.drain()

    async def _recover(self, job: Job) -> None:
        """A job the last daemon left running: finish or undo what it was doing.

        Never raises: a recovery that cannot complete fails the job with the reason,
        and the daemon starts all the same.
        """
        fields = journal.fields(job.id, job.machine, Phase.ROLLBACK)
        log.warning(
            "job %d (%s of %s) was interrupted, recovering",
            job.id,
            job.type,
            job.machine,
            extra=fields,
        )
        try:
            # The emerge died with the daemon (PR_SET_PDEATHSIG); its children may not
            # have: every process started for the job carries the job's tag.
            if not await kill_tagged(self._tag(job)):
                raise JobFailed(
                    f"processes of job {job.id} survive SIGKILL; nothing was rolled back under them"
                )
            result, error = await self._recoverers[job.type](job)
        except GnspawnError as err:
            result, error = JobResult.FAILED, f"interrupted; recovery failed: {err}"
            log.error("job %d: %s", job.id, error, extra=fields)
        except Exception as err:
            log.exception("job %d: recovery failed unexpectedly", job.id, extra=fields)
            result, error = JobResult.FAILED, f"interrupted; recovery failed: internal error: {err}"
        self._finish(job, result, error)

    async def _recover_changes(self, job: Job) -> tuple[JobResult, str]:
        """An update or build: back to the snapshot it took, if it took one."""
        dataset = machines.dataset(self.config, job.machine)
        snapshot = job.snapshot or f"{dataset}@{SNAPSHOT_PREFIX}{job.id}-pre"
        if await self.zfs.exists(snapshot):
            await self._rollback_to(dataset, snapshot)
            self._change(job, rolled_back=True)
        return JobResult.FAILED, "interrupted"

    async def _recover_remove(self, job: Job) -> tuple[JobResult, str]:
        """A remove is repeated until done; a dataset already gone is done."""
        await self._remove(job, machines.dataset(self.config, job.machine))
        return JobResult.DONE, ""

    async def _recover_rollback(self, job: Job) -> tuple[JobResult, str]:
        """A rollback is finished (it is what the caller asked for), and the unit it
        stopped is started again."""
        dataset = machines.dataset(self.config, job.machine)
        await self._rollback_to(dataset, f"{dataset}@{job.argument}")
        self._change(job, rolled_back=True)
        if job.unit_stopped:
            unit = f"systemd-nspawn@{job.machine}.service"
            try:
                await self.services.start(unit)
            except ServiceError as err:
                raise JobFailed(f"rolled back, but starting {unit} again failed: {err}") from err
            except Unavailable as err:
                self._log(job, journal.WARNING, f"not starting {unit} again: {err}")
            self._change(job, unit_stopped=False)
        return JobResult.DONE, ""

    async def _recover_prune(self, job: Job) -> tuple[JobResult, str]:
        """A prune is run again: retention decides the same way twice."""
        return await self._run_prune(job), ""

    # --- the bus API --------------------------------------------------------

    async def update(
        self, name: str, flags: int, *, uid: int, follows: int = 0, machine: Machine | None = None
    ) -> Job:
        """Queue an update, or return the machine's update that is still waiting.

        `machine` is the machine from a listing the caller made already (UpdateAll).
        """
        machines.check_name(name)
        checked = check_flags(flags)
        _gentoo(machine or await self._machine(name))
        if Flags.FAIL_IF_BUSY in checked and self.queue.busy(name):
            raise Busy(f"machine {name} has a job waiting or running")
        # Like systemd's jobs: a request equal to one that has not started yet is that one.
        waiting = self.queue.waiting_job(name, JobType.UPDATE)
        if (
            waiting is not None
            and waiting.flags & ~Flags.FAIL_IF_BUSY == checked & ~Flags.FAIL_IF_BUSY
        ):
            return waiting
        return self._submit(JobType.UPDATE, name, checked, uid, follows=follows)

    async def update_all(self, flags: int, *, uid: int) -> list[tuple[str, Job | None]]:
        """One update per Gentoo machine, in an order that compiles each package once.

        Machines that are not Gentoo roots, or are busy with FAIL_IF_BUSY, come back
        with no job. The first machine of each profile runs first; the others of that
        profile wait for it and install the binary packages it built.
        """
        checked = check_flags(flags, KNOWN_FLAGS | Flags.SCHEDULED)
        if Flags.SCHEDULED in checked:
            policy = self.config.updates.policy
            log.info("scheduled update of all machines, policy %s", policy)
            if policy == "none":
                return []
            if policy == "check":
                checked |= Flags.PRETEND
        checked &= ~Flags.SCHEDULED
        found = await self._machines()
        result: list[tuple[str, Job | None]] = []
        leaders: dict[str, Job] = {}
        for name in sorted({*found, *self._foreign_directories(found)}):
            machine = found.get(name)
            if machine is None or machine.root is None or not machines.is_gentoo(machine.root):
                log.info("update-all: skipping %s, not a Gentoo root", name)
                result.append((name, None))
                continue
            profile = machine.profile or machines.profile_of(self.config, machine.root)
            leader = leaders.get(profile)
            follows = leader.id if leader and Flags.PRETEND not in checked else 0
            try:
                job = await self.update(name, checked, uid=uid, follows=follows, machine=machine)
            except Busy:
                log.info("update-all: skipping %s, busy", name)
                result.append((name, None))
                continue
            leaders.setdefault(profile, job)
            result.append((name, job))
        return result

    async def build(self, name: str, profile: str, flags: int, *, uid: int) -> Job:
        """Queue the build of a new machine, or the rest of an incomplete one (RESUME)."""
        machines.check_name(name)
        checked = check_flags(flags, BUILD_FLAGS)
        for job in self.queue.jobs:
            if job.machine == name and job.type is JobType.BUILD:
                raise MachineExists(f"machine {name} is being built by job {job.id}")
        if Flags.RESUME in checked:
            machine = (await self._machines()).get(name)
            if machine is None or not machine.dataset:
                raise NoSuchMachine(f"no machine {name} to resume")
            if machine.build in ("", "done"):
                raise MachineExists(f"machine {name} is complete; there is nothing to resume")
            profile = profile or machine.profile
        else:
            await self._check_free(name)
        profile = profile or self._default_profile(name)
        if portage.resolve_profile(self.config.portage, profile) is None:
            raise NoSuchProfile(f"no profile {shown(profile)} in {self._repositories()}")
        if Flags.FAIL_IF_BUSY in checked and self.queue.busy(name):
            raise Busy(f"machine {name} has a job waiting or running")
        return self._submit(JobType.BUILD, name, checked, uid, argument=profile)

    async def remove(self, name: str, flags: int, *, uid: int) -> Job:
        """Queue the removal of a machine: its dataset, snapshots and .nspawn file."""
        machines.check_name(name)
        checked = check_flags(flags, Flags.FAIL_IF_BUSY)
        await self._dataset(name)
        await self._check_not_running(name)
        if Flags.FAIL_IF_BUSY in checked and self.queue.busy(name):
            raise Busy(f"machine {name} has a job waiting or running")
        return self._submit(JobType.REMOVE, name, checked, uid)

    async def prune(self, name: str, flags: int, *, uid: int) -> Job:
        """Queue the pruning of a machine's snapshots by retention."""
        machines.check_name(name)
        check_flags(flags, Flags(0))
        await self._dataset(name)
        return self._submit(JobType.PRUNE, name, Flags(0), uid)

    def list_profiles(self) -> list[Profile]:
        return portage.profiles(self.config.portage)

    async def rollback(self, name: str, snapshot: str, flags: int, *, uid: int) -> Job:
        """Queue a rollback to `snapshot` ("" = the newest gnspawn snapshot)."""
        machines.check_name(name)
        checked = check_flags(flags, Flags.FAIL_IF_BUSY)
        dataset = await self._dataset(name)
        target = await self._rollback_target(dataset, snapshot)
        if Flags.FAIL_IF_BUSY in checked and self.queue.busy(name):
            raise Busy(f"machine {name} has a job waiting or running")
        return self._submit(JobType.ROLLBACK, name, checked, uid, argument=target.name)

    async def list_machines(self) -> list[MachineInfo]:
        """Every machine: gnspawn's datasets, and directories it did not make (foreign)."""
        running = {job.machine: job for job in self.queue.jobs if job.state is JobState.RUNNING}
        found = await self._machines()
        latest = await self._latest_snapshots()
        result = []
        for name in sorted({*found, *self._foreign_directories(found)}):
            machine = found.get(name)
            last_id, last_result = self._last_job.get(name, (0, JobResult.NONE))
            if machine is None:
                state, profile, dataset = "foreign", "", ""
            else:
                dataset = machine.dataset
                profile = machine.profile
                if machine.root is not None and not profile:
                    profile = machines.profile_of(self.config, machine.root)
                if (job := running.get(name)) is not None:
                    state = RUNNING_STATES[job.type]
                elif machine.build not in ("", "done"):
                    state = "incomplete"
                elif machine.root is None or not machines.is_gentoo(machine.root):
                    state = "foreign"
                else:
                    state = "failed" if last_result is JobResult.FAILED else "ready"
            result.append(
                MachineInfo(
                    name=name,
                    state=state,
                    profile=profile,
                    last_result=last_result.value,
                    path=machine_path(name),
                    dataset=dataset,
                    directory=str(machines.directory(self.config, name)),
                    last_job=last_id,
                    latest_snapshot=latest.get(dataset, ""),
                )
            )
        return result

    async def list_snapshots(self, name: str) -> list[SnapshotInfo]:
        machines.check_name(name)
        snapshots = await self.zfs.snapshots(await self._dataset(name))
        types = self.store.types(s.job for s in snapshots if s.job is not None)
        return [
            SnapshotInfo(
                s.name,
                s.created_usec,
                s.used,
                s.job or 0,
                types[s.job].value if s.job in types else "",
            )
            for s in snapshots
        ]

    def list_jobs(self) -> list[Job]:
        """Waiting and running jobs first, then recent history, newest first."""
        history = sorted(self._history.values(), key=lambda job: -job.id)
        return [*self.queue.jobs, *history]

    def get_job(self, job_id: int) -> Job:
        job = self.queue.get(job_id) or self._history.get(job_id) or self.store.get(job_id)
        if job is None:
            raise NoSuchJob(f"no job {job_id}")
        return job

    def cancel(self, job_id: int) -> None:
        job = self.get_job(job_id)
        if not job.active:
            raise NotCancellable(f"job {job_id} has finished ({job.result})")
        task = self.queue.task(job)
        if task is None:
            self.queue.remove_waiting(job)
            self._finish(job, JobResult.CANCELED, "canceled before it started")
            return
        if job.type not in (JobType.UPDATE, JobType.BUILD) or job.phase is Phase.ROLLBACK:
            raise NotCancellable(f"job {job_id} is in phase {job.phase}, which must finish")
        self._cancel_reason[job.id] = "canceled"
        task.cancel()

    # --- jobs ---------------------------------------------------------------

    def _submit(
        self,
        kind: JobType,
        name: str,
        flags: Flags,
        uid: int,
        *,
        argument: str = "",
        follows: int = 0,
    ) -> Job:
        job = self.store.add(
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
        self.listener.job_new(job)  # the job's object exists before its first LogMessage
        self._log(job, journal.INFO, f"queued {kind} of {name}")
        self.queue.add(job)
        return job

    def _change(self, job: Job, **changes: Any) -> None:
        """Set job fields, persist them, and tell the listener about visible ones."""
        changed = {key: value for key, value in changes.items() if getattr(job, key) != value}
        if not changed:
            return
        for key, value in changed.items():
            setattr(job, key, value)
        self.store.save(job, changed)
        visible = {
            PROPERTY_NAMES[key]: value for key, value in changed.items() if key in PROPERTY_NAMES
        }
        if visible:
            self.listener.job_changed(job, visible)

    def _finish(self, job: Job, result: JobResult, error: str = "") -> None:
        self._change(
            job,
            state=JobState.FINISHED,
            result=result,
            error=error,
            finished_usec=now_usec(),
            current_package="",
        )
        self._last_job[job.machine] = (job.id, result)
        self._history[job.id] = job
        if len(self._history) > HISTORY_SHOWN:
            del self._history[min(self._history)]
            self.store.forget_old(self.config.jobs.history)
        self._log(
            job,
            journal.ERR if result is JobResult.FAILED else journal.INFO,
            f"{job.type} of {job.machine} {result}" + (f": {error}" if error else ""),
        )
        self.listener.job_removed(job)

    def _tag(self, job: Job) -> str:
        return job_tag(self.config.daemon.state_directory, job.id)

    def _log(self, job: Job, priority: int, line: str) -> None:
        journal.job_line(line, priority, job.id, job.machine, job.phase)
        self.listener.job_log(job, priority, line)

    async def _run(self, job: Job) -> None:
        self._change(job, state=JobState.RUNNING, started_usec=now_usec())
        try:
            result = await self._runners[job.type](job)
            error = job.error  # a runner may explain a success (what a check found)
        except asyncio.CancelledError:
            result, error = JobResult.CANCELED, self._cancel_reason.pop(job.id, "canceled")
        except GnspawnError as err:
            result, error = JobResult.FAILED, str(err)
        except Exception as err:
            log.exception("job %d failed unexpectedly", job.id)
            result, error = JobResult.FAILED, f"internal error: {err}"
        self._finish(job, result, error)

    async def _run_update(self, job: Job) -> JobResult:
        machine = await self._machine(job.machine, fresh=True)
        dataset, root = machine.dataset, _gentoo(machine)
        args = self.config.portage.update_args
        if Flags.PRETEND in job.flags:
            progress = await self._emerge(job, root, args, pretend=True)
            if not progress.pending:
                self._log(job, journal.INFO, "nothing pending")
                return JobResult.SKIPPED
            pending = f"{len(progress.pending)} packages pending: " + " ".join(progress.pending)
            self._log(job, journal.NOTICE, pending)
            self._change(job, error=pending)
            return JobResult.DONE
        async with self._protected(job, dataset) as snapshot:
            progress = await self._emerge(job, root, args)
        if progress.nothing_to_merge and progress.done == 0:
            # Nothing changed: a snapshot equal to the dataset would only push real
            # restore points out of retention.
            await self.zfs.destroy(snapshot.full_name)
            self._change(job, snapshot="")
            return JobResult.SKIPPED
        self._change(job, phase=Phase.CLEANUP)
        await self._prune(job, dataset)
        if self.config.updates.restart:
            await self._restart(job)
        return JobResult.DONE

    async def _restart(self, job: Job) -> None:
        unit = f"systemd-nspawn@{job.machine}.service"
        try:
            await self.services.try_restart(unit)
        except Unavailable as err:
            self._log(job, journal.WARNING, f"not restarting {unit}: {err}")
        except ServiceError as err:
            raise JobFailed(f"updated, but restarting {unit} failed: {err}") from err
        else:
            self._log(job, journal.NOTICE, f"restarted {unit} if it was running")

    async def _run_rollback(self, job: Job) -> JobResult:
        dataset = await self._dataset(job.machine, fresh=True)
        target = f"{dataset}@{job.argument}"
        unit = f"systemd-nspawn@{job.machine}.service"
        self._change(job, phase=Phase.ROLLBACK, snapshot=target)
        try:
            async with self.services.stopped(unit) as was_active:
                if was_active:
                    # Saved before the rollback: recovery starts the unit again.
                    self._change(job, unit_stopped=True)
                    self._log(job, journal.NOTICE, f"stopped {unit} for the rollback")
                await uncancellable(self._rollback_to(dataset, target))
                self._change(job, rolled_back=True)
        except (ServiceError, Unavailable) as err:
            raise JobFailed(f"stopping or starting {unit} failed: {err}") from err
        if was_active:
            self._change(job, unit_stopped=False)
            self._log(job, journal.NOTICE, f"started {unit} again")
        await self._prune(job, dataset)
        return JobResult.DONE

    async def _run_prune(self, job: Job) -> JobResult:
        dataset = await self._dataset(job.machine, fresh=True)
        self._change(job, phase=Phase.CLEANUP)
        return JobResult.DONE if await self._prune(job, dataset) else JobResult.SKIPPED

    async def _run_build(self, job: Job) -> JobResult:
        name = job.machine
        dataset = machines.dataset(self.config, name)
        profile = portage.resolve_profile(self.config.portage, job.argument)
        if profile is None:
            raise NoSuchProfile(f"no profile {shown(job.argument)} in {self._repositories()}")
        done = ""
        if Flags.RESUME in job.flags:
            done = (await self._machine(name, fresh=True)).build
            self._log(job, journal.NOTICE, f"resuming after step {done or 'none'}")
        if not done:
            self._change(job, phase=Phase.CONFIGURE)
            root = machines.directory(self.config, name)
            await self.zfs.create(
                dataset, root, {BUILD_PROPERTY: "created", PROFILE_PROPERTY: job.argument}
            )
            self._log(job, journal.NOTICE, f"created {dataset} at {root}")
            done = "created"
        root = await self._mounted_root(name, fresh=True)
        if done == "created":
            self._change(job, phase=Phase.CONFIGURE)
            portage.write_config(self.config.portage, root, profile)
            self._log(job, journal.INFO, f"wrote {root}/etc/portage for profile {job.argument}")
            done = await self._step_done(dataset, "configured")
        args = self.config.portage.build_args
        passes = (
            ("emerge-nodeps", [*args, "--nodeps"], Phase.EMERGE_NODEPS),
            ("emerge", list(args), Phase.EMERGE),
        )
        for step, argv, phase in passes:
            if BUILD_STEPS.index(done) >= BUILD_STEPS.index(step):
                continue
            async with self._protected(job, dataset, step):
                await self._emerge(job, root, argv, phase=phase)
            done = await self._step_done(dataset, step)
        self._change(job, phase=Phase.CONFIGURE)
        if done != "done":
            path = nspawn.write_settings(self.config.nspawn, name)
            self._log(job, journal.NOTICE, f"wrote {path}")
            done = await self._step_done(dataset, "done")
        if self.config.nspawn.enable:
            await self._enable(job, name)
        return JobResult.DONE

    async def _step_done(self, dataset: str, step: str) -> str:
        # A user property is not part of a snapshot: a rollback keeps what finished.
        await self.zfs.set(dataset, BUILD_PROPERTY, step)
        return step

    async def _enable(self, job: Job, name: str) -> None:
        unit = f"systemd-nspawn@{name}.service"
        try:
            await self.services.enable_and_start(unit)
        except Unavailable as err:
            self._log(job, journal.WARNING, f"not starting {unit}: {err}")
            return
        except ServiceError as err:
            raise JobFailed(f"could not enable and start {unit}: {err}") from err
        self._log(job, journal.NOTICE, f"enabled and started {unit}")

    async def _run_remove(self, job: Job) -> JobResult:
        await self._remove(job, await self._dataset(job.machine, fresh=True))
        return JobResult.DONE

    async def _remove(self, job: Job, dataset: str) -> None:
        """Destroy the dataset, its snapshots and the .nspawn file; what is gone already
        stays gone, so this can be repeated after a crash."""
        name = job.machine
        await self._check_not_running(name)
        self._change(job, phase=Phase.CLEANUP)
        settings = nspawn.settings_path(self.config.nspawn, name)
        if settings.exists() or settings.is_symlink():
            settings.unlink()
            self._log(job, journal.NOTICE, f"removed {settings}")
        if await self.zfs.exists(dataset):
            await uncancellable(self.zfs.destroy_filesystem(dataset))
            self._log(job, journal.NOTICE, f"destroyed {dataset} with its snapshots")
        with contextlib.suppress(OSError):
            machines.directory(self.config, name).rmdir()

    @contextlib.asynccontextmanager
    async def _protected(
        self, job: Job, dataset: str, step: str = "pre"
    ) -> AsyncIterator[Snapshot]:
        """Snapshot before the body; roll back to it if the body raises, cancellation included."""
        self._change(job, phase=Phase.SNAPSHOT)
        snapshot = await self.zfs.snapshot(dataset, f"{SNAPSHOT_PREFIX}{job.id}-{step}", job=job.id)
        self._change(job, snapshot=snapshot.full_name)
        self._log(job, journal.NOTICE, f"snapshot {snapshot.full_name} taken")
        try:
            yield snapshot
        except BaseException as err:
            await uncancellable(self._undo(job, dataset, snapshot, err))
            raise

    async def _undo(self, job: Job, dataset: str, snapshot: Snapshot, err: BaseException) -> None:
        self._change(job, phase=Phase.ROLLBACK)
        why = "canceled" if isinstance(err, asyncio.CancelledError) else str(err)
        self._log(job, journal.WARNING, f"rolling back to {snapshot.full_name}: {why}")
        if Flags.KEEP_FAILED in job.flags:
            await self._keep_failed(job, dataset)
        await self._rollback_to(dataset, snapshot.full_name)
        self._change(job, rolled_back=True)
        self._log(job, journal.NOTICE, f"rolled back to {snapshot.full_name}")

    async def _keep_failed(self, job: Job, dataset: str) -> None:
        """Copy the failed state aside: a snapshot newer than the target cannot survive rollback."""
        failed = await self.zfs.snapshot(dataset, f"{SNAPSHOT_PREFIX}{job.id}-failed", job=job.id)
        copy = f"{dataset}:failed-{job.id}"
        try:
            await self.zfs.copy(failed.full_name, copy)
            self._log(job, journal.NOTICE, f"failed state kept as {copy}@{failed.name}")
        except StorageFailed as err:
            self._log(job, journal.ERR, f"could not keep the failed state: {err}")

    async def _rollback_to(self, dataset: str, snapshot: str) -> None:
        """Roll back, destroying newer gnspawn snapshots but never the admin's own."""
        snapshots = await self.zfs.snapshots(dataset)
        names = [s.full_name for s in snapshots]
        if snapshot not in names:
            raise NoSuchSnapshot(f"no snapshot {snapshot}")
        newer = snapshots[names.index(snapshot) + 1 :]
        await self._check_disposable(newer)
        await self.zfs.rollback(snapshot, destroy_newer=bool(newer))

    async def _check_disposable(self, snapshots: list[Snapshot]) -> None:
        for snap in snapshots:
            if snap.job is None:
                raise SnapshotProtected(
                    f"{snap.full_name} is newer and not gnspawn's; destroy or rename it first"
                )
            if clones := await self.zfs.clones(snap.full_name):
                raise SnapshotProtected(
                    f"{snap.full_name} is newer and has clones ({', '.join(clones)})"
                )

    async def _rollback_target(self, dataset: str, snapshot: str) -> Snapshot:
        snapshots = await self.zfs.snapshots(dataset)
        if not snapshot:
            ours = [s for s in snapshots if s.job is not None]
            if not ours:
                raise NoSuchSnapshot(f"{dataset} has no gnspawn snapshot")
            target = ours[-1]
        else:
            short = snapshot.removeprefix(dataset + "@")
            found = [s for s in snapshots if s.name == short]
            if "@" in short or "/" in short or not found:
                raise NoSuchSnapshot(f"no snapshot {shown(snapshot)} of {dataset}")
            target = found[0]
        await self._check_disposable(snapshots[snapshots.index(target) + 1 :])
        return target

    async def retention_plan(self, name: str) -> list[retention.Verdict]:
        """The machine's snapshots with whether retention keeps each, and why."""
        machines.check_name(name)
        return self._plan(
            await self._dataset(name), await self.zfs.snapshots(machines.dataset(self.config, name))
        )

    def _plan(self, dataset: str, snapshots: list[Snapshot]) -> list[retention.Verdict]:
        needed = {job.snapshot: job.id for job in self.queue.jobs if job.snapshot}
        needed.update(
            {
                f"{dataset}@{job.argument}": job.id
                for job in self.queue.jobs
                if job.type is JobType.ROLLBACK and job.machine == dataset.rsplit("/", 1)[-1]
            }
        )
        return retention.plan(snapshots, self.config.storage.keep_snapshots, needed)

    async def _prune(self, job: Job, dataset: str) -> int:
        """Destroy what retention does not keep, oldest first; how many went."""
        verdicts = self._plan(dataset, await self.zfs.snapshots(dataset))
        gone = 0
        for verdict in verdicts:
            if not verdict.keep:
                await self.zfs.destroy(verdict.snapshot.full_name)
                self._log(
                    job, journal.NOTICE, f"pruned {verdict.snapshot.full_name}: {verdict.reason}"
                )
                gone += 1
        return gone

    async def _emerge(
        self,
        job: Job,
        root: Path,
        args: tuple[str, ...] | list[str],
        *,
        pretend: bool = False,
        phase: Phase = Phase.EMERGE,
    ) -> Progress:
        """Run emerge for a job, streaming its output and progress."""
        self._change(job, phase=phase)
        argv = emerge_argv(self.config.portage, root, args, pretend=pretend)
        tag = self._tag(job)
        env = emerge_environment(self.config.portage, job=job.id, tag=tag)
        self._log(job, journal.INFO, "running " + " ".join(argv))
        proc = Process(argv, env=env, stop_timeout=self.config.jobs.stop_timeout, tag=tag)
        progress = Progress()
        try:
            await proc.start()
        except OSError as err:
            raise JobFailed(f"cannot run {argv[0]}: {err.strerror}") from err
        try:
            async for line in proc.lines():
                self._log(job, _priority(line), line)
                if journal.backlog():
                    await journal.drained()
                if progress.feed(line):
                    self._change(
                        job,
                        progress=progress.percent,
                        packages_done=progress.done,
                        packages_total=progress.total,
                        current_package=progress.current,
                    )
            await proc.wait()
        except CommandFailed as err:
            raise JobFailed(progress.failure(err.message)) from err
        except BaseException:
            await uncancellable(proc.stop())
            raise
        return progress

    # --- machines -----------------------------------------------------------

    async def _machine(self, name: str, *, fresh: bool = False) -> Machine:
        """The machine from the listing requests share, or (`fresh`, for a job that
        starts) from one zfs call on its own dataset: never a listing per job."""
        if fresh:
            machine = await self._lookup(name)
        else:
            machine = (await self._machines()).get(name)
        if machine is None:
            dataset = machines.dataset(self.config, name)
            raise NoSuchMachine(f"no machine {name} (no dataset {dataset})")
        return machine

    async def _dataset(self, name: str, *, fresh: bool = False) -> str:
        return (await self._machine(name, fresh=fresh)).dataset

    async def _mounted_root(self, name: str, *, fresh: bool = False) -> Path:
        return _root(await self._machine(name, fresh=fresh))

    async def _gentoo_root(self, name: str, *, fresh: bool = False) -> Path:
        return _gentoo(await self._machine(name, fresh=fresh))

    async def _lookup(self, name: str) -> Machine | None:
        dataset = machines.dataset(self.config, name)
        props = await self.zfs.filesystem(dataset, [BUILD_PROPERTY, PROFILE_PROPERTY])
        return None if props is None else _machine_of(name, dataset, props)

    async def _machines(self) -> dict[str, Machine]:
        """Every machine dataset below [storage] dataset.

        Calls that come while a listing runs share it: a burst of a thousand requests
        costs one zfs call, not a thousand.
        """
        if self._listing is None or self._listing.done():
            self._listing = asyncio.ensure_future(self._list_machines())
        return await asyncio.shield(self._listing)

    async def _list_machines(self) -> dict[str, Machine]:
        parent = self.config.storage.dataset
        if not await self.zfs.exists(parent):
            return {}
        found = await self.zfs.machines(parent, [BUILD_PROPERTY, PROFILE_PROPERTY])
        prefix = parent + "/"
        result = {}
        for dataset, props in sorted(found.items()):
            name = dataset.removeprefix(prefix)
            if machines.valid_name(name):
                result[name] = _machine_of(name, dataset, props)
        return result

    def _foreign_directories(self, found: dict[str, Machine]) -> list[str]:
        """Directories in machines_directory that are no dataset of ours: shown, never touched."""
        try:
            entries = list(self.config.storage.machines_directory.iterdir())
        except OSError:
            return []
        return [
            entry.name
            for entry in entries
            if entry.name not in found and machines.valid_name(entry.name) and entry.is_dir()
        ]

    async def _latest_snapshots(self) -> dict[str, str]:
        """Each dataset's newest snapshot, in one zfs call."""
        parent = self.config.storage.dataset
        latest: dict[str, str] = {}
        with contextlib.suppress(StorageFailed):
            for snapshot in await self.zfs.all_snapshots(parent):
                dataset, _, short = snapshot.partition("@")
                latest[dataset] = short
        return latest

    async def _check_free(self, name: str) -> None:
        """MachineExists unless no dataset, directory or .nspawn file has this name."""
        dataset = machines.dataset(self.config, name)
        directory = machines.directory(self.config, name)
        settings = nspawn.settings_path(self.config.nspawn, name)
        if await self.zfs.exists(dataset):
            raise MachineExists(f"machine {name} exists (dataset {dataset})")
        for path in (directory, settings):
            if path.exists() or path.is_symlink():
                raise MachineExists(f"{path} exists")

    async def _check_not_running(self, name: str) -> None:
        if await self.services.machine_running(name):
            raise Busy(f"machine {name} is running; stop it first (machinectl poweroff {name})")

    def _default_profile(self, name: str) -> str:
        override = self.config.machines.get(name)
        return (
            override.profile
            if override and override.profile
            else self.config.portage.default_profile
        )

    def _repositories(self) -> str:
        return ", ".join(str(repo) for repo in self.config.portage.repos) or "no repositories"


def _machine_of(name: str, dataset: str, props: dict[str, str]) -> Machine:
    build, profile = props.get(BUILD_PROPERTY, "-"), props.get(PROFILE_PROPERTY, "-")
    return Machine(
        name=name,
        dataset=dataset,
        root=Path(props["root"]) if props["root"] else None,
        build="" if build == "-" else build,
        profile="" if profile == "-" else profile,
    )


def _root(machine: Machine) -> Path:
    if machine.root is None:
        raise NoSuchMachine(f"dataset {machine.dataset} of machine {machine.name} is not mounted")
    return machine.root


def _gentoo(machine: Machine) -> Path:
    root = _root(machine)
    if not machines.is_gentoo(root):
        raise NotGentoo(f"{root} has no etc/gentoo-release")
    return root


def _priority(line: str) -> int:
    if line.startswith((" * ERROR", "!!! ", ">>> Failed")):
        return journal.ERR
    if line.startswith((" * WARNING", " * QA")):
        return journal.WARNING
    return journal.INFO
