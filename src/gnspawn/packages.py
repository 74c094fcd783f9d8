"""The packages installed in a root, as its vdb (var/db/pkg) records them, and what
changed between two such lists.

The vdb is the container's: whoever is root in it may plant thousands of entries,
symlinks or FIFOs there. It is read through rootfs (never out of the root), every file
with a size bound, and at most MOST_PACKAGES entries.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import NamedTuple

from gnspawn import rootfs
from gnspawn.names import ChangeAction

VDB = "var/db/pkg"
MOST_PACKAGES = 10_000
"""Entries read from a vdb; a real root has a few thousand at most. With the limits
per file below, a hostile vdb costs at most about 50 MB while it is read."""
MOST_CATEGORIES = 1_000
MOST_FIELD = 256
"""Bytes read of SLOT, repository and BUILD_TIME."""
MOST_USE = 4_096
"""Bytes read of USE: a real package's enabled flags take a few hundred."""
_FILES = {"SLOT": MOST_FIELD, "repository": MOST_FIELD, "BUILD_TIME": MOST_FIELD, "USE": MOST_USE}

_CATEGORY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9+_.-]{0,63}")
_VERSION = r"[0-9]+(?:\.[0-9]+)*[a-z]?(?:_(?:alpha|beta|pre|rc|p)[0-9]*)*(?:-r[0-9]+)?"
_PF = re.compile(rf"(?P<name>[A-Za-z0-9_][A-Za-z0-9+_-]{{0,99}}?)-(?P<version>{_VERSION})")
_VERSION_PARTS = re.compile(
    r"(?P<numbers>[0-9]+(?:\.[0-9]+)*)(?P<letter>[a-z]?)"
    r"(?P<suffixes>(?:_(?:alpha|beta|pre|rc|p)[0-9]*)*)(?:-r(?P<revision>[0-9]+))?"
)
_SUFFIX_ORDER = {"alpha": 0, "beta": 1, "pre": 2, "rc": 3, "p": 5}
_NO_SUFFIX = (4, 0)


class Installed(NamedTuple):
    """One installed package, as the vdb records it."""

    package: str
    """category/name."""
    version: str
    """With its revision: 1.2-r1."""
    slot: str
    """The slot without its sub-slot."""
    repository: str
    build_time: str
    use: str
    """The enabled USE flags, sorted, blank-separated."""

    @property
    def key(self) -> str:
        """category/name:slot: what two lists are compared by."""
        return f"{self.package}:{self.slot}"


class Change(NamedTuple):
    """A package that changed between two lists: `a(ssss)` of Changes and DiffPackages."""

    action: ChangeAction
    package: str
    """category/name:slot."""
    old: str
    """The old version ("" for one added)."""
    new: str
    """The new version ("" for one removed)."""


PackageList = dict[str, Installed]
"""A root's packages by key."""


def split(cpv: str) -> tuple[str, str] | None:
    """category/name and version of "category/name-version", or None."""
    category, _, pf = cpv.partition("/")
    match = _PF.fullmatch(pf)
    if not category or match is None:
        return None
    return f"{category}/{match['name']}", match["version"]


def read(root: Path, base: str = "") -> PackageList:
    """The packages the vdb of `root` records (of the tree at `base` inside it: a
    snapshot's .zfs/snapshot/NAME); an empty list for a root without one."""
    vdb = f"{base}/{VDB}".lstrip("/")
    try:
        categories = rootfs.listdir(root, vdb, MOST_CATEGORIES)
    except OSError:
        return {}
    entries: list[tuple[str, re.Match[str]]] = []
    room = MOST_PACKAGES
    for category in sorted(categories):
        if not _CATEGORY.fullmatch(category) or room <= 0:
            continue
        try:
            names = rootfs.listdir(root, f"{vdb}/{category}", room)
        except OSError:
            continue
        room -= len(names)
        entries += [(category, m) for m in map(_PF.fullmatch, sorted(names)) if m]
    try:
        texts = rootfs.read_texts(root, [f"{vdb}/{c}/{m.string}" for c, m in entries], _FILES)
    except OSError:
        return {}
    found: PackageList = {}
    for (category, match), files in zip(entries, texts, strict=True):
        installed = _entry(category, match, files or {})
        if installed is not None:
            found[installed.key] = installed
    return found


