"""emerge: the argv it takes and the progress it prints."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from gnspawn import rootfs
from gnspawn.config import PortageConfig
from gnspawn.run import CommandFailed, run

log = logging.getLogger(__name__)

_EMERGING = re.compile(
    r"^>>> Emerging (?:(binary) )?\((\d+) of (\d+)\) (\S+?)(?:::\S+)?(?: (?:for|to) .*)?$"
)
_COMPLETED = re.compile(r"^>>> Completed \((\d+) of (\d+)\) (\S+?)(?:::\S+)?(?: (?:for|to) .*)?$")
_JOBS = re.compile(r"^>>> Jobs: (\d+) of (\d+) complete")
_FAILED = re.compile(r"^>>> Failed to emerge (\S+?)(?:::\S+)?(?:,| for )")
_ERROR = re.compile(r"^ \* ERROR: (\S+?)(?:::\S+)? failed(?: \((\w+) phase\))?")
_REFUSED = re.compile(r"^!!! (?:Invalid binary package:|Error extracting) '([^']+)', (.+)$")
"""Portage refusing a binary package: on download, or when it unpacks it."""
_LOG_FILE = re.compile(r"^>>>\s+'([^']+)'")
_BUILD_LOG = re.compile(r"^ \* The complete build log is located at '([^']+)'")
_PENDING = re.compile(r"^\[(ebuild|binary)\s+[^\]]*\] ([^\s:]+)")
_BUILD_ID = re.compile(r"(-\d[^-/]*(?:-r\d+)?)-\d+$")
"""binpkg-multi-instance appends -<build id> to a binary package's version."""
_WORLD_ATOM = re.compile(
    r"(?P<package>[A-Za-z0-9_][A-Za-z0-9+_.-]*/[A-Za-z0-9_][A-Za-z0-9+_-]*)"
    r"(?::[A-Za-z0-9_][A-Za-z0-9+_.-]*(?:/[A-Za-z0-9_][A-Za-z0-9+_.-]*)?)?"
    r"(?:::[A-Za-z0-9_][A-Za-z0-9_-]*)?"
)
"""A world file's entry: category/package with an optional slot and repository, and
nothing that emerge could take for an option, a set or a path."""
_NOTHING = re.compile(r"^Total: 0 packages|^Nothing to merge")
_SELECTED = "All selected packages: "
"""How emerge --depclean lists what it removes (or, with --pretend, would remove)."""
_CPV = re.compile(r"=?([A-Za-z0-9_][A-Za-z0-9+_.-]*/[A-Za-z0-9_][A-Za-z0-9+_.-]*)")
PRESERVED_LIBS_REGISTRY = "var/lib/portage/preserved_libs_registry"


def emerge_argv(
    config: PortageConfig,
    root: Path,
    args: Sequence[str],
    *,
    pretend: bool = False,
    publish: bool = False,
    getbinpkg: bool | None = None,
) -> list[str]:
    """emerge into `root`, with its configuration read from `root` as well.

    Every merge installs the binary packages in the shared PKGDIR that fit; only a
    root that `publish`es (a builder root, a trusted machine) adds the ones it builds
    there: what it compiled, the others install. `getbinpkg` True or False overrides
    FEATURES=getbinpkg: whether it fetches from the binhosts its binrepos.conf names (a
    builder root's puts them into PKGDIR).
    """
    argv = [
        config.emerge,
        f"--root={root}",
        f"--sysroot={root}",
        f"--config-root={root}",
        "--color=n",
        "--usepkg=y",
        f"--buildpkg={'y' if publish else 'n'}",
    ]
    if getbinpkg is not None:
        argv.append(f"--getbinpkg={'y' if getbinpkg else 'n'}")
    if pretend:
        argv.append("--pretend")
    return [*argv, *args]


