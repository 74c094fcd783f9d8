"""The files that install gnspawn: systemd units, D-Bus activation and policy, example config."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from gnspawn.config import SETTINGS, Config, parse
from gnspawn.names import BUS_NAME

TOP = Path(__file__).resolve().parent.parent
UNITS = sorted((TOP / "systemd").glob("gnspawn*.*"))
EXAMPLE = TOP / "contrib" / "gnspawn.toml"
ACTIVATION = TOP / "dbus" / f"{BUS_NAME}.service"
POLICY = TOP / "dbus" / f"{BUS_NAME}.conf"
# The console scripts of this installation: the venv's bin/ holds gnspawnd and gnctl.
SCRIPTS = Path(sys.executable).parent

Sections = dict[str, dict[str, list[str]]]


def read_ini(path: Path) -> Sections:
    """Section → key → values of a systemd unit or a D-Bus activation file."""
    sections: Sections = {}
    current: dict[str, list[str]] | None = None
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None, f"{path.name}:{number}: not KEY=VALUE in a section"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def with_local_scripts(text: str) -> str:
    """Point /usr/bin/gnspawnd and /usr/bin/gnctl at this installation's scripts."""

    def local(match: re.Match[str]) -> str:
        script = SCRIPTS / match.group(2)
        assert script.is_file(), f"{script} is missing: is gnspawn installed in this venv?"
        return f"{match.group(1)}{script}"

    return re.sub(r"^(\s*Exec\w*=[-@:+!]*)/usr/bin/(gnspawnd|gnctl)\b", local, text, flags=re.M)


def test_all_units_are_there() -> None:
    assert [u.name for u in UNITS] == [
        "gnspawn-update.service",
        "gnspawn-update.timer",
        "gnspawnd.service",
    ]


@pytest.mark.parametrize("unit", [u.name for u in UNITS])
def test_unit_passes_systemd_analyze_verify(unit: str, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is not installed (Debian package systemd)"
    # verify checks that ExecStart= programs exist, and /usr/bin/gnspawnd need not exist
    # here; the copies run this venv's scripts instead. All units go into one directory,
    # which verify adds to its search path, so the timer finds its service.
    for source in UNITS:
        (tmp_path / source.name).write_text(with_local_scripts(source.read_text()))

    result = subprocess.run(
        [analyze, "verify", str(tmp_path / unit)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )

    # On this Debian 12 test machine (systemd 252, not PID 1) verify prints nothing for
    # these units. Where systemd runs the host, it also loads the units ours depend on
    # (dbus.socket, network-online.target, ...) and may warn about those installed
    # files; such lines start with that other file's path and say nothing about ours.
    output = result.stdout + result.stderr
    lines = [
        line
        for line in output.splitlines()
        if not (line.startswith("/") and not line.startswith(str(tmp_path)))
    ]
    assert result.returncode == 0, output
    assert not [line for line in lines if re.search(r"unknown (key|lvalue|section)", line, re.I)]
    ours = [u.name for u in UNITS]
    assert not [line for line in lines if any(name in line for name in ours)], output


def test_daemon_unit_owns_the_bus_name_and_is_reachable_by_activation() -> None:
    unit = read_ini(TOP / "systemd" / "gnspawnd.service")
    activation = read_ini(ACTIVATION)["D-BUS Service"]

    assert unit["Service"]["Type"] == ["notify"]
    assert unit["Service"]["BusName"] == [BUS_NAME]
    assert activation["Name"] == [BUS_NAME]
    assert activation["User"] == ["root"]
    assert activation["Exec"] == unit["Service"]["ExecStart"]
    # dbus-daemon asks systemd to start this name: it must be an alias the unit installs.
    assert activation["SystemdService"] == unit["Install"]["Alias"]
    assert activation["SystemdService"] == [f"dbus-{BUS_NAME}.service"]


def test_timer_starts_the_update_service() -> None:
    timer = read_ini(TOP / "systemd" / "gnspawn-update.timer")
    service = read_ini(TOP / "systemd" / "gnspawn-update.service")

    assert "Unit" not in timer["Timer"]  # the default: the service of the same name
    assert timer["Install"]["WantedBy"] == ["timers.target"]
    assert service["Service"]["Type"] == ["oneshot"]
    assert service["Service"]["ExecStart"] == ["/usr/bin/gnctl update --all --scheduled --quiet"]
    assert "gnspawnd.service" in service["Unit"]["After"][0].split()


def test_bus_policy_lets_only_root_own_the_name() -> None:
    root = ET.parse(POLICY).getroot()
    owners = [
        (policy.attrib, rule.tag, rule.attrib)
        for policy in root.iter("policy")
        for rule in policy
        if {"own", "own_prefix"} & rule.attrib.keys()
    ]

    assert root.tag == "busconfig"
    assert owners == [({"user": "root"}, "allow", {"own": BUS_NAME})]


def test_example_config_passes_check_config() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gnspawn.daemon", "--check-config", "--config", str(EXAMPLE)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )

    assert result.returncode == 0, result.stderr
    assert "configuration is valid" in result.stdout


def test_example_config_shows_every_setting_with_its_default() -> None:
    data = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))

    assert {table: set(keys) for table, keys in data.items()} == {
        table: set(keys) for table, keys in SETTINGS.items()
    }
    assert parse(data, environ={}) == Config()


def test_example_machine_section_is_valid_once_uncommented() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    example = text[text.index("# [machines.web]") :]
    uncommented = re.sub(r"^# ?", "", example, flags=re.M)

    config = parse(tomllib.loads(text + uncommented), environ={})

    assert config.machines["web"].profile == "/var/db/repos/local/profiles/host/web"
