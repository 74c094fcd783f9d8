"""Snapshots around jobs: the protected envelope, rollback, failed copies and retention."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator

from gnspawn import log as journal
from gnspawn import machines
from gnspawn.errors import InvalidTag, NoSuchSnapshot, SnapshotProtected, StorageFailed
from gnspawn.jobs import retention
from gnspawn.jobs.context import FRESH_COUNTERS, Context, Host, uncancellable
from gnspawn.machines import Machine
from gnspawn.names import (
    KEEP_PROPERTY,
    KEPT,
    SNAPSHOT_PREFIX,
    Flags,
    JobResult,
    JobType,
    Phase,
    shown,
)
from gnspawn.zfs import Snapshot, Zfs


@contextlib.asynccontextmanager
async def protected(
    ctx: Context, dataset: str, step: str = "pre", *, spent: bool = False
) -> AsyncIterator[Snapshot]:
    """Snapshot before the body; roll back to it if the body raises, cancellation included.

    `spent`: a snapshot rolled back to is then destroyed, since it is the state the
    machine is in again: failures do not fill retention with copies of one state.
    """
    job = ctx.job
    ctx.change(phase=Phase.SNAPSHOT, **FRESH_COUNTERS)
    snapshot = await ctx.zfs.snapshot(dataset, f"{SNAPSHOT_PREFIX}{job.id}-{step}", job=job.id)
    ctx.change(snapshot=snapshot.full_name)
    ctx.log(journal.NOTICE, f"snapshot {snapshot.full_name} taken")
    try:
        yield snapshot
    except BaseException:
        await uncancellable(_undo(ctx, dataset, snapshot, spent))
        raise


async def _undo(ctx: Context, dataset: str, snapshot: Snapshot, spent: bool) -> None:
    ctx.change(phase=Phase.ROLLBACK, **FRESH_COUNTERS)
    # Why is said once, in the job's last line and Error.
    ctx.log(journal.WARNING, f"rolling back to {snapshot.full_name}")
    if Flags.KEEP_FAILED in ctx.job.flags:
        await _keep_failed(ctx, dataset)
    await rollback_to(ctx.zfs, dataset, snapshot.full_name)
    ctx.change(rolled_back=True)
    ctx.log(journal.NOTICE, f"rolled back to {snapshot.full_name}")
    if spent:
        await drop_spent(ctx, snapshot.full_name)


async def drop_spent(ctx: Context, snapshot: str) -> None:
    """Destroy a gnspawn snapshot the machine was just rolled back to: it holds nothing
    the dataset does not, and it must not be the next rollback's default target."""
    await ctx.zfs.destroy(snapshot)
    ctx.log(journal.INFO, f"destroyed {snapshot}: the machine is in that state again")


async def _keep_failed(ctx: Context, dataset: str) -> None:
    """Copy the failed state aside: a snapshot newer than the target cannot survive rollback."""
    job_id = ctx.job.id
    copy = machines.failed_copy(dataset, job_id)
    try:  # a full pool must not keep the rollback from happening
        failed = await ctx.zfs.snapshot(dataset, f"{SNAPSHOT_PREFIX}{job_id}-failed", job=job_id)
        await ctx.zfs.copy(failed.full_name, copy)
        ctx.log(journal.NOTICE, f"failed state kept as {copy}@{failed.name}")
    except StorageFailed as err:
        ctx.log(journal.ERR, f"could not keep the failed state: {err}")


async def rollback_to(zfs: Zfs, dataset: str, snapshot: str) -> None:
    """Roll back, destroying newer gnspawn snapshots but never the admin's own."""
    snapshots = await zfs.snapshots(dataset)
    names = [s.full_name for s in snapshots]
    if snapshot not in names:
        raise NoSuchSnapshot(f"no snapshot {snapshot}")
    newer = snapshots[names.index(snapshot) + 1 :]
    await _check_disposable(zfs, newer)
    await zfs.rollback(snapshot, destroy_newer=bool(newer))


async def rollback_target(zfs: Zfs, dataset: str, snapshot: str) -> Snapshot:
    """The snapshot a rollback request names ("" = the newest of gnspawn's), if the
    snapshots newer than it may go."""
    snapshots = await zfs.snapshots(dataset)
    if not snapshot:
        ours = [s for s in snapshots if s.job is not None]
        if not ours:
            raise NoSuchSnapshot(f"{dataset} has no gnspawn snapshot")
        target = ours[-1]
    else:
        target = find(snapshots, dataset, snapshot)
    await _check_disposable(zfs, snapshots[snapshots.index(target) + 1 :])
    return target


_REFERENCE = re.compile(r"[A-Za-z0-9_.:+-]{1,255}")
_TAG = re.compile(r"[A-Za-z][A-Za-z0-9_.+-]{0,63}")


def check_reference(dataset: str, reference: str) -> str:
    """A snapshot's name as a request gives it (NAME or DATASET@NAME, a job id or a
    tag), without the dataset; NoSuchSnapshot for what no snapshot can be called."""
    short = reference.removeprefix(dataset + "@")
    if not _REFERENCE.fullmatch(short):
        raise NoSuchSnapshot(f"no snapshot {shown(reference)} of {dataset}")
    return short


