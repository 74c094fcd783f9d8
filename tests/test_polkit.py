"""Authorization: root, polkit's answer for everyone else, and nothing changed when denied."""

from __future__ import annotations

from helpers import busctl, call, gdbus, gdbus_error, job_string, queued, wait_job, wait_until
from testbed import Testbed, zfs

GNUSER, OUTSIDER = 1, 65534  # daemon, in gnspawn-admins in the test bed; nobody
GROUP_RULE = """
polkit.addRule(function(action, subject) {
    if (action.id == "org.gnspawn1.manage" && subject.isInGroup("gnspawn-admins")) {
        return polkit.Result.YES;
    }
});
"""
MUTATING = [
    ("Update", "web", "0"),
    ("UpdateAll", "0"),
    ("Sync", "0"),
    ("Build", "new", "", "0"),
    ("Remove", "web", "0"),
    ("Rollback", "web", "", "0"),
    ("Prune", "web", "0"),
    ("CancelJob", "1"),
]
ACCESS_DENIED = "org.freedesktop.DBus.Error.AccessDenied: "


def test_polkit_denies_outsiders_everything_that_changes_and_grants_a_group(
    daemon: Testbed,
) -> None:
    daemon.seed("web")
    slow = daemon.seed("slow", ["=app-misc/hello-1", "=app-misc/sleeper-1"])
    job = queued(call("Update", "st", "slow", "0").stdout)
    wait_until(lambda: job_string(job, "CurrentPackage") == "app-misc/sleeper-2", "a long build")
    datasets = zfs("list", "-H", "-o", "name", "-r", "-t", "all", daemon.dataset)
    with daemon.polkit(GROUP_RULE):
        for method, *args in MUTATING:
            error = gdbus_error(method, *args, user=OUTSIDER)
            assert error.startswith(ACCESS_DENIED + "polkit: org.gnspawn1.manage"), (method, error)
        job_cancel = gdbus(f"/org/gnspawn1/job/_{job}", "org.gnspawn1.Job.Cancel", user=OUTSIDER)
        assert ACCESS_DENIED in job_cancel.stderr
        # busctl shows only the errno text of a well-known error.
        plain = call("Update", "st", "web", "0", user=OUTSIDER, check=False)
        assert plain.returncode == 1 and "Access denied" in plain.stderr
        assert zfs("list", "-H", "-o", "name", "-r", "-t", "all", daemon.dataset) == datasets
        assert call("ListJobs").stdout.startswith("a(ussssuo) 1 ")
        assert job_string(job, "State") == "running"
        # Reading stays open to everyone.
        listing = gdbus("/org/gnspawn1", "org.gnspawn1.Manager.ListMachines", user=OUTSIDER)
        assert listing.returncode == 0

        granted = gdbus("/org/gnspawn1", "org.gnspawn1.Manager.Update", "web", "0", user=GNUSER)
        assert granted.returncode == 0, granted.stderr
        web_job = int(granted.stdout.split(",")[0].removeprefix("(uint32 "))
        assert wait_job(web_job) == "done"
        initiator = busctl(
            "get-property",
            "org.gnspawn1",
            f"/org/gnspawn1/job/_{web_job}",
            "org.gnspawn1.Job",
            "InitiatorUID",
        ).stdout.strip()
        assert initiator == f"u {GNUSER}"
    call("CancelJob", "u", str(job))
    assert wait_job(job) == "canceled"
    assert (slow / "usr/share/sleeper/version").read_text().strip() == "1"


def test_without_polkit_only_root_may_change(daemon: Testbed) -> None:
    daemon.seed("web")
    for method, *args in MUTATING:
        error = gdbus_error(method, *args, user=GNUSER)
        assert (
            error == ACCESS_DENIED + "changing machines and jobs needs root (polkit is not running)"
        )
    assert call("ListJobs").stdout.strip() == "a(ussssuo) 0"


NO_RULE = """
polkit.addRule(function(action, subject) {
    if (action.id == "org.gnspawn1.manage" && subject.isInGroup("gnspawn-admins")) {
        return polkit.Result.NO;
    }
});
"""


def test_a_polkit_no_refuses_a_group_everything_that_changes(daemon: Testbed) -> None:
    # Not a challenge that an agent could answer: polkit says no outright, and no
    # mutating method lets it through.
    daemon.seed("web")
    job = queued(call("Update", "st", "web", "0").stdout)
    assert wait_job(job) == "done"
    datasets = zfs("list", "-H", "-o", "name", "-r", "-t", "all", daemon.dataset)
    jobs = call("ListJobs").stdout
    with daemon.polkit(NO_RULE):
        for method, *args in MUTATING:
            error = gdbus_error(method, *args, user=GNUSER)
            assert error == ACCESS_DENIED + "polkit: org.gnspawn1.manage not allowed for uid 1", (
                method,
                error,
            )
        cancel = gdbus(f"/org/gnspawn1/job/_{job}", "org.gnspawn1.Job.Cancel", user=GNUSER)
        assert "polkit: org.gnspawn1.manage not allowed for uid 1" in cancel.stderr
    assert zfs("list", "-H", "-o", "name", "-r", "-t", "all", daemon.dataset) == datasets
    assert call("ListJobs").stdout == jobs
