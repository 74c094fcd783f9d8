"""The steps of an update around its emerge, through the real daemon and emerge: the
fetch before the snapshot, the deep update, the preserved libraries' rebuild and
depclean. Each test writes the ebuilds it needs into the test bed's repository."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ebuilds import write_consumer, write_library, write_plain
from helpers import gnctl, hello_version, job_property, job_string, snapshots
from testbed import Testbed, tree_hash


def installed(root: Path, package: str) -> list[str]:
    """The versions of app-misc/`package` in the root's package database."""
    vdb = root / "var/db/pkg/app-misc"
    return sorted(p.name for p in vdb.glob(f"{package}-[0-9]*")) if vdb.is_dir() else []


def notices(job: int) -> list[tuple[str, ...]]:
    """A job's Notices as (kind, subject, priority, text), from gnctl job --json."""
    shown = gnctl("job", "--json", str(job))
    assert shown.returncode == 0, shown.stderr
    return [tuple(n) for n in json.loads(shown.stdout)["Notices"]]


def phases(daemon: Testbed, job: int) -> list[str]:
    """The phases of the job's journal lines after it left the queue, each once, in the
    order they came."""
    seen: list[str] = ["queued"]
    for entry in daemon.daemon_journal(f"GNSPAWN_JOB={job}"):
        phase = entry.get("GNSPAWN_PHASE", "")
        if phase and phase not in seen:
            seen.append(phase)
    return seen[1:]


def restart_with(daemon: Testbed, **updates: object) -> None:
    daemon.write_config(updates=dict(updates))
    daemon.stop_daemon()
    daemon.start_daemon()


def test_update_fetches_first_and_a_failed_download_changes_nothing(daemon: Testbed) -> None:
    write_plain(daemon.repo, "remote", 1)
    root = daemon.seed("web", ["=app-misc/hello-1", "=app-misc/remote-1"])
    # Port 9 (discard) on the loopback: nothing listens, the download fails at once.
    write_plain(daemon.repo, "remote", 2, src_uri="http://127.0.0.1:9/remote-2.tar.gz")
    before = tree_hash(root)

    result = gnctl("update", "web")

    assert result.returncode == 1
    error = job_string(1, "Error")
    assert error == "fetch failed: app-misc/remote-2 failed"
    assert f"job 1: update of web failed: {error}" in result.stderr
    assert "rolled back" not in result.stderr
    assert job_string(1, "Result") == "failed"
    assert job_string(1, "Phase") == "fetch"
    assert job_property(1, "RolledBack") == "b false"
    assert job_string(1, "Snapshot") == ""
    assert snapshots(f"{daemon.dataset}/web") == []
    # Nothing changed: the machine is ready, its last result failed.
    assert re.search(r"^web +ready .* failed +-$", gnctl("list").stdout, re.MULTILINE)
    # hello-2 was pending too: nothing was merged, not even what could be.
    assert tree_hash(root) == before
    assert hello_version(root) == "1"
    assert phases(daemon, 1) == ["fetch"]
    lines = [e["MESSAGE"] for e in daemon.daemon_journal("GNSPAWN_JOB=1")]
    assert any("http://127.0.0.1:9/remote-2.tar.gz" in line for line in lines)


def test_the_fetch_comes_before_the_snapshot_and_pretend_fetches_nothing(
    daemon: Testbed,
) -> None:
    root = daemon.seed("web")

    assert gnctl("update", "--pretend", "web").returncode == 0
    assert phases(daemon, 1) == ["emerge"]

    assert gnctl("update", "web").returncode == 0
    assert phases(daemon, 2) == ["fetch", "snapshot", "emerge", "config", "cleanup"]
    fetch = [
        e["MESSAGE"]
        for e in daemon.daemon_journal("GNSPAWN_JOB=2", "GNSPAWN_PHASE=fetch")
        if e["MESSAGE"].startswith("running ")
    ]
    assert len(fetch) == 1, fetch
    argv = fetch[0].split()
    assert "--fetchonly" in argv and "--getbinpkg=n" in argv, argv
    assert argv[-5:] == ["--update", "--deep", "--newuse", "--with-bdeps=y", "@world"], argv
    assert hello_version(root) == "2"


