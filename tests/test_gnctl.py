"""gnctl and the error names, as a user and a script see them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from helpers import (
    busctl,
    call,
    complete,
    gdbus_error,
    gnctl,
    hello_version,
    job_property,
    job_string,
    queued,
    wait_job,
    wait_until,
)
from testbed import Testbed, zfs


def error_name(method: str, *args: str) -> str:
    return gdbus_error(method, *args).split(":")[0]


def test_errors_have_distinct_names(daemon: Testbed) -> None:
    daemon.seed("web")
    (daemon.machines / "plain").mkdir()
    zfs("create", "-o", f"mountpoint={daemon.machines}/other", f"{daemon.dataset}/other")
    assert error_name("Update", "../x", "0") == "org.gnspawn1.Error.InvalidName"
    assert error_name("Update", "nope", "0") == "org.gnspawn1.Error.NoSuchMachine"
    assert error_name("Update", "other", "0") == "org.gnspawn1.Error.NotGentoo"
    assert error_name("Update", "web", "1024") == "org.freedesktop.DBus.Error.InvalidArgs"
    assert error_name("GetJob", "42") == "org.gnspawn1.Error.NoSuchJob"
    assert error_name("CancelJob", "42") == "org.gnspawn1.Error.NoSuchJob"
    assert error_name("Rollback", "web", "nope", "0") == "org.gnspawn1.Error.NoSuchSnapshot"
    assert error_name("Rollback", "web", "", "4") == "org.freedesktop.DBus.Error.InvalidArgs"
    assert error_name("ListSnapshots", "a/b") == "org.gnspawn1.Error.InvalidName"
    assert zfs("list", "-H", "-o", "name", "-r", daemon.dataset).split() == [
        daemon.dataset,
        f"{daemon.dataset}/other",
        f"{daemon.dataset}/web",
    ]


def test_rollback_refuses_when_a_newer_snapshot_has_clones(daemon: Testbed) -> None:
    root = daemon.seed("web")
    assert gnctl("update", "-q", "web").returncode == 0
    assert gnctl("update", "-q", "--pretend", "web").returncode == 0
    ds = f"{daemon.dataset}/web"
    zfs("snapshot", "-o", "org.gnspawn:job=99", f"{ds}@gnspawn-99-pre")
    zfs("clone", f"{ds}@gnspawn-99-pre", f"{daemon.dataset}/copy")

    result = gnctl("rollback", "web", "gnspawn-1-pre")

    assert result.returncode == 3
    assert "has clones" in result.stderr and f"{daemon.dataset}/copy" in result.stderr
    assert hello_version(root) == "2"
    zfs("destroy", f"{daemon.dataset}/copy")


def test_listings_as_json(daemon: Testbed) -> None:
    daemon.seed("web")
    assert gnctl("update", "-q", "web").returncode == 0

    machines = json.loads(gnctl("list", "--json").stdout)
    jobs = json.loads(gnctl("jobs", "--json").stdout)
    snaps = json.loads(gnctl("snapshots", "--json", "web").stdout)
    job = json.loads(gnctl("job", "--json", "1").stdout)
    profiles = json.loads(gnctl("profiles", "--json").stdout)
    status = json.loads(gnctl("status", "--json", "web").stdout)

    assert machines == [
        {
            "name": "web",
            "state": "ready",
            "profile": "default",
            "last_result": "done",
            "attention": [],
            "object": "/org/gnspawn1/machine/web",
        }
    ]
    assert jobs == [
        {
            "id": 1,
            "type": "update",
            "machine": "web",
            "state": "finished",
            "result": "done",
            "progress": 100,
            "object": "/org/gnspawn1/job/_1",
        }
    ]
    assert [s["snapshot"] for s in snaps] == ["gnspawn-1-pre"]
    assert (
        snaps[0]["job"] == 1 and snaps[0]["job_type"] == "update" and snaps[0]["created_usec"] > 0
    )
    assert job["Result"] == "done" and job["RolledBack"] is False
    assert {"profile": "default", "repository": "gnspawn-demo", "status": "stable"} in profiles
    assert all(set(p) == {"profile", "repository", "status"} for p in profiles)
    assert status["Name"] == "web" and status["State"] == "ready" and status["LastJob"] == 1


def test_update_all_and_no_block(daemon: Testbed) -> None:
    a = daemon.seed("a")
    b = daemon.seed("b", ["=app-misc/hello-1", "=app-misc/broken-1"])

    result = gnctl("update", "--all", "--verbose")

    assert result.returncode == 1
    assert "job 1: update of a done" in result.stdout
    assert "job 2: update of b failed: app-misc/broken-2 failed" in result.stderr
    assert re.search(r"\[1\] >>> Emerging (binary )?\(1 of 1\) app-misc/hello-2", result.stdout)
    assert hello_version(a) == "2" and hello_version(b) == "1"

    queued = gnctl("update", "--no-block", "--pretend", "b")
    assert queued.returncode == 0
    assert queued.stdout == "3\tb\n"
    assert wait_job(3) == "done"
    assert gnctl("wait", "3").returncode == 0


def test_usage_errors_and_unreachable_daemon(daemon: Testbed) -> None:
    assert gnctl("update").returncode == 64
    assert gnctl("frobnicate").returncode == 64
    help_text = gnctl("--help").stdout
    assert "exit status:" in help_text and "64  wrong usage" in help_text
    daemon.stop_daemon()
    down = gnctl("list")
    assert down.returncode == 4
    assert "gnspawnd is not running" in down.stderr
    daemon.start_daemon()


def test_without_a_journal_the_log_goes_to_stderr_once_said(daemon: Testbed) -> None:
    script = (
        "from gnspawn import log; log.setup(); "
        "log.job_line('>>> Emerging (1 of 1) a/b-1', 6, 7, 'web', 'emerge')"
    )
    # A mount namespace whose /run has no journal socket.
    result = subprocess.run(
        [
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            'mount -t tmpfs none /run && exec "$0" -c "$1"',
            sys.executable,
            script,
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert sum("no journal" in line for line in lines) == 1
    assert "job 7 (web, emerge): >>> Emerging (1 of 1) a/b-1" in lines


def test_logs_of_a_job_and_of_a_machine_come_from_the_journal(daemon: Testbed) -> None:
    daemon.seed("web")
    assert gnctl("update", "-q", "web").returncode == 0
    subprocess.run(["journalctl", "--flush"], capture_output=True)

    job = gnctl("logs", "1")
    machine = gnctl("logs", "web", "-n", "1")

    assert job.returncode == 0, job.stderr
    assert "snapshot gnspawn-test/machines/web@gnspawn-1-pre taken" in job.stdout
    assert re.search(
        r"gnspawnd\[\d+\]: >>> Emerging (binary )?\(1 of 1\) app-misc/hello-2", job.stdout
    )
    assert machine.stdout.strip().endswith("update of web done")
    assert len(machine.stdout.strip().splitlines()) == 1


def test_bash_completion_asks_the_daemon(daemon: Testbed) -> None:
    daemon.seed("web")
    daemon.seed("db", [])
    assert gnctl("update", "-q", "--pretend", "web").returncode == 0

    assert complete("up") == ["update"]
    assert complete("update", "") == ["db", "web"]
    assert complete("update", "w") == ["web"]
    assert complete("job", "") == ["1"]
    assert complete("update", "--a") == ["--all"]
    assert "default/bootable" in complete("build", "--profile", "")


def test_completion_offers_only_what_the_verb_accepts(daemon: Testbed) -> None:
    daemon.seed("web")
    daemon.seed("db", [])
    (daemon.machines / "plain").mkdir()  # not gnspawn's: listed as foreign
    # A build that stopped after its first step: incomplete, for --resume.
    zfs("create", "-o", f"mountpoint={daemon.machines}/half", "-o", "org.gnspawn:build=created",
        f"{daemon.dataset}/half")  # fmt: skip
    assert gnctl("update", "-q", "--keep-failed", "web").returncode == 0
    daemon.emerge(daemon.machines / "db", "=app-misc/broken-1")
    assert gnctl("update", "-q", "--keep-failed", "db").returncode == 1
    states = {
        row.split()[0]: row.split()[1] for row in gnctl("list", "--no-legend").stdout.splitlines()
    }
    assert states == {"db": "ready", "half": "incomplete", "plain": "foreign", "web": "ready"}

    # A machine's own snapshots for rollback; not its failed copy's (db:failed-2@...).
    assert complete("rollback", "web", "") == ["gnspawn-1-pre"]
    assert complete("rollback", "--no-block", "web", "g") == ["gnspawn-1-pre"]
    assert [s["snapshot"] for s in json.loads(gnctl("snapshots", "--json", "db").stdout)] == [
        "db:failed-2@gnspawn-2-failed"
    ]
    assert complete("rollback", "db", "") == []
    assert complete("rollback", "web", "gnspawn-1-pre", "") == []
    # A new name cannot be offered; an existing one would be refused.
    assert complete("build", "") == []
    assert complete("build", "--profile", "default", "") == []
    assert complete("build", "--resume", "") == ["half"]
    # No foreign directory where a dataset is needed, no unfinished build to update;
    # every machine for status and logs.
    assert complete("update", "") == ["db", "web"]
    assert complete("remove", "") == ["db", "half", "web"]
    assert complete("status", "") == ["db", "half", "plain", "web"]
    # Finished jobs cannot be canceled.
    assert complete("cancel", "") == []
    assert sorted(complete("wait", "")) == ["1", "2"]
    assert complete("wait", "--") == ["--help", "--quiet", "--verbose"]


def test_a_failed_update_is_told_once_and_leaves_the_machine_ready(daemon: Testbed) -> None:
    root = daemon.seed("b", ["=app-misc/hello-1", "=app-misc/broken-1"])

    result = gnctl("update", "b")

    assert result.returncode == 1
    out = result.stdout.splitlines()
    error = " * ERROR: app-misc/broken-2::gnspawn-demo failed (compile phase):"
    assert out.count(error) == 1
    # The build log's path, on the line after `Log file:`, shown whole.
    failed = next(i for i, line in enumerate(out) if line.startswith(">>> Failed to emerge"))
    assert failed < len(out) - 1 and out[failed].endswith("Log file:")
    log_file = re.fullmatch(r">>>  '(/\S+\.log)'", out[failed + 1])
    assert log_file is not None and Path(log_file.group(1)).is_file()
    # The reason, once: in the summary at the end, with the whole log path.
    everything = result.stdout + result.stderr
    assert everything.count("app-misc/broken-2 failed (compile phase)") == 1
    assert result.stderr == (
        f"job 1: update of b failed: app-misc/broken-2 failed (compile phase), "
        f"log: {log_file.group(1)} (rolled back to {daemon.dataset}/b@gnspawn-1-pre)\n"
    )
    # The rollback phase counts nothing of the emerge before it.
    assert any(re.fullmatch(r"rollback  \d+:\d\d", line) for line in out)
    assert not any("rollback" in line and "%" in line for line in out)
    assert hello_version(root) == "1"

    # Rolled back cleanly, the machine is intact: ready, and the last result says the
    # update failed.
    rows = [line.split() for line in gnctl("list").stdout.splitlines()]
    assert ["b", "ready", "default", "failed", "-"] in rows
    assert call("ListMachines").stdout.split()[2:5] == ['"b"', '"ready"', '"default"']
    assert '"failed"' in call("ListMachines").stdout
    machine = ("org.gnspawn1", "/org/gnspawn1/machine/b", "org.gnspawn1.Machine")
    assert busctl("get-property", *machine, "State").stdout.strip() == 's "ready"'
    # Its progress did not reach 100%: the result says why, and the listing no number.
    assert job_string(1, "Result") == "failed" and job_property(1, "Progress") == "u 0"
    jobs = [line.split() for line in gnctl("jobs").stdout.splitlines()]
    assert ["1", "update", "b", "finished", "failed", "-"] in jobs


def test_a_canceled_update_says_so_once(daemon: Testbed) -> None:
    daemon.seed("slow", ["=app-misc/hello-1", "=app-misc/sleeper-1"])
    job = queued(call("Update", "st", "slow", "0").stdout)
    waiting = queued(call("Update", "st", "slow", "0").stdout)
    wait_until(lambda: job_string(job, "CurrentPackage") == "app-misc/sleeper-2", "the build")

    assert gnctl("cancel", str(waiting), str(job)).returncode == 0
    result = gnctl("wait", str(job), str(waiting))

    assert result.returncode == 2
    snapshot = f"{daemon.dataset}/slow@gnspawn-{job}-pre"
    assert result.stderr == (
        f"job {job}: update of slow canceled (rolled back to {snapshot})\n"
        f"job {waiting}: update of slow canceled: it had not started\n"
    )
    assert job_string(job, "Error") == ""
    journal = [e["MESSAGE"] for e in daemon.daemon_journal(f"GNSPAWN_JOB={job}")]
    assert journal[-1] == "update of slow canceled"


def test_options_before_the_verb_and_options_no_verb_takes(daemon: Testbed) -> None:
    daemon.seed("web")

    # Before the verb, as the man page says.
    assert gnctl("-q", "update", "web").stdout == "job 1: update of web done: 1 upgraded\n"
    assert json.loads(gnctl("--json", "list").stdout)[0]["name"] == "web"
    assert (
        gnctl("--no-legend", "jobs").stdout.split() == gnctl("jobs", "--no-legend").stdout.split()
    )
    assert json.loads(gnctl("--json", "job", "1").stdout)["Result"] == "done"

    # What a verb does not take is wrong usage, told with the verb's usage, and never
    # reaches gnspawnd.
    for argv, why in (
        (["update", "web", "--scheduled"], "gnctl update: --scheduled goes with --all only"),
        (["--json", "update", "web"], "gnctl update: unrecognized arguments: --json"),
        (["update", "--pretend", "--keep-failed", "web"], "gnctl update: --pretend changes"),
        (["update", "-q", "-v", "web"], "gnctl update: argument -v/--verbose: not allowed"),
        (["prune", "--fail-if-busy", "web"], "gnctl prune: unrecognized arguments"),
        (["wait", "--no-block", "1"], "gnctl wait: unrecognized arguments: --no-block"),
        (["update"], "gnctl update: name the machines to update, or give --all"),
        (["logs", "a/b"], "gnctl logs: not a job id or a machine name: 'a/b'"),
    ):
        refused = gnctl(*argv)
        assert refused.returncode == 64, argv
        verb = next(word for word in argv if not word.startswith("-"))
        assert refused.stderr.startswith(f"usage: gnctl {verb} "), refused.stderr
        assert why in refused.stderr, refused.stderr
    assert [line.split()[0] for line in gnctl("jobs", "--no-legend").stdout.splitlines()] == ["1"]
    assert not any("unknown flags" in e["MESSAGE"] for e in daemon.daemon_journal())

    # --help offers what the verb takes and nothing else.
    assert "--no-block" not in gnctl("wait", "--help").stdout
    assert "--fail-if-busy" not in gnctl("prune", "--help").stdout
    assert "--scheduled" in gnctl("update", "--help").stdout


def test_logs_of_an_unknown_job_or_machine_are_refused(daemon: Testbed) -> None:
    daemon.seed("web")
    assert gnctl("update", "-q", "--pretend", "web").returncode == 0

    for target, said in (
        ("999", "gnctl: no job 999. 'gnctl jobs' lists waiting, running and recent jobs.\n"),
        ("nosuch", "gnctl: no machine nosuch. 'gnctl list' shows the machines gnspawn manages.\n"),
    ):
        result = gnctl("logs", target)
        assert (result.returncode, result.stdout, result.stderr) == (3, "", said)
    assert gnctl("job", "999").returncode == 3
    assert gnctl("logs", "web").returncode == 0
    assert gnctl("logs", "1").returncode == 0


def test_without_a_system_bus_gnctl_says_where_it_looked(daemon: Testbed) -> None:
    def without_bus(address: str | None) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "DBUS_SYSTEM_BUS_ADDRESS"}
        if address is not None:
            env["DBUS_SYSTEM_BUS_ADDRESS"] = address
        # A mount namespace whose /run is empty: no bus at the default address either.
        return subprocess.run(
            ["unshare", "-m", "--propagation", "private", "sh", "-c",
             'mount -t tmpfs none /run && exec "$0" -m gnspawn.ctl.main list', sys.executable],
            capture_output=True, text=True, env=env,
        )  # fmt: skip

    nowhere = f"unix:path={daemon.dir}/no-bus-here"
    told = without_bus(nowhere)
    assert told.returncode == 4
    assert told.stderr == (
        f"gnctl: cannot connect to the system bus at {nowhere} (DBUS_SYSTEM_BUS_ADDRESS): "
        "No such file or directory; check that a bus listens there, or unset "
        "DBUS_SYSTEM_BUS_ADDRESS for the default unix:path=/run/dbus/system_bus_socket\n"
    )
    default = without_bus(None)
    assert default.returncode == 4
    assert default.stderr == (
        "gnctl: cannot connect to the system bus at unix:path=/run/dbus/system_bus_socket "
        "(the default; DBUS_SYSTEM_BUS_ADDRESS is not set): No such file or directory; "
        "check that dbus runs ('systemctl status dbus'), or set DBUS_SYSTEM_BUS_ADDRESS "
        "to the bus to use\n"
    )
