"""Health checks after an update and canary waves, through the real daemon, emerge,
pool and systemd-nspawn.

systemd cannot run as PID 1 here, so a "running container" is a real
`systemd-nspawn --register=no --keep-unit` process of the machine's root with the test
bed's busybox as its init, which the recording systemd stands in for (its unit jobs
stop and start that process) and the recording machined reports with its Leader PID.
"""

from __future__ import annotations

import json
import os
import signal
import stat
from pathlib import Path

from ebuilds import write_plain
from helpers import (
    busctl,
    call,
    gnctl,
    gnspawn_processes,
    hello_version,
    job_property,
    job_string,
    queued,
    wait_job,
)
from test_update_steps import phases
from testbed import Testbed, tree_hash, wait_for

STATE = ["/bin/busybox", "grep", "-qx", "1", "/usr/share/svc/version"]
"""The check: the service's state file says 1 (svc-2 breaks it)."""


def with_checks(daemon: Testbed, checks: list[list[str]], **updates: object) -> None:
    daemon.write_config(updates={"health": checks, **updates})
    daemon.stop_daemon()
    daemon.start_daemon()


def bootable(root: Path) -> None:
    """What systemd-nspawn needs of a root it runs read-only, and the test's busybox."""
    for directory in ("bin", "dev", "proc", "run", "sys", "tmp", "var/tmp"):
        (root / directory).mkdir(parents=True, exist_ok=True)
    (root / "bin/busybox").write_bytes(Path("/bin/busybox").read_bytes())
    (root / "bin/busybox").chmod(0o755)