def emerge_environment(config: PortageConfig, *, job: int, tag: str) -> dict[str, str]:
    """emerge's environment: never colour, the configured extras, and who started it:
    the job, and `tag` (NAME=value), by which a restarted daemon finds what is its own."""
    name, _, value = tag.partition("=")
    return {
        "NOCOLOR": "true",
        "TERM": "dumb",
        **config.environment,
        "GNSPAWN_JOB": str(job),
        name: value,
    }


def world_atoms(config: PortageConfig, root: Path) -> set[str]:
    """The packages (category/name) a root's world file names, those of them that are
    in the repositories: the file is the container's to write, so an entry that is no
    plain package atom, or names a package the repositories lack, is left out, and a
    slot or repository it names is dropped (the newest is what a builder builds)."""
    try:
        text = rootfs.read_text(root, "var/lib/portage/world")
    except OSError:
        return set()
    atoms = set()
    for line in text.splitlines():
        atom = line.strip()
        match = _WORLD_ATOM.fullmatch(atom)
        if match and any((repo / match["package"]).is_dir() for repo in config.repos):
            atoms.add(match["package"])
    return atoms


def preserved_libraries(root: Path) -> dict[str, tuple[str, ...]]:
    """The libraries Portage keeps in a root for packages still linked against them:
    package (as the registry names it) -> paths. The registry is the container's to
    write: what is not the JSON Portage writes counts as one entry "" that names no
    path, so that it is rebuilt and reported rather than taken for empty."""
    try:
        text = rootfs.read_text(root, PRESERVED_LIBS_REGISTRY)
    except FileNotFoundError:
        return {}
    except OSError as err:
        return {"": (f"unreadable registry: {err.strerror}",)}
    try:
        data = json.loads(text) if text.strip() else {}
    except ValueError:
        return {"": ("unreadable registry: not JSON",)}
    if not isinstance(data, dict):
        return {"": ("unreadable registry: not a JSON object",)}
    found: dict[str, tuple[str, ...]] = {}
    for key, entry in data.items():
        # Portage writes [cpv, counter, [paths]]; the key is cat/pn:slot.
        cpv = entry[0] if isinstance(entry, list) and entry else key
        paths = entry[2] if isinstance(entry, list) and len(entry) > 2 else []
        if not isinstance(paths, list):
            paths = []
        found[str(cpv)] = tuple(str(path) for path in paths)
    return found


def job_tag(state_directory: Path, job: int) -> str:
    """What marks the processes of one job of one daemon: the job id alone would also
    match another daemon's job of that number (a second instance with its own state
    directory), or a shell where someone exported GNSPAWN_JOB."""
    instance = hashlib.sha256(os.fsencode(state_directory)).hexdigest()[:16]
    return f"GNSPAWN_TAG={instance}-{job}"


