"""The new config files a merge leaves beside the admin's, and what becomes of them.

Portage never overwrites a file under CONFIG_PROTECT: the package's new default goes
beside it as ._cfg0000_NAME (._cfg0001_NAME for the next, and so on), and waits for the
admin. Which files are protected, and which new ones wait, Portage itself says from the
root's configuration, confined to it (probe `config-files`). What is done about each
is `[updates] config_files`, or the admin's word for one file (ResolveConfig):

- keep: left waiting, in the job's Notices and the machine's Attention;
- replace: the newest default goes in, the admin's file stays beside it as
  ._gnspawn-JOB_NAME (a dot file: no *.d directory or glob picks it up);
- merge: a three-way merge (diff3) of the admin's file, the previous version's default
  (from the binary package in PKGDIR of the version installed before the update, or of
  the newest before the new one when that is not known) and the new default; a clean
  merge goes in as replace does, anything else is kept;
- keep, when the admin says it for one file (ResolveConfig): the admin's file stays,
  the new defaults go.

Every file operation goes through rootfs: paths are resolved inside the root.
"""

from __future__ import annotations

import asyncio
import dataclasses
import difflib
import enum
import posixpath
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gnspawn import log as journal
from gnspawn import packages, rootfs
from gnspawn.config import ConfigFilesPolicy
from gnspawn.jobs import probe
from gnspawn.jobs.context import Context, JobFailed
from gnspawn.names import NoticeKind, Phase, counted
from gnspawn.packages import PackageList

UPDATE_NAME = re.compile(r"\._cfg([0-9]{4})_(.+)")
MOST_BYTES = 1 << 20
"""Of a config file merged or shown: a bigger one is kept for the admin."""
MOST_DIFF_LINES = 2000
MOST_PENDING = 1000
"""Config files with new defaults taken from Portage's answer (its own limit too)."""
MOST_DIFFED_LINES = 5_000
"""Of each side of a diff shown: difflib's time grows faster than the lines."""


class ConfigAction(enum.StrEnum):
    """What ResolveConfig does with one pending config file."""

    KEEP = "keep"
    """Keep the admin's file; the new defaults go."""
    REPLACE = "replace"
    """The newest default goes in; the admin's file is kept beside it."""
    MERGE = "merge"
    """A three-way merge, as the merge policy does; a conflict changes nothing."""


@dataclasses.dataclass(frozen=True)
class Pending:
    """A config file with new defaults waiting beside it."""

    path: str
    """The admin's file, absolute in the root."""
    updates: tuple[str, ...]
    """The ._cfg????_ files, oldest first: the last is the newest default."""
    owner: str
    """The package version that installed the newest default (category/name-version)."""

    @property
    def newest(self) -> str:
        return self.updates[-1]

    def attention(self, machine: str) -> tuple[str, str]:
        name = posixpath.basename(self.newest)
        text = f"a new default waits in {name}: gnctl config {machine} {self.path}"
        return self.path, text


def valid_path(path: str) -> bool:
    """Whether `path` could name a config file: absolute, plain, printable."""
    return (
        path.startswith("/")
        and posixpath.normpath(path) == path
        and path != "/"
        and len(path) <= 4096
        and path.isprintable()
    )


async def find(ctx: Context, root: Path) -> list[Pending]:
    """The config files of `root` with new defaults waiting, as Portage finds them."""
    answer = await probe.ask(ctx, root, "config-files")
    return _pending(answer.get("pending"))


def _pending(found: Any) -> list[Pending]:
    """What Portage's answer names, those of it that are what they claim to be: an
    answer comes from a process the container's files steer."""
    result: list[Pending] = []
    for item in found[:MOST_PENDING] if isinstance(found, list) else []:
        if not isinstance(item, dict):
            continue
        path, updates, owner = item.get("target"), item.get("cfg"), item.get("owner", "")
        if not (isinstance(path, str) and valid_path(path) and isinstance(owner, str)):
            continue
        if not isinstance(updates, list) or not updates:
            continue
        parent, name = posixpath.split(path)
        ordered = []
        for update in updates:
            match = UPDATE_NAME.fullmatch(posixpath.basename(str(update)))
            if match and match[2] == name and posixpath.dirname(str(update)) == parent:
                ordered.append((int(match[1]), str(update)))
        if ordered:
            result.append(Pending(path, tuple(u for _, u in sorted(ordered)), owner))
    return result


async def settle(
    ctx: Context, root: Path, policy: ConfigFilesPolicy, before: PackageList | None = None
) -> bool:
    """What `[updates] config_files` says for every config file with a new default
    waiting; whether any file changed. What is left waiting is the machine's Attention.
    `before` are the root's packages before the update: a merge starts from the default
    of the version that was installed."""
    ctx.change(phase=Phase.CONFIG)
    try:
        pending = await find(ctx, root)
    except JobFailed as err:
        # The update itself is whole; only what waits beside it is unknown.
        ctx.notice(NoticeKind.CONFIG_FILE, "", f"cannot look for new config file defaults: {err}")
        return False
    waiting = counted(len(pending), "config file") if pending else "no config file"
    ctx.log(journal.INFO, f"{waiting} with a new default waiting")
    changed, left = False, []
    for item in pending:
        if policy is ConfigFilesPolicy.KEEP:
            left.append(item)
            ctx.notice(NoticeKind.CONFIG_FILE, item.path, item.attention(ctx.job.machine)[1])
            continue
        try:
            how = await apply(ctx, root, item, policy.value, before)
        except JobFailed as err:
            left.append(item)
            ctx.notice(NoticeKind.CONFIG_FILE, item.path, f"{err}; kept waiting")
            continue
        changed = True
        ctx.notice(NoticeKind.CONFIG_FILE, item.path, how, journal.NOTICE)
    ctx.stage(NoticeKind.CONFIG_FILE, [item.attention(ctx.job.machine) for item in left])
    return changed


