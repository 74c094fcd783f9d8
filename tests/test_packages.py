"""Package lists and changes through the real daemon: real emerge into real roots on the
real pool, the lists recorded with each snapshot, diffs, kept and tagged snapshots."""

from __future__ import annotations

import json
import re
from pathlib import Path

from helpers import call, gdbus_error, gnctl, hello_version, job_property, snapshots
from testbed import Testbed, zfs

GREETER_UPGRADE = [
    ["added", "app-misc/libgreet:0", "", "1"],
    ["upgraded", "app-misc/greeter:0", "1", "2"],
]


def changes(job_id: int) -> list[list[str]]:
    """A job's Changes, as rows (action, package, old, new)."""
    words = job_property(job_id, "Changes").split()
    assert words[0] == "a(ssss)", words
    values = [json.loads(word) for word in words[2:]]
    assert len(values) == 4 * int(words[1])
    return [values[n : n + 4] for n in range(0, len(values), 4)]


def as_json(*args: str) -> list[dict[str, str]]:
    result = gnctl(*args, "--json")
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout))


def use_extra(root: Path, on: bool) -> None:
    (root / "etc/portage/package.use").write_text(f"app-misc/tunable {'' if on else '-'}extra\n")


def test_an_update_records_what_it_upgraded_and_added(daemon: Testbed) -> None:
    daemon.seed("web", ["=app-misc/greeter-1"])

    result = gnctl("update", "--quiet", "web")

    assert result.returncode == 0, result.stderr
    assert "job 1: update of web done: 1 upgraded, 1 added" in result.stdout
    assert sorted(changes(1)) == GREETER_UPGRADE
    shown = gnctl("job", "1").stdout
    assert "Changes: upgraded app-misc/greeter:0 1 -> 2\n" in shown
    assert "  added app-misc/libgreet:0 1\n" in shown
    # The list recorded with the pre snapshot is the root as it was before.
    before = {p["package"]: p["version"] for p in as_json("packages", "web", "gnspawn-1-pre")}
    assert before == {"app-misc/greeter": "1", "sys-apps/base": "1"}
    now = {p["package"]: p["version"] for p in as_json("packages", "web")}
    assert now == {"app-misc/greeter": "2", "app-misc/libgreet": "1", "sys-apps/base": "1"}
    # gnctl diff without FROM: from the last job's pre snapshot to now.
    diff = gnctl("diff", "web")
    assert diff.returncode == 0, diff.stderr
    assert diff.stdout.splitlines()[0] == "web: gnspawn-1-pre -> now"
    assert "upgraded  app-misc/greeter:0   1    2" in diff.stdout
    assert "2 changes listed." in diff.stdout


def test_a_changed_use_flag_rebuilds_the_same_version(daemon: Testbed) -> None:
    root = daemon.seed("web", ["=app-misc/tunable-1"])
    use_extra(root, True)

    result = gnctl("update", "--quiet", "web")

    assert result.returncode == 0, result.stderr
    assert "job 1: update of web done: 1 rebuilt" in result.stdout
    assert changes(1) == [["rebuilt", "app-misc/tunable:0", "1", "1"]]
    assert (root / "usr/share/tunable/version").read_text() == "1 extra\n"


def test_a_rollback_reverses_the_changes_of_the_update_it_undoes(daemon: Testbed) -> None:
    daemon.seed("web", ["=app-misc/greeter-1"])
    assert gnctl("update", "--quiet", "web").returncode == 0

    result = gnctl("rollback", "--quiet", "web")

    assert result.returncode == 0, result.stderr
    assert "job 2: rollback of web done: 1 downgraded, 1 removed" in result.stdout
    assert sorted(changes(2)) == [
        ["downgraded", "app-misc/greeter:0", "2", "1"],
        ["removed", "app-misc/libgreet:0", "1", ""],
    ]
    assert as_json("diff", "web") == []
    # The update's own changes, from its snapshot (named by its job) to now, reversed:
    assert as_json("diff", "web", "", "1") == as_json("diff", "web", "1", "")


