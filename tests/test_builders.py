"""No container publishes for the others: shared binary packages come from builder roots.

A live machine's emerges see the shared PKGDIR read-only and build no packages; what it
compiles for itself stays its own. A builder root per profile, which gnspawn keeps and
never starts, builds what the machines of its profile name and publishes it; the
machines install that as binaries. A machine configured as trusted publishes as before.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from ebuilds import write_plain
from helpers import (
    call,
    gnctl,
    hello_version,
    job_property,
    job_string,
    queued,
    snapshots,
    wait_job,
)
from test_recovery import Gate, gate_version, journal_has, processes_on, recovery_line, restart
from testbed import Testbed, emerge_environment, tree_hash, zfs

FLAVOUR = """EAPI=8
DESCRIPTION="A package whose USE a machine may change"
SLOT="0"
KEYWORDS="amd64"
IUSE="spicy"
S=${WORKDIR}
src_install() {
	insinto /usr/share/flavour
	if use spicy; then echo spicy > "${T}/taste" || die; else echo mild > "${T}/taste" || die; fi
	doins "${T}/taste"
}
"""
PLANT = """
gnspawn_plant() {{
    mkdir -p {pkgdir}/app-misc/hello 2>/dev/null
    echo planted > {pkgdir}/app-misc/hello/hello-9-1.gpkg.tar 2>/dev/null
    echo planted > {pkgdir}/Packages 2>/dev/null
    echo "plant $?" >> {root}/planted-ran
}}
[[ ${{EBUILD_PHASE}} == depend ]] || gnspawn_plant
"""


def write_flavour(repo: Path, *versions: int) -> None:
    ebuilds = repo / "app-misc" / "flavour"
    ebuilds.mkdir(exist_ok=True)
    for version in versions:
        (ebuilds / f"flavour-{version}.ebuild").write_text(FLAVOUR)


def taste(root: Path) -> str:
    return (root / "usr/share/flavour/taste").read_text().strip()


def emerged(daemon: Testbed, job: int, package: str) -> str:
    """How job `job` merged `package`: "binary", "source" or "" (not at all)."""
    for entry in daemon.daemon_journal(f"GNSPAWN_JOB={job}"):
        line = entry["MESSAGE"]
        if line.startswith(">>> Emerging ") and f" {package}" in line:
            return "binary" if line.startswith(">>> Emerging binary") else "source"
    return ""


def packages(pkgdir: Path) -> dict[str, bytes]:
    """Every binary package in PKGDIR (its Packages index aside) with its content."""
    return {
        str(path.relative_to(pkgdir)): path.read_bytes()
        for path in sorted(pkgdir.rglob("*"))
        if path.is_file() and not path.name.startswith("Packages")
    }


def restart_with(daemon: Testbed, **portage: object) -> None:
    """gnspawnd stopped and started again with these [portage] settings."""
    daemon.stop_daemon()
    daemon.write_config(portage=portage)
    daemon.start_daemon()


def seed_pair(daemon: Testbed) -> tuple[Path, Path]:
    """web and db with hello-1 and flavour-1, adopted with their profile; the binary
    packages the seeding made gone."""
    write_flavour(daemon.repo, 1)
    web = daemon.seed("web", ["=app-misc/hello-1", "=app-misc/flavour-1"])
    db = daemon.seed("db", ["=app-misc/hello-1", "=app-misc/flavour-1"])
    daemon.adopt("web")
    daemon.adopt("db")
    daemon.empty_pkgdir()
    write_flavour(daemon.repo, 2)
    return web, db


def test_a_live_machine_cannot_publish_and_the_builders_packages_are_installed_as_binaries(
    daemon: Testbed,
) -> None:
    restart_with(daemon, builders=True)
    web, db = seed_pair(daemon)
    pkgdir = daemon.work / "packages"
    # db is compromised: its emerges try to plant packages, and its own USE differs.
    (db / "etc/portage/bashrc").write_text(PLANT.format(pkgdir=pkgdir, root=db))
    (db / "etc/portage/package.use").write_text("app-misc/flavour spicy\n")

    result = gnctl("update", "db")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "waiting for job 1  " in result.stdout
    # The builder root went first: built for the profile, then updated with what the
    # profile's machines name; its packages are the only ones published.
    assert job_string(1, "Type") == "builder"
    assert job_string(1, "Machine") == "builder:default"
    assert job_string(2, "Machine") == "db"
    assert job_property(2, "Follows") == "u 1"
    assert emerged(daemon, 1, "app-misc/hello-2") == "source"
    assert emerged(daemon, 1, "app-misc/flavour-2") == "source"
    published = packages(pkgdir)
    assert sorted(published) == [
        "app-misc/flavour/flavour-2-1.gpkg.tar",
        "app-misc/hello/hello-2-1.gpkg.tar",
        *sorted(p for p in published if p.startswith("sys-apps/")),
    ]
    assert b"planted" not in b"".join(published.values())
    assert b"planted" not in (pkgdir / "Packages").read_bytes()
    # db installed the builder's hello, compiled its spicy flavour for itself, and
    # the plant ran and failed: PKGDIR is read-only to it.
    assert emerged(daemon, 2, "app-misc/hello-2") == "binary"
    assert emerged(daemon, 2, "app-misc/flavour-2") == "source"
    assert (hello_version(db), taste(db)) == ("2", "spicy")
    assert "plant 1" in (db / "planted-ran").read_text()

    result = gnctl("update", "web")

    assert result.returncode == 0, result.stdout + result.stderr
    assert job_string(3, "Type") == "builder"
    assert wait_job(3) == "skipped"  # nothing new for the profile
    assert emerged(daemon, 4, "app-misc/hello-2") == "binary"
    assert emerged(daemon, 4, "app-misc/flavour-2") == "binary"
    assert (hello_version(web), taste(web)) == ("2", "mild")
    assert packages(pkgdir) == published

    # The builder root is gnspawn's alone: outside the machines, never a container.
    builder = f"{daemon.dataset}/builder:default"
    mountpoint = zfs("get", "-H", "-o", "value", "mountpoint", builder).strip()
    assert mountpoint == str(daemon.state / "builders" / "default")
    assert sorted(p.name for p in daemon.machines.iterdir()) == ["db", "web"]
    assert not (daemon.dir / "nspawn" / "builder:default.nspawn").exists()
    listed = gnctl("list").stdout
    assert "builder" not in listed and "web" in listed and "db" in listed
    assert hello_version(Path(mountpoint)) == "2"


def test_a_trusted_machine_publishes_what_it_builds(daemon: Testbed) -> None:
    daemon.stop_daemon()
    daemon.write_config(extra="[machines.db]\ntrusted = true\n", portage={"builders": False})
    daemon.start_daemon()
    web, db = seed_pair(daemon)
    pkgdir = daemon.work / "packages"

    assert gnctl("update", "db").returncode == 0
    assert gnctl("update", "web").returncode == 0

    assert job_string(1, "Machine") == "db"  # no builder job
    assert emerged(daemon, 1, "app-misc/hello-2") == "source"
    assert emerged(daemon, 2, "app-misc/hello-2") == "binary"
    assert sorted(packages(pkgdir)) == [
        "app-misc/flavour/flavour-2-1.gpkg.tar",
        "app-misc/hello/hello-2-1.gpkg.tar",
    ]
    assert hello_version(web) == hello_version(db) == "2"


def test_without_builders_an_untrusted_machine_shares_nothing(daemon: Testbed) -> None:
    web, db = seed_pair(daemon)
    pkgdir = daemon.work / "packages"

    assert gnctl("update", "db").returncode == 0
    assert gnctl("update", "web").returncode == 0

    assert emerged(daemon, 1, "app-misc/hello-2") == "source"
    assert emerged(daemon, 2, "app-misc/hello-2") == "source"
    assert packages(pkgdir) == {}
    assert hello_version(web) == hello_version(db) == "2"
    assert "builder" not in zfs("list", "-H", "-o", "name", "-r", daemon.dataset)


def test_a_builder_killed_in_its_update_is_undone_and_its_machines_go_on(daemon: Testbed) -> None:
    root = daemon.seed("web", ["=app-misc/gate-1"])
    daemon.adopt("web")
    builder_root = daemon.state / "builders" / "default"
    builder_ds = f"{daemon.dataset}/builder:default"
    gate = Gate(daemon.work / "distfiles" / "gate")
    try:
        env = {
            **emerge_environment(daemon.repo),
            "GNSPAWN_DEMO_GATE": str(gate.fifo),
            "GNSPAWN_DEMO_GATE_PHASE": "postinst",
        }
        restart_with(daemon, environment=env, builders=True)
        web = queued(call("Update", "st", "web", "0").stdout)
        builder = web - 1
        assert job_string(builder, "Type") == "builder"
        # Built, then updated with what web's world names: gate-2, merged, stops in
        # pkg_postinst.
        assert gate.wait(builder) == ["postinst"]
        assert job_string(web, "State") == "waiting"
        assert gate_version(builder_root) == "2"
        daemon.stop_daemon(signal.SIGKILL)
        daemon.write_config(portage={"builders": True})

        restart(daemon)

        assert wait_job(builder, timeout=30) == "failed"
        assert job_string(builder, "Error") == "interrupted"
        assert job_property(builder, "RolledBack") == "b true"
        journal_has(daemon, recovery_line(builder, "builder", "builder:default"))
        assert processes_on(builder_root) == []
        # The root is as its build left it: no gate, no snapshot of the killed update.
        assert not (builder_root / "usr/share/gate").exists()
        assert zfs("get", "-H", "-o", "value", "org.gnspawn:build", builder_ds).strip() == "done"
        assert f"{builder_ds}@gnspawn-{builder}-pre" not in snapshots(builder_ds)
        # web's update went on after it, and built for itself what was not published.
        assert wait_job(web) == "done", job_string(web, "Error")
        assert gate_version(root) == "2"
    finally:
        for pid in processes_on(builder_root):
            os.kill(pid, signal.SIGKILL)
        gate.remove()


EVIL_PROFILE_BASHRC = """
[[ ${EBUILD_PHASE} == depend ]] || echo planted > "${PKGDIR}/planted-by-profile"
"""


def test_a_machine_cannot_choose_the_profile_a_builder_publishes_with(
    daemon: Testbed,
) -> None:
    """Its make.profile is the container's: pointed at a profile it wrote where every
    sandbox can read (DISTDIR), a builder of that profile would run its bashrc while
    PKGDIR is writable. Builders follow only the profile the admin chose."""
    restart_with(daemon, builders=True)
    root = daemon.seed("web", ["=app-misc/hello-1"])  # adopted, its profile not recorded
    pkgdir = daemon.work / "packages"
    before = packages(pkgdir)
    evil = daemon.work / "distfiles" / "profile"
    evil.mkdir(parents=True)
    (evil / "parent").write_text(f"{daemon.repo}/profiles/default\n")
    (evil / "profile.bashrc").write_text(EVIL_PROFILE_BASHRC)
    (root / "etc/portage/make.profile").unlink()
    (root / "etc/portage/make.profile").symlink_to(evil)

    result = gnctl("update", "web")

    assert job_string(1, "Type") == "update"  # no builder job
    assert result.returncode in (0, 1), result.stdout + result.stderr
    assert "builder" not in zfs("list", "-H", "-o", "name", "-r", daemon.dataset)
    assert not (pkgdir / "planted-by-profile").exists()
    assert packages(pkgdir) == before


def test_without_builders_the_trusted_machine_of_a_profile_leads_update_all(
    daemon: Testbed,
) -> None:
    daemon.stop_daemon()
    daemon.write_config(extra="[machines.b]\ntrusted = true\n")
    daemon.start_daemon()
    for name in ("a", "b"):  # a sorts first, but b publishes
        daemon.seed(name)
        daemon.adopt(name)
    daemon.empty_pkgdir()

    result = gnctl("update", "--all")

    assert result.returncode == 0, result.stdout + result.stderr
    assert (job_string(1, "Machine"), job_string(2, "Machine")) == ("b", "a")
    assert job_property(2, "Follows") == "u 1"
    assert emerged(daemon, 1, "app-misc/hello-2") == "source"
    assert emerged(daemon, 2, "app-misc/hello-2") == "binary"


TESTING = """EAPI=8
DESCRIPTION="A package only a machine that accepts ~amd64 installs"
SLOT="0"
KEYWORDS="~amd64"
S=${WORKDIR}
src_install() {
	insinto /usr/share/testing
	echo "${PV}" > "${T}/version" || die
	doins "${T}/version"
}
"""


def test_machines_packages_that_do_not_resolve_together_leave_the_builder_its_own(
    daemon: Testbed,
) -> None:
    restart_with(daemon, builders=True)
    ebuilds = daemon.repo / "app-misc" / "testing"
    ebuilds.mkdir()
    (ebuilds / "testing-1.ebuild").write_text(TESTING)
    db = daemon.seed("db", ["=app-misc/hello-1"])
    (db / "etc/portage/package.accept_keywords").write_text("app-misc/testing ~amd64\n")
    daemon.emerge(db, "app-misc/testing")  # in db's world; the builder cannot have it
    daemon.adopt("db")

    result = gnctl("update", "db")

    assert result.returncode == 0, result.stdout + result.stderr
    assert job_string(1, "Type") == "builder"
    assert wait_job(1) in ("done", "skipped"), job_string(1, "Error")
    lines = [e["MESSAGE"] for e in daemon.daemon_journal("GNSPAWN_JOB=1")]
    assert any(line.startswith("the machines' packages do not resolve") for line in lines)
    assert hello_version(db) == "2"


def test_a_builder_whose_download_fails_still_builds_and_publishes_the_rest(
    daemon: Testbed,
) -> None:
    write_plain(daemon.repo, "remote", 1)
    web = daemon.seed("web", ["=app-misc/hello-1", "=app-misc/remote-1"])
    daemon.adopt("web")
    daemon.empty_pkgdir()
    # Port 9 (discard) on the loopback: nothing listens, the download fails at once.
    write_plain(daemon.repo, "remote", 2, src_uri="http://127.0.0.1:9/remote-2.tar.gz")
    restart_with(daemon, builders=True)
    before = tree_hash(web)

    result = gnctl("update", "web")

    assert result.returncode == 1
    builder = 1
    assert job_string(builder, "Type") == "builder"
    assert job_string(builder, "Result") == "failed"
    said = [e["MESSAGE"] for e in daemon.daemon_journal(f"GNSPAWN_JOB={builder}")]
    warning = "fetch failed: app-misc/remote-2 failed; building what can be built"
    assert warning in said, said
    # What could be fetched was built and published; what could not, was not.
    published = packages(daemon.work / "packages")
    assert any(p.startswith("app-misc/hello/hello-2") for p in published), published
    assert not any(p.startswith("app-misc/remote/") for p in published), published
    # web's own fetch fails the same way, before its snapshot: nothing changed.
    assert job_string(2, "Error") == "fetch failed: app-misc/remote-2 failed"
    assert snapshots(f"{daemon.dataset}/web") == []
    assert tree_hash(web) == before
