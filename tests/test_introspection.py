"""The introspection data: constant properties, named arguments, and the installed files
under dbus/interfaces, which say what the running daemon says."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from gnspawn.bus.introspection import EMITS_CHANGED_SIGNAL, interface_xml
from gnspawn.bus.service import INTERFACES, interface_files
from helpers import busctl, call, queued, wait_job
from testbed import Testbed

INTERFACE_DIR = Path(__file__).resolve().parent.parent / "dbus" / "interfaces"
CONSTANT = {
    "org.gnspawn1.Manager": {"Version", "Dataset", "MachinesDirectory", "MaxParallelJobs"},
    "org.gnspawn1.Job": {"Id", "Type", "Machine", "Follows", "CreatedUSec", "InitiatorUID"},
    "org.gnspawn1.Machine": {"Name", "Directory"},
}


def interface_of(xml: str, name: str) -> ET.Element:
    """The interface element `name` of introspection XML, whitespace between tags dropped."""
    node = ET.fromstring(ET.canonicalize(xml, strip_text=True))
    found = [i for i in node.findall("interface") if i.get("name") == name]
    assert len(found) == 1, f"{name} is not in:\n{xml}"
    return found[0]


def installed(name: str) -> str:
    return (INTERFACE_DIR / f"{name}.xml").read_text()


def test_the_installed_files_are_what_the_code_writes(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gnspawn.daemon", "--bus-introspect", str(tmp_path / "new")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    written = {p.name: p.read_text() for p in (tmp_path / "new").iterdir()}
    assert written == interface_files()
    shipped = {p.name: p.read_text() for p in INTERFACE_DIR.glob("*.xml")}
    assert shipped == written, "dbus/interfaces is out of date: run make dbus-interfaces"


@pytest.mark.parametrize(("name", "cls"), INTERFACES)
def test_properties_that_never_change_are_const_and_only_those(name: str, cls: type) -> None:
    interface = interface_of(interface_xml(cls, name), name)
    const = {
        prop.get("name")
        for prop in interface.findall("property")
        for annotation in prop.findall("annotation")
        if annotation.get("name") == EMITS_CHANGED_SIGNAL and annotation.get("value") == "const"
    }
    assert const == CONSTANT[name]


@pytest.mark.parametrize(("name", "cls"), INTERFACES)
def test_every_argument_has_a_name(name: str, cls: type) -> None:
    interface = interface_of(interface_xml(cls, name), name)
    unnamed = [
        f"{member.get('name')} argument {i}"
        for member in [*interface.findall("method"), *interface.findall("signal")]
        for i, arg in enumerate(member.findall("arg"))
        if not arg.get("name")
    ]
    assert not unnamed


def test_job_handles_and_signals_are_named_as_systemds() -> None:
    manager = interface_of(installed("org.gnspawn1.Manager"), "org.gnspawn1.Manager")
    update = manager.find("method[@name='Update']")
    assert update is not None
    assert [(a.get("name"), a.get("direction"), a.get("type")) for a in update] == [
        ("name", "in", "s"),
        ("flags", "in", "t"),
        ("id", "out", "u"),
        ("job", "out", "o"),
    ]
    removed = manager.find("signal[@name='JobRemoved']")
    assert removed is not None
    assert [a.get("name") for a in removed] == ["id", "job", "machine", "result"]


def live(path: str) -> str:
    return busctl("introspect", "--xml-interface", "org.gnspawn1", path).stdout


def test_the_running_daemon_introspects_as_the_installed_files_say(daemon: Testbed) -> None:
    daemon.seed("web")
    job = queued(call("Update", "st", "web", "4").stdout)
    wait_job(job)
    call("ListMachines")
    objects = {
        "org.gnspawn1.Manager": "/org/gnspawn1",
        "org.gnspawn1.Job": f"/org/gnspawn1/job/_{job}",
        "org.gnspawn1.Machine": "/org/gnspawn1/machine/web",
    }
    for name, path in objects.items():
        running = ET.tostring(interface_of(live(path), name), encoding="unicode")
        shipped = ET.tostring(interface_of(installed(name), name), encoding="unicode")
        assert running == shipped, f"{path} differs from dbus/interfaces/{name}.xml"
