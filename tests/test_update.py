"""Updates through the real daemon, on the real bus, pool, journal and emerge."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

from helpers import (
    build_with_a_job_waiting,
    call,
    gnctl,
    gnspawn_processes,
    hello_version,
    job_property,
    job_string,
    queued,
    snapshots,
    wait_job,
    wait_until,
)
from testbed import Testbed, tree_hash, zfs


def test_update_merges_the_upgrade_and_keeps_a_snapshot(daemon: Testbed) -> None:
    root = daemon.seed("web")
    assert hello_version(root) == "1"

    result = gnctl("update", "--verbose", "web")

    assert result.returncode == 0, result.stderr
    # From source, or as the binary package an earlier test built into the shared PKGDIR.
    assert re.search(r">>> Emerging (binary )?\(1 of 1\) app-misc/hello-2", result.stdout)
    assert "job 1: update of web done" in result.stdout
    assert hello_version(root) == "2"
    ds = f"{daemon.dataset}/web"
    assert snapshots(ds) == [f"{ds}@gnspawn-1-pre"]
    assert zfs("get", "-H", "-o", "value", "org.gnspawn:job", f"{ds}@gnspawn-1-pre").strip() == "1"
    assert job_string(1, "Result") == "done"
    assert job_string(1, "Snapshot") == f"{ds}@gnspawn-1-pre"
    assert job_property(1, "RolledBack") == "b false"
    assert job_property(1, "Progress") == "u 100"
    assert job_property(1, "PackagesDone") == "u 1"
    assert job_property(1, "PackagesTotal") == "u 1"
    assert job_property(1, "InitiatorUID") == "u 0"


def test_every_emerge_line_reaches_the_journal_with_the_job_fields(daemon: Testbed) -> None:
    daemon.seed("web")
    assert gnctl("update", "--quiet", "web").returncode == 0

    entries = daemon.daemon_journal("GNSPAWN_JOB=1")
    emerging = [
        e
        for e in entries
        if re.match(r">>> Emerging (binary )?\(1 of 1\) app-misc/hello-2", e["MESSAGE"])
    ]
    assert len(emerging) == 1
    assert emerging[0]["GNSPAWN_MACHINE"] == "web"
    assert emerging[0]["GNSPAWN_PHASE"] == "emerge"
    assert emerging[0]["SYSLOG_IDENTIFIER"] == "gnspawnd"
    assert any(e["MESSAGE"] == "update of web done" for e in entries)
    by_machine = daemon.daemon_journal("GNSPAWN_MACHINE=web", "GNSPAWN_PHASE=snapshot")
    assert any("snapshot" in e["MESSAGE"] for e in by_machine)


def test_a_flood_of_output_reaches_the_journal_whole_while_the_bus_answers(
    daemon: Testbed,
) -> None:
    # chatty-2's compile prints 200,000 lines: more than journald takes at once, so
    # lines wait in gnspawnd (and emerge waits for them) instead of being dropped or
    # blocking the daemon.
    daemon.seed("loud", ["=app-misc/hello-1", "=app-misc/chatty-1"])
    job = queued(call("Update", "st", "loud", "0").stdout)
    wait_until(lambda: job_string(job, "Phase") == "emerge", "the emerge")
    answered = 0
    while job_string(job, "State") != "finished":  # each a bus round trip to gnspawnd
        answered += 1
    assert job_string(job, "Result") == "done"
    assert answered > 10

    subprocess.run(["journalctl", "--flush"], capture_output=True)
    lines = subprocess.run(
        ["journalctl", "-D", "/run/log/journal", f"GNSPAWN_JOB={job}", "-o", "cat", "-q"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    compiled = [line for line in lines if line.startswith("cc -c -O2 -o obj/")]
    assert compiled == [f"cc -c -O2 -o obj/{n:06d}.o" for n in range(1, 200_001)]
    assert lines[-1] == "update of loud done"


def test_failed_update_rolls_back_file_for_file(daemon: Testbed) -> None:
    root = daemon.seed("db", ["=app-misc/hello-1", "=app-misc/broken-1"])
    before = tree_hash(root)

    result = gnctl("update", "--verbose", "db")

    assert result.returncode == 1
    assert "app-misc/broken-2 failed (compile phase)" in result.stderr
    assert "rolled back to" in result.stderr
    # hello-2 was merged before broken-2 failed; the rollback undid it.
    assert ">>> Completed (1 of 2) app-misc/hello-2" in result.stdout
    assert tree_hash(root) == before
    assert hello_version(root) == "1"
    assert job_string(1, "Result") == "failed"
    assert job_property(1, "RolledBack") == "b true"
    assert "app-misc/broken-2" in job_string(1, "Error")
    log_file = job_string(1, "Error").split(", log: ")[1]
    assert "broken on purpose" in Path(log_file).read_text()
    assert job_string(1, "Phase") == "rollback"


def test_keep_failed_copies_the_failed_state_aside(daemon: Testbed) -> None:
    root = daemon.seed("db", ["=app-misc/hello-1", "=app-misc/broken-1"])
    before = tree_hash(root)

    assert gnctl("update", "--keep-failed", "-q", "db").returncode == 1

    assert tree_hash(root) == before
    copy = f"{daemon.dataset}/db:failed-1"
    assert snapshots(copy) == [f"{copy}@gnspawn-1-failed"]
    assert zfs("get", "-H", "-o", "value", "mounted", copy).strip() == "no"
    # The pre snapshot is the state the machine is back in: it went with the rollback.
    assert snapshots(f"{daemon.dataset}/db") == []

    # The copy is listed with the machine's snapshots, marked as what it is ...
    listed = gnctl("snapshots", "db")
    assert listed.returncode == 0, listed.stderr
    line = next(line for line in listed.stdout.splitlines() if "failed-1" in line)
    assert line.startswith("db:failed-1@gnspawn-1-failed ")
    assert "kept: a failed state kept for inspection (KEEP_FAILED)" in line
    # ... and gnctl prune drops it.
    pruned = gnctl("prune", "db")
    assert pruned.returncode == 0, pruned.stderr
    assert copy not in zfs("list", "-H", "-o", "name", "-r", daemon.dataset).split()
    assert tree_hash(root) == before


def test_remove_takes_the_machines_failed_copies_with_it(daemon: Testbed) -> None:
    daemon.seed("db", ["=app-misc/hello-1", "=app-misc/broken-1"])
    daemon.seed("web")
    assert gnctl("update", "--keep-failed", "-q", "db").returncode == 1
    assert f"{daemon.dataset}/db:failed-1" in zfs("list", "-H", "-o", "name", "-r", daemon.dataset)

    removed = gnctl("remove", "--verbose", "db")

    assert removed.returncode == 0, removed.stderr
    assert "destroyed the failed copy" in removed.stdout
    assert ".nspawn" not in removed.stdout  # there was none to remove
    left = zfs("list", "-H", "-o", "name", "-r", daemon.dataset).split()
    assert left == [daemon.dataset, f"{daemon.dataset}/web"]


def test_failed_updates_leave_no_snapshots_and_rollback_undoes_the_last_good_one(
    daemon: Testbed,
) -> None:
    daemon.write_config(storage={"keep_snapshots": 2})
    daemon.stop_daemon()
    daemon.start_daemon()
    root = daemon.seed("db", ["=app-misc/hello-1"])
    ds = f"{daemon.dataset}/db"
    good = queued(call("Update", "st", "db", "0").stdout)
    assert wait_job(good) == "done"
    after_good = tree_hash(root)
    # broken-2 is pending now and fails every time.
    daemon.emerge(root, "=app-misc/broken-1")
    failing = tree_hash(root)
    for _ in range(4):
        job = queued(call("Update", "st", "db", "0").stdout)
        assert wait_job(job) == "failed"
        assert tree_hash(root) == failing

    # Only the restore point of the good update is left: failures added nothing.
    assert snapshots(ds) == [f"{ds}@gnspawn-{good}-pre"]
    assert call("ListRetention", "s", "db").stdout.count(" true ") == 1

    # The default rollback target is that restore point, not a failure's own state.
    rollback = queued(call("Rollback", "sst", "db", "", "0").stdout)
    assert wait_job(rollback) == "done"
    assert hello_version(root) == "1"
    assert tree_hash(root) != after_good


def test_cancel_of_a_running_update_stops_emerge_and_rolls_back(daemon: Testbed) -> None:
    root = daemon.seed("slow", ["=app-misc/hello-1", "=app-misc/sleeper-1"])
    before = tree_hash(root)
    job = queued(call("Update", "st", "slow", "0").stdout)
    wait_until(
        lambda: job_string(job, "CurrentPackage") == "app-misc/sleeper-2",
        "sleeper-2 to start building",
    )
    assert gnspawn_processes(job)
    assert hello_version(root) == "2"

    result = gnctl("cancel", str(job))

    assert result.returncode == 0, result.stderr
    assert wait_job(job) == "canceled"
    assert gnspawn_processes(job) == []
    assert tree_hash(root) == before
    assert job_property(job, "RolledBack") == "b true"


def test_queue_merges_waiting_updates_and_runs_one_job_per_machine(daemon: Testbed) -> None:
    daemon.seed("slow", ["=app-misc/hello-1", "=app-misc/sleeper-1"])
    first = queued(call("Update", "st", "slow", "0").stdout)
    wait_until(lambda: job_string(first, "State") == "running", "the first job to run")

    second = queued(call("Update", "st", "slow", "0").stdout)
    again = queued(call("Update", "st", "slow", "0").stdout)
    busy = gnctl("update", "--fail-if-busy", "slow")

    assert second == first + 1
    assert again == second
    assert job_string(second, "State") == "waiting"
    assert busy.returncode == 3
    assert "has a job waiting or running" in busy.stderr
    jobs = call("ListJobs").stdout
    assert jobs.startswith("a(ussssuo) 2 ")
    assert gnctl("cancel", str(second)).returncode == 0
    assert job_string(second, "Result") == "canceled"
    assert gnctl("cancel", str(first)).returncode == 0
    assert wait_job(first) == "canceled"
    refused = gnctl("cancel", str(first))
    assert refused.returncode == 3
    assert "has finished" in refused.stderr


def test_machines_run_in_parallel_up_to_max_parallel(daemon: Testbed) -> None:
    for name in ("a", "b", "c"):
        daemon.seed(name, ["=app-misc/hello-1", "=app-misc/sleeper-1"])
    jobs = [queued(call("Update", "st", name, "0").stdout) for name in ("a", "b", "c")]
    wait_until(
        lambda: all(job_string(j, "CurrentPackage") == "app-misc/sleeper-2" for j in jobs[:2]),
        "two jobs building",
    )
    assert job_string(jobs[2], "State") == "waiting"
    assert call("Get" if False else "ListJobs").returncode == 0
    props = [job_string(j, "State") for j in jobs]
    assert props == ["running", "running", "waiting"]
    for job in reversed(jobs):
        gnctl("cancel", str(job))
    for job in jobs:
        assert wait_job(job) == "canceled"


def test_pretend_lists_pending_packages_and_changes_nothing(daemon: Testbed) -> None:
    root = daemon.seed("web")
    before = tree_hash(root)

    result = gnctl("update", "--pretend", "web")

    assert result.returncode == 0, result.stderr
    summary = "job 1: update of web done: 1 package pending: app-misc/hello-2\n"
    assert result.stdout.endswith(summary)
    assert tree_hash(root) == before
    assert snapshots(f"{daemon.dataset}/web") == []
    # The findings have a property of their own; Error stays for what went wrong.
    assert job_property(1, "PendingPackages") == 'as 1 "app-misc/hello-2"'
    assert job_string(1, "Error") == ""
    assert job_property(1, "Progress") == "u 100"
    shown = gnctl("job", "1").stdout.splitlines()
    assert "PendingPackages: app-misc/hello-2" in shown
    assert "          Error: -" in shown


def test_nothing_to_merge_is_skipped_and_leaves_no_snapshot(daemon: Testbed) -> None:
    daemon.seed("base", [])

    result = gnctl("update", "base")

    assert result.returncode == 0, result.stderr
    assert "update of base skipped" in result.stdout
    assert snapshots(f"{daemon.dataset}/base") == []


def test_rollback_to_an_older_snapshot_destroys_newer_gnspawn_snapshots(daemon: Testbed) -> None:
    root = daemon.seed("web")
    assert gnctl("update", "-q", "web").returncode == 0
    assert hello_version(root) == "2"

    result = gnctl("rollback", "web", "gnspawn-1-pre")

    assert result.returncode == 0, result.stderr
    assert hello_version(root) == "1"
    assert job_string(2, "Type") == "rollback"


def test_rollback_refuses_to_destroy_the_admins_snapshot(daemon: Testbed) -> None:
    root = daemon.seed("web")
    assert gnctl("update", "-q", "web").returncode == 0
    ds = f"{daemon.dataset}/web"
    zfs("snapshot", f"{ds}@mine")

    result = gnctl("rollback", "web", "gnspawn-1-pre")

    assert result.returncode == 3
    assert f"{ds}@mine is newer and not gnspawn's" in result.stderr
    assert snapshots(ds) == [f"{ds}@gnspawn-1-pre", f"{ds}@mine"]
    assert hello_version(root) == "2"
    assert gnctl("rollback", "web", "nope").returncode == 3
    assert "no snapshot 'nope'" in gnctl("rollback", "web", "nope").stderr


def test_bad_requests_get_named_errors_and_create_nothing(daemon: Testbed) -> None:
    daemon.seed("web")
    cases = {
        ("update", "../etc"): "invalid machine name",
        ("update", "--", "-rf"): "invalid machine name",
        ("update", "nope"): "no machine nope",
        ("snapshots", "a/b"): "invalid machine name",
        ("job", "99"): "no job 99",
        ("cancel", "99"): "no job 99",
    }
    for argv, message in cases.items():
        result = gnctl(*argv)
        assert result.returncode in (3, 64), (argv, result)
        assert message in result.stderr, (argv, result.stderr)
    flags = call("Update", "st", "web", "64", check=False)
    assert flags.returncode == 1
    assert "unknown flags 0x40" in flags.stderr
    assert call("ListJobs").stdout.strip() == "a(ussssuo) 0"


def test_non_root_may_read_but_not_change(daemon: Testbed) -> None:
    daemon.seed("web")
    listing = call("ListMachines", user=65534)
    assert listing.stdout.startswith('a(sssso) 1 "web"')
    denied = call("Update", "st", "web", "0", user=65534, check=False)
    assert denied.returncode == 1
    assert "denied" in denied.stderr.lower()
    assert call("ListJobs").stdout.strip() == "a(ussssuo) 0"


def test_sigterm_rolls_back_the_running_job_and_keeps_the_waiting_one(daemon: Testbed) -> None:
    jobs = build_with_a_job_waiting(daemon)

    assert daemon.stop_daemon() == 0

    assert tree_hash(jobs.slow) == jobs.before
    assert gnspawn_processes() == []
    daemon.start_daemon()
    assert job_string(jobs.running, "Result") == "canceled"
    assert "daemon was stopped" in job_string(jobs.running, "Error")
    assert wait_job(jobs.waiting) == "done"
    assert hello_version(jobs.web) == "2"


def test_list_machines_and_snapshots(daemon: Testbed) -> None:
    daemon.seed("web")
    (daemon.machines / "plain").mkdir(parents=True)
    zfs("create", "-o", f"mountpoint={daemon.machines}/other", f"{daemon.dataset}/other")
    assert gnctl("update", "-q", "web").returncode == 0

    listing = gnctl("list")
    rows = [line.split() for line in listing.stdout.splitlines()]
    assert rows[0] == ["NAME", "STATE", "PROFILE", "LAST", "RESULT", "ATTENTION"]
    assert ["other", "foreign", "-", "-", "-"] in rows
    assert ["web", "ready", "default", "done", "-"] in rows

    snaps = gnctl("snapshots", "web")
    assert snaps.returncode == 0
    assert "gnspawn-1-pre" in snaps.stdout and "update" in snaps.stdout
    time.sleep(0)
