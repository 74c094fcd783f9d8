"""Authorization: root, polkit's answer for everyone else, and nothing changed when denied."""

from __future__ import annotations

import subprocess

from helpers import busctl, call, job_string, queued, wait_job, wait_until
from testbed import Testbed, zfs

GNUSER, OUTSIDER = 4242, 4244
GROUP_RULE = """
polkit.addRule(function(action, subject) {
    if (action.id == "org.gnspawn1.manage" && subject.isInGroup("gnspawn-admins")) {
        return polkit.Result.YES;
    }
});
"""
MUTATING = [
    ("Update", "st", "web", "0"),
    ("UpdateAll", "t", "0"),
    ("Build", "sst", "new", "", "0"),
    ("Remove", "st", "web", "0"),
    ("Rollback", "sst", "web", "", "0"),
    ("Prune", "st", "web", "0"),
    ("CancelJob", "u", "1"),
]


def as_user(uid: int, *args: str) -> subprocess.CompletedProcess[str]:
    return busctl(
        "call",
        "org.gnspawn1",
        "/org/gnspawn1",
        "org.gnspawn1.Manager",
        *args,
        user=uid,
        check=False,
    )


def error_name(uid: int, method: str, *args: str) -> str:
    result = subprocess.run(
        [
            "setpriv",
            f"--reuid={uid}",
            f"--regid={uid}",
            "--clear-groups",
            "gdbus",
            "call",
            "--system",
            "--dest",
            "org.gnspawn1",
            "--object-path",
            "/org/gnspawn1",
            "--method",
            f"org.gnspawn1.Manager.{method}",
            *args,
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    return result.stderr.split("GDBus.Error:")[1].split(":")[0]


def test_polkit_denies_outsiders_everything_that_changes_and_grants_a_group(
    daemon: Testbed,
) -> None:
    daemon.seed("web")
    slow = daemon.seed("slow", ["=app-misc/hello-1", "=app-misc/sleeper-1"])
    job = queued(call("Update", "st", "slow", "0").stdout)
    wait_until(lambda: job_string(job, "State") == "running", "a running job")
    datasets = zfs("list", "-H", "-o", "name", "-r", "-t", "all", daemon.dataset)
    with daemon.polkit(GROUP_RULE):
        for method, *args in MUTATING:
            denied = as_user(OUTSIDER, method, *args)
            assert denied.returncode == 1, method
            assert "polkit: org.gnspawn1.manage" in denied.stderr, (method, denied.stderr)
        job_cancel = busctl(
            "call",
            "org.gnspawn1",
            f"/org/gnspawn1/job/_{job}",
            "org.gnspawn1.Job",
            "Cancel",
            user=OUTSIDER,
            check=False,
        )
        assert job_cancel.returncode == 1
        assert (
            error_name(OUTSIDER, "Update", "web", "0") == "org.freedesktop.DBus.Error.AccessDenied"
        )
        assert zfs("list", "-H", "-o", "name", "-r", "-t", "all", daemon.dataset) == datasets
        assert call("ListJobs").stdout.startswith("a(ussssuo) 1 ")
        assert job_string(job, "State") == "running"
        # Reading stays open to everyone.
        assert as_user(OUTSIDER, "ListMachines").returncode == 0

        granted = as_user(GNUSER, "Update", "st", "web", "0")
        assert granted.returncode == 0, granted.stderr
        web_job = int(granted.stdout.split()[1])
        assert wait_job(web_job) == "done"
        assert (
            busctl(
                "get-property",
                "org.gnspawn1",
                f"/org/gnspawn1/job/_{web_job}",
                "org.gnspawn1.Job",
                "InitiatorUID",
            ).stdout.strip()
            == f"u {GNUSER}"
        )
    call("CancelJob", "u", str(job))
    assert wait_job(job) == "canceled"
    assert (slow / "usr/share/sleeper/version").read_text().strip() == "1"


def test_without_polkit_only_root_may_change(daemon: Testbed) -> None:
    daemon.seed("web")
    for method, *args in MUTATING:
        denied = as_user(GNUSER, method, *args)
        assert denied.returncode == 1, method
        assert "needs root (polkit is not running)" in denied.stderr, (method, denied.stderr)
    assert call("ListJobs").stdout.strip() == "a(ussssuo) 0"
