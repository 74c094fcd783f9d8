"""emerge's argv, environment and the progress parsed from its output."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from gnspawn.config import PortageConfig
from gnspawn.portage import (
    Progress,
    emaint_argv,
    emerge_argv,
    emerge_environment,
    job_tag,
    make_conf,
    preserved_libraries,
    tree_revision,
    world_atoms,
)

ROOT = Path("/var/lib/machines/web")


def fed(*lines: str) -> Progress:
    progress = Progress()
    for line in lines:
        progress.feed(line)
    return progress


def test_fresh_progress_is_empty() -> None:
    progress = Progress()
    assert (progress.done, progress.total, progress.percent) == (0, 0, 0)
    assert progress.current == ""
    assert not progress.binary
    assert not progress.nothing_to_merge
    assert progress.pending == []
    assert progress.failure() == "emerge failed"


def test_emerging_sets_current_package_and_total() -> None:
    progress = Progress()
    assert progress.feed(">>> Emerging (1 of 3) app-misc/hello-2::gnspawn-demo for /R/")
    assert progress.current == "app-misc/hello-2"
    assert (progress.done, progress.total, progress.percent) == (0, 3, 0)
    assert not progress.binary


def test_emerging_binary() -> None:
    progress = Progress()
    assert progress.feed(">>> Emerging binary (2 of 3) sys-apps/base-1::repo for /R2/")
    assert progress.binary
    assert progress.current == "sys-apps/base-1"
    assert (progress.done, progress.total, progress.percent) == (1, 3, 33)


def test_emerging_without_repository_or_root() -> None:
    progress = Progress()
    assert progress.feed(">>> Emerging (4 of 10) dev-libs/foo-1.2.3-r1")
    assert progress.current == "dev-libs/foo-1.2.3-r1"
    assert (progress.done, progress.total) == (3, 10)


def test_binary_flag_follows_each_package() -> None:
    progress = fed(">>> Emerging binary (1 of 2) sys-apps/base-1::repo for /R/")
    assert progress.binary
    progress.feed(">>> Emerging (2 of 2) app-misc/hello-2::gnspawn-demo for /R/")
    assert not progress.binary


def test_completed_counts_done() -> None:
    progress = fed(">>> Emerging (1 of 3) app-misc/hello-2::gnspawn-demo for /R/")
    assert progress.feed(">>> Completed (1 of 3) app-misc/hello-2::gnspawn-demo to /R/")
    assert (progress.done, progress.total, progress.percent) == (1, 3, 33)
    assert progress.current == "app-misc/hello-2"


def test_completing_the_last_package_clears_current() -> None:
    progress = fed(
        ">>> Emerging (1 of 2) app-misc/a-1::repo for /R/",
        ">>> Completed (1 of 2) app-misc/a-1::repo to /R/",
        ">>> Emerging (2 of 2) app-misc/b-1::repo for /R/",
    )
    assert progress.current == "app-misc/b-1"
    assert progress.feed(">>> Completed (2 of 2) app-misc/b-1::repo to /R/")
    assert progress.current == ""
    assert (progress.done, progress.total, progress.percent) == (2, 2, 100)


def test_done_never_goes_back_on_emerging() -> None:
    progress = fed(
        ">>> Completed (2 of 3) app-misc/b-1::repo to /R/",
        ">>> Emerging (1 of 3) app-misc/a-1::repo for /R/",
    )
    assert progress.done == 2


def test_jobs_line_sets_done_and_total() -> None:
    progress = Progress()
    assert progress.feed(">>> Jobs: 1 of 2 complete, 1 running")
    assert (progress.done, progress.total, progress.percent) == (1, 2, 50)


def test_failure_with_phase_and_log_file() -> None:
    progress = fed(">>> Emerging (1 of 3) app-misc/broken-2::gnspawn-demo for /R/")
    assert progress.feed(" * ERROR: app-misc/broken-2::gnspawn-demo failed (compile phase):")
    assert progress.failed_package == "app-misc/broken-2"
    assert progress.failed_phase == "compile"
    assert progress.feed(" * The complete build log is located at '/var/tmp/x.log'.")
    assert progress.log_file == "/var/tmp/x.log"
    assert progress.feed(">>> Failed to emerge app-misc/broken-2 for /R/, Log file:")
    assert progress.feed(">>>  '/var/log/portage/x.log'")
    assert progress.log_file == "/var/log/portage/x.log"
    assert progress.failed_package == "app-misc/broken-2"
    assert progress.failure() == (
        "app-misc/broken-2 failed (compile phase), log: /var/log/portage/x.log"
    )


def test_failure_without_phase_or_log() -> None:
    progress = Progress()
    assert progress.feed(">>> Failed to emerge app-misc/broken-2, Log file:")
    assert not progress.feed("the next line is not a log file")
    assert progress.log_file == ""
    assert progress.failure() == "app-misc/broken-2 failed"


def test_error_without_phase() -> None:
    progress = Progress()
    assert progress.feed(" * ERROR: app-misc/broken-2::gnspawn-demo failed:")
    assert progress.failed_package == "app-misc/broken-2"
    assert progress.failed_phase == ""
    assert progress.failure() == "app-misc/broken-2 failed"


def test_first_error_names_the_package() -> None:
    progress = fed(
        " * ERROR: app-misc/broken-2::gnspawn-demo failed (compile phase):",
        " * ERROR: app-misc/other-1::gnspawn-demo failed (compile phase):",
    )
    assert progress.failed_package == "app-misc/broken-2"


def test_log_file_line_only_counts_after_failed_to_emerge() -> None:
    progress = Progress()
    assert not progress.feed(">>>  '/var/log/portage/x.log'")
    assert progress.log_file == ""


def test_failed_to_emerge_without_log_file_does_not_expect_one() -> None:
    progress = fed(">>> Failed to emerge app-misc/broken-2 for /R/,")
    assert not progress.feed(">>>  '/var/log/portage/x.log'")
    assert progress.log_file == ""


@pytest.mark.parametrize(
    "line", ["Total: 0 packages, Size of downloads: 0 KiB", "Nothing to merge; quitting."]
)
def test_nothing_to_merge(line: str) -> None:
    progress = Progress()
    assert not progress.feed(line)
    assert progress.nothing_to_merge


def test_packages_to_merge_are_not_nothing() -> None:
    progress = fed("Total: 3 packages (3 upgrades), Size of downloads: 0 KiB")
    assert not progress.nothing_to_merge


def test_pretend_lines_list_pending_packages() -> None:
    progress = Progress()
    assert not progress.feed(
        "[ebuild     U  ] app-misc/hello-2::gnspawn-demo [1::gnspawn-demo] to /R/ 0 KiB"
    )
    assert not progress.feed("[binary   R    ] sys-apps/base-1::x")
    assert not progress.feed("[ebuild  N     ] dev-libs/foo-1.0")
    assert progress.pending == ["app-misc/hello-2", "sys-apps/base-1", "dev-libs/foo-1.0"]
    assert (progress.done, progress.total, progress.current) == (0, 0, "")


@pytest.mark.parametrize(
    "line",
    [
        "",
        "checking for gcc... gcc",
        "x86_64-pc-linux-gnu-gcc -O2 -pipe -c hello.c -o hello.o",
        ">>> Unpacking source...",
        ">>> Source compiled.",
        ">>> Installing (1 of 3) app-misc/hello-2::gnspawn-demo into /R/",
        '>>> Recording app-misc/hello-2 in "world" favorites file...',
        " * Applying hello-fix.patch ...",
        " * Messages for package app-misc/hello-2:",
        '[blocks B      ] app-misc/old ("app-misc/old" is soft blocking app-misc/hello-2)',
        "Tried to merge",
        "Note: emerging (1 of 3) is not a marker",
        "    >>> Emerging (1 of 3) app-misc/hello-2::gnspawn-demo for /R/",
        "Calculating dependencies... done!",
    ],
)
def test_build_output_changes_nothing(line: str) -> None:
    progress = fed(">>> Emerging (1 of 3) app-misc/hello-2::gnspawn-demo for /R/")
    before = (
        progress.done,
        progress.total,
        progress.current,
        progress.binary,
        progress.failed_package,
        progress.failed_phase,
        progress.log_file,
        progress.nothing_to_merge,
        list(progress.pending),
    )
    assert not progress.feed(line)
    after = (
        progress.done,
        progress.total,
        progress.current,
        progress.binary,
        progress.failed_package,
        progress.failed_phase,
        progress.log_file,
        progress.nothing_to_merge,
        list(progress.pending),
    )
    assert after == before


def test_emerge_argv_reads_everything_from_the_root() -> None:
    config = PortageConfig(emerge="/usr/bin/emerge")
    argv = emerge_argv(config, ROOT, ["-1uv", "@world"])
    assert argv == [
        "/usr/bin/emerge",
        f"--root={ROOT}",
        f"--sysroot={ROOT}",
        f"--config-root={ROOT}",
        "--color=n",
        "--usepkg=y",
        "--buildpkg=n",
        "-1uv",
        "@world",
    ]
    assert "--pretend" not in argv


def test_only_a_root_that_publishes_builds_binary_packages() -> None:
    argv = emerge_argv(PortageConfig(), ROOT, ["@world"], publish=True)
    assert "--buildpkg=y" in argv and "--buildpkg=n" not in argv


def test_world_atoms_are_plain_atoms_of_packages_the_repositories_have(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    for package in ("app-misc/hello", "dev-lang/python", "x11-libs/gtk+"):
        (repo / package).mkdir(parents=True)
    root = tmp_path / "root"
    (root / "var/lib/portage").mkdir(parents=True)
    (root / "var/lib/portage/world").write_text(
        "app-misc/hello\n  dev-lang/python:3.12  \nx11-libs/gtk+:3::gentoo\n"
        "--root=/\n@evil\n/etc/passwd\napp-misc/nosuch\n=app-misc/hello-1\n"
        "app-misc/hello;touch x\n../../etc/x\napp-misc/hello other/thing\n"
    )
    config = PortageConfig(repos=(repo,))
    assert world_atoms(config, root) == {"app-misc/hello", "dev-lang/python", "x11-libs/gtk+"}


def test_a_world_file_that_leads_out_of_the_root_is_not_read(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "app-misc/hello").mkdir(parents=True)
    (tmp_path / "host-world").write_text("app-misc/hello\n")
    root = tmp_path / "root"
    (root / "var/lib/portage").mkdir(parents=True)
    (root / "var/lib/portage/world").symlink_to(tmp_path / "host-world")
    assert world_atoms(PortageConfig(repos=(repo,)), root) == set()
    assert world_atoms(PortageConfig(repos=(repo,)), tmp_path / "no-root") == set()


def test_emerge_argv_pretend_comes_before_the_arguments() -> None:
    config = PortageConfig()
    argv = emerge_argv(config, ROOT, config.update_args, pretend=True)
    assert argv == [
        "emerge",
        f"--root={ROOT}",
        f"--sysroot={ROOT}",
        f"--config-root={ROOT}",
        "--color=n",
        "--usepkg=y",
        "--buildpkg=n",
        "--pretend",
        "--update",
        "--deep",
        "--newuse",
        "--with-bdeps=y",
        "@world",
    ]


def test_emerge_argv_appends_configured_update_args() -> None:
    config = PortageConfig(update_args=("--deep", "--newuse", "@world"))
    argv = emerge_argv(config, ROOT, config.update_args)
    assert argv[-3:] == ["--deep", "--newuse", "@world"]
    assert argv.index("--color=n") < argv.index("--deep")


def test_emerge_environment() -> None:
    config = PortageConfig(environment={"MAKEOPTS": "-j4", "PORTAGE_NICENESS": "10"})
    env = emerge_environment(config, job=42, tag="GNSPAWN_TAG=abc-42")
    assert env["NOCOLOR"] == "true"
    assert env["GNSPAWN_TAG"] == "abc-42"
    assert env["MAKEOPTS"] == "-j4"
    assert env["PORTAGE_NICENESS"] == "10"
    assert env["GNSPAWN_JOB"] == "42"


def test_emerge_environment_job_cannot_be_overridden() -> None:
    config = PortageConfig(environment={"GNSPAWN_JOB": "1"})
    assert emerge_environment(config, job=7, tag="GNSPAWN_TAG=x-7")["GNSPAWN_JOB"] == "7"


def test_job_tags_tell_daemons_and_jobs_apart() -> None:
    one, other = Path("/var/lib/gnspawn"), Path("/srv/gnspawn-test")
    assert job_tag(one, 1) == job_tag(one, 1)
    assert job_tag(one, 1) != job_tag(other, 1)
    assert job_tag(one, 1) != job_tag(one, 11)
    assert job_tag(one, 1).startswith("GNSPAWN_TAG=")


def test_emerge_environment_without_extras() -> None:
    env = emerge_environment(PortageConfig(), job=1, tag="GNSPAWN_TAG=x-1")
    assert env["NOCOLOR"] == "true"
    assert env["GNSPAWN_JOB"] == "1"


def test_pending_packages_are_named_without_slot_or_repository() -> None:
    progress = Progress()
    progress.feed("[ebuild     U  ] sys-libs/glibc-2.39-r6:2.2::gentoo [2.38:2.2::gentoo] 0 KiB")
    progress.feed("[binary   R    ] sys-apps/base-1::x")
    assert progress.pending == ["sys-libs/glibc-2.39-r6", "sys-apps/base-1"]


def test_the_first_of_several_failures_is_reported() -> None:
    progress = Progress()
    progress.feed(" * ERROR: a/x-1::r failed (compile phase):")
    progress.feed(" * ERROR: a/y-1::r failed (install phase):")
    progress.feed(">>> Failed to emerge a/y-1 for /R/, Log file:")
    assert progress.failure().startswith("a/x-1 failed (compile phase)")


def test_binary_build_ids_are_dropped_from_pending_packages() -> None:
    progress = Progress()
    progress.feed("[binary     U  ] app-misc/hello-2-1::gnspawn-demo [1::gnspawn-demo] 0 KiB")
    progress.feed("[binary     U  ] dev-libs/foo-1.0-r1-12::gentoo")
    progress.feed("[binary   R    ] sys-apps/base-1::x")
    assert progress.pending == ["app-misc/hello-2", "dev-libs/foo-1.0-r1", "sys-apps/base-1"]


def test_only_a_root_that_publishes_gets_features_that_write_pkgdir() -> None:
    config = PortageConfig(features=("buildpkg", "buildsyspkg", "getbinpkg", "-test"))
    assert 'FEATURES="getbinpkg -test"' in make_conf(config)
    assert 'FEATURES="buildpkg buildsyspkg getbinpkg -test"' in make_conf(config, publish=True)


def test_emaint_is_the_one_beside_emerge() -> None:
    beside = PortageConfig(emerge="/opt/portage/bin/emerge")
    assert emaint_argv(beside, "gentoo") == ["/opt/portage/bin/emaint", "sync", "--repo", "gentoo"]
    assert emaint_argv(PortageConfig(emerge="emerge"), "local")[0] == "emaint"


def test_tree_revision_is_git_head_or_the_timestamp_of_each_repository(tmp_path: Path) -> None:
    git, rsynced, bare = tmp_path / "git", tmp_path / "rsynced", tmp_path / "bare"
    for repo in (git, rsynced, bare):
        (repo / "metadata").mkdir(parents=True)
    (git / "metadata" / "timestamp.chk").write_text("not this one\n")
    identity = ["-c", "user.name=t", "-c", "user.email=t@t.invalid"]
    subprocess.run(["git", "-C", str(git), "init", "-q"], check=True)
    subprocess.run(["git", "-C", str(git), "add", "-A"], check=True)
    subprocess.run(["git", *identity, "-C", str(git), "commit", "-q", "-m", "x"], check=True)
    head = subprocess.run(
        ["git", "-C", str(git), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    (rsynced / "metadata" / "timestamp.chk").write_text("Wed, 02 Dec 2026 00:45:01 +0000\n")

    assert asyncio.run(tree_revision([git])) == head
    assert asyncio.run(tree_revision([rsynced])) == "Wed, 02 Dec 2026 00:45:01 +0000"
    assert asyncio.run(tree_revision([git, bare, rsynced])) == (
        f"{head}; -; Wed, 02 Dec 2026 00:45:01 +0000"
    )
    assert asyncio.run(tree_revision([bare])) == ""
    assert asyncio.run(tree_revision([])) == ""


def test_depclean_lists_what_it_selects() -> None:
    progress = fed(
        ">>> These are the packages that would be unmerged:",
        "All selected packages: =app-misc/tool-helper-1 =dev-libs/old-2.1-r1",
    )
    assert progress.selected == ["app-misc/tool-helper-1", "dev-libs/old-2.1-r1"]
    assert fed("All selected packages: --rm-rf /etc").selected == []


def registry(tmp_path: Path, text: str) -> Path:
    directory = tmp_path / "var/lib/portage"
    directory.mkdir(parents=True)
    (directory / "preserved_libs_registry").write_text(text)
    return tmp_path


def test_preserved_libraries_from_the_registry(tmp_path: Path) -> None:
    root = registry(
        tmp_path,
        '{"app-misc/foo:0": ["app-misc/foo-2", "7", ["/usr/lib/libfoo.so.1"]]}',
    )
    assert preserved_libraries(root) == {"app-misc/foo-2": ("/usr/lib/libfoo.so.1",)}
    assert preserved_libraries(registry(tmp_path / "empty", "{}")) == {}
    assert preserved_libraries(tmp_path / "none") == {}


@pytest.mark.parametrize("text", ["{", "[]", "null"])
def test_a_registry_that_is_not_portages_counts_as_not_empty(tmp_path: Path, text: str) -> None:
    found = preserved_libraries(registry(tmp_path, text))
    assert list(found) == [""]


def test_a_registry_that_leads_out_of_the_root_is_not_read(tmp_path: Path) -> None:
    outside = tmp_path / "host-registry"
    outside.write_text('{"x/y:0": ["x/y-1", "1", ["/lib/libc.so.6"]]}')
    root = tmp_path / "root"
    (root / "var/lib/portage").mkdir(parents=True)
    (root / "var/lib/portage/preserved_libs_registry").symlink_to(outside)
    # Resolved inside the root, the link's target does not exist there.
    assert preserved_libraries(root) == {}


def test_an_emerge_that_started_no_package_merged_nothing() -> None:
    # emerge --update @world prints no "Nothing to merge" line without --verbose.
    assert fed("Calculating dependencies... done!", "").merged_nothing
    assert not fed(">>> Emerging (1 of 1) app-misc/hello-2::gnspawn-demo").merged_nothing
    assert not fed(">>> Jobs: 0 of 2 complete, 1 running").merged_nothing
