"""The daemon killed at known points of each kind of job, not at random times: in a
package's pkg_preinst or pkg_postinst, and inside the zfs command of a Remove, a Prune
or a Rollback. After the restart every job ends as it must, the machine is as it was
before the job or as the job leaves it, and the bus answers at once."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shlex
import shutil
import signal
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from helpers import (
    MANAGER,
    bed_processes,
    busctl,
    call,
    gnspawn_processes,
    hello_version,
    job_property,
    job_string,
    queued,
    snapshots,
    wait_job,
    wait_until,
)
from testbed import Testbed, emerge_environment, tree_hash, zfs

WAIT = 60.0
"""Seconds a test waits for a job to reach a stop, or for a stopped process to go."""
READY_WITHIN = 10.0
"""Seconds from a restart to the first answer on the bus."""


class Gate:
    """A FIFO that a process blocks on until the test releases it, and the file in which
    that process says it got there (one line each time)."""

    def __init__(self, fifo: Path) -> None:
        self.fifo = fifo
        self.reached_file = Path(f"{fifo}.reached")
        self.remove()
        os.mkfifo(fifo)

    def reached(self) -> list[str]:
        try:
            return self.reached_file.read_text().splitlines()
        except FileNotFoundError:
            return []

    def wait(self, job: int) -> list[str]:
        """The lines of the reached file, once there is one; fails at once if the job
        ends first, and after WAIT seconds."""

        def there() -> bool:
            if self.reached():
                return True
            if job_string(job, "State") == "finished":
                raise AssertionError(
                    f"job {job} ended before it reached {self.fifo}: "
                    f"{job_string(job, 'Result')} {job_string(job, 'Error')}"
                )
            return False

        wait_until(there, f"job {job} to reach {self.fifo}", timeout=WAIT)
        return self.reached()

    def release(self, timeout: float = 5) -> bool:
        """Give a line to whoever waits on the FIFO; False when nobody does, or not
        within `timeout` seconds (the reached file is written just before the FIFO is
        opened)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as err:
                if err.errno != errno.ENXIO:
                    raise
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.05)
                continue
            try:
                os.write(fd, b"go\n")
            finally:
                os.close(fd)
            return True

    def remove(self) -> None:
        self.fifo.unlink(missing_ok=True)
        self.reached_file.unlink(missing_ok=True)


ZFS_WRAPPER = """#!/bin/sh
# zfs as gnspawnd runs it. The first call that the rule file names (before or after, a
# subcommand, a pattern of the last argument) writes "PID WHEN ARGS" to the reached
# file and waits for a line on the FIFO, before or after running the real zfs; every
# other call goes straight through.
real=@REAL@
control=@CONTROL@
for last; do :; done
if [ "$#" -gt 0 ] && read -r when verb pattern 2>/dev/null <"$control/rule" &&
    [ "$1" = "$verb" ]; then
    case "$last" in
    $pattern)
        if mv "$control/rule" "$control/rule.$$" 2>/dev/null; then
            if [ "$when" = after ]; then
                "$real" "$@"
                status=$?
            fi
            echo "$$ $when $*" >>"$control/fifo.reached"
            read -r line <"$control/fifo"
            if [ "$when" = after ]; then
                exit "$status"
            fi
        fi
        ;;
    esac
fi
exec "$real" "$@"
"""


