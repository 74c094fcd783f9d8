"""The recorder: the one place that changes a job, saves it and tells the bus."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any, Protocol

from gnspawn import log as journal
from gnspawn.jobs.record import PROPERTY_NAMES, Attention, Job, LastJob, Notice, now_usec
from gnspawn.jobs.store import JobStore
from gnspawn.names import JobResult, JobState, NoticeKind, job_title

MOST_NOTICES = 200
"""Notices a job keeps: more would make its Notices property a flood."""
MOST_NOTICE_TEXT = 4096

MOST_ATTENTION = 100
"""Items of one kind that wait on a machine: more are counted in the last one."""

HISTORY_SHOWN = 100
"""Finished jobs ListJobs shows after the active ones."""


class Listener(Protocol):
    """Who hears about jobs: the bus layer."""

    def job_new(self, job: Job) -> None: ...
    def job_changed(self, job: Job, changed: dict[str, Any]) -> None: ...
    def job_removed(self, job: Job) -> None: ...
    def job_log(self, job: Job, priority: int, line: str) -> None: ...


class Recorder:
    """Jobs as they are saved and shown: new ones, changes, log lines and endings."""

    def __init__(
        self,
        store: JobStore,
        listener: Listener,
        history: int,
        changes_root: Callable[[Job], bool] = lambda job: False,
    ) -> None:
        self.store = store
        self.listener = listener
        self._keep = history
        self._changes_root = changes_root
        self.history: dict[int, Job] = {job.id: job for job in store.recent(HISTORY_SHOWN)}
        """The finished jobs ListJobs shows, by id."""
        self.last_job: dict[str, LastJob] = store.last_jobs()
        """How each machine's last finished job ended."""
        self.last_change: dict[str, LastJob] = {}
        """How each machine's last finished job that changed its root ended: whether
        the machine is as a job left it half done."""
        for job in store.recent(history):
            if job.machine not in self.last_change and changes_root(job):
                self.last_change[job.machine] = _last(job)
        self.attention = store.attention()
        """What waits on each machine until the admin acts, by kind."""

    def new(self, job: Job) -> Job:
        """Save a new job: it has its id and its bus object before its first log line."""
        self.store.add(job)
        self.listener.job_new(job)
        return job

    def change(self, job: Job, **changes: Any) -> None:
        """Set job fields, save them, and tell the listener about the visible ones."""
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

    def log(self, job: Job, priority: int, line: str, package: str = "") -> None:
        """A line of the job: to the journal with the job's fields (and GNSPAWN_PACKAGE
        when it is about a package), and as LogMessage."""
        journal.job_line(line, priority, job.id, job.machine, job.phase, package=package)
        self.listener.job_log(job, priority, line)

    def notices(self, job: Job, found: Sequence[tuple[NoticeKind, str, str, int]]) -> None:
        """What the admin should know or decide, (kind, package or path, text,
        priority) each: added to the job's Notices at once, and logged with the package
        or path it is about. A job keeps MOST_NOTICES, each cut to MOST_NOTICE_TEXT:
        their text may come from a container."""
        room = MOST_NOTICES - len(job.notices)
        if not found or room <= 0:
            return
        kept = list(found[:room])
        if len(found) > room:
            kind, subject, _, _ = found[room - 1]
            more = len(found) - room + 1
            text = f"{more} more notices not kept: see the job's log"
            kept[-1] = (kind, subject, text, journal.WARNING)
        added = []
        for kind, subject, full, priority in kept:
            text = full[:MOST_NOTICE_TEXT]
            package = "" if subject.startswith("/") else subject  # a path is no package
            self.log(job, priority, f"{kind}: {subject}: {text}", package)
            added.append(Notice(kind, subject, journal.PRIORITY_NAMES[priority], text))
        self.change(job, notices=(*job.notices, *added))

    def attend(self, job: Job, kind: NoticeKind, found: Sequence[tuple[str, str]]) -> None:
        """What of `kind` waits on the job's machine now, (subject, text) each, as the
        job found it: it replaces what an earlier job found of that kind. At most
        MOST_ATTENTION items, each cut to MOST_NOTICE_TEXT: they may come from a
        container."""
        items = [
            Attention(subject[:MOST_NOTICE_TEXT], text[:MOST_NOTICE_TEXT], job.id)
            for subject, text in found[:MOST_ATTENTION]
        ]
        if len(found) > MOST_ATTENTION:
            more = len(found) - MOST_ATTENTION + 1
            items[-1] = Attention("", f"{more} more not listed: see job {job.id}", job.id)
        self._replace(job.machine, kind, tuple(items))

    def settled(self, machine: str, kind: NoticeKind, subjects: Collection[str]) -> None:
        """What the admin has dealt with outside a job (news items marked read) no longer
        waits on `machine`: the items of `kind` about `subjects` go."""
        items = self.attention.get(machine, {}).get(kind, ())
        self._replace(machine, kind, tuple(item for item in items if item.subject not in subjects))

    def _replace(self, machine: str, kind: NoticeKind, items: tuple[Attention, ...]) -> None:
        """What of `kind` waits on `machine` is now `items`: saved, when it changed."""
        kinds = self.attention.setdefault(machine, {})
        if items == kinds.get(kind, ()):
            return
        self.store.set_attention(machine, kind, items)
        if items:
            kinds[kind] = items
        else:
            kinds.pop(kind, None)

    def forget_machine(self, machine: str) -> None:
        """A machine that is gone has nothing waiting on it, and its snapshots' package
        lists went with them."""
        self.store.set_attention(machine, None, ())
        self.store.forget_package_lists(machine)
        self.attention.pop(machine, None)

    def attention_of(self, machine: str) -> list[tuple[NoticeKind, str, str]]:
        """What waits on `machine`: (kind, subject, text), kinds in a fixed order."""
        kinds = self.attention.get(machine, {})
        return [
            (kind, item.subject, item.text)
            for kind in NoticeKind
            if kind in kinds
            for item in kinds[kind]
        ]

    def finish(self, job: Job, result: JobResult, error: str = "") -> None:
        """End the job: a job that did what it was asked for is at 100%; one that failed or
        was canceled keeps the progress of the phase it ended in, and its Result says why."""
        completed = result in (JobResult.DONE, JobResult.SKIPPED)
        self.change(
            job,
            state=JobState.FINISHED,
            result=result,
            error=error,
            finished_usec=now_usec(),
            current_package="",
            **({"progress": 100} if completed else {}),
        )
        self.last_job[job.machine] = _last(job)
        if self._changes_root(job):
            self.last_change[job.machine] = _last(job)
        self.history[job.id] = job
        if len(self.history) > HISTORY_SHOWN:
            del self.history[min(self.history)]
            self.store.forget_old(self._keep)
        self.log(
            job,
            journal.ERR if result is JobResult.FAILED else journal.INFO,
            f"{job_title(job.type, job.machine)} {result}" + (f": {error}" if error else ""),
        )
        self.listener.job_removed(job)


def _last(job: Job) -> LastJob:
    return LastJob(job.id, job.type, job.result, job.rolled_back, bool(job.snapshot))