def find(snapshots: list[Snapshot], dataset: str, reference: str) -> Snapshot:
    """The snapshot `reference` names: by its name, the id of the job that took it
    (its first, the pre snapshot), or its tag."""
    short = check_reference(dataset, reference)
    job = int(short) if short.isdigit() else None
    for found in (
        [s for s in snapshots if s.name == short],
        [s for s in snapshots if job is not None and s.job == job],
        [s for s in snapshots if s.tag == short],
    ):
        if found:
            return found[0]
    raise NoSuchSnapshot(f"no snapshot {shown(reference)} of {dataset}")


def check_tag(tag: str) -> str:
    """A tag for Keep, or InvalidTag: it starts with a letter (a job id is digits) and
    not with gnspawn- (gnspawn's snapshot names do)."""
    if not _TAG.fullmatch(tag) or tag.startswith(SNAPSHOT_PREFIX):
        raise InvalidTag(f"invalid tag {shown(tag)}")
    return tag


async def keep(zfs: Zfs, dataset: str, reference: str, tag: str) -> Snapshot:
    """Pin a snapshot against retention, with `tag` ("": the one it has, if any),
    which then names no other snapshot of the dataset (those stay kept)."""
    found = await zfs.snapshots(dataset)
    target = find(found, dataset, reference)
    tag = tag or target.tag
    for other in found:
        if tag and other.tag == tag and other != target:
            await zfs.set(other.full_name, KEEP_PROPERTY, KEPT)
    await zfs.set(target.full_name, KEEP_PROPERTY, f"{KEPT}:{tag}" if tag else KEPT)
    return target


async def unkeep(zfs: Zfs, dataset: str, reference: str) -> Snapshot:
    """Leave a snapshot to retention again; its tag goes."""
    target = find(await zfs.snapshots(dataset), dataset, reference)
    if target.kept:
        await zfs.inherit(target.full_name, KEEP_PROPERTY)
    return target


async def _check_disposable(zfs: Zfs, snapshots: list[Snapshot]) -> None:
    for snap in snapshots:
        if snap.kept:
            raise SnapshotProtected(
                f"{snap.full_name} is newer and kept ({snap.kept}); 'gnctl unkeep' it first"
            )
        if snap.job is None:
            raise SnapshotProtected(
                f"{snap.full_name} is newer and not gnspawn's; destroy or rename it first"
            )
        if clones := await zfs.clones(snap.full_name):
            raise SnapshotProtected(
                f"{snap.full_name} is newer and has clones ({', '.join(clones)})"
            )


async def undo_interrupted(ctx: Context, *, spent: bool = False) -> tuple[JobResult, str]:
    """A job that changes a root, cut short: back to the snapshot it took, if it took one
    (`spent`: then destroyed, as `protected` does)."""
    job = ctx.job
    dataset = machines.dataset(ctx.config, job.machine)
    snapshot = job.snapshot or f"{dataset}@{SNAPSHOT_PREFIX}{job.id}-pre"
    if await ctx.zfs.exists(snapshot):
        await rollback_to(ctx.zfs, dataset, snapshot)
        ctx.change(rolled_back=True)
        if spent:
            await drop_spent(ctx, snapshot)
    return JobResult.FAILED, "interrupted"


def plan(host: Host, name: str, snapshots: list[Snapshot]) -> list[retention.Verdict]:
    """Machine `name`'s snapshots with whether retention keeps each, and why."""
    dataset = machines.dataset(host.config, name)
    needed: dict[str, int] = {}
    for job in host.queue.jobs:
        if job.snapshot:
            needed[job.snapshot] = job.id
        if job.type is JobType.ROLLBACK and job.machine == name:
            needed[f"{dataset}@{job.argument}"] = job.id
    return retention.plan(snapshots, host.config.storage.keep_snapshots, needed)


async def failed_copies(zfs: Zfs, machine: Machine) -> list[Snapshot]:
    """The snapshots of the machine's failed copies, named as listings show them:
    COPY@SNAPSHOT, COPY being NAME:failed-ID."""
    found = []
    for copy in machine.failed_copies:
        short = copy.rsplit("/", 1)[-1]
        found += [s._replace(name=f"{short}@{s.name}") for s in await zfs.snapshots(copy)]
    return found


FAILED_COPY_VERDICT = (
    "a failed state kept for inspection (KEEP_FAILED): gnctl prune or remove destroys it"
)


async def drop_failed_copies(ctx: Context, copies: tuple[str, ...]) -> int:
    """Destroy the failed states KEEP_FAILED kept; how many went."""
    for copy in copies:
        await uncancellable(ctx.zfs.destroy_filesystem(copy))
        ctx.log(journal.NOTICE, f"destroyed the failed copy {copy}")
    return len(copies)


async def prune(ctx: Context, dataset: str) -> int:
    """Destroy what retention does not keep, oldest first; how many went."""
    verdicts = plan(ctx.host, ctx.job.machine, await ctx.zfs.snapshots(dataset))
    gone = 0
    for verdict in verdicts:
        if not verdict.keep:
            await ctx.zfs.destroy(verdict.snapshot.full_name)
            ctx.log(journal.NOTICE, f"pruned {verdict.snapshot.full_name}: {verdict.reason}")
            gone += 1
    return gone