class ZfsStop:
    """A zfs in front of the real one on the daemon's PATH that stops once, at a call
    the test names, and passes every other call through.

    The daemon runs zfs in a session of its own and not tied to its life: a zfs that
    waits here when the daemon is killed goes on waiting, an orphan, until the test
    kills it (the command never ran) or releases it (it runs, or has run, to its end).
    """

    def __init__(self, directory: Path) -> None:
        shutil.rmtree(directory, ignore_errors=True)
        (directory / "bin").mkdir(parents=True)
        self.dir = directory
        self.gate = Gate(directory / "fifo")
        real = shutil.which("zfs")
        assert real is not None
        script = directory / "bin" / "zfs"
        script.write_text(
            ZFS_WRAPPER.replace("@REAL@", shlex.quote(real)).replace(
                "@CONTROL@", shlex.quote(str(directory))
            )
        )
        script.chmod(0o755)
        self.env = {"PATH": f"{directory / 'bin'}:{os.environ['PATH']}"}
        self._stopped: list[tuple[int, str]] = []

    def stop_at(self, when: str, verb: str, target: str) -> None:
        """Stop the next `zfs VERB ... TARGET` (a shell pattern) before or after it runs."""
        assert when in ("before", "after")
        (self.dir / "rule").write_text(f"{when} {verb} {target}\n")

    def wait(self, job: int) -> int:
        """The PID of the zfs that stopped for the job's call."""
        pid = int(self.gate.wait(job)[0].split()[0])
        self._stopped.append((pid, _start_time(pid)))
        return pid

    def kill(self, pid: int) -> None:
        """The orphan is killed where it waits: before, the command never runs."""
        os.kill(pid, signal.SIGKILL)
        self._gone(pid)

    def release(self, pid: int) -> None:
        """The orphan goes on: before, it runs the real command now."""
        assert self.gate.release(), f"zfs {pid} does not wait on {self.gate.fifo}"
        self._gone(pid)

    def _gone(self, pid: int) -> None:
        started = dict(self._stopped)[pid]
        wait_until(lambda: not _alive(pid, started), f"zfs {pid} to end", timeout=WAIT)

    def cleanup(self) -> None:
        """Nothing stops any more, and nothing that stopped is left."""
        (self.dir / "rule").unlink(missing_ok=True)
        for pid, started in self._stopped:
            if _alive(pid, started):
                os.kill(pid, signal.SIGKILL)
        # One that stopped while the test was failing, before it was waited for.
        known = {pid for pid, _ in self._stopped}
        for line in self.gate.reached():
            pid = int(line.split()[0])
            with contextlib.suppress(OSError):
                argv = Path(f"/proc/{pid}/cmdline").read_bytes()
                if pid not in known and str(self.dir).encode() in argv:
                    os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name; None when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def _start_time(pid: int) -> str:
    fields = _stat(pid)
    assert fields is not None, f"process {pid} is gone"
    return fields[19]


def _alive(pid: int, started: str) -> bool:
    """Whether the process that started at `started` runs (a zombie does not: the
    orphans of a killed daemon are reaped by whoever adopted them, if anyone)."""
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z" and fields[19] == started


def processes_on(root: Path) -> list[int]:
    """Processes of this test bed that work on `root` as emerge's phases do (ROOT in
    their environment), tagged by the daemon or not."""
    wanted = {f"ROOT={root}".encode(), f"ROOT={root}/".encode()}
    return [pid for pid, environ in bed_processes() if wanted & set(environ)]


def described(pids: list[int]) -> str:
    """Each process as `ps` would show it: PID, parent, command line."""
    lines = []
    for pid in pids:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            parent = (_stat(pid) or ["", "?"])[1]
        except OSError:
            continue
        lines.append(f"{pid} (parent {parent}) {argv.strip()}")
    return "; ".join(lines)


def restart(daemon: Testbed, env: Mapping[str, str] | None = None) -> str:
    """gnspawnd started again after a SIGKILL; the ListMachines that it answers within
    READY_WITHIN seconds of the start."""
    started = time.monotonic()
    daemon.start_daemon(env=env)
    listing = call("ListMachines").stdout
    took = time.monotonic() - started
    assert took < READY_WITHIN, f"the bus answered {took:.1f} s after the restart"
    return listing


def recovery_line(job: int, kind: str, name: str) -> str:
    title = f"{kind} of {name}" if name else kind
    return f"job {job} ({title}) was interrupted, recovering"


def journal_has(daemon: Testbed, line: str) -> None:
    def logged() -> bool:
        return any(entry.get("MESSAGE") == line for entry in daemon.daemon_journal())

    wait_until(logged, f"{line!r} in the journal", timeout=10)


def retention(name: str) -> list[tuple[str, bool, str]]:
    """ListRetention as (snapshot, keep, reason) rows."""
    out = busctl("--json=short", "call", *MANAGER, "ListRetention", "s", name).stdout
    return [(snap, bool(keep), str(why)) for snap, keep, why in json.loads(out)["data"][0]]


def datasets(parent: str) -> list[str]:
    return zfs("list", "-H", "-o", "name", "-r", parent).split()


def plain_machine(bed: Testbed, name: str) -> Path:
    """A machine dataset with files, links and directories, not a Gentoo root: a
    Remove, a Prune or a Rollback needs no more."""
    root = bed.machines / name
    zfs("create", "-o", f"mountpoint={root}", f"{bed.dataset}/{name}")
    write_files(root, 1)
    return root