def _entry(category: str, match: re.Match[str], files: dict[str, str]) -> Installed | None:
    field = {name: files.get(name, "")[:MOST_FIELD].strip() for name in _FILES}
    slot = field["SLOT"].split("/", 1)[0]
    if not slot:
        return None  # not an installed package: a directory someone made
    use = " ".join(sorted(set(files.get("USE", "").split())))
    return Installed(
        f"{category}/{match['name']}",
        match["version"],
        _printable(slot),
        _printable(field["repository"]),
        _printable(field["BUILD_TIME"]),
        _printable(use),
    )


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)


def version_key(version: str) -> tuple[tuple[int, ...], str, tuple[tuple[int, int], ...], int]:
    """A key that orders versions as Portage does, for the versions the vdb holds."""
    match = _VERSION_PARTS.fullmatch(version)
    if not match:
        return ((), version, (), 0)
    suffixes = [
        (_SUFFIX_ORDER[name], int(number or 0))
        for name, number in re.findall(r"_(alpha|beta|pre|rc|p)([0-9]*)", match["suffixes"])
    ]
    return (
        tuple(int(n) for n in match["numbers"].split(".")),
        match["letter"],
        (*suffixes, _NO_SUFFIX),
        int(match["revision"] or 0),
    )


def diff(old: Mapping[str, Installed], new: Mapping[str, Installed]) -> list[Change]:
    """What changed from `old` to `new`, by package and slot."""
    changes = []
    for key in sorted(old.keys() | new.keys()):
        before, after = old.get(key), new.get(key)
        if before is None:
            assert after is not None
            changes.append(Change(ChangeAction.ADDED, key, "", after.version))
        elif after is None:
            changes.append(Change(ChangeAction.REMOVED, key, before.version, ""))
        elif before.version != after.version:
            up = version_key(after.version) >= version_key(before.version)
            action = ChangeAction.UPGRADED if up else ChangeAction.DOWNGRADED
            changes.append(Change(action, key, before.version, after.version))
        elif (before.build_time, before.use) != (after.build_time, after.use):
            changes.append(Change(ChangeAction.REBUILT, key, before.version, after.version))
    return changes


def net(changes: Iterable[Change]) -> list[Change]:
    """What a series of changes (oldest first, of one root) comes to, by package and
    slot: an upgrade undone by a rollback is nothing; the same version after a
    rebuild is a rebuild."""
    first: dict[str, Change] = {}
    last: dict[str, Change] = {}
    rebuilt: set[str] = set()
    for change in changes:
        first.setdefault(change.package, change)
        last[change.package] = change
        if change.action is ChangeAction.REBUILT:
            rebuilt.add(change.package)
    result = []
    for key in sorted(first):
        old, new = first[key].old, last[key].new
        if not old and new:
            result.append(Change(ChangeAction.ADDED, key, "", new))
        elif old and not new:
            result.append(Change(ChangeAction.REMOVED, key, old, ""))
        elif old and old != new:
            up = version_key(new) >= version_key(old)
            action = ChangeAction.UPGRADED if up else ChangeAction.DOWNGRADED
            result.append(Change(action, key, old, new))
        elif old and key in rebuilt:
            result.append(Change(ChangeAction.REBUILT, key, old, new))
    return result


def encode(packages: Mapping[str, Installed]) -> bytes:
    """A list as the job database stores it: compressed JSON rows, sorted."""
    rows = [list(packages[key]) for key in sorted(packages)]
    return zlib.compress(json.dumps(rows, separators=(",", ":")).encode(), 6)


def decode(blob: bytes) -> PackageList:
    """A list the job database stored."""
    rows: Iterable[list[str]] = json.loads(zlib.decompress(blob))
    return {item.key: item for item in (Installed(*row) for row in rows)}
