"""The new config files a merge leaves beside the admin's (._cfg????_ under
CONFIG_PROTECT), through the real daemon, emerge and Portage's own config-protect code:
each `[updates] config_files` policy, `gnctl config` and ResolveConfig."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ebuilds import write_conf
from helpers import attention, call, gdbus_error, gnctl, job_string, notices, snapshots
from test_health import bootable
from testbed import Testbed, tree_hash

DEFAULT_1 = "# foo\nalpha = 1\nbeta = 1\ngamma = 1\n"
DEFAULT_2 = "# foo\nalpha = 1\nbeta = 1\ngamma = 2\n"
ADMIN = "# foo\nalpha = admin\nbeta = 1\ngamma = 1\n"
MERGED = "# foo\nalpha = admin\nbeta = 1\ngamma = 2\n"
PATH = "/etc/conf/foo.conf"
NEW = "/etc/conf/._cfg0000_foo.conf"


def edited_machine(daemon: Testbed, policy: str, admin: str = ADMIN) -> Path:
    """web with conf-1 and the admin's edit of its config file; conf-2 in the tree,
    whose default changes another line; gnspawnd with `policy`."""
    daemon.write_config(updates={"config_files": policy})
    daemon.stop_daemon()
    daemon.start_daemon()
    write_conf(daemon.repo, 1, DEFAULT_1)
    root = daemon.seed("web", ["=app-misc/hello-2", "=app-misc/conf-1"])
    (root / PATH.lstrip("/")).write_text(admin)
    write_conf(daemon.repo, 2, DEFAULT_2)
    return root


def etc_conf(root: Path) -> dict[str, str]:
    """The files of /etc/conf, with their contents."""
    directory = root / "etc/conf"
    return {name: (directory / name).read_text() for name in sorted(os.listdir(directory))}


def test_keep_leaves_the_new_default_waiting_and_says_so(daemon: Testbed) -> None:
    root = edited_machine(daemon, "keep")

    result = gnctl("update", "web")

    assert result.returncode == 0, result.stdout + result.stderr
    assert etc_conf(root) == {"._cfg0000_foo.conf": DEFAULT_2, "foo.conf": ADMIN}
    text = f"a new default waits in ._cfg0000_foo.conf: gnctl config web {PATH}"
    assert notices(1) == [["config-file", PATH, "warning", text]]
    assert attention() == {"web": [{"kind": "config-file", "subject": PATH, "text": text}]}
    listed = gnctl("list").stdout.splitlines()
    assert listed[0].split()[-1] == "ATTENTION" and listed[1].endswith("1 config"), listed
    status = gnctl("status", "web").stdout
    assert "      Attention: 1 config\n" in status
    assert f"config-file: {PATH}: {text}" in status
    # The diff, from the admin's file to the new default.
    shown = gnctl("config", "web")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[:1] == [f"{PATH}: a new default waits in {NEW}"]
    assert f"--- {PATH}\n+++ {NEW}\n" in shown.stdout
    assert "-alpha = admin\n+alpha = 1\n beta = 1\n-gamma = 1\n+gamma = 2\n" in shown.stdout


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        ("replace", {"._gnspawn-2_foo.conf": ADMIN, "foo.conf": DEFAULT_2}),
        ("merge", {"._gnspawn-2_foo.conf": ADMIN, "foo.conf": MERGED}),
        ("keep", {"foo.conf": ADMIN}),
    ],
)
def test_the_admin_settles_a_waiting_config_file_in_a_snapshot(
    daemon: Testbed, action: str, expected: dict[str, str]
) -> None:
    root = edited_machine(daemon, "keep")
    assert gnctl("update", "-q", "web").returncode == 0
    mode = (root / NEW.lstrip("/")).stat().st_mode

    result = gnctl("config", "web", PATH, f"--{action}")

    assert result.returncode == 0, result.stdout + result.stderr
    assert etc_conf(root) == expected, notices(1)
    if action != "keep":
        assert (root / PATH.lstrip("/")).stat().st_mode == mode
    assert job_string(2, "Type") == "config" and job_string(2, "Result") == "done"
    assert f"{daemon.dataset}/web@gnspawn-2-pre" in snapshots(f"{daemon.dataset}/web")
    assert attention() == {"web": []}
    assert gnctl("config", "web").stdout == ""


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("replace", {"._gnspawn-1_foo.conf": ADMIN, "foo.conf": DEFAULT_2}),
        ("merge", {"._gnspawn-1_foo.conf": ADMIN, "foo.conf": MERGED}),
    ],
)
def test_an_update_settles_config_files_by_policy(
    daemon: Testbed, policy: str, expected: dict[str, str]
) -> None:
    root = edited_machine(daemon, policy)

    result = gnctl("update", "web")

    assert result.returncode == 0, result.stdout + result.stderr
    assert etc_conf(root) == expected
    (notice,) = notices(1)
    assert notice[:3] == ["config-file", PATH, "notice"], notice
    assert notice[3].endswith("the admin's file kept as /etc/conf/._gnspawn-1_foo.conf")
    assert attention() == {"web": []}


def test_a_merge_keeps_the_admins_bytes_as_they_are(daemon: Testbed) -> None:
    root = edited_machine(daemon, "merge")
    # A Latin-1 comment: no UTF-8, and diff3 must not make it any.
    admin = b"# foo \xe9t\xe9\nalpha = admin\nbeta = 1\ngamma = 1\n"
    (root / PATH.lstrip("/")).write_bytes(admin)

    assert gnctl("update", "-q", "web").returncode == 0

    merged = b"# foo \xe9t\xe9\nalpha = admin\nbeta = 1\ngamma = 2\n"
    assert (root / PATH.lstrip("/")).read_bytes() == merged
    assert (root / "etc/conf/._gnspawn-1_foo.conf").read_bytes() == admin


def test_a_merge_starts_from_the_default_of_the_version_that_was_installed(
    daemon: Testbed,
) -> None:
    root = edited_machine(daemon, "merge")
    # conf-2 is in PKGDIR (another machine has it), but web goes from conf-1 to conf-3:
    # the admin's file was made from conf-1's default, so that is the merge's base.
    daemon.seed("other", ["=app-misc/hello-2", "=app-misc/conf-2"])
    write_conf(daemon.repo, 3, "# foo\nalpha = 1\nbeta = 1\ngamma = 3\n")
    try:
        assert gnctl("update", "-q", "web").returncode == 0
    finally:
        (daemon.repo / "app-misc/conf/conf-3.ebuild").unlink()

    merged = "# foo\nalpha = admin\nbeta = 1\ngamma = 3\n"
    assert etc_conf(root) == {"._gnspawn-1_foo.conf": ADMIN, "foo.conf": merged}


def test_a_merge_that_conflicts_keeps_the_new_default_waiting(daemon: Testbed) -> None:
    both = "# foo\nalpha = 1\nbeta = 1\ngamma = admin\n"
    root = edited_machine(daemon, "merge", admin=both)

    result = gnctl("update", "web")

    assert result.returncode == 0, result.stdout + result.stderr
    assert etc_conf(root) == {"._cfg0000_foo.conf": DEFAULT_2, "foo.conf": both}
    text = f"cannot merge {PATH}: the changes conflict; kept waiting"
    assert notices(1) == [["config-file", PATH, "warning", text]]
    assert [a["subject"] for a in attention()["web"]] == [PATH]
    # Asked for by name, the merge fails and the job rolls back: nothing changed.
    before = tree_hash(root)
    failed = gnctl("config", "web", PATH, "--merge")
    assert failed.returncode == 1
    assert f"cannot merge {PATH}: the changes conflict" in failed.stderr
    assert job_string(2, "Result") == "failed"
    assert tree_hash(root) == before


def test_bad_requests_get_named_errors_and_change_nothing(daemon: Testbed) -> None:
    root = edited_machine(daemon, "keep")
    assert gnctl("update", "-q", "web").returncode == 0
    before = tree_hash(root)

    def error(name: str, path: str, action: str) -> str:
        return gdbus_error("ResolveConfig", name, path, action, "0").split(":")[0]

    assert error("web", "/etc/conf/bar.conf", "replace") == "org.gnspawn1.Error.NoSuchConfigFile"
    assert error("web", PATH, "overwrite") == "org.freedesktop.DBus.Error.InvalidArgs"
    assert error("web", "etc/conf/foo.conf", "replace") == "org.freedesktop.DBus.Error.InvalidArgs"
    assert error("web", "/etc/conf/../conf/foo.conf", "keep") == (
        "org.freedesktop.DBus.Error.InvalidArgs"
    )
    assert error("nosuch", PATH, "keep") == "org.gnspawn1.Error.NoSuchMachine"
    assert error("../web", PATH, "keep") == "org.gnspawn1.Error.InvalidName"
    usage = gnctl("config", "web", PATH)
    assert usage.returncode == 64 and "--keep, --replace or --merge" in usage.stderr
    assert tree_hash(root) == before
    assert json.loads(gnctl("jobs", "--json").stdout)[0]["id"] == 1


def test_a_planted_link_shows_the_containers_file_never_the_hosts(daemon: Testbed) -> None:
    root = edited_machine(daemon, "keep")
    secret = daemon.dir / "host-secret.conf"
    secret.write_text("HOSTSECRET\n")
    assert gnctl("update", "-q", "web").returncode == 0
    # The new default becomes a link to a host path: the container sees its own file.
    new = root / NEW.lstrip("/")
    new.unlink()
    new.symlink_to(secret)

    shown = gnctl("config", "web")

    assert "HOSTSECRET" not in shown.stdout + shown.stderr
    assert f"(cannot read {NEW}" in shown.stdout
    # Replacing moves the link itself into place: nothing is written through it.
    assert gnctl("config", "web", PATH, "--replace").returncode == 0
    assert (root / PATH.lstrip("/")).readlink() == secret
    assert secret.read_text() == "HOSTSECRET\n"


def test_reading_config_files_needs_the_manage_right(daemon: Testbed) -> None:
    edited_machine(daemon, "keep")
    assert gnctl("update", "-q", "web").returncode == 0

    denied = call("ListConfigFiles", "s", "web", check=False, user=65534)

    assert denied.returncode != 0
    assert "Access denied" in denied.stderr or "AccessDenied" in denied.stderr, denied.stderr


def test_an_update_rolled_back_leaves_what_waits_as_the_root_has_it(daemon: Testbed) -> None:
    root = edited_machine(daemon, "keep")
    assert gnctl("update", "-q", "web").returncode == 0
    waiting = attention()["web"]
    # The next update would put the new default in, but its health check fails: the
    # root goes back, and with it the new default waiting beside the admin's file.
    bootable(root)
    hello = daemon.repo / "app-misc/hello"
    (hello / "hello-3.ebuild").write_text((hello / "hello-2.ebuild").read_text())
    try:
        daemon.write_config(
            updates={"config_files": "replace", "health": [["/bin/busybox", "false"]]}
        )
        daemon.stop_daemon()
        daemon.start_daemon()

        assert gnctl("update", "-q", "web").returncode == 1
    finally:
        (hello / "hello-3.ebuild").unlink()
    assert job_string(2, "Error").startswith("health check /bin/busybox false failed")
    assert etc_conf(root) == {"._cfg0000_foo.conf": DEFAULT_2, "foo.conf": ADMIN}
    kinds = [item["kind"] for item in attention()["web"]]
    assert kinds == ["config-file", "health"]
    assert attention()["web"][0] == waiting[0]