def test_a_diff_between_snapshots_is_the_difference_of_their_lists_after_a_prune(
    daemon: Testbed,
) -> None:
    daemon.stop_daemon()
    daemon.write_config(storage={"keep_snapshots": 1})
    daemon.start_daemon()
    root = daemon.seed("web", ["=app-misc/greeter-1", "=app-misc/hello-1", "app-misc/tunable"])
    assert gnctl("update", "--quiet", "web").returncode == 0
    use_extra(root, True)
    assert gnctl("update", "--quiet", "web").returncode == 0
    use_extra(root, False)
    assert gnctl("update", "--quiet", "web").returncode == 0
    ds = f"{daemon.dataset}/web"
    # Retention kept the newest; the lists of the others stay recorded.
    assert snapshots(ds) == [f"{ds}@gnspawn-3-pre"]

    first = {(p["package"], p["version"]) for p in as_json("packages", "web", "gnspawn-1-pre")}
    second = {(p["package"], p["version"]) for p in as_json("packages", "web", "2")}
    diff = as_json("diff", "web", "gnspawn-1-pre", "2")

    assert {(d["package"].rsplit(":", 1)[0], d["old"]) for d in diff if d["old"]} == first - second
    assert {(d["package"].rsplit(":", 1)[0], d["new"]) for d in diff if d["new"]} == second - first
    assert [d["action"] for d in diff] == ["upgraded", "upgraded", "added"]
    assert [d["action"] for d in as_json("diff", "web", "2", "3")] == ["rebuilt"]
    assert as_json("diff", "web", f"{ds}@gnspawn-1-pre", "") == as_json("diff", "web", "1")


def test_a_kept_snapshot_outlives_retention_and_prune_and_its_tag_rolls_back(
    daemon: Testbed,
) -> None:
    daemon.stop_daemon()
    daemon.write_config(storage={"keep_snapshots": 1})
    daemon.start_daemon()
    root = daemon.seed("web", ["=app-misc/hello-1", "app-misc/tunable"])
    assert gnctl("update", "--quiet", "web").returncode == 0
    ds = f"{daemon.dataset}/web"

    kept = gnctl("keep", "web", "1", "--tag", "stable")

    assert kept.returncode == 0, kept.stderr
    assert zfs("get", "-H", "-o", "value", "org.gnspawn:keep", f"{ds}@gnspawn-1-pre").strip() == (
        "pinned:stable"
    )
    for on in (True, False, True):
        use_extra(root, on)
        assert gnctl("update", "--quiet", "web").returncode == 0
    assert gnctl("prune", "--quiet", "web").returncode == 0
    assert snapshots(ds) == [f"{ds}@gnspawn-1-pre", f"{ds}@gnspawn-4-pre"]
    listed = gnctl("snapshots", "web").stdout
    line = next(line for line in listed.splitlines() if line.startswith("gnspawn-1-pre "))
    assert line.endswith("kept: pinned (tag stable)")

    # A tag names one snapshot: moved, the old one stays kept.
    assert gnctl("keep", "web", "gnspawn-4-pre", "--tag", "stable").returncode == 0
    assert gnctl("snapshots", "web").stdout.count("(tag stable)") == 1
    assert zfs("get", "-H", "-o", "value", "org.gnspawn:keep", f"{ds}@gnspawn-1-pre").strip() == (
        "pinned"
    )
    # A rollback past a kept snapshot would destroy it.
    refused = gnctl("rollback", "web", "gnspawn-1-pre")
    assert refused.returncode != 0
    assert "is newer and kept" in refused.stderr
    assert gnctl("keep", "web", "gnspawn-1-pre", "--tag", "stable").returncode == 0
    assert gnctl("unkeep", "web", "gnspawn-4-pre").returncode == 0

    rolled = gnctl("rollback", "--quiet", "web", "stable")

    assert rolled.returncode == 0, rolled.stderr
    assert hello_version(root) == "1"
    assert snapshots(ds) == [f"{ds}@gnspawn-1-pre"]
    assert gnctl("unkeep", "web", "stable").returncode == 0
    assert zfs("get", "-H", "-o", "value", "org.gnspawn:keep", f"{ds}@gnspawn-1-pre").strip() == "-"


