"""The packages of a root, recorded with each snapshot a job takes, and what the job
changed: its Changes."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gnspawn import log as journal
from gnspawn import packages, rootfs
from gnspawn.errors import NoPackageRecord
from gnspawn.jobs.context import Context
from gnspawn.names import change_summary
from gnspawn.packages import PackageList


async def read(root: Path) -> PackageList:
    """The packages of a root, read off the event loop."""
    return await asyncio.to_thread(packages.read, root)


SNAPSHOT_DIRECTORY = ".zfs/snapshot"
"""Where ZFS shows each snapshot's files, when the dataset's snapdir allows it."""


async def read_snapshot(root: Path, name: str) -> PackageList:
    """The packages in a snapshot no list was recorded with (the admin's own), read
    through its files; NoPackageRecord when the storage does not show them. Resolved
    inside the root like every path of it: a planted .zfs shows only the container's
    own files."""
    base = f"{SNAPSHOT_DIRECTORY}/{name}"

    def look() -> PackageList | None:
        try:
            rootfs.listdir(root, base, 1)
        except OSError:
            return None
        return packages.read(root, base)

    found = await asyncio.to_thread(look)
    if found is None:
        raise NoPackageRecord(f"no package list was recorded with {name}, nor can it be read")
    return found


async def record(ctx: Context, snapshot: str, root: Path) -> PackageList:
    """The root's packages, recorded in the job database with `snapshot` (just taken,
    `dataset@name`): a diff needs them after the snapshot is gone."""
    found = await read(root)
    ctx.host.recorder.store.add_package_list(
        snapshot, ctx.job.machine, ctx.job.id, packages.encode(found)
    )
    return found


async def settle(ctx: Context, before: PackageList, root: Path) -> None:
    """The job's Changes: from `before` to what the root holds now."""
    changed = packages.diff(before, await read(root))
    ctx.change(changes=tuple(changed))
    if changed:
        # INFO: gnctl's summary of the job says it; the journal keeps it with the job.
        ctx.log(journal.INFO, f"packages: {change_summary(c.action for c in changed)}")
