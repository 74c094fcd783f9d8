"""Sync: `emaint sync` of the configured repositories, the tree every container binds.

A sync belongs to no machine (its machine is ""). The queue runs it alone: it starts
when no other job runs, and no job queued after it starts before it ends, so that no
emerge reads a tree that changes under it.
"""

from __future__ import annotations

import re

from gnspawn import log as journal
from gnspawn import portage
from gnspawn.jobs.context import Context, Host, JobFailed, Kind, Request, uncancellable
from gnspawn.names import JobResult, JobType, MachineState, Phase
from gnspawn.run import CommandFailed, Process

_COLOUR = re.compile(r"\x1b\[[0-9;]*m")
"""Portage colours some of emaint's messages even with NOCOLOR."""
_ERROR = re.compile(r"^(?:fatal: |error: |!!! )")
"""The lines of git and Portage that say why a sync failed."""
_WARNING = re.compile(r"^ \* ")
"""Portage's notices: news to read, a newer Portage, a repository not found."""


class Sync(Kind):
    type = JobType.SYNC
    cancellable = True
    state = MachineState.READY
    """Never shown: no machine has the name ""."""
    joins_waiting = True

    async def check(self, host: Host, request: Request) -> str:
        return ""  # no machine to look at

    async def run(self, ctx: Context) -> JobResult:
        ctx.change(phase=Phase.SYNC)
        repos = ctx.config.portage.repos
        if not repos:
            ctx.log(journal.NOTICE, "no repositories are configured ([portage] repos)")
            return JobResult.SKIPPED
        for repo in repos:
            await _sync(ctx, portage.repository_name(repo))
        revision = await portage.tree_revision(repos)
        ctx.change(tree_revision=revision)
        ctx.log(journal.NOTICE, f"the repositories are at {revision or 'an unknown revision'}")
        return JobResult.DONE

    async def recover(self, ctx: Context) -> tuple[JobResult, str]:
        # Nothing to roll back: the next sync picks the repository up where this one
        # stopped (git and rsync both do).
        return JobResult.FAILED, "interrupted; the repositories may be partly synced"


async def _sync(ctx: Context, repository: str) -> None:
    """emaint sync of one repository, its output streamed to the job's log; JobFailed
    with git's or Portage's own reason when it fails."""
    config = ctx.config
    argv = portage.emaint_argv(config.portage, repository)
    env = portage.emerge_environment(config.portage, job=ctx.job.id, tag=ctx.tag)
    ctx.log(journal.INFO, "running " + " ".join(argv))
    proc = Process(argv, env=env, stop_timeout=config.jobs.stop_timeout, tag=ctx.tag)
    try:
        await proc.start()
    except OSError as err:
        raise JobFailed(f"cannot run {argv[0]}: {err.strerror}") from err
    errors: list[str] = []
    warnings: list[str] = []
    try:
        async for raw in proc.lines():
            line = _COLOUR.sub("", raw)
            priority = journal.INFO
            if _ERROR.match(line):
                errors.append(line.strip(" *!"))
                priority = journal.ERR
            elif _WARNING.match(line):
                warnings.append(line.strip(" *!"))
                priority = journal.WARNING
            ctx.log(priority, line)
            if journal.backlog():
                await journal.drained()
        await proc.wait()
    except CommandFailed as err:
        reason = next(iter(errors or warnings), err.message)
        raise JobFailed(f"emaint sync of repository {repository}: {reason}") from err
    except BaseException:
        await uncancellable(proc.stop())
        raise