def test_hostile_snapshot_and_tag_names_get_named_errors(daemon: Testbed) -> None:
    daemon.seed("web")
    assert gnctl("update", "--quiet", "web").returncode == 0
    snapshot_error = "org.gnspawn1.Error.NoSuchSnapshot"
    for reference in ("../../etc", "a/b", "web@x", "x" * 300, "with space", "nope", "2", ":"):
        assert gdbus_error("ListPackages", "web", reference).startswith(snapshot_error)
        assert gdbus_error("DiffPackages", "web", reference, "").startswith(snapshot_error)
        assert gdbus_error("Keep", "web", reference, "", "0").startswith(snapshot_error)
        assert gdbus_error("Unkeep", "web", reference, "0").startswith(snapshot_error)
    for tag in ("1234", "gnspawn-1-pre", "a/b", "x" * 65, ".x", "tag\n", "t@g", "ü"):
        error = gdbus_error("Keep", "web", "gnspawn-1-pre", tag, "0")
        assert error.startswith("org.gnspawn1.Error.InvalidTag"), error
    assert gdbus_error("Keep", "web", "1", "ok", "8").startswith(
        "org.freedesktop.DBus.Error.InvalidArgs"
    )
    assert gdbus_error("ListPackages", "../web", "").startswith("org.gnspawn1.Error.InvalidName")
    keep = call("Keep", "ssst", "web", "1", "ok", "0", user=65534, check=False)
    assert keep.returncode != 0
    assert (
        zfs(
            "get", "-H", "-o", "value", "org.gnspawn:keep", f"{daemon.dataset}/web@gnspawn-1-pre"
        ).strip()
        == "-"
    )
    # Reading is open to every user.
    assert call("ListPackages", "ss", "web", "1", user=65534).returncode == 0


def test_an_admin_snapshot_is_read_through_the_storage_or_has_no_record(daemon: Testbed) -> None:
    root = daemon.seed("web")
    ds = f"{daemon.dataset}/web"
    zfs("snapshot", f"{ds}@mine")
    if (root / ".zfs/snapshot/mine").is_dir():
        listed = as_json("packages", "web", "mine")
        assert {p["package"] for p in listed} == {"app-misc/hello", "sys-apps/base"}
    else:
        error = gdbus_error("ListPackages", "web", "mine")
        assert error.startswith("org.gnspawn1.Error.NoPackageRecord"), error
        result = gnctl("packages", "web", "mine")
        assert result.returncode == 3
        assert "no package list was recorded with mine" in result.stderr


def test_the_fleet_view_nets_each_machines_changes_since_a_time(daemon: Testbed) -> None:
    daemon.seed("web", ["=app-misc/greeter-1"])
    daemon.seed("db", ["=app-misc/hello-1"])
    assert gnctl("update", "--quiet", "web", "db").returncode == 0
    assert gnctl("rollback", "--quiet", "db").returncode == 0  # db is as it was: nothing

    changed = as_json("diff", "--all", "1h")

    assert changed == [
        {"machine": "web", "action": a, "package": p, "old": o, "new": n}
        for a, p, o, n in sorted(GREETER_UPGRADE, key=lambda row: row[1])
    ]
    assert as_json("diff", "--all", "2099-01-01") == []
    table = gnctl("diff", "--all", "1d")
    assert table.returncode == 0, table.stderr
    assert re.search(r"^MACHINE +ACTION +PACKAGE +OLD +NEW$", table.stdout, re.MULTILINE)
    assert re.search(r"^web +added +app-misc/libgreet:0 +- +1$", table.stdout, re.MULTILINE)
    assert "2 changes listed." in table.stdout
    wrong = gnctl("diff", "--all", "yesterday")
    assert wrong.returncode == 64
    assert "not a time" in wrong.stderr