def test_the_default_update_is_deep_and_upgrades_a_dependency_no_set_names(
    daemon: Testbed,
) -> None:
    # The test bed's config leaves update_args at the default.
    write_plain(daemon.repo, "deeplib", 1)
    write_plain(daemon.repo, "deepuser", 1, depend="app-misc/deeplib")
    root = daemon.seed("web", ["=app-misc/hello-1", "app-misc/deepuser"])
    assert installed(root, "deeplib") == ["deeplib-1"]
    world = (root / "var/lib/portage/world").read_text().split()
    assert "app-misc/deepuser" in world and "app-misc/deeplib" not in world
    write_plain(daemon.repo, "deeplib", 2)

    result = gnctl("update", "--verbose", "web")

    assert result.returncode == 0, result.stderr
    assert installed(root, "deeplib") == ["deeplib-2"]
    assert (root / "usr/share/deeplib/version").read_text() == "2\n"
    assert hello_version(root) == "2"
    # Still only a dependency: the update did not add it to world.
    assert "app-misc/deeplib" not in (root / "var/lib/portage/world").read_text().split()


def test_a_soname_bump_rebuilds_its_consumers_in_the_same_snapshot(daemon: Testbed) -> None:
    write_library(daemon.repo, "foo", 1)
    write_consumer(daemon.repo, "fooer", "foo")
    root = daemon.seed("web", ["=app-misc/hello-1", "app-misc/fooer"])
    assert "libfoo.so.1" in needed(root, "fooer-1")
    write_library(daemon.repo, "foo", 2)

    result = gnctl("update", "web")

    assert result.returncode == 0, result.stderr
    assert installed(root, "foo") == ["foo-2"]
    # fooer was rebuilt against libfoo.so.2, and Portage let go of libfoo.so.1.
    assert "libfoo.so.2" in needed(root, "fooer-1")
    assert "libfoo.so.1" not in needed(root, "fooer-1")
    assert not (root / "usr/lib/libfoo.so.1").exists()
    assert (root / "usr/lib/libfoo.so.2").is_file()
    assert json.loads(registry(root) or "{}") == {}
    assert phases(daemon, 1) == [
        "fetch",
        "snapshot",
        "emerge",
        "preserved-rebuild",
        "config",
        "cleanup",
    ]
    rebuilt = daemon.daemon_journal("GNSPAWN_JOB=1", "GNSPAWN_PHASE=preserved-rebuild")
    assert any(" --usepkg=n --oneshot @preserved-rebuild" in e["MESSAGE"] for e in rebuilt)
    assert any("app-misc/fooer-1" in e["MESSAGE"] for e in rebuilt)
    assert notices(1) == []
    ds = f"{daemon.dataset}/web"
    assert snapshots(ds) == [f"{ds}@gnspawn-1-pre"]


def test_a_failed_preserved_rebuild_rolls_the_whole_update_back(daemon: Testbed) -> None:
    write_library(daemon.repo, "bar", 1)
    write_consumer(daemon.repo, "barer", "bar")
    root = daemon.seed("web", ["=app-misc/hello-1", "app-misc/barer"])
    write_library(daemon.repo, "bar", 2, breaks_consumers=True)
    before = tree_hash(root)

    result = gnctl("update", "web")

    assert result.returncode == 1
    assert "app-misc/barer-1 failed (compile phase)" in job_string(1, "Error")
    assert job_property(1, "RolledBack") == "b true"
    # The emerge of libbar-2 had succeeded: the rollback undid it too.
    assert tree_hash(root) == before
    assert installed(root, "bar") == ["bar-1"]
    assert hello_version(root) == "1"
    assert phases(daemon, 1) == ["fetch", "snapshot", "emerge", "preserved-rebuild", "rollback"]
    assert snapshots(f"{daemon.dataset}/web") == []