async def apply(
    ctx: Context, root: Path, item: Pending, action: str, before: PackageList | None = None
) -> str:
    """Do `action` to one pending config file; what was done. JobFailed when it
    cannot be done, with nothing changed."""
    backup = posixpath.join(posixpath.dirname(item.path), backup_name(ctx.job.id, item.path))
    older = item.updates[:-1]
    try:
        if action == ConfigAction.KEEP:
            await asyncio.to_thread(rootfs.remove, root, item.updates)
            return "the admin's file kept, the new defaults removed"
        if action == ConfigAction.REPLACE:
            await asyncio.to_thread(
                rootfs.replace_by, root, item.path, item.newest, backup=backup, drop=older
            )
            return f"the new default put in; the admin's file kept as {backup}"
        merged = await _merge(ctx, root, item, _version_before(item.owner, before))
        await asyncio.to_thread(
            rootfs.replace_by,
            root,
            item.path,
            item.newest,
            backup=backup,
            content=merged,
            drop=older,
        )
        return f"merged with the new default; the admin's file kept as {backup}"
    except OSError as err:
        raise JobFailed(f"cannot {action} {item.path}: {err.strerror or err}") from err


def backup_name(job: int, path: str) -> str:
    return f"._gnspawn-{job}_{posixpath.basename(path)}"


def _version_before(owner: str, before: PackageList | None) -> str:
    """The version of `owner`'s package that `before` lists, "" when it is not known
    (or not one: a package of two slots)."""
    split = packages.split(owner)
    if before is None or split is None:
        return ""
    versions = {p.version for p in before.values() if p.package == split[0]}
    return versions.pop() if len(versions) == 1 else ""


async def _merge(ctx: Context, root: Path, item: Pending, was: str) -> bytes:
    """The admin's file with the changes from the previous default to the new one,
    merged by diff3 in the sandbox of the root (both files are the container's)."""
    if not item.owner:
        raise JobFailed(f"cannot merge {item.path}: no installed package owns it")
    mine = await asyncio.to_thread(rootfs.read_bytes, root, item.path, MOST_BYTES + 1)
    theirs = await asyncio.to_thread(rootfs.read_bytes, root, item.newest, MOST_BYTES + 1)
    if max(len(mine), len(theirs)) > MOST_BYTES:
        raise JobFailed(f"cannot merge {item.path}: too big")
    pkgdir = str(ctx.config.portage.pkgdir)
    answer = await probe.ask(
        ctx,
        root,
        "merge",
        item.owner,
        item.path,
        pkgdir,
        was,
        given={"mine": mine, "theirs": theirs},
        back=["merged"],
    )
    merged = answer["files"].get("merged")
    if answer.get("conflict") is not False or merged is None:
        raise JobFailed(f"cannot merge {item.path}: the changes conflict")
    ctx.log(journal.INFO, f"merged {item.path} against {answer.get('package', '?')}")
    return bytes(merged)


def diff(root: Path, item: Pending) -> str:
    """The unified diff from the admin's file to the newest default, cut short."""
    texts = []
    for path in (item.path, item.newest):
        try:
            data = rootfs.read_bytes(root, path, MOST_BYTES + 1)
        except OSError as err:
            return f"(cannot read {path}: {err.strerror or err})"
        if len(data) > MOST_BYTES or b"\0" in data:
            return f"({path} is too big or not text)"
        texts.append(data.decode(errors="replace").splitlines(keepends=True))
    if max(len(text) for text in texts) > MOST_DIFFED_LINES:
        return f"(more than {MOST_DIFFED_LINES} lines: too long to show a diff)"
    lines = list(difflib.unified_diff(texts[0], texts[1], item.path, item.newest))
    if len(lines) > MOST_DIFF_LINES:
        lines = [*lines[:MOST_DIFF_LINES], f"... {len(lines) - MOST_DIFF_LINES} more lines\n"]
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


def waiting(root: Path, paths: Sequence[str]) -> list[Pending]:
    """Which of `paths` still have new defaults waiting beside them, found by listing
    their directories in the root (no Portage needed: the names say it)."""
    result = []
    for path in paths:
        if not valid_path(path):
            continue
        parent, name = posixpath.split(path)
        try:
            names = rootfs.listdir(root, parent, 10_000)
        except OSError:
            continue
        updates = sorted(
            (int(m[1]), posixpath.join(parent, n))
            for n in names
            if (m := UPDATE_NAME.fullmatch(n)) and m[2] == name
        )
        if updates:
            result.append(Pending(path, tuple(u for _, u in updates), ""))
    return result
