"""The .nspawn settings file that systemd-nspawn@NAME.service reads."""

from __future__ import annotations

import os
from pathlib import Path

from gnspawn.config import Config, NspawnConfig


def unit(name: str) -> str:
    """The systemd unit that runs machine `name`."""
    return f"systemd-nspawn@{name}.service"


def settings_path(config: NspawnConfig, name: str) -> Path:
    return config.settings_directory / f"{name}.nspawn"


def settings(config: Config) -> str:
    """The file's text: the configured binds, the shared PKGDIR read-only (a container
    that could write it would plant packages the others install), a private network."""
    nspawn = config.nspawn
    read_only = list(nspawn.bind_ro)
    if config.portage.pkgdir not in read_only:
        read_only.append(config.portage.pkgdir)
    lines = ["# Written by gnspawn.", "[Exec]", "Boot=yes", "", "[Files]"]
    lines += [f"BindReadOnly={path}" for path in read_only]
    lines += [f"Bind={path}" for path in nspawn.bind]
    lines += ["", "[Network]", "Private=yes", "VirtualEthernet=yes"]
    if nspawn.bridge:
        lines.append(f"Bridge={nspawn.bridge}")
    return "\n".join(lines) + "\n"


def write_settings(config: Config, name: str) -> Path:
    """Write NAME.nspawn atomically: a reader never sees half a file."""
    path = settings_path(config.nspawn, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(settings(config))
    os.replace(temporary, path)
    return path
