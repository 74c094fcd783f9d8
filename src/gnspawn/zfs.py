"""ZFS through the `zfs` command, in the syntax both OpenZFS and zfs-fuse accept."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from gnspawn.errors import StorageFailed
from gnspawn.names import JOB_PROPERTY, KEEP_PROPERTY, SENT_PROPERTY
from gnspawn.run import CommandFailed, pipeline, run

log = logging.getLogger(__name__)


class Snapshot(NamedTuple):
    """A snapshot of one dataset, oldest first in listings."""

    name: str
    """The part after '@'."""
    dataset: str
    created_usec: int
    used: int
    job: int | None
    """The gnspawn job that took it; None for the admin's own."""
    kept: str = ""
    """Its org.gnspawn:keep: "" when retention may prune it, else `pinned` or
    `pinned:TAG`."""
    sent: str = ""
    """Its org.gnspawn:sent: the hosts whose newest copy of the machine it is, or ""."""

    @property
    def sent_to(self) -> list[str]:
        """The hosts whose newest copy of the machine this snapshot is."""
        return self.sent.split()

    @property
    def tag(self) -> str:
        """The tag a kept snapshot has, or ""."""
        return self.kept.partition(":")[2]

    @property
    def full_name(self) -> str:
        return f"{self.dataset}@{self.name}"


