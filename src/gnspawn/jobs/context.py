"""What a job kind is, and what it works with.

A kind (one module in gnspawn.jobs.kinds) declares its type, the flags it takes, whether
it can be cancelled and the state its machine shows while it runs; it checks a request
before it is queued, runs a job, and recovers a job the last daemon left running.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar, NamedTuple, TypeVar

from gnspawn import log as journal
from gnspawn import nspawn
from gnspawn.config import Config
from gnspawn.errors import GnspawnError
from gnspawn.inventory import Inventory
from gnspawn.jobs.queue import Queue
from gnspawn.jobs.record import Job
from gnspawn.jobs.recorder import Recorder
from gnspawn.machines import Machine
from gnspawn.names import Flags, JobResult, JobType, MachineState, NoticeKind, Phase
from gnspawn.portage import job_tag
from gnspawn.services import HostServices, ServiceError, Unavailable
from gnspawn.zfs import Zfs

T = TypeVar("T")


FRESH_COUNTERS: dict[str, Any] = {
    "progress": 0,
    "packages_done": 0,
    "packages_total": 0,
    "current_package": "",
}
"""The counters of a snapshot, emerge or rollback phase that starts: none shows what the
phase before it counted. The closing phases (cleanup, a build's last configure) keep
the counts of the emerge they close."""


class JobFailed(GnspawnError):
    """A step of a job failed; the message says which and why."""


@dataclasses.dataclass(frozen=True)
class Host:
    """The daemon's parts that requests and jobs work with."""

    config: Config
    zfs: Zfs
    services: HostServices
    inventory: Inventory
    recorder: Recorder
    queue: Queue
    receiving: dict[str, Reception] = dataclasses.field(default_factory=dict)
    """The machines a sender is sending here, by name (gnspawn.receive)."""


class Reception(NamedTuple):
    """A machine being received: from `origin`, over the bus connection `sender`, for as
    long as that connection lives (a send keeps it open from PrepareReceive on)."""

    origin: str
    sender: str


@dataclasses.dataclass(frozen=True)
class Request:
    """A request for a job, its name and flags checked already."""

    name: str
    flags: Flags
    argument: str = ""
    machine: Machine | None = None
    """The machine from a listing the caller made already (UpdateAll), or None."""


@dataclasses.dataclass(frozen=True)
class Context:
    """One job and the host it runs on."""

    host: Host
    job: Job
    staged: dict[NoticeKind, list[tuple[str, str]]] = dataclasses.field(default_factory=dict)
    """What waits on the machine, found inside the job's snapshot (see stage)."""

    @property
    def config(self) -> Config:
        return self.host.config

    @property
    def zfs(self) -> Zfs:
        return self.host.zfs

    @property
    def tag(self) -> str:
        """The tag every process of the job carries, so that none outlives it unseen."""
        return job_tag(self.config.daemon.state_directory, self.job.id)

    def change(self, **changes: Any) -> None:
        self.host.recorder.change(self.job, **changes)

    def log(self, priority: int, line: str) -> None:
        self.host.recorder.log(self.job, priority, line)

    def notice(
        self, kind: NoticeKind, subject: str, text: str, priority: int = journal.WARNING
    ) -> None:
        """Tell the admin: a line in the job's Notices (kind, package or path, text)."""
        self.host.recorder.notices(self.job, [(kind, subject, text, priority)])

    def stage(self, kind: NoticeKind, found: Sequence[tuple[str, str]]) -> None:
        """What of `kind` waits on the machine once the job's change is kept: the
        machine's Attention says so only then (keep_staged), so that a rollback never
        leaves it describing a root that is gone."""
        self.staged[kind] = list(found)

    def keep_staged(self) -> None:
        """The job's change is kept: what it staged is the machine's Attention now."""
        for kind, found in self.staged.items():
            self.host.recorder.attend(self.job, kind, found)
        self.staged.clear()

    async def unit_job(
        self,
        action: Callable[[str], Awaitable[None]],
        *,
        done: str,
        unavailable: str,
        failed: str,
    ) -> None:
        """Run a systemd job on the machine's unit and log how it went; JobFailed when
        systemd says it failed. The messages name the unit as {unit} and the error as
        {err}; without systemd on the bus the step is skipped with a warning."""
        unit = nspawn.unit(self.job.machine)
        try:
            await action(unit)
        except Unavailable as err:
            self.log(journal.WARNING, unavailable.format(unit=unit, err=err))
        except ServiceError as err:
            raise JobFailed(failed.format(unit=unit, err=err)) from err
        else:
            self.log(journal.NOTICE, done.format(unit=unit))


class Kind:
    """One kind of job; each module of gnspawn.jobs.kinds defines one."""

    type: ClassVar[JobType]
    flags: ClassVar[Flags] = Flags(0)
    """The flags a request of this kind may carry."""
    cancellable: ClassVar[bool] = False
    """Whether Cancel stops it while it runs (outside its rollback phase)."""
    settled: ClassVar[frozenset[Phase]] = frozenset({Phase.ROLLBACK})
    """The phases in which Cancel is refused even so: what they do must finish."""
    state: ClassVar[MachineState]
    """What ListMachines says of the machine while the job runs."""
    protected: ClassVar[bool] = False
    """It changes a root under a snapshot it takes first (snapshots.protected), and a
    failure rolls back to that: one that did not is what leaves a machine failed."""
    joins_waiting: ClassVar[bool] = False
    """A request equal to a job of this kind that has not started yet is that job."""

    async def check(self, host: Host, request: Request) -> str:
        """Check a request against the host; the job's argument, or the error to answer."""
        await host.inventory.dataset(request.name)
        return request.argument

    async def profile(self, host: Host, request: Request, argument: str) -> str:
        """The profile whose builder root makes the binary packages this job installs,
        "" when it installs none; `argument` is what check() returned."""
        return ""

    async def run(self, ctx: Context) -> JobResult:
        raise NotImplementedError

    async def recover(self, ctx: Context) -> tuple[JobResult, str]:
        """Finish or undo what a daemon that died during run() left; repeatable."""
        raise NotImplementedError


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