def write_files(root: Path, version: int) -> None:
    """Files whose content, mode, owner and link targets change with `version`."""
    (root / "etc").mkdir(exist_ok=True)
    hostname = root / "etc" / "hostname"
    hostname.write_text(f"{root.name}-{version}\n")
    hostname.chmod(0o644 if version == 1 else 0o600)
    os.chown(hostname, 0, 0 if version == 1 else 100)
    data = root / "srv" / f"data-{version}"
    data.mkdir(parents=True, exist_ok=True)
    (data / "file").write_bytes(os.urandom(4096))
    current = root / "srv" / "current"
    current.unlink(missing_ok=True)
    current.symlink_to(data.name)


# --- updates stopped in a phase of the merge ---------------------------------------------


def gate_machine(daemon: Testbed) -> tuple[Path, str]:
    """web with gate-1 installed and a binary package of gate-2 to upgrade to, and the
    snapshot @base of it: every update of this test installs the same package."""
    root = daemon.seed("web", ["=app-misc/gate-1"])
    daemon.emerge(root, "--buildpkgonly", "=app-misc/gate-2")
    ds = f"{daemon.dataset}/web"
    zfs("snapshot", f"{ds}@base")
    return root, ds


def differences(one: dict[str, str], other: dict[str, str]) -> set[str]:
    """The paths of two trees that are not the same in both."""
    return {path for path in one.keys() | other.keys() if one.get(path) != other.get(path)}


def gate_version(root: Path) -> str:
    return (root / "usr/share/gate/version").read_text().strip()


def undisturbed_update(daemon: Testbed) -> tuple[Path, dict[str, str], dict[str, str]]:
    """web's root, its tree before the update and after it: the update runs once, to
    its end, and web is rolled back to @base again."""
    root, ds = gate_machine(daemon)
    before = tree_hash(root)
    assert wait_job(queued(call("Update", "st", "web", "0").stdout)) == "done"
    after = tree_hash(root)
    assert gate_version(root) == "2"
    assert after != before
    zfs("rollback", "-r", f"{ds}@base")
    assert tree_hash(root) == before
    return root, before, after


@pytest.mark.parametrize("phase", ["preinst", "postinst"])
def test_an_update_killed_in_a_phase_of_the_merge_is_undone(daemon: Testbed, phase: str) -> None:
    root, before, after = undisturbed_update(daemon)
    # In DISTDIR: emerge runs confined to the root, and that is a directory it may write.
    gate = Gate(daemon.work / "distfiles" / "gate")
    try:
        env = {
            **emerge_environment(daemon.repo),
            "GNSPAWN_DEMO_GATE": str(gate.fifo),
            "GNSPAWN_DEMO_GATE_PHASE": phase,
        }
        daemon.write_config(portage={"environment": env})
        daemon.stop_daemon()
        daemon.start_daemon()
        job = queued(call("Update", "st", "web", "0").stdout)
        assert gate.wait(job) == [phase]
        assert job_string(job, "Phase") == "emerge"
        assert job_string(job, "CurrentPackage") == "app-misc/gate-2"
        daemon.stop_daemon(signal.SIGKILL)
        # Where the merge stood: gate-2's files come between the two phases.
        assert gate_version(root) == ("1" if phase == "preinst" else "2")
        assert tree_hash(root) not in (before, after)

        listing = restart(daemon)

        assert wait_job(job, timeout=10) == "failed"
        assert job_string(job, "Error") == "interrupted"
        assert job_property(job, "RolledBack") == "b true"
        # Rolled back, the machine is as it was: ready; its last result says it failed.
        assert re.search(r'"web" "ready" "[^"]*" "failed"', listing), listing
        recovered = tree_hash(root)
        assert recovered == before
        assert recovered != after
        journal_has(daemon, recovery_line(job, "update", "web"))
        assert gnspawn_processes() == []
        # Portage runs pkg_preinst and pkg_postinst from the package's saved
        # environment, without the daemon's tag: the phase of the killed merge must be
        # gone all the same, or it goes on in the root that was rolled back under it.
        left = processes_on(root)
        assert left == [], f"the killed emerge's phases still run: {described(left)}"
        assert not gate.release(timeout=0), "a phase of the killed emerge waits at the gate"
    finally:
        for pid in processes_on(root):
            os.kill(pid, signal.SIGKILL)
        gate.remove()


