"""A fleet of containers: update-all, binary reuse, retention, policy, restarts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from helpers import call, gnctl, hello_version, job_property, job_string, snapshots
from testbed import Testbed, tree_hash, zfs

COUNTER = """EAPI=8
DESCRIPTION="A package the tests give new versions"
SLOT="0"
KEYWORDS="amd64"
S=${WORKDIR}
src_install() {
	insinto /usr/share/counter
	echo "${PV}" > "${T}/version" || die
	doins "${T}/version"
}
"""


def usec(job: int, prop: str) -> int:
    return int(job_property(job, prop).split()[1])


def test_update_all_compiles_once_installs_binaries_and_rolls_back_the_failure(
    daemon: Testbed,
) -> None:
    daemon.stop_daemon()
    daemon.write_config(portage={"builders": True})
    daemon.start_daemon()
    roots = {name: daemon.seed(name) for name in ("a1", "a2", "a3")}
    db = daemon.seed("db", ["=app-misc/hello-1", "=app-misc/broken-1"])
    for name in [*roots, "db"]:  # adopted: their profile recorded, as the README says
        daemon.adopt(name)
    db_before = tree_hash(db)
    (daemon.machines / "plain").mkdir()
    zfs("create", "-o", f"mountpoint={daemon.machines}/other", f"{daemon.dataset}/other")
    # Binary packages the seeding made must not count: empty the shared PKGDIR.
    daemon.empty_pkgdir()

    result = gnctl("update", "--all")

    assert result.returncode == 1
    assert "skipped other: not a Gentoo root, or busy" in result.stdout
    assert "skipped plain: not a Gentoo root, or busy" in result.stdout
    assert "update of db failed: app-misc/broken-2 failed (compile phase)" in result.stderr
    for name, root in roots.items():
        assert hello_version(root) == "2", name
        assert f"update of {name} done" in result.stdout
    assert tree_hash(db) == db_before
    ids = {job_string(i, "Machine"): i for i in range(1, 6)}
    logs = {
        name: [e["MESSAGE"] for e in daemon.daemon_journal(f"GNSPAWN_JOB={job}")]
        for name, job in ids.items()
    }
    from_source = [
        n
        for n, lines in logs.items()
        if any(line.startswith(">>> Emerging (") and "hello-2" in line for line in lines)
    ]
    as_binary = [
        n
        for n, lines in logs.items()
        if any(line.startswith(">>> Emerging binary") and "hello-2" in line for line in lines)
    ]
    # The profile's builder root compiled hello-2 once; broken-2, which db's world
    # names, failed there too, but did not keep hello-2 from the machines.
    assert from_source == ["builder:default"]
    assert job_string(ids["builder:default"], "Result") == "failed"
    assert sorted(as_binary) == ["a1", "a2", "a3", "db"]
    # The machines ran after the builder, two at a time.
    machines = [ids[n] for n in ("a1", "a2", "a3", "db")]
    builder_done = usec(ids["builder:default"], "FinishedUSec")
    assert all(usec(j, "StartedUSec") >= builder_done for j in machines)
    spans = sorted((usec(j, "StartedUSec"), usec(j, "FinishedUSec")) for j in machines)
    assert any(spans[i + 1][0] < spans[i][1] for i in range(len(spans) - 1)), spans
    assert zfs("list", "-H", "-o", "name", f"{daemon.dataset}/other").strip()


def write_counter(repo: Path, version: int) -> None:
    ebuilds = repo / "app-misc" / "counter"
    ebuilds.mkdir(exist_ok=True)
    (ebuilds / f"counter-{version}.ebuild").write_text(COUNTER)


def test_retention_keeps_the_configured_number_and_never_the_admins(daemon: Testbed) -> None:
    daemon.write_config(storage={"keep_snapshots": 2})
    daemon.stop_daemon()
    daemon.start_daemon()
    write_counter(daemon.repo, 1)
    try:
        daemon.seed("web", ["=app-misc/hello-1", "=app-misc/counter-1"])
        ds = f"{daemon.dataset}/web"
        zfs("snapshot", f"{ds}@admins")
        for version in (2, 3, 4):
            write_counter(daemon.repo, version)
            assert gnctl("update", "-q", "web").returncode == 0

        assert snapshots(ds) == [f"{ds}@admins", f"{ds}@gnspawn-2-pre", f"{ds}@gnspawn-3-pre"]
        shown = gnctl("snapshots", "web").stdout
        assert "kept: not gnspawn's" in shown
        assert "kept: newest" in shown
        assert "kept: one of the newest 2 (keep_snapshots)" in shown
        plan = json.loads(gnctl("snapshots", "--json", "web").stdout)
        assert [(s["snapshot"], s["kept"]) for s in plan] == [
            ("admins", True),
            ("gnspawn-2-pre", True),
            ("gnspawn-3-pre", True),
        ]

        daemon.write_config(storage={"keep_snapshots": 1})
        daemon.stop_daemon()
        daemon.start_daemon()
        assert "pruned next: older than the newest 1" in gnctl("snapshots", "web").stdout
        pruned = gnctl("prune", "web")
        assert pruned.returncode == 0, pruned.stderr
        assert f"pruned {ds}@gnspawn-2-pre" in pruned.stdout
        assert snapshots(ds) == [f"{ds}@admins", f"{ds}@gnspawn-3-pre"]
        assert "prune of web skipped" in gnctl("prune", "web").stdout
    finally:
        shutil.rmtree(daemon.repo / "app-misc" / "counter")


def test_check_policy_reports_what_is_pending_and_changes_nothing(daemon: Testbed) -> None:
    daemon.write_config(updates={"policy": "check"})
    daemon.stop_daemon()
    daemon.start_daemon()
    web = daemon.seed("web")
    base = daemon.seed("base", [])
    before = tree_hash(web)

    result = gnctl("update", "--all", "--scheduled")

    assert result.returncode == 0, result.stderr
    assert tree_hash(web) == before
    assert snapshots(f"{daemon.dataset}/web") == []
    ids = {job_string(i, "Machine"): i for i in (1, 2)}
    assert job_string(ids["web"], "Result") == "done"
    assert job_property(ids["web"], "PendingPackages") == 'as 1 "app-misc/hello-2"'
    assert job_string(ids["web"], "Error") == ""
    assert job_string(ids["base"], "Result") == "skipped"
    assert job_property(ids["base"], "PendingPackages") == "as 0"
    notices = daemon.daemon_journal(f"GNSPAWN_JOB={ids['web']}", "PRIORITY=5")
    assert [e["MESSAGE"] for e in notices] == ["1 package pending: app-misc/hello-2"]
    assert hello_version(base.parent / "web") == "1"


def test_none_policy_does_nothing(daemon: Testbed) -> None:
    daemon.write_config(updates={"policy": "none"})
    daemon.stop_daemon()
    daemon.start_daemon()
    daemon.seed("web")
    assert call("UpdateAll", "t", "16").stdout.strip() == "a(suo) 0"


def test_restart_after_a_changing_update_and_stop_start_around_a_rollback(daemon: Testbed) -> None:
    # systemd cannot be PID 1 here: a recording org.freedesktop.systemd1 stands in for it,
    # with systemd-nspawn@web.service active.
    daemon.write_config(updates={"restart": True})
    daemon.stop_daemon()
    daemon.start_daemon()
    web = daemon.seed("web")
    with daemon.host_services("web") as record:
        assert gnctl("update", "-q", "web").returncode == 0
        assert gnctl("update", "-q", "web").returncode == 0  # nothing to do: no restart
        rolled = gnctl("rollback", "web")
        calls = [json.loads(line) for line in record.read_text().splitlines()]

    assert rolled.returncode == 0, rolled.stderr
    assert hello_version(web) == "1"
    unit = "systemd-nspawn@web.service"
    assert [c for c in calls if c[0] != "GetMachine"] == [
        ["TryRestartUnit", unit, "replace"],
        ["StopUnit", unit, "replace"],
        ["StartUnit", unit, "replace"],
    ]
    assert "stopped systemd-nspawn@web.service for the rollback" in rolled.stdout
