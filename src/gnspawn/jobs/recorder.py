"""The recorder: the one place that changes a job, saves it and tells the bus."""

from __future__ import annotations

from typing import Any, Protocol

from gnspawn import log as journal
from gnspawn.jobs.record import PROPERTY_NAMES, Job, LastJob, Notice, now_usec
from gnspawn.jobs.store import JobStore
from gnspawn.names import JobResult, JobState, NoticeKind, job_title

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

    def __init__(self, store: JobStore, listener: Listener, history: int) -> None:
        self.store = store
        self.listener = listener
        self._keep = history
        self.history: dict[int, Job] = {job.id: job for job in store.recent(HISTORY_SHOWN)}
        """The finished jobs ListJobs shows, by id."""
        self.last_job: dict[str, LastJob] = store.last_jobs()
        """How each machine's last finished job ended."""

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

    def notice(self, job: Job, kind: NoticeKind, subject: str, text: str, priority: int) -> None:
        """Something the admin should know or decide: added to the job's Notices, and
        logged with the package or path it is about."""
        notice = Notice(kind, subject, journal.PRIORITY_NAMES[priority], text)
        self.change(job, notices=(*job.notices, notice))
        package = "" if subject.startswith("/") else subject  # a path is no package
        self.log(job, priority, f"{kind}: {subject}: {text}", package)

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
        self.last_job[job.machine] = LastJob(job.id, result, job.rolled_back)
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