@dataclasses.dataclass
class Progress:
    """What emerge has told so far about its merge list."""

    done: int = 0
    total: int = 0
    current: str = ""
    binary: bool = False
    nothing_to_merge: bool = False
    failed_package: str = ""
    failed_phase: str = ""
    log_file: str = ""
    pending: list[str] = dataclasses.field(default_factory=list)
    selected: list[str] = dataclasses.field(default_factory=list)
    """What emerge --depclean removes, or would remove with --pretend."""
    refused: list[str] = dataclasses.field(default_factory=list)
    """Binary packages Portage would not install (a signature that does not verify)."""
    refusal: str = ""
    """Why the first of them was refused."""
    last_error: str = ""
    """The last '!!!' line: Portage's own words when it fails outside a package's build."""
    _expect_log: bool = False

    @property
    def merged_nothing(self) -> bool:
        """Whether emerge merged nothing: it said so, or (with --update and a set, and
        without --verbose, it says nothing of the kind) it started no package."""
        return self.done == 0 and (self.nothing_to_merge or self.total == 0)

    @property
    def percent(self) -> int:
        return self.done * 100 // self.total if self.total else 0

    def feed(self, line: str) -> bool:
        """Take one line of output; True when the visible progress changed."""
        # Most lines are build output: one cheap test keeps the hot path short.
        if self._expect_log:
            self._expect_log = False
            if match := _LOG_FILE.match(line):
                self.log_file = match.group(1)
                return True
        first = line[:1]
        if first == ">":
            return self._feed_marker(line)
        if first == " " and line.startswith(" * ERROR: "):
            if match := _ERROR.match(line):
                # With --keep-going several fail; the first one is the one to report.
                if not self.failed_package or self.failed_package == match.group(1):
                    self.failed_package = match.group(1)
                    self.failed_phase = match.group(2) or ""
                return True
        elif first == " " and line.startswith(" * The complete build log"):
            if match := _BUILD_LOG.match(line):
                self.log_file = match.group(1)
                return True
        elif first == "!" and line.startswith("!!! "):
            self.last_error = line[4:].strip()
            if match := _REFUSED.match(line):
                self.refused.append(match.group(1))
                self.refusal = self.refusal or f"{match.group(2)} ({match.group(1)})"
        elif first == "[":
            if match := _PENDING.match(line):
                atom = match.group(2)
                self.pending.append(
                    _BUILD_ID.sub(r"\1", atom) if match.group(1) == "binary" else atom
                )
        elif first in "TN" and _NOTHING.match(line):
            self.nothing_to_merge = True
        elif first == "A" and line.startswith(_SELECTED):
            for word in line[len(_SELECTED) :].split():
                if match := _CPV.fullmatch(word):
                    self.selected.append(match.group(1))
        return False

    def _feed_marker(self, line: str) -> bool:
        if match := _EMERGING.match(line):
            self.binary = bool(match.group(1))
            self.total = int(match.group(3))
            self.done = max(self.done, int(match.group(2)) - 1)
            self.current = match.group(4)
            return True
        if match := _COMPLETED.match(line):
            self.done = max(self.done, int(match.group(1)))
            self.total = int(match.group(2))
            if self.done == self.total:
                self.current = ""
            return True
        if match := _JOBS.match(line):
            self.done, self.total = int(match.group(1)), int(match.group(2))
            return True
        if match := _FAILED.match(line):
            self.failed_package = self.failed_package or match.group(1)
            self._expect_log = "Log file" in line
            return True
        return False

    def failure(self, last_words: str = "") -> str:
        """Why emerge failed, in one line; `last_words` is its last line of output."""
        if not self.failed_package:
            during = f" while merging {self.current}" if self.current else ""
            why = self.last_error or last_words
            if self.refusal:
                why = f"binary package refused: {self.refusal}"
            return f"emerge failed{during}" + (f": {why}" if why else "")
        text = f"{self.failed_package} failed"
        if self.refusal:
            text += f": binary package refused: {self.refusal}"
        if self.failed_phase:
            text += f" ({self.failed_phase} phase)"
        if self.log_file:
            text += f", log: {self.log_file}"
        return text


class Profile(NamedTuple):
    """A profile as `eselect profile list` shows it."""

    name: str
    repository: str
    status: str
    path: Path


def repository_name(repo: Path) -> str:
    """The name in profiles/repo_name, or the directory's name."""
    try:
        return (repo / "profiles" / "repo_name").read_text().split()[0]
    except (OSError, IndexError):
        return repo.name


def profiles(config: PortageConfig) -> list[Profile]:
    """The profiles listed in profiles.desc of every configured repository."""
    found = []
    for repo in config.repos:
        try:
            text = (repo / "profiles" / "profiles.desc").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            fields = line.split("#", 1)[0].split()
            if len(fields) >= 3:
                found.append(
                    Profile(
                        fields[1], repository_name(repo), fields[2], repo / "profiles" / fields[1]
                    )
                )
    return found


