"""emerge for a job: its output to the journal and the bus, its progress to the job."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

from gnspawn import binhost, sandbox
from gnspawn import log as journal
from gnspawn.jobs import elog
from gnspawn.jobs.context import FRESH_COUNTERS, Context, JobFailed, uncancellable
from gnspawn.names import JobType, NoticeKind, Phase
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
    download: bool = False,
) -> Progress:
    """Run emerge on `root`, confined to it, streaming its output and progress;
    JobFailed if it fails (Refused if Portage refused a binary package). Only a root
    that `publish`es writes binary packages. The job records the revision of the
    repositories it emerges from: no sync changes them while it runs (a sync is a
    barrier in the queue).

    A builder root's emerge fetches from the binhosts only to `download` (see
    downloads()); every other emerge of a builder root installs from PKGDIR alone."""
    config = ctx.config
    revision = await tree_revision(config.portage.repos)
    ctx.change(phase=phase, tree_revision=revision, **FRESH_COUNTERS)
    builder = publish and ctx.job.type is JobType.BUILDER
    argv = emerge_argv(
        config.portage,
        root,
        args,
        pretend=pretend,
        publish=publish,
        getbinpkg=download if builder else None,
    )
    env = {
        **emerge_environment(config.portage, job=ctx.job.id, tag=ctx.tag),
        **sandbox.directories(config, ctx.job.machine),
        **elog.environment(sandbox.portage_tmpdir(config)),
    }
    if download and config.portage.binrepos:  # [portage] binhost is not verified
        # Portage checks the signatures a package has; this makes it refuse one that
        # has none (inject() reads each download before it indexes it).
        env["FEATURES"] = f"{env.get('FEATURES', '')} binpkg-request-signature".lstrip()
    ctx.log(journal.INFO, "running " + " ".join(argv))
    tmpdir = sandbox.make_job_tmpdir(config, ctx.job.id)
    unpublished = ""
    elog.prepare(tmpdir)
    progress = Progress()
    priority = _Priorities()

    async def line(text: str) -> None:
        ctx.log(priority(text), text)
        if journal.backlog():
            await journal.drained()
        if progress.feed(text):
            ctx.change(
                progress=progress.percent,
                packages_done=progress.done,
                packages_total=progress.total,
                current_package=progress.current,
            )

    started = time.time()
    if publish and config.binhost.publish and not pretend:
        await asyncio.to_thread(binhost.begin, config, ctx.job.id, started)
    failure: JobFailed | None = None
    try:
        await confined(ctx, root, argv, env=env, tmpdir=tmpdir, publish=publish, line=line)
    except CommandFailed as err:
        failed = Refused if progress.refused else JobFailed
        failure = failed(progress.failure(err.message))
    finally:
        # What it built is in PKGDIR whether it succeeded or not, and is signed; what
        # Portage refused is removed.
        unpublished = await uncancellable(
            _after(ctx, tmpdir, progress, started, pretend=pretend, publish=publish)
        )
    if unpublished:
        # Not Refused: a refused package that could not be removed must stop the job.
        raise JobFailed(f"{failure}; {unpublished}" if failure else unpublished) from failure
    if failure is not None:
        raise failure
    return progress


class Refused(JobFailed):
    """Portage refused a binary package: its signature is missing or does not verify."""


def downloads(ctx: Context) -> bool:
    """Whether the job's fetch downloads from the binhosts: a builder's, on a host that
    has any. It does so before the job's snapshot, in an emerge of its own that refuses
    the unsigned packages of `[portage] binrepos`; the builder's other emerges do not
    fetch. (`[portage] binhost`, PORTAGE_BINHOST, is not verified.)"""
    portage = ctx.config.portage
    return ctx.job.type is JobType.BUILDER and bool(portage.binrepos or portage.binhost)


async def confined(
    ctx: Context,
    root: Path,
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    tmpdir: Path,
    line: Callable[[str], Awaitable[None]],
    publish: bool = False,
    network: bool = True,
) -> None:
    """Run `argv` in the sandbox of `root` with the job's `tmpdir` as its
    PORTAGE_TMPDIR, each line of its output to `line`; CommandFailed if it fails,
    JobFailed if it cannot start. It is stopped with the job."""
    wrapped = sandbox.confine(
        argv,
        config=ctx.config,
        root=root,
        machine=ctx.job.machine,
        tmpdir=tmpdir,
        publish=publish,
        network=network,
    )
    proc = Process(wrapped, env=env, stop_timeout=ctx.config.jobs.stop_timeout, tag=ctx.tag)
    try:
        await proc.start()
    except OSError as err:
        raise JobFailed(f"cannot run {wrapped[0]}: {err.strerror}") from err
    try:
        async for text in proc.lines():
            await line(text)
        await proc.wait()
    except CommandFailed:
        raise
    except BaseException:
        await uncancellable(proc.stop())
        raise


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


async def _after(
    ctx: Context,
    tmpdir: Path,
    progress: Progress,
    since: float,
    *,
    pretend: bool,
    publish: bool,
) -> str:
    """What follows every emerge, in one piece that a second cancel does not cut."""
    await _done(ctx, tmpdir, progress.failed_package)
    return await _published(ctx, progress, since, pretend) if publish else ""


async def _published(ctx: Context, progress: Progress, since: float, pretend: bool) -> str:
    """What an emerge that publishes leaves in PKGDIR made right: a refused download
    removed, and on a host that publishes, the packages it built signed and the index
    brought up to date. Why that failed, or "" (it is also logged)."""
    if progress.refused:
        try:
            await binhost.discard(ctx.config, progress.refused)
        except binhost.BinhostError as err:
            ctx.log(journal.ERR, str(err))
            return str(err)
    if pretend or not ctx.config.binhost.publish:
        return ""
    try:
        count = await binhost.publish_since(ctx.config, ctx.job.id, since)
    except binhost.BinhostError as err:
        ctx.log(journal.ERR, str(err))
        return str(err)
    if count:
        ctx.log(journal.INFO, f"signed {count} binary packages and updated the index")
    return ""


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