def records(path: Path) -> list[list[str]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def unit_calls(path: Path) -> list[str]:
    return [f"{r[0]} {r[1]}" for r in records(path) if r[0].endswith("Unit")]


def leader(name: str) -> int:
    out = busctl(
        "get-property",
        "org.freedesktop.machine1",
        f"/org/freedesktop/machine1/machine/{name}",
        "org.freedesktop.machine1.Machine",
        "Leader",
    ).stdout.split()
    return int(out[1])


def seen_inside(name: str, path: str) -> str:
    """A file as the running container sees it, through its init's root."""
    return Path(f"/proc/{leader(name)}/root{path}").read_text()


def test_a_healthy_update_passes_its_checks_inside_the_running_container(
    daemon: Testbed,
) -> None:
    root = daemon.seed("web")
    (root / "etc/health-marker").write_text("web-own\n")
    # Only the container has the file: on the host the check would fail.
    check = ["/bin/busybox", "grep", "-q", "web-own", "/etc/health-marker"]
    with_checks(daemon, [check])
    with daemon.host_services(containers=["web"]) as record:
        before = leader("web")

        result = gnctl("update", "web")

        assert result.returncode == 0, result.stdout + result.stderr
        assert "TryRestartUnit systemd-nspawn@web.service" in unit_calls(record)
        assert leader("web") not in (0, before)  # restarted: a new init
        assert seen_inside("web", "/usr/share/hello/version") == "2\n"
    assert hello_version(root) == "2"
    assert phases(daemon, 1)[-3:] == ["config", "health", "cleanup"]
    said = [e["MESSAGE"] for e in daemon.daemon_journal("GNSPAWN_JOB=1", "GNSPAWN_PHASE=health")]
    assert said[1:] == [
        "health check 1/1: /bin/busybox grep -q web-own /etc/health-marker",
        "1 health checks passed",
    ]
    assert job_string(1, "Result") == "done"


def test_an_update_that_breaks_its_check_is_rolled_back_and_the_old_state_runs(
    daemon: Testbed,
) -> None:
    write_plain(daemon.repo, "svc", 1)
    root = daemon.seed("web", ["=app-misc/hello-1", "=app-misc/svc-1"])
    write_plain(daemon.repo, "svc", 2)
    with_checks(daemon, [STATE])
    with daemon.host_services(containers=["web"]) as record:
        before = tree_hash(root)  # with what systemd-nspawn adds to a root it runs

        result = gnctl("update", "web")

        assert result.returncode == 1
        error = job_string(1, "Error")
        expected = f"health check {' '.join(STATE)} failed: exit status 1"
        assert error.startswith(expected), error
        assert job_property(1, "RolledBack") == "b true"
        calls = unit_calls(record)
        restart = calls.index("TryRestartUnit systemd-nspawn@web.service")
        assert calls[restart + 1 :] == [
            "StopUnit systemd-nspawn@web.service",
            "StartUnit systemd-nspawn@web.service",
        ]
        # The container runs again, on the state before the update.
        assert seen_inside("web", "/usr/share/svc/version") == "1\n"
        assert tree_hash(root) == before
    assert phases(daemon, 1)[-3:] == ["config", "health", "rollback"]
    assert job_string(1, "Phase") == "rollback"
    notices = json.loads(gnctl("job", "--json", "1").stdout)["Notices"]
    assert notices[-1][:3] == ["health", " ".join(STATE), "err"]
    # The failed check waits on the machine, with its output, until a good update.
    listed = gnctl("list", "--no-legend").stdout.split()
    assert listed[-2:] == ["1", "health"], listed
    status = gnctl("status", "web").stdout
    assert f"health: {' '.join(STATE)}: exit status 1" in status
    assert expected in result.stderr

    # An update whose checks pass clears it (here in a throwaway container: web stopped).
    with_checks(daemon, [["/bin/busybox", "grep", "-qx", "2", "/usr/share/svc/version"]])
    assert gnctl("update", "-q", "web").returncode == 0
    assert gnctl("list", "--no-legend").stdout.split()[-2:] == ["done", "-"]


def test_a_daemon_killed_during_a_check_rolls_back_under_a_stopped_container(
    daemon: Testbed,
) -> None:
    root = daemon.seed("web")
    os.mkfifo(root / "gate")
    # The check waits at a FIFO of the container: the daemon dies while it runs.
    with_checks(daemon, [["/bin/busybox", "cat", "/gate"]])
    with daemon.host_services(containers=["web"]) as record:
        before = tree_hash(root)
        job = queued(call("Update", "st", "web", "0").stdout)
        wait_for(lambda: health_began(daemon, job), "the health check")
        daemon.stop_daemon(signal.SIGKILL)
        assert hello_version(root) == "2"

        daemon.start_daemon()

        assert wait_job(job) == "failed"
        assert job_string(job, "Error") == "interrupted"
        calls = unit_calls(record)
        assert calls[-2:] == [
            "StopUnit systemd-nspawn@web.service",
            "StartUnit systemd-nspawn@web.service",
        ]
        assert tree_hash(root) == before
        assert seen_inside("web", "/usr/share/hello/version") == "1\n"
        assert gnspawn_processes() == []


def health_began(daemon: Testbed, job: int) -> bool:
    said = daemon.daemon_journal(f"GNSPAWN_JOB={job}", "GNSPAWN_PHASE=health")
    return any(e["MESSAGE"].startswith("health check 1/1") for e in said)


def test_a_check_that_hangs_is_killed_at_the_timeout(daemon: Testbed) -> None:
    root = daemon.seed("web")
    with_checks(daemon, [["/bin/busybox", "sleep", "600"]], health_timeout=3)
    with daemon.host_services(containers=["web"]):
        before = tree_hash(root)

        result = gnctl("update", "web")

        assert result.returncode == 1
        error = job_string(1, "Error")
        assert error == "health check /bin/busybox sleep 600 failed: no answer within 3 s", error
        assert gnspawn_processes(1) == []
        assert tree_hash(root) == before


def test_a_stopped_container_is_checked_in_a_read_only_throwaway_one(daemon: Testbed) -> None:
    root = daemon.seed("web")
    # What baselayout gives a real root: the mount points a read-only root cannot
    # have made for it; and the test's busybox.
    bootable(root)
    reads = ["/bin/busybox", "test", "-f", "/usr/share/hello/version"]
    with_checks(daemon, [reads])
    assert gnctl("update", "-q", "web").returncode == 0
    assert hello_version(root) == "2"

    # A check that writes finds the root read-only: the update fails and rolls back.
    write_plain(daemon.repo, "svc", 1)
    daemon.emerge(root, "=app-misc/svc-1")
    write_plain(daemon.repo, "svc", 2)
    with_checks(daemon, [reads, ["/bin/busybox", "touch", "/written"]])
    before = tree_hash(root)

    result = gnctl("update", "web")

    assert result.returncode == 1
    error = job_string(2, "Error")
    assert error.startswith("health check /bin/busybox touch /written failed: exit status 1")
    assert "Read-only file system" in error
    assert tree_hash(root) == before
    assert not (root / "written").exists()


def test_a_failed_canary_holds_the_rest_of_its_profile_while_another_updates(
    daemon: Testbed,
) -> None:
    # 0rogue names profile default in its root, but nobody chose it for it: it may
    # not lead that profile's wave (and hold it with an update that fails), though its
    # name comes first; it follows the canary the admin's choice makes.
    rogue = daemon.seed("0rogue", ["=app-misc/hello-1", "=app-misc/broken-1"])
    a = daemon.seed("a", ["=app-misc/hello-1", "=app-misc/broken-1"])
    b = daemon.seed("b", ["=app-misc/hello-1"])
    c = daemon.seed("c", ["=app-misc/hello-1"])
    daemon.adopt("a")
    daemon.adopt("b")
    daemon.adopt("c", "default/bootable")
    before = tree_hash(b)

    result = gnctl("update", "--all")

    assert result.returncode == 1
    jobs = {job_string(i, "Machine"): i for i in range(1, 5)}
    assert f"canary a (job {jobs['a']}) goes first, then 0rogue, b\n" in result.stdout
    assert job_string(jobs["0rogue"], "Result") == "held"
    assert job_string(jobs["a"], "Result") == "failed"
    assert job_string(jobs["b"], "Result") == "held"
    held = job_string(jobs["b"], "Error")
    assert held.startswith(f"canary a failed (job {jobs['a']}): app-misc/broken-2 failed"), held
    assert tree_hash(b) == before
    assert hello_version(rogue) == "1"
    assert hello_version(a) == "1" and hello_version(c) == "2"
    assert job_string(jobs["c"], "Result") == "done"

    # Without the canary, no machine is held: b still waits for the trusted a (whose
    # binary packages it would install), and goes on when a fails.
    daemon.write_config("\n[machines.a]\ntrusted = true\n")
    daemon.stop_daemon()
    daemon.start_daemon()
    again = gnctl("update", "--all", "--no-canary", "-q")
    assert again.returncode == 1
    assert "canary" not in again.stdout
    jobs = {job_string(i, "Machine"): i for i in range(5, 9)}
    assert job_string(jobs["a"], "Result") == "failed"
    assert job_property(jobs["b"], "Follows") == f"u {jobs['a']}"
    assert job_string(jobs["b"], "Result") == "done"
    assert hello_version(b) == "2"


CONFINED = [
    "/bin/busybox",
    "sh",
    "-c",
    "grep -E '^(CapEff|CapBnd|CapAmb|NoNewPrivs):' /proc/self/status;"
    " for ns in pid mnt net uts ipc cgroup; do /bin/busybox readlink /proc/self/ns/$ns; done;"
    " /bin/busybox mknod /dev/gnspawn-disk b 8 0 2>/dev/null && echo mknod worked;"
    " [ -c /planted-zero ] && echo device there;"
    " /bin/busybox head -c 1 /planted-zero >/dev/null 2>&1 && echo device worked;"
    " echo links=$(/bin/busybox awk -F: 'NR > 2 {print $1}' /proc/net/dev | /bin/busybox xargs)",
]
"""A check that says what it may do: its capabilities, its namespaces, whether it can
make a device node or use one the container planted, which network interfaces it has."""
NAMESPACES = ("pid", "mnt", "net", "uts", "ipc", "cgroup")


def said_by_check(daemon: Testbed, job: int) -> list[str]:
    entries = daemon.daemon_journal(f"GNSPAWN_JOB={job}", "GNSPAWN_PHASE=health")
    return [e["MESSAGE"] for e in entries]


def test_a_check_in_a_running_container_has_no_capability_and_sees_the_container(
    daemon: Testbed,
) -> None:
    daemon.seed("web")
    with_checks(daemon, [CONFINED])
    with daemon.host_services(containers=["web"]):
        assert gnctl("update", "-q", "web").returncode == 0
        init = leader("web")
        namespaces = [os.readlink(f"/proc/{init}/ns/{ns}") for ns in NAMESPACES]
    said = said_by_check(daemon, 1)
    for line in ("CapEff:\t0000000000000000", "CapBnd:\t0000000000000000", "NoNewPrivs:\t1"):
        assert line in said, said
    assert "CapAmb:\t0000000000000000" in said, said
    for namespace in namespaces:  # the container's, not the host's
        assert namespace in said, (namespace, said)
    assert "mknod worked" not in said, said


def test_a_check_in_a_throwaway_container_has_no_capability_and_no_network(
    daemon: Testbed,
) -> None:
    root = daemon.seed("web")
    bootable(root)
    os.mknod(root / "planted-zero", 0o666 | stat.S_IFCHR, os.makedev(1, 5))
    with_checks(daemon, [CONFINED])

    result = gnctl("update", "-q", "web")
    assert result.returncode == 0, result.stderr

    said = said_by_check(daemon, 1)
    for line in ("CapEff:\t0000000000000000", "CapBnd:\t0000000000000000", "NoNewPrivs:\t1"):
        assert line in said, said
    assert "mknod worked" not in said, said
    assert "device there" in said, said
    assert "device worked" not in said, said
    links = [line.split("=", 1)[1].split() for line in said if line.startswith("links=")]
    assert links == [["lo"]], said  # a network of its own: loopback only


def test_a_container_that_does_not_come_back_is_rolled_back_and_started_again(
    daemon: Testbed,
) -> None:
    root = daemon.seed("web")
    unit = "systemd-nspawn@web.service"
    with_checks(daemon, [["/bin/busybox", "true"]])
    failing = {("TryRestartUnit", unit): "failed"}
    with daemon.host_services(containers=["web"], fail=failing) as record:
        before = tree_hash(root)

        result = gnctl("update", "web")

        assert result.returncode == 1
        error = json.loads(gnctl("job", "--json", "1").stdout)["Error"]
        why = f"systemd's TryRestartUnit job for {unit} ended with result failed"
        assert error.startswith(f"restart of {unit} failed: {why}"), error
        assert job_property(1, "RolledBack") == "b true"
        assert unit_calls(record)[-3:] == [
            f"TryRestartUnit {unit}",
            f"StopUnit {unit}",
            f"StartUnit {unit}",
        ]
        assert tree_hash(root) == before
        assert seen_inside("web", "/usr/share/hello/version") == "1\n"
    assert gnctl("list", "--no-legend").stdout.split()[-2:] == ["1", "health"]


def test_an_update_canceled_during_its_check_is_rolled_back_and_started_again(
    daemon: Testbed,
) -> None:
    root = daemon.seed("web")
    os.mkfifo(root / "gate")
    # The check waits at a FIFO of the container: the job is canceled while it runs.
    with_checks(daemon, [["/bin/busybox", "cat", "/gate"]])
    unit = "systemd-nspawn@web.service"
    with daemon.host_services(containers=["web"]) as record:
        before = tree_hash(root)
        job = queued(call("Update", "st", "web", "0").stdout)
        wait_for(lambda: health_began(daemon, job), "the health check")

        call("CancelJob", "u", str(job))

        assert wait_job(job) == "canceled"
        assert job_property(job, "RolledBack") == "b true"
        assert unit_calls(record)[-2:] == [f"StopUnit {unit}", f"StartUnit {unit}"]
        assert tree_hash(root) == before
        assert seen_inside("web", "/usr/share/hello/version") == "1\n"
        assert gnspawn_processes(job) == []