def resolve_profile(config: PortageConfig, profile: str) -> Path | None:
    """A profile directory from an absolute path or a name under a repository's profiles/."""
    if not profile or "\0" in profile:
        return None
    path = Path(profile)
    if path.is_absolute():
        candidates = [path]
    else:
        if ".." in path.parts:
            return None
        candidates = [repo / "profiles" / path for repo in config.repos]
    for candidate in candidates:
        try:
            if candidate.is_dir() and any(
                (candidate / marker).exists()
                for marker in ("parent", "make.defaults", "packages", "eapi")
            ):
                return candidate
        except OSError:
            continue  # a name too long for a path is no profile either
    return None


def tool(config: PortageConfig, name: str) -> str:
    """A Portage tool (emaint, gpkg-sign) beside the configured emerge: the same Portage,
    the same configuration; the one on PATH when emerge is given by name only."""
    return str(Path(config.emerge).with_name(name)) if "/" in config.emerge else name


def emaint_argv(config: PortageConfig, repository: str) -> list[str]:
    """`emaint sync` of one repository by name, with its own repos.conf sync settings."""
    return [tool(config, "emaint"), "sync", "--repo", repository]


async def tree_revision(repos: Sequence[Path]) -> str:
    """The revision of the repositories: each one's git HEAD, or else the content of its
    metadata/timestamp.chk (rsync and webrsync trees), in the order of `repos` and
    separated by "; "; "-" for one that has neither, "" when none has one."""
    revisions = [await _revision(repo) for repo in repos]
    return "; ".join(r or "-" for r in revisions) if any(revisions) else ""


async def _revision(repo: Path) -> str:
    if await asyncio.to_thread((repo / ".git").exists):
        # The tree is the host's; its owner need not be root, which git refuses
        # without safe.directory. rev-parse only reads.
        argv = ["git", "-c", f"safe.directory={repo}", "-C", str(repo), "rev-parse", "HEAD"]
        try:
            return (await run(argv)).strip()
        except (CommandFailed, OSError) as err:
            log.warning("cannot read the git revision of %s: %s", repo, err)
            return ""
    try:
        text = await asyncio.to_thread((repo / "metadata" / "timestamp.chk").read_text)
    except (OSError, UnicodeDecodeError):
        return ""
    return " ".join(text.split())


def repos_conf(config: PortageConfig) -> str:
    names = [repository_name(repo) for repo in config.repos]
    lines = ["# Written by gnspawn.", "[DEFAULT]", f"main-repo = {names[0]}" if names else ""]
    for name, repo in zip(names, config.repos, strict=True):
        lines += ["", f"[{name}]", f"location = {repo}"]
    return "\n".join(lines) + "\n"


_PUBLISHING = ("buildpkg", "buildsyspkg")
"""FEATURES that write PKGDIR, which only a root that publishes may."""


def make_conf(config: PortageConfig, *, publish: bool = False) -> str:
    features = [f for f in config.features if publish or f not in _PUBLISHING]
    values = {
        "FEATURES": " ".join(features),
        "DISTDIR": str(config.distdir),
        "PKGDIR": str(config.pkgdir),
    }
    if config.binhost:
        values["PORTAGE_BINHOST"] = config.binhost
    values.update(config.make_conf)
    lines = ["# Written by gnspawn when it built this container."]
    lines += [f'{key}="{_quoted(value)}"' for key, value in values.items()]
    return "\n".join(lines) + "\n"


def _quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")


def write_config(config: PortageConfig, root: Path, profile: Path, *, publish: bool) -> None:
    """R/etc/portage: settings live in files under R, since Portage ignores some
    environment settings when ROOT is not /. Written inside the root (rootfs): a
    symlink there never leads out of it."""
    rootfs.makedirs(root, "etc/portage")
    rootfs.symlink(root, str(profile), "etc/portage/make.profile")
    rootfs.write_text(root, "etc/portage/repos.conf", repos_conf(config))
    rootfs.write_text(root, "etc/portage/make.conf", make_conf(config, publish=publish))
    for directory in (config.distdir, config.pkgdir):
        directory.mkdir(parents=True, exist_ok=True)
