"""The .nspawn settings file that systemd-nspawn@NAME.service reads."""

from __future__ import annotations

import os
from pathlib import Path

from gnspawn.config import NspawnConfig


def unit(name: str) -> str:
    """The systemd unit that runs machine `name`."""
    return f"systemd-nspawn@{name}.service"


def settings_path(config: NspawnConfig, name: str) -> Path:
    return config.settings_directory / f"{name}.nspawn"


def settings(config: NspawnConfig) -> str:
    """The file's text: the configured binds and a private network."""
    lines = ["# Written by gnspawn.", "[Exec]", "Boot=yes", "", "[Files]"]
    lines += [f"BindReadOnly={path}" for path in config.bind_ro]
    lines += [f"Bind={path}" for path in config.bind]
    lines += ["", "[Network]", "Private=yes", "VirtualEthernet=yes"]
    if config.bridge:
        lines.append(f"Bridge={config.bridge}")
    return "\n".join(lines) + "\n"


def write_settings(config: NspawnConfig, name: str) -> Path:
    """Write NAME.nspawn atomically: a reader never sees half a file."""
    path = settings_path(config, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(settings(config))
    os.replace(temporary, path)
    return path