def test_libraries_still_preserved_after_the_rebuild_are_a_notice(daemon: Testbed) -> None:
    write_library(daemon.repo, "baz", 1)
    # Linked by file name: rebuilt, it links the preserved libbaz.so.1 again.
    write_consumer(daemon.repo, "bazer", "baz", link="-l:libbaz.so.1")
    root = daemon.seed("web", ["=app-misc/hello-1", "app-misc/bazer"])
    write_library(daemon.repo, "baz", 2)

    result = gnctl("update", "web")

    assert result.returncode == 0, result.stderr
    assert (root / "usr/lib/libbaz.so.1").is_file()
    assert "libbaz.so.1" in (registry(root) or "")
    kind, subject, priority, text = notices(1)[0]
    assert (kind, subject, priority) == ("preserved-libs", "app-misc/baz-2", "warning")
    assert text == "still preserved after @preserved-rebuild: /usr/lib/libbaz.so.1"
    assert f"  warning: preserved-libs app-misc/baz-2: {text}" in result.stdout.splitlines()
    entries = daemon.daemon_journal("GNSPAWN_JOB=1", "GNSPAWN_PACKAGE=app-misc/baz-2")
    assert [e["MESSAGE"] for e in entries] == [f"preserved-libs: app-misc/baz-2: {text}"]
    # It waits on the machine until an update finds the registry empty.
    assert gnctl("list", "--no-legend").stdout.split()[-2:] == ["1", "preserved"]
    assert f"preserved-libs: app-misc/baz-2: {text}" in gnctl("status", "web").stdout


def write_orphaning(repo: Path, name: str) -> None:
    """`name`-1 needs `name`-helper; `name`-2 no longer does."""
    write_plain(repo, f"{name}-helper", 1)
    write_plain(repo, name, 1, depend=f"app-misc/{name}-helper")
    write_plain(repo, name, 2)


def test_depclean_report_lists_the_orphans_and_removes_nothing(daemon: Testbed) -> None:
    restart_with(daemon, depclean="report")
    write_orphaning(daemon.repo, "tool")
    root = daemon.seed("web", ["=app-misc/hello-1", "=app-misc/tool-1"])
    assert installed(root, "tool-helper") == ["tool-helper-1"]

    result = gnctl("update", "web")

    assert result.returncode == 0, result.stderr
    assert installed(root, "tool") == ["tool-2"]
    assert installed(root, "tool-helper") == ["tool-helper-1"]
    assert (root / "usr/share/tool-helper/version").is_file()
    text = "nothing needs it: emerge --depclean would remove it"
    assert notices(1) == [("depclean", "app-misc/tool-helper-1", "notice", text)]
    lines = result.stdout.splitlines()
    assert lines[-2:] == [
        "job 1: update of web done: 2 upgraded",
        f"  notice: depclean app-misc/tool-helper-1: {text}",
    ]
    shown = gnctl("job", "1").stdout.splitlines()
    assert f"        Notices: notice: depclean app-misc/tool-helper-1: {text}" in shown
    assert phases(daemon, 1) == ["fetch", "snapshot", "emerge", "depclean", "config", "cleanup"]
    assert any(
        "--depclean" in e["MESSAGE"] and "--pretend" in e["MESSAGE"]
        for e in daemon.daemon_journal("GNSPAWN_JOB=1", "GNSPAWN_PHASE=depclean")
    )


def test_depclean_apply_removes_the_orphans_in_the_snapshot(daemon: Testbed) -> None:
    restart_with(daemon, depclean="apply")
    write_orphaning(daemon.repo, "gear")
    root = daemon.seed("web", ["=app-misc/hello-1", "=app-misc/gear-1"])
    before = tree_hash(root)

    result = gnctl("update", "web")

    assert result.returncode == 0, result.stderr
    assert installed(root, "gear") == ["gear-2"]
    assert installed(root, "gear-helper") == []
    assert not (root / "usr/share/gear-helper").exists()
    assert installed(root, "hello") == ["hello-2"]
    assert (root / "etc/gentoo-release").is_file()  # @system stays
    text = "removed by emerge --depclean: nothing needed it"
    assert notices(1) == [("depclean", "app-misc/gear-helper-1", "notice", text)]
    assert phases(daemon, 1) == ["fetch", "snapshot", "emerge", "depclean", "config", "cleanup"]
    # One snapshot before it all: rolling back brings the helper back.
    assert gnctl("rollback", "web", "gnspawn-1-pre").returncode == 0
    assert tree_hash(root) == before


def needed(root: Path, package: str) -> str:
    """The sonames a package's files need, as Portage recorded them."""
    return (root / "var/db/pkg/app-misc" / package / "NEEDED").read_text()


def registry(root: Path) -> str | None:
    path = root / "var/lib/portage/preserved_libs_registry"
    return path.read_text() if path.exists() else None
