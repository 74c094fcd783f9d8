"""A job from start to end, and a job the last daemon left running, whatever happens."""

from __future__ import annotations

import asyncio
import logging

from gnspawn import log as journal
from gnspawn import sandbox
from gnspawn.errors import GnspawnError
from gnspawn.jobs.context import Context, JobFailed
from gnspawn.jobs.kinds import KINDS
from gnspawn.jobs.record import Job, now_usec
from gnspawn.names import Flags, JobResult, JobState, JobType, Phase, job_title
from gnspawn.run import kill_tagged

log = logging.getLogger(__name__)


async def run(ctx: Context, cancel_reasons: dict[int, str]) -> None:
    """Run the job and record how it ended; a cancel's reason, when it had one other than
    being asked for, is taken from `cancel_reasons`."""
    job = ctx.job
    ctx.change(state=JobState.RUNNING, started_usec=now_usec())
    try:
        if why := held(ctx):
            # The tree it was to emerge from never came, or its canary failed: nothing
            # is changed.
            result, error = JobResult.HELD, why
        else:
            result = await KINDS[job.type].run(ctx)
            error = job.error  # a kind may explain a success (what a check found)
    except asyncio.CancelledError:
        result, error = JobResult.CANCELED, cancel_reasons.pop(job.id, "")
    except GnspawnError as err:
        result, error = JobResult.FAILED, str(err)
    except Exception as err:
        log.exception("job %d failed unexpectedly", job.id)
        result, error = JobResult.FAILED, f"internal error: {err}"
    ctx.host.recorder.finish(job, result, error)


def held(ctx: Context) -> str:
    """Why the job is held, or "": a job it comes after (the job it follows, or the one
    that job follows, and so on: a cycle's updates follow their profile's canary, the
    canary its builder, and those the cycle's sync) is a sync that did not succeed, a
    builder that was held (its binhost does not answer), or the update of its profile's
    canary, which failed (unless the job goes without a canary: NO_CANARY)."""
    seen: set[int] = set()
    builder_held = ""  # the sync before a held builder, if any, says why first
    follows = ctx.job.follows
    while follows and follows not in seen:
        seen.add(follows)
        recorder = ctx.host.recorder
        before: Job | None = recorder.history.get(follows) or recorder.store.get(follows)
        if before is None:
            return builder_held
        if before.type is JobType.SYNC:
            if before.result in (JobResult.DONE, JobResult.SKIPPED):
                return builder_held
            why = f": {before.error}" if before.error else ""
            return f"the repositories were not synced (sync job {before.id} {before.result}{why})"
        if before.type is JobType.BUILDER and before.result is JobResult.HELD:
            builder_held = builder_held or f"builder job {before.id} held: {before.error}"
        if (
            before.type is JobType.UPDATE
            and before.result in (JobResult.FAILED, JobResult.CANCELED)
            and Flags.NO_CANARY not in ctx.job.flags
        ):
            why = f": {before.error}" if before.error else ""
            return f"canary {before.machine} {before.result} (job {before.id}){why}"
        follows = before.follows
    return builder_held


async def recover(ctx: Context) -> None:
    """Finish or undo what a dead daemon left of the job.

    Never raises: a recovery that cannot complete fails the job with the reason, and
    the daemon starts all the same.
    """
    job = ctx.job
    fields = journal.fields(job.id, job.machine, Phase.ROLLBACK)
    title = job_title(job.type, job.machine)
    log.warning("job %d (%s) was interrupted, recovering", job.id, title, extra=fields)
    try:
        # The emerge died with the daemon (PR_SET_PDEATHSIG); its children may not
        # have: every process started for the job carries the job's tag.
        if not await kill_tagged(ctx.tag):
            raise JobFailed(
                f"processes of job {job.id} survive SIGKILL; nothing was rolled back under them"
            )
        sandbox.remove_job_tmpdir(ctx.config, job.id)
        result, error = await KINDS[job.type].recover(ctx)
    except GnspawnError as err:
        result, error = JobResult.FAILED, f"interrupted; recovery failed: {err}"
        log.error("job %d: %s", job.id, error, extra=fields)
    except Exception as err:
        log.exception("job %d: recovery failed unexpectedly", job.id, extra=fields)
        result, error = JobResult.FAILED, f"interrupted; recovery failed: internal error: {err}"
    ctx.host.recorder.finish(job, result, error)
