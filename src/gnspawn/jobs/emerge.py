"""emerge for a job: its output to the journal and the bus, its progress to the job."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from gnspawn import log as journal
from gnspawn import sandbox
from gnspawn.jobs import elog
from gnspawn.jobs.context import FRESH_COUNTERS, Context, JobFailed, uncancellable
from gnspawn.names import NoticeKind, Phase
from gnspawn.portage import Progress, emerge_argv, emerge_environment, tree_revision
from gnspawn.run import CommandFailed, Process


async def emerge(
    ctx: Context,
    root: Path,
    args: Sequence[str],
    *,
    pretend: bool = False,
    phase: Phase = Phase.EMERGE,
    publish: bool = False,
) -> Progress:
    """Run emerge on `root`, confined to it, streaming its output and progress;
    JobFailed if it fails. Only a root that `publish`es writes binary packages.
    The job records the revision of the repositories it emerges from: no sync changes
    them while it runs (a sync is a barrier in the queue)."""
    config = ctx.config
    revision = await tree_revision(config.portage.repos)
    ctx.change(phase=phase, tree_revision=revision, **FRESH_COUNTERS)
    argv = emerge_argv(config.portage, root, args, pretend=pretend, publish=publish)
    env = {
        **emerge_environment(config.portage, job=ctx.job.id, tag=ctx.tag),
        **sandbox.directories(config, ctx.job.machine),
        **elog.environment(sandbox.portage_tmpdir(config)),
    }
    ctx.log(journal.INFO, "running " + " ".join(argv))
    tmpdir = sandbox.make_job_tmpdir(config, ctx.job.id)
    elog.prepare(tmpdir)
    confined = sandbox.confine(
        argv, config=config, root=root, machine=ctx.job.machine, tmpdir=tmpdir, publish=publish
    )
    proc = Process(confined, env=env, stop_timeout=config.jobs.stop_timeout, tag=ctx.tag)
    progress = Progress()
    priority = _Priorities()
    try:
        await proc.start()
    except OSError as err:
        sandbox.remove_job_tmpdir(config, ctx.job.id)
        raise JobFailed(f"cannot run {confined[0]}: {err.strerror}") from err
    try:
        async for line in proc.lines():
            ctx.log(priority(line), line)
            if journal.backlog():
                await journal.drained()
            if progress.feed(line):
                ctx.change(
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
    finally:
        await uncancellable(_done(ctx, tmpdir, progress.failed_package))
    return progress


async def _done(ctx: Context, tmpdir: Path, failed: str) -> None:
    """What an emerge leaves: its elog messages become notices (but the failed
    package's: its failure is the job's Error already); its tmpdir goes."""
    found = await asyncio.to_thread(elog.read, tmpdir)
    ctx.host.recorder.notices(
        ctx.job,
        [
            (NoticeKind.ELOG, package, message, priority)
            for package, priority, message in found
            if package != failed
        ],
    )
    await asyncio.to_thread(sandbox.remove_job_tmpdir, ctx.config, ctx.job.id)


class _Priorities:
    """The priority of each line of emerge's output: its errors are shown without
    --verbose, each once (Portage repeats them in its summary), and with the log path
    that `>>> Failed to emerge ..., Log file:` puts on a line of its own."""

    def __init__(self) -> None:
        self._errors: set[str] = set()
        self._log_path_next = False

    def __call__(self, line: str) -> int:
        if self._log_path_next and line.strip():
            self._log_path_next = False
            if line.startswith(">>>  '"):
                return journal.ERR
        if line.startswith((" * ERROR", "!!! ", ">>> Failed")):
            if line in self._errors:
                return journal.INFO
            self._errors.add(line)
            self._log_path_next = line.endswith("Log file:")
            return journal.ERR
        if line.startswith((" * WARNING", " * QA")):
            return journal.WARNING
        return journal.INFO
