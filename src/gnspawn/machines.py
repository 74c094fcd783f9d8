"""Machines: their names, and where their datasets and roots are."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import NamedTuple

from gnspawn import rootfs
from gnspawn.config import Config
from gnspawn.errors import InvalidName
from gnspawn.names import shown

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")


def valid_name(name: str) -> bool:
    """Hostname rules as machined applies them."""
    return bool(_NAME.fullmatch(name)) and ".." not in name


def check_name(name: str) -> str:
    """The name, or InvalidName; nothing outside these rules reaches a path or an argv."""
    if not valid_name(name):
        raise InvalidName(f"invalid machine name {shown(name)}")
    return name


def dataset(config: Config, name: str) -> str:
    return f"{config.storage.dataset}/{name}"


def directory(config: Config, name: str) -> Path:
    return config.storage.machines_directory / name


def is_gentoo(root: Path) -> bool:
    return rootfs.is_file(root, "etc/gentoo-release")


def profile_of(config: Config, root: Path) -> str:
    """The machine's profile as `eselect profile` names it, or the link's target
    (a relative one as the container sees it: from /etc/portage)."""
    try:
        target = rootfs.readlink(root, "etc/portage/make.profile")
    except OSError:
        return ""
    if target and not target.startswith("/"):
        target = os.path.normpath("/etc/portage/" + target)
    for repo in config.portage.repos:
        profiles = str(repo / "profiles") + "/"
        if target.startswith(profiles):
            return target[len(profiles) :]
    return target


def chosen_profile(config: Config, machine: Machine) -> str:
    """The profile the admin chose for a machine: the one gnspawn built it with
    (org.gnspawn:profile), or its [machines.NAME] profile; "" when neither says.
    Never its make.profile: that is the container's to point anywhere."""
    return machine.profile or config.machine(machine.name).profile


BUILDER_PREFIX = "builder:"
_SLUG_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def builder_name(profile: str) -> str:
    """The builder root of a profile, as its jobs and dataset are named: builder:SLUG.
    No machine name has a colon, so no machine can be or become a builder."""
    slug = _SLUG_UNSAFE.sub("_", profile.strip("/").replace("/", ".")).lstrip(".") or "_"
    if len(slug) > 64:
        slug = f"{slug[:48]}-{hashlib.sha256(profile.encode()).hexdigest()[:12]}"
    return BUILDER_PREFIX + slug


def builder_directory(config: Config, name: str) -> Path:
    """Where a builder root is mounted: under the state directory, not among the
    machines, where systemd-nspawn and machinectl would find it as a container."""
    return config.daemon.state_directory / "builders" / name.removeprefix(BUILDER_PREFIX)


class Machine(NamedTuple):
    """What the storage says about one machine."""

    name: str
    dataset: str
    """Empty for a directory in machines_directory that has no dataset of ours."""
    root: Path | None
    """Where the dataset is mounted, None when it is not."""
    build: str
    """The last build step gnspawn finished; empty when gnspawn did not build it."""
    profile: str
    failed_copies: tuple[str, ...] = ()
    """Datasets NAME:failed-ID that KEEP_FAILED made: failed states kept for inspection."""


def failed_copy(dataset: str, job: int) -> str:
    """The dataset a failed state of `dataset` is copied to (KEEP_FAILED)."""
    return f"{dataset}:failed-{job}"


class MachineInfo(NamedTuple):
    """A machine as ListMachines and its Machine object show it."""

    name: str
    state: str
    profile: str
    last_result: str
    path: str
    dataset: str
    directory: str
    last_job: int
    latest_snapshot: str
    attention: tuple[tuple[str, str, str], ...] = ()
    """What waits for the admin: (kind, path or package, text) each."""

    def row(self) -> tuple[str, str, str, str, str]:
        """The `(sssso)` row of ListMachines."""
        return self.name, self.state, self.profile, self.last_result, self.path
