"""`make sandbox` and `make sandbox-stop`: the demo left running is reachable the ways it
prints, and stopping it leaves none of its processes, no pool and no files."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import MANAGER

DEMO = Path(__file__).resolve().parent.parent / "contrib" / "demo.py"
# What a second terminal has: none of the test bed's settings.
OUTSIDE = {k: v for k, v in os.environ.items() if k not in ("DBUS_SYSTEM_BUS_ADDRESS",)}


def demo(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(DEMO), "--directory", str(directory), *args],
        capture_output=True,
        text=True,
        env=OUTSIDE,
        stdin=subprocess.DEVNULL,
        timeout=600,
    )


def running(process: dict[str, int]) -> bool:
    """Whether the recorded process still runs (a zombie does not)."""
    try:
        stat = Path(f"/proc/{process['pid']}/stat").read_text()
    except OSError:
        return False
    fields = stat.rpartition(")")[2].split()
    return fields[0] != "Z" and int(fields[19]) == process["start"]


def printed(out: str, pattern: str) -> str:
    match = re.search(pattern, out, re.MULTILINE)
    assert match, f"{pattern} is not in:\n{out}"
    return match.group(1)


@pytest.fixture
def sandbox() -> Iterator[tuple[Path, str]]:
    """A sandbox left running by the demo; stopped again whatever the test does."""
    if os.geteuid() != 0:
        pytest.fail("the sandbox needs root (zfs-fuse, mounts, journald)")
    directory = Path(tempfile.mkdtemp(prefix="gnspawn-sandbox-", dir="/var/tmp")) / "sandbox"
    try:
        started = demo(directory, "--keep")
        assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]
        yield directory, started.stdout
    finally:
        demo(directory, "--stop")
        shutil.rmtree(directory.parent, ignore_errors=True)


def test_the_sandbox_is_reachable_as_printed_and_stops_completely(
    sandbox: tuple[Path, str],
) -> None:
    directory, out = sandbox
    state = json.loads((directory / "sandbox.json").read_text())
    recorded = {"keeper": state["keeper"], **state["processes"]}
    assert set(recorded) == {"keeper", "gnspawnd", "dbus-daemon", "systemd-journald", "zfs-fuse"}
    assert all(running(p) for p in recorded.values()), recorded
    # The story: what the update changed, the kept snapshot, and the diff it ends with.
    assert "job 2: update of web done: 1 upgraded" in out, out
    assert re.search(r"^upgraded +app-misc/hello:0 +1 +2$", out, re.MULTILINE), out
    assert re.search(r"^gnspawn-2-pre .*kept: pinned \(tag before-update\)$", out, re.MULTILINE)
    assert "job 5: rollback of web done: 1 downgraded" in out, out
    assert "$ gnctl diff web before-update\nweb: before-update -> now\n0 changes listed." in out
    # web sent to a second host whole, then again with only what changed since.
    sends = re.findall(r"^job (\d+): send of web done$", out, re.MULTILINE)
    assert len(sends) == 2, out
    assert re.search(rf"^gnspawn-other/machines/web@gnspawn-{sends[1]}-send$", out, re.MULTILINE)
    assert re.search(rf"^gnspawn-{sends[1]}-send .*kept: the newest one root@127", out, re.M)
    # The story ends with a diff of the weekly cycle's update of lib; only the note on the
    # sandbox left running follows.
    story, _, kept = out.rpartition("\n== the sandbox keeps running")
    assert kept, out
    last = story.rsplit("\n== ", 1)[1]
    assert last.startswith("what the weekly cycle changed on lib"), last
    assert re.search(r"^upgraded +app-misc/foo:0 +1 +2$", last, re.MULTILINE), last
    assert re.search(r"^rebuilt +app-misc/fooer:0 +1 +1$", last, re.MULTILINE), last

    address = printed(out, r"^ +export DBUS_SYSTEM_BUS_ADDRESS=(\S+)$")
    outside = {**OUTSIDE, "DBUS_SYSTEM_BUS_ADDRESS": address}
    listed = subprocess.run(
        [str(Path(sys.executable).parent / "gnctl"), "list"],
        capture_output=True,
        text=True,
        env=outside,
    )
    assert listed.returncode == 0, listed.stderr
    # app's update broke its health check and was rolled back: it is ready, its last job
    # failed, and the failed check waits for the admin; so does conf's new default.
    rows = [
        r"^app +ready +default +failed +1 health$",
        r"^conf +ready +default +done +1 config$",
        r"^db +ready +default +done +-$",
        r"^lib +ready +default +done +-$",
        r"^web +ready +default +done +-$",
    ]
    for row in rows:
        assert re.search(row, listed.stdout, re.MULTILINE), listed.stdout
    machines = subprocess.run(
        ["busctl", f"--address={address}", "call", *MANAGER, "ListMachines"],
        capture_output=True,
        text=True,
        env=OUTSIDE,
    )
    assert machines.returncode == 0, machines.stderr
    assert machines.stdout.startswith('a(sssso) 5 "app"'), machines.stdout

    enter = printed(out, r"^ +(\S+/enter)$")
    logs = subprocess.run(
        [enter, "gnctl", "logs", "4"], capture_output=True, text=True, env=OUTSIDE
    )
    assert "rolled back to" in logs.stdout, logs.stdout + logs.stderr
    pool = subprocess.run(
        [enter, "zfs", "list", "-H", "-o", "name"], capture_output=True, text=True
    )
    assert "gnspawn-test/machines/web" in pool.stdout.split(), pool.stdout + pool.stderr
    journal = printed(out, r"^ +journalctl -D (\S+) GNSPAWN_JOB=4$")
    entries = subprocess.run(
        ["journalctl", "-D", journal, "GNSPAWN_JOB=4", "-o", "cat", "--no-pager"],
        capture_output=True,
        text=True,
    )
    assert "rolled back to" in entries.stdout, entries.stderr

    stopped = demo(directory, "--stop")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert not [name for name, p in recorded.items() if running(p)]
    assert not directory.exists(), "the pool file and the sandbox's files are removed"
    namespace = state["mount_namespace"]
    left = [
        pid
        for pid in (p.name for p in Path("/proc").iterdir() if p.name.isdigit())
        if os.path.exists(f"/proc/{pid}/ns/mnt") and os.readlink(f"/proc/{pid}/ns/mnt") == namespace
    ]
    assert not left, "a process of the sandbox runs on, and with it its mounts"

    again = demo(directory, "--stop")
    assert again.returncode == 0 and "no sandbox runs" in again.stdout
