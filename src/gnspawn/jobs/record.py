"""The record of one job: its fields are the Job object's properties on the bus."""

from __future__ import annotations

import dataclasses
import time
from typing import NamedTuple

from gnspawn.names import Flags, JobResult, JobState, JobType, NoticeKind, Phase
from gnspawn.packages import Change


class Notice(NamedTuple):
    """Something a job found that the admin should know or decide: `Notices a(ssss)`."""

    kind: NoticeKind
    subject: str
    """The package (category/name, with the version where it has one) or the path it
    is about."""
    priority: str
    """As syslog names it: err, warning, notice, info."""
    text: str


class Attention(NamedTuple):
    """Something that waits on a machine until the admin acts: a pending config file,
    unread news, libraries still preserved. The machine's `Attention a(ss)` shows it
    with its kind until a later job finds it gone."""

    subject: str
    """The path or package it is about, or ""."""
    text: str
    job: int
    """The job that found it."""


def now_usec() -> int:
    return time.time_ns() // 1000


@dataclasses.dataclass(eq=False)
class Job:
    """One job; its fields are the Job object's properties on the bus."""

    id: int
    type: JobType
    machine: str
    flags: Flags
    initiator_uid: int
    created_usec: int
    argument: str = ""
    """What the job works towards: the profile of a build, the snapshot of a rollback."""
    state: JobState = JobState.WAITING
    result: JobResult = JobResult.NONE
    phase: Phase = Phase.QUEUED
    progress: int = 0
    packages_done: int = 0
    packages_total: int = 0
    current_package: str = ""
    snapshot: str = ""
    rolled_back: bool = False
    error: str = ""
    pending_packages: tuple[str, ...] = ()
    """What a pretend update found to merge: the packages, as emerge --pretend names them."""
    notices: tuple[Notice, ...] = ()
    tree_revision: str = ""
    """The repositories' revision the job's emerges saw."""
    changes: tuple[Change, ...] = ()
    """What the job added, upgraded, downgraded, rebuilt and removed."""
    started_usec: int = 0
    finished_usec: int = 0
    unit_stopped: bool = False
    """A rollback stopped the machine's unit and must start it again, even after a crash."""
    follows: int = 0
    """A job that must end before this one starts (the builder job of its profile)."""

    @property
    def active(self) -> bool:
        return self.state is not JobState.FINISHED


class LastJob(NamedTuple):
    """How a machine's last finished job ended."""

    id: int
    type: JobType
    result: JobResult
    rolled_back: bool
    """The machine went back to the snapshot taken before the job: as it was before."""
    snapshot: bool
    """Whether the job names a snapshot (for an update: the one it changes the root
    under; before that, it changed nothing)."""


PROPERTY_NAMES: dict[str, str] = {
    "id": "Id",
    "type": "Type",
    "machine": "Machine",
    "state": "State",
    "result": "Result",
    "phase": "Phase",
    "progress": "Progress",
    "packages_done": "PackagesDone",
    "packages_total": "PackagesTotal",
    "current_package": "CurrentPackage",
    "snapshot": "Snapshot",
    "rolled_back": "RolledBack",
    "error": "Error",
    "pending_packages": "PendingPackages",
    "notices": "Notices",
    "tree_revision": "TreeRevision",
    "changes": "Changes",
    "follows": "Follows",
    "created_usec": "CreatedUSec",
    "started_usec": "StartedUSec",
    "finished_usec": "FinishedUSec",
    "initiator_uid": "InitiatorUID",
}
"""Job fields as bus properties; the other fields stay inside the daemon."""
