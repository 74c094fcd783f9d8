"""The queue: one job at a time per machine, in order; machines in parallel up to a limit.

A sync is a barrier: it starts when no other job runs, and no job queued after it
starts until it has ended.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from gnspawn.jobs.record import Job
from gnspawn.names import JobState, JobType

log = logging.getLogger(__name__)


class Queue:
    """Waiting and running jobs, and the tasks that run them."""

    def __init__(
        self,
        max_parallel: int,
        run: Callable[[Job], Coroutine[Any, Any, None]],
        changed: Callable[[], None],
    ) -> None:
        self.max_parallel = max_parallel
        self._run = run
        self._changed = changed
        self._jobs: dict[int, Job] = {}
        self._by_machine: dict[str, dict[int, Job]] = {}
        """The same jobs by machine: a fleet's requests each look at their machine's only."""
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self.paused = False

    @property
    def jobs(self) -> list[Job]:
        """Waiting and running jobs in queue order."""
        return list(self._jobs.values())

    @property
    def running(self) -> int:
        return len(self._tasks)

    @property
    def waiting(self) -> int:
        return len(self._jobs) - len(self._tasks)

    def get(self, job_id: int) -> Job | None:
        return self._jobs.get(job_id)

    def add(self, job: Job) -> None:
        """Queue a job (ids grow, so insertion order is queue order) and start what can."""
        self._jobs[job.id] = job
        self._by_machine.setdefault(job.machine, {})[job.id] = job
        self.schedule()
        self._changed()

    def busy(self, machine: str) -> bool:
        """Whether the machine has a job waiting or running."""
        return bool(self._by_machine.get(machine))

    def waiting_job(self, machine: str, kind: JobType) -> Job | None:
        """The machine's job of this type that has not started yet."""
        for job in self._by_machine.get(machine, {}).values():
            if job.type is kind and job.state is JobState.WAITING:
                return job
        return None

    def active_job(self, machine: str, kind: JobType, follows: int | None = None) -> Job | None:
        """The machine's job of this type that is waiting or running (and follows the
        job `follows`, when given)."""
        for job in self._by_machine.get(machine, {}).values():
            if job.type is kind and follows in (None, job.follows):
                return job
        return None

    def schedule(self) -> None:
        """Start every waiting job whose machine is free, while slots are free, up to the
        first sync: that one starts when nothing else runs."""
        if self.paused:
            return
        seen: set[str] = set()
        for job in self._jobs.values():
            if job.type is JobType.SYNC:
                if job.id not in self._tasks and self.running == 0:
                    self._start(job)
                break  # what was queued after it waits for the tree it brings
            if self.running >= self.max_parallel:
                break
            # An earlier job of the same machine, waiting or running, goes first.
            if job.machine in seen:
                continue
            seen.add(job.machine)
            if job.follows in self._jobs:
                continue  # waits for the job that builds its binary packages
            if job.id not in self._tasks and job.state is JobState.WAITING:
                self._start(job)

    def _start(self, job: Job) -> None:
        task = asyncio.get_running_loop().create_task(self._run(job), name=f"job-{job.id}")
        self._tasks[job.id] = task
        task.add_done_callback(lambda _: self._done(job))

    def _forget(self, job: Job) -> None:
        self._jobs.pop(job.id, None)
        jobs = self._by_machine.get(job.machine, {})
        jobs.pop(job.id, None)
        if not jobs:
            self._by_machine.pop(job.machine, None)

    def _done(self, job: Job) -> None:
        self._tasks.pop(job.id, None)
        self._forget(job)
        self.schedule()
        self._changed()

    def remove_waiting(self, job: Job) -> None:
        """Drop a job that has not started."""
        assert job.id not in self._tasks
        self._forget(job)
        self.schedule()
        self._changed()

    def task(self, job: Job) -> asyncio.Task[None] | None:
        return self._tasks.get(job.id)

    async def drain(self) -> None:
        """Stop starting jobs and wait for the running ones to end."""
        self.paused = True
        tasks = list(self._tasks.values())
        if tasks:
            await asyncio.wait(tasks)