def test_an_update_killed_after_it_ended_keeps_its_tree(daemon: Testbed) -> None:
    root, _, after = undisturbed_update(daemon)
    job = queued(call("Update", "st", "web", "0").stdout)
    assert wait_job(job) == "done"
    finished = tree_hash(root)
    # The undisturbed update's tree, but for the time of the merge that Portage writes
    # into the package's entry (#dir_mtime in its metadata file).
    assert differences(finished, after) <= {"var/db/pkg/app-misc/gate-2/metadata"}
    daemon.stop_daemon(signal.SIGKILL)

    listing = restart(daemon)

    assert job_string(job, "State") == "finished"
    assert job_string(job, "Result") == "done"
    assert '"web" "ready"' in listing, listing
    assert tree_hash(root) == finished
    messages = [entry.get("MESSAGE") for entry in daemon.daemon_journal()]
    assert recovery_line(job, "update", "web") not in messages


# --- jobs stopped inside a zfs command ---------------------------------------------------


@pytest.mark.parametrize(
    ("when", "orphan"), [("before", "killed"), ("before", "released"), ("after", "released")]
)
def test_a_remove_killed_in_zfs_destroy_is_done_after_the_restart(
    daemon: Testbed, when: str, orphan: str
) -> None:
    root = plain_machine(daemon, "web")
    ds = f"{daemon.dataset}/web"
    settings = daemon.dir / "nspawn" / "web.nspawn"
    settings.parent.mkdir(exist_ok=True)
    settings.write_text("[Exec]\nBoot=yes\n")
    stop = ZfsStop(daemon.dir / "zfs-stop")
    try:
        daemon.stop_daemon()
        daemon.start_daemon(env=stop.env)
        stop.stop_at(when, "destroy", ds)
        job = queued(call("Remove", "st", "web", "0").stdout)
        pid = stop.wait(job)
        assert job_string(job, "Phase") == "cleanup"
        daemon.stop_daemon(signal.SIGKILL)
        assert (ds in datasets(daemon.dataset)) == (when == "before")
        if orphan == "killed":
            stop.kill(pid)
        else:
            stop.release(pid)
        assert (ds in datasets(daemon.dataset)) == (orphan == "killed")

        listing = restart(daemon, env=stop.env)

        assert wait_job(job, timeout=10) == "done", job_string(job, "Error")
        assert '"web"' not in listing, listing
        assert ds not in datasets(daemon.dataset)
        assert not settings.exists()
        assert not root.exists()
        journal_has(daemon, recovery_line(job, "remove", "web"))
    finally:
        stop.cleanup()


def test_a_prune_killed_in_zfs_destroy_is_done_with_the_same_verdicts(daemon: Testbed) -> None:
    root = plain_machine(daemon, "web")
    ds = f"{daemon.dataset}/web"
    zfs("snapshot", f"{ds}@admin")  # the admin's own: never pruned
    # Snapshots as eight updates would have left them, tagged with their jobs.
    for job_id in range(1001, 1009):
        write_files(root, job_id)
        zfs("snapshot", "-o", f"org.gnspawn:job={job_id}", f"{ds}@gnspawn-{job_id}-pre")
    verdicts = retention("web")
    doomed = [snap for snap, keep, _ in verdicts if not keep]
    kept = [verdict for verdict in verdicts if verdict[1]]
    assert doomed == ["gnspawn-1001-pre", "gnspawn-1002-pre", "gnspawn-1003-pre"]
    stop = ZfsStop(daemon.dir / "zfs-stop")
    try:
        daemon.stop_daemon()
        daemon.start_daemon(env=stop.env)
        stop.stop_at("before", "destroy", f"{ds}@{doomed[1]}")
        job = queued(call("Prune", "st", "web", "0").stdout)
        pid = stop.wait(job)
        assert job_string(job, "Phase") == "cleanup"
        daemon.stop_daemon(signal.SIGKILL)
        stop.kill(pid)
        # Killed half way: the first went, the other two are left.
        left = [snap.split("@", 1)[1] for snap in snapshots(ds)]
        assert doomed[0] not in left and doomed[1] in left and doomed[2] in left

        restart(daemon, env=stop.env)

        assert wait_job(job, timeout=10) == "done", job_string(job, "Error")
        assert [snap.split("@", 1)[1] for snap in snapshots(ds)] == [snap for snap, _, _ in kept]
        assert retention("web") == kept
        journal_has(daemon, recovery_line(job, "prune", "web"))
    finally:
        stop.cleanup()


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_rollback_killed_in_zfs_rollback_is_done_after_the_restart(
    daemon: Testbed, when: str
) -> None:
    root = plain_machine(daemon, "web")
    ds = f"{daemon.dataset}/web"
    zfs("snapshot", f"{ds}@v1")
    target = tree_hash(root)
    write_files(root, 2)
    changed = tree_hash(root)
    assert changed != target
    stop = ZfsStop(daemon.dir / "zfs-stop")
    try:
        daemon.stop_daemon()
        daemon.start_daemon(env=stop.env)
        stop.stop_at(when, "rollback", f"{ds}@v1")
        job = queued(call("Rollback", "sst", "web", "v1", "0").stdout)
        pid = stop.wait(job)
        assert job_string(job, "Phase") == "rollback"
        daemon.stop_daemon(signal.SIGKILL)
        if when == "before":
            stop.kill(pid)
            assert tree_hash(root) == changed
        else:
            stop.release(pid)
            assert tree_hash(root) == target

        restart(daemon, env=stop.env)

        assert wait_job(job, timeout=10) == "done", job_string(job, "Error")
        assert tree_hash(root) == target
        journal_has(daemon, recovery_line(job, "rollback", "web"))
    finally:
        stop.cleanup()


