"""Package lists without a daemon: the vdb read from a hostile root, versions ordered
as Portage orders them, diffs, and the lists in the job database."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from gnspawn import packages
from gnspawn.ctl.main import since_usec
from gnspawn.jobs.record import Job, now_usec
from gnspawn.jobs.store import JobStore
from gnspawn.names import ChangeAction, Flags, JobState, JobType, change_summary
from gnspawn.packages import Change, Installed

A = ChangeAction


def entry(root: Path, pf: str, slot: str = "0", build_time: str = "100", use: str = "") -> Path:
    path = root / "var/db/pkg" / pf
    path.mkdir(parents=True)
    (path / "SLOT").write_text(slot + "\n")
    (path / "repository").write_text("gnspawn-demo\n")
    (path / "BUILD_TIME").write_text(build_time + "\n")
    (path / "USE").write_text(use + "\n")
    (path / "CONTENTS").write_text("")
    return path


def test_read_the_vdb(tmp_path: Path) -> None:
    entry(tmp_path, "app-misc/hello-2-r1", slot="0/2.1", use="b a amd64")
    entry(tmp_path, "sys-apps/base-1")
    found = packages.read(tmp_path)
    assert found == {
        "app-misc/hello:0": Installed(
            "app-misc/hello", "2-r1", "0", "gnspawn-demo", "100", "a amd64 b"
        ),
        "sys-apps/base:0": Installed("sys-apps/base", "1", "0", "gnspawn-demo", "100", ""),
    }


def test_a_root_without_a_vdb_has_no_packages(tmp_path: Path) -> None:
    assert packages.read(tmp_path) == {}
    assert packages.read(tmp_path / "missing") == {}


def test_hostile_vdb_entries_are_skipped_or_bounded(tmp_path: Path) -> None:
    outside = tmp_path / "host"
    entry(outside, "app-misc/secret-1")
    root = tmp_path / "root"
    entry(root, "app-misc/hello-1")
    pkg = root / "var/db/pkg"
    # A category that is a link out of the root resolves inside it: nothing there.
    (pkg / "evil").symlink_to(outside / "var/db/pkg/app-misc")
    (pkg / "app-misc" / "link-1").symlink_to("/var/db/pkg/app-misc/hello-1")
    os.mkfifo(pkg / "app-misc" / "hello-1" / "USE.fifo")
    fifo = entry(root, "app-misc/fifo-1")
    (fifo / "SLOT").unlink()
    os.mkfifo(fifo / "SLOT")  # must not block: a FIFO is no regular file
    (pkg / "app-misc" / "not a version").mkdir()
    (pkg / "...").mkdir()
    huge = entry(root, "app-misc/huge-1")
    (huge / "USE").write_text("x" * 1_000_000)
    found = packages.read(root)
    assert set(found) == {"app-misc/hello:0", "app-misc/link:0", "app-misc/huge:0"}
    assert len(found["app-misc/huge:0"].use) <= packages.MOST_USE


def test_the_number_of_entries_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(packages, "MOST_PACKAGES", 5)
    for n in range(20):
        entry(tmp_path, f"app-misc/p{n}-1")
    assert len(packages.read(tmp_path)) == 5


@pytest.mark.parametrize(
    ("older", "newer"),
    [
        ("1", "2"),
        ("1.2", "1.10"),
        ("1.2", "1.2.0"),
        ("1.0_alpha1", "1.0_beta"),
        ("1.0_rc2", "1.0"),
        ("1.0", "1.0_p1"),
        ("1.0", "1.0-r1"),
        ("1.0-r2", "1.0-r10"),
        ("1.0a", "1.0b"),
        ("1.0", "1.0a"),
    ],
)
def test_versions_are_ordered_as_portage_orders_them(older: str, newer: str) -> None:
    assert packages.version_key(older) < packages.version_key(newer)


def pkg(
    name: str, version: str, build_time: str = "1", use: str = "", slot: str = "0"
) -> Installed:
    return Installed(name, version, slot, "gnspawn-demo", build_time, use)


def listed(*items: Installed) -> dict[str, Installed]:
    return {item.key: item for item in items}


def test_diff_names_every_action() -> None:
    old = listed(
        pkg("a/up", "1"),
        pkg("a/down", "2"),
        pkg("a/same", "1"),
        pkg("a/built", "1", build_time="1"),
        pkg("a/use", "1", use="x"),
        pkg("a/gone", "3"),
        pkg("a/slotted", "1", slot="1"),
    )
    new = listed(
        pkg("a/up", "1-r1"),
        pkg("a/down", "1.9"),
        pkg("a/same", "1"),
        pkg("a/built", "1", build_time="2"),
        pkg("a/use", "1", use="x y"),
        pkg("a/new", "5"),
        pkg("a/slotted", "2", slot="2"),
    )
    assert packages.diff(old, new) == [
        Change(A.REBUILT, "a/built:0", "1", "1"),
        Change(A.DOWNGRADED, "a/down:0", "2", "1.9"),
        Change(A.REMOVED, "a/gone:0", "3", ""),
        Change(A.ADDED, "a/new:0", "", "5"),
        Change(A.REMOVED, "a/slotted:1", "1", ""),
        Change(A.ADDED, "a/slotted:2", "", "2"),
        Change(A.UPGRADED, "a/up:0", "1", "1-r1"),
        Change(A.REBUILT, "a/use:0", "1", "1"),
    ]


def test_the_diff_back_is_the_exact_reverse() -> None:
    old = listed(pkg("a/up", "1"), pkg("a/gone", "1"), pkg("a/use", "1", use="x"))
    new = listed(pkg("a/up", "2"), pkg("a/new", "1"), pkg("a/use", "1", use="y"))
    reverse = {
        A.ADDED: A.REMOVED,
        A.REMOVED: A.ADDED,
        A.UPGRADED: A.DOWNGRADED,
        A.REBUILT: A.REBUILT,
    }
    forth = packages.diff(old, new)
    assert packages.diff(new, old) == [
        Change(reverse[c.action], c.package, c.new, c.old) for c in forth
    ]


def test_change_summary_counts_in_a_fixed_order() -> None:
    assert change_summary(["added", "upgraded", "upgraded", "upgraded"]) == "3 upgraded, 1 added"
    assert change_summary([]) == ""


def test_a_series_of_changes_nets_out() -> None:
    series = [
        Change(A.UPGRADED, "a/up:0", "1", "2"),
        Change(A.ADDED, "a/new:0", "", "1"),
        Change(A.ADDED, "a/brief:0", "", "1"),
        Change(A.UPGRADED, "a/back:0", "1", "2"),
        Change(A.REBUILT, "a/use:0", "1", "1"),
        Change(A.UPGRADED, "a/up:0", "2", "3"),
        Change(A.REMOVED, "a/brief:0", "1", ""),
        Change(A.DOWNGRADED, "a/back:0", "2", "1"),
        Change(A.UPGRADED, "a/new:0", "1", "2"),
        Change(A.REMOVED, "a/gone:0", "4", ""),
        Change(A.DOWNGRADED, "a/down:0", "3", "2"),
        Change(A.DOWNGRADED, "a/down:0", "2", "1"),
    ]
    assert packages.net(series) == [
        Change(A.DOWNGRADED, "a/down:0", "3", "1"),
        Change(A.REMOVED, "a/gone:0", "4", ""),
        Change(A.ADDED, "a/new:0", "", "2"),
        Change(A.UPGRADED, "a/up:0", "1", "3"),
        Change(A.REBUILT, "a/use:0", "1", "1"),
    ]


def test_an_update_and_its_rollback_net_to_nothing() -> None:
    old = listed(pkg("a/up", "1"), pkg("a/use", "1", use="x"))
    new = listed(pkg("a/up", "2"), pkg("a/new", "1"), pkg("a/use", "1", use="y"))
    assert packages.net([*packages.diff(old, new), *packages.diff(new, old)]) == [
        Change(A.REBUILT, "a/use:0", "1", "1")  # rebuilt twice: the same version again
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7d", 1_000_000 - 7 * 86400),
        ("12h", 1_000_000 - 12 * 3600),
        ("0d", 1_000_000),
    ],
)
def test_times_gnctl_diff_all_looks_back_to(text: str, expected: int) -> None:
    assert since_usec(text, now=1_000_000) == expected * 1_000_000


def test_dates_gnctl_diff_all_looks_back_to() -> None:
    day = since_usec("2026-11-27")
    assert since_usec("2026-11-27 12:00") - day == 12 * 3600 * 1_000_000
    for wrong in ("yesterday", "7", "d", "-7d", "2026-13-01", ""):
        with pytest.raises(ValueError):
            since_usec(wrong)


def test_lists_survive_encoding() -> None:
    found = listed(pkg("a/b", "1", use="x y"), pkg("c/d", "2_p1-r3", slot="2"))
    assert packages.decode(packages.encode(found)) == found


def test_equal_lists_are_stored_once_and_forgotten_with_their_jobs(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite")
    job = store.add(Job(0, JobType.UPDATE, "web", Flags(0), 0, now_usec()))
    blob = packages.encode(listed(pkg("a/b", "1")))
    store.add_package_list("tank/m/web@gnspawn-1-pre", "web", job.id, blob)
    store.add_package_list("tank/m/db@gnspawn-2-pre", "db", job.id, blob)
    assert store._db.execute("SELECT count(*) FROM package_sets").fetchone()[0] == 1
    assert store.package_list("tank/m/db@gnspawn-2-pre") == blob
    assert store.package_list_of_job("web", job.id) == ("tank/m/web@gnspawn-1-pre", blob)
    assert store.package_list("tank/m/web@nope") is None
    store.forget_package_lists("db")
    assert store.package_list("tank/m/db@gnspawn-2-pre") is None
    assert store.package_list("tank/m/web@gnspawn-1-pre") == blob
    store._db.execute("DELETE FROM jobs")
    store.forget_old(10)
    assert store._db.execute("SELECT count(*) FROM package_sets").fetchone()[0] == 0


def test_a_database_of_schema_6_gains_changes_and_package_lists(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite"
    store = JobStore(path)
    job = store.add(Job(0, JobType.UPDATE, "web", Flags(0), 0, now_usec()))
    store._db.execute("ALTER TABLE jobs DROP COLUMN changes")
    store._db.execute("DROP TABLE package_lists")
    store._db.execute("DROP TABLE package_sets")
    store._db.execute("PRAGMA user_version=6")
    store.close()
    store = JobStore(path)
    got = store.get(job.id)
    assert got is not None and got.changes == ()
    got.changes = (Change(A.ADDED, "a/b:0", "", "1"),)
    store.save(got, ["changes"])
    store.add_package_list("tank/m/web@x", "web", job.id, b"blob")
    got.state = JobState.FINISHED
    got.finished_usec = 5
    store.save(got, ["state", "finished_usec"])
    assert store.changes_since(5) == [("web", got.changes)]
    assert store.changes_since(6) == []
    store.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 7
    db.close()
    again = JobStore(path).get(job.id)
    assert again is not None and again.changes == (Change(A.ADDED, "a/b:0", "", "1"),)
    assert isinstance(again.changes[0].action, ChangeAction)
