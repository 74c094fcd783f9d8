"""The steps of an update around its emerge: the fetch before the snapshot, and after
the emerge, in the same snapshot, the preserved libraries' rebuild and depclean."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from gnspawn import binhost
from gnspawn import log as journal
from gnspawn.config import DepcleanPolicy
from gnspawn.jobs.context import Context, JobFailed
from gnspawn.jobs.emerge import Refused, downloads, emerge
from gnspawn.names import NoticeKind, Phase, counted
from gnspawn.portage import PRESERVED_LIBS_REGISTRY, preserved_libraries


async def fetch(ctx: Context, root: Path, args: Sequence[str], *, publish: bool) -> None:
    """Download what the job will need while nothing has changed yet: a source that
    cannot be fetched fails the job before its snapshot, not halfway through a merge.
    A builder on a host with binhosts downloads their packages here too, each one
    signed and verified or refused (Refused: nothing of it is installed)."""
    download = downloads(ctx)
    argv = ["--fetchonly", *args]
    if not download:
        # A machine fetches no binary package: Portage would put it into PKGDIR's
        # index before it verifies it. (A builder's downloads are checked: emerge.)
        argv.insert(1, "--getbinpkg=n")
    try:
        await emerge(ctx, root, argv, phase=Phase.FETCH, publish=publish, download=download)
    except Refused:
        raise
    except JobFailed as err:
        raise JobFailed(f"fetch failed: {err}") from err


async def binrepos(ctx: Context, root: Path) -> None:
    """A builder root's binrepos.conf and keyring as the configuration has them now: its
    emerges fetch the binhosts' packages into PKGDIR, each verified."""
    try:
        await binhost.prepare(ctx.config, root)
    except binhost.BinhostError as err:
        raise JobFailed(str(err)) from err


async def rebuild_preserved(ctx: Context, root: Path, *, publish: bool) -> bool:
    """emerge @preserved-rebuild when the emerge left libraries preserved (an old soname
    that installed programs still link against); whether it ran. What stays preserved
    after it is reported."""
    if not await asyncio.to_thread(preserved_libraries, root):
        ctx.stage(NoticeKind.PRESERVED_LIBS, [])
        return False
    ctx.log(journal.NOTICE, "preserved libraries left: rebuilding the packages that use them")
    # From source: a consumer's binary package may well be the one linked against the
    # old library. --oneshot: the set stays out of world.
    args = ["--usepkg=n", "--oneshot", "@preserved-rebuild"]
    await emerge(ctx, root, args, phase=Phase.PRESERVED_REBUILD, publish=publish)
    left = []
    for package, paths in (await asyncio.to_thread(preserved_libraries, root)).items():
        text = f"still preserved after @preserved-rebuild: {', '.join(paths) or '-'}"
        subject = package or f"/{PRESERVED_LIBS_REGISTRY}"
        ctx.notice(NoticeKind.PRESERVED_LIBS, subject, text)
        left.append((subject, text))
    ctx.stage(NoticeKind.PRESERVED_LIBS, left)
    return True


async def depclean(ctx: Context, root: Path, policy: DepcleanPolicy) -> bool:
    """What `[updates] depclean` says: report the packages nothing needs any more, or
    remove them; whether it removed any. Only `apply` fails the job (and so rolls it
    back) when emerge fails: a report that cannot be made is itself reported."""
    if policy is DepcleanPolicy.OFF:
        return False
    report = policy is DepcleanPolicy.REPORT
    try:
        progress = await emerge(ctx, root, ["--depclean"], pretend=report, phase=Phase.DEPCLEAN)
    except JobFailed as err:
        if not report:
            raise JobFailed(f"depclean failed: {err}") from err
        ctx.notice(NoticeKind.DEPCLEAN, "", f"emerge --depclean --pretend failed: {err}")
        return False
    for package in progress.selected:
        if report:
            text = "nothing needs it: emerge --depclean would remove it"
        else:
            text = "removed by emerge --depclean: nothing needed it"
        ctx.notice(NoticeKind.DEPCLEAN, package, text, journal.NOTICE)
    if progress.selected:
        verb = "would remove" if report else "removed"
        ctx.log(journal.NOTICE, f"depclean {verb} {counted(len(progress.selected), 'package')}")
    return not report and bool(progress.selected)