class Zfs:
    """The datasets and snapshots gnspawn manages."""

    def __init__(self, command: str = "zfs") -> None:
        self.command = command

    async def _zfs(self, *args: str) -> str:
        try:
            return await run([self.command, *args])
        except CommandFailed as err:
            raise StorageFailed(err.message) from err
        except OSError as err:
            raise StorageFailed(f"cannot run {self.command}: {err.strerror}") from err

    async def _get(
        self, dataset: str, properties: Sequence[str], *, recursive: bool
    ) -> list[list[str]]:
        args = ["get", "-H", "-p", "-o", "name,property,value"]
        if recursive:
            args.append("-r")
        out = await self._zfs(*args, ",".join(properties), "--", dataset)
        return [line.split("\t") for line in out.splitlines() if line]

    async def exists(self, dataset: str) -> bool:
        """Whether the dataset (or snapshot) exists; any other failure of zfs raises.

        The zfs command exits 1 for every failure: its message is the only thing that
        tells a missing dataset from a pool that cannot be read.
        """
        try:
            await run([self.command, "list", "-H", "-o", "name", "--", dataset])
        except CommandFailed as err:
            if "does not exist" in err.output:
                return False
            raise StorageFailed(err.message) from err
        except OSError as err:
            raise StorageFailed(f"cannot run {self.command}: {err.strerror}") from err
        return True

    async def create(self, dataset: str, mountpoint: Path, properties: dict[str, str]) -> None:
        options = []
        for key, value in {"mountpoint": str(mountpoint), **properties}.items():
            options += ["-o", f"{key}={value}"]
        await self._zfs("create", *options, "--", dataset)

    async def destroy_filesystem(self, dataset: str) -> None:
        """Destroy a filesystem with its snapshots.

        zfs-fuse reports a filesystem whose files were used as busy until it is
        unmounted through its mountpoint property; OpenZFS accepts either way.
        """
        mountpoint = (await self._get(dataset, ["mountpoint"], recursive=False))[0][2]
        await self._zfs("set", "mountpoint=none", dataset)
        try:
            await self._zfs("destroy", "-r", "--", dataset)
        except StorageFailed:
            await self._zfs("set", f"mountpoint={mountpoint}", dataset)
            raise

    async def machines(self, parent: str, properties: Sequence[str]) -> dict[str, dict[str, str]]:
        """The filesystems directly below `parent` with the given properties, plus where
        each is mounted ("root", empty when not mounted): one zfs call for them all."""
        wanted = ["type", "mountpoint", "mounted", *properties]
        args = ["get", "-H", "-p", "-r", "-d", "1", "-o", "name,property,value"]
        out = await self._zfs(*args, ",".join(wanted), "--", parent)
        props: dict[str, dict[str, str]] = {}
        for line in out.splitlines():
            name, prop, value = line.split("\t")
            props.setdefault(name, {})[prop] = value
        result = {}
        for name, values in props.items():
            if name == parent or values.get("type") != "filesystem":
                continue
            mounted = values.get("mounted") == "yes" and values.get("mountpoint", "").startswith(
                "/"
            )
            values["root"] = values["mountpoint"] if mounted else ""
            result[name] = values
        return result

    async def filesystem(self, dataset: str, properties: Sequence[str]) -> dict[str, str] | None:
        """One filesystem's properties as `machines` gives them, None when it does not
        exist: one zfs call on that dataset alone."""
        wanted = ["type", "mountpoint", "mounted", *properties]
        try:
            out = await run(
                [
                    self.command,
                    "get",
                    "-H",
                    "-p",
                    "-o",
                    "property,value",
                    ",".join(wanted),
                    "--",
                    dataset,
                ]
            )
        except CommandFailed as err:
            if "does not exist" in err.output:
                return None
            raise StorageFailed(err.message) from err
        except OSError as err:
            raise StorageFailed(f"cannot run {self.command}: {err.strerror}") from err
        values = dict(line.split("\t", 1) for line in out.splitlines() if line)
        if values.get("type") != "filesystem":
            return None
        mounted = values.get("mounted") == "yes" and values.get("mountpoint", "").startswith("/")
        values["root"] = values["mountpoint"] if mounted else ""
        return values

    async def snapshot(self, dataset: str, name: str, *, job: int) -> Snapshot:
        """Take `dataset@name`, tagged with the job that took it."""
        full = f"{dataset}@{name}"
        await self._zfs("snapshot", "-o", f"{JOB_PROPERTY}={job}", "--", full)
        log.debug("snapshot %s taken", full)
        return Snapshot(name, dataset, 0, 0, job)

    async def snapshots(self, dataset: str) -> list[Snapshot]:
        """Every snapshot of `dataset`, oldest first, gnspawn's and the admin's own."""
        rows = await self._get(
            dataset,
            ["creation", "used", JOB_PROPERTY, KEEP_PROPERTY, SENT_PROPERTY],
            recursive=True,
        )
        found: dict[str, dict[str, str]] = {}
        prefix = dataset + "@"
        for name, prop, value in rows:
            if name.startswith(prefix):
                found.setdefault(name, {})[prop] = value
        result = []
        # zfs lists snapshots in creation (txg) order: keep it, creation has 1 s resolution.
        for name, props in found.items():
            job = props.get(JOB_PROPERTY, "-")
            kept = props.get(KEEP_PROPERTY, "-")
            sent = props.get(SENT_PROPERTY, "-")
            result.append(
                Snapshot(
                    name=name[len(prefix) :],
                    dataset=dataset,
                    created_usec=int(props.get("creation", "0")) * 1_000_000,
                    used=int(props.get("used", "0")),
                    job=int(job) if job.isdigit() else None,
                    kept="" if kept == "-" else kept,
                    sent="" if sent == "-" else sent,
                )
            )
        return result

    async def all_snapshots(self, parent: str) -> list[str]:
        """The names of all snapshots below `parent`, oldest first per dataset."""
        out = await self._zfs("list", "-H", "-t", "snapshot", "-o", "name", "-r", "--", parent)
        return [name for name in out.splitlines() if name]

    async def clones(self, snapshot: str) -> list[str]:
        """Filesystems cloned from `snapshot` (zfs-fuse has no `clones` property)."""
        pool = snapshot.split("/", 1)[0].split("@", 1)[0]
        rows = await self._get(pool, ["origin"], recursive=True)
        return [name for name, _, origin in rows if origin == snapshot]

    async def rollback(self, snapshot: str, *, destroy_newer: bool = False) -> None:
        """Roll back to `snapshot`; with destroy_newer, snapshots after it go."""
        await self._zfs("rollback", *(["-r"] if destroy_newer else []), "--", snapshot)
        log.debug("rolled back to %s", snapshot)

    async def destroy(self, name: str, *, recursive: bool = False) -> None:
        await self._zfs("destroy", *(["-r"] if recursive else []), "--", name)

    async def copy(self, snapshot: str, target: str) -> None:
        """Copy `snapshot` into a new, unmounted filesystem `target`."""
        try:
            await pipeline(
                [self.command, "send", "--", snapshot],
                [self.command, "receive", "-u", "--", target],
            )
        except CommandFailed as err:
            raise StorageFailed(err.message) from err

    async def inherit(self, dataset: str, prop: str) -> None:
        """Unset a user property (of a dataset or a snapshot)."""
        await self._zfs("inherit", prop, dataset)

    async def set(self, dataset: str, prop: str, value: str) -> None:
        # zfs-fuse's `set` takes no "--"; dataset names are validated before they get here.
        await self._zfs("set", f"{prop}={value}", dataset)

    async def rename(self, dataset: str, new: str) -> None:
        await self._zfs("rename", dataset, new)

    async def get(self, dataset: str, prop: str) -> str:
        """One property's value ("-" when a user property is not set)."""
        return (await self._get(dataset, [prop], recursive=False))[0][2]

    async def encrypted(self, dataset: str) -> bool:
        """Whether the dataset uses native encryption (OpenZFS); zfs-fuse has no such
        property, and a storage without it has no encrypted dataset."""
        try:
            value = await self.get(dataset, "encryption")
        except StorageFailed:
            return False
        return value not in ("off", "-", "")

    async def locked(self, dataset: str) -> bool:
        """Whether the dataset is encrypted and its key not loaded (a raw receive
        leaves it so); False on a storage without native encryption."""
        try:
            return await self.get(dataset, "keystatus") == "unavailable"
        except StorageFailed:
            return False

    def send_argv(self, snapshot: str, *, since: str = "", raw: bool = False) -> list[str]:
        """`zfs send` of `snapshot`: whole, or the snapshots after `since` up to it
        (-I); raw (-w) keeps an encrypted dataset's blocks encrypted on the way."""
        argv = [self.command, "send"]
        if raw:
            argv.append("-w")
        if since:
            argv += ["-I", since]
        return [*argv, snapshot]