@pytest.mark.parametrize("when", ["before", "after"])
def test_the_rollback_of_a_failed_update_killed_in_zfs_rollback_is_finished(
    daemon: Testbed, when: str
) -> None:
    root = daemon.seed("db", ["=app-misc/hello-1", "=app-misc/broken-1"])
    before = tree_hash(root)
    ds = f"{daemon.dataset}/db"
    stop = ZfsStop(daemon.dir / "zfs-stop")
    try:
        daemon.stop_daemon()
        daemon.start_daemon(env=stop.env)
        stop.stop_at(when, "rollback", f"{ds}@gnspawn-*-pre")
        job = queued(call("Update", "st", "db", "0").stdout)
        pid = stop.wait(job)
        # hello-2 was merged, broken-2 failed to build: the job rolls back.
        assert job_string(job, "Phase") == "rollback"
        daemon.stop_daemon(signal.SIGKILL)
        if when == "before":
            assert hello_version(root) == "2"
            stop.kill(pid)
        else:
            assert tree_hash(root) == before
            stop.release(pid)

        listing = restart(daemon, env=stop.env)

        assert wait_job(job, timeout=10) == "failed"
        assert job_string(job, "Error") == "interrupted"
        assert job_property(job, "RolledBack") == "b true"
        # Rolled back, the machine is as it was: ready; its last result says it failed.
        assert re.search(r'"db" "ready" "[^"]*" "failed"', listing), listing
        assert tree_hash(root) == before
        journal_has(daemon, recovery_line(job, "update", "db"))
        assert gnspawn_processes() == []
    finally:
        stop.cleanup()


def machine_state(name: str) -> str:
    listing = call("ListMachines").stdout
    found = re.search(rf'"{name}" "(\w[\w-]*)"', listing)
    assert found, listing
    return found.group(1)


def test_a_machine_an_update_left_half_done_stays_failed_until_a_rollback(
    daemon: Testbed,
) -> None:
    """The rollback of a failed update fails (its zfs rollback is killed): the machine
    is as the failed emerge left it, and says so until a rollback puts it right; a
    later pretend update changes nothing about that."""
    root = daemon.seed("db", ["=app-misc/hello-1", "=app-misc/broken-1"])
    ds = f"{daemon.dataset}/db"
    zfs("snapshot", f"{ds}@good")
    stop = ZfsStop(daemon.dir / "zfs-stop")
    try:
        daemon.stop_daemon()
        daemon.start_daemon(env=stop.env)
        stop.stop_at("before", "rollback", f"{ds}@gnspawn-*-pre")
        job = queued(call("Update", "st", "db", "0").stdout)
        stop.kill(stop.wait(job))

        assert wait_job(job) == "failed"
        assert job_property(job, "RolledBack") == "b false"
        assert hello_version(root) == "2"  # half done: hello-2 merged, broken-2 failed
        assert machine_state("db") == "failed"

        pretend = queued(call("Update", "st", "db", "4").stdout)
        assert wait_job(pretend) == "done"
        assert machine_state("db") == "failed"

        undo = queued(call("Rollback", "sst", "db", "good", "0").stdout)
        assert wait_job(undo) == "done", job_string(undo, "Error")
        assert hello_version(root) == "1"
        assert machine_state("db") == "ready"
    finally:
        stop.cleanup()
