"""A container is a trust boundary: what its root plants runs confined, never on the host.

Each test plants, where Portage will source or run it during the next update, a script
that tries to write outside the root, read /etc/shadow, reach the system bus and signal
gnspawnd. The update runs through the real daemon, emerge and bubblewrap.
"""

from __future__ import annotations

import bz2
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers import call, gnctl, hello_version, job_string, queued, wait_job
from testbed import Testbed

PAYLOAD = """
gnspawn_escape() {{
    echo escaped > {host_mark} 2>/dev/null
    echo escaped > {venv_mark} 2>/dev/null
    cat /etc/shadow > {root}/leak-shadow 2>/dev/null
    ls -A /run > {root}/leak-run 2>/dev/null
    ls -A /var/lib/systemd > {root}/leak-systemd 2>/dev/null
    ls -A {logs} > {root}/leak-logs 2>/dev/null
    busctl --address=unix:path={bus} call org.gnspawn1 /org/gnspawn1 \\
        org.gnspawn1.Manager ListMachines > {root}/leak-bus 2>&1
    echo "bus $?" >> {root}/leak-bus
    kill -TERM {daemon} 2> /dev/null
    echo "kill $?" > {root}/leak-kill
    grep ^CapBnd /proc/self/status > {root}/leak-caps
    echo planted >> {root}/planted-ran
}}
"""
RUN = "[[ ${EBUILD_PHASE} == depend ]] || gnspawn_escape\n"
"""Outside the metadata phase, where Portage refuses external commands."""
CAP_BOUND = "00000000800400fb"
"""chown dac_override fowner fsetid kill setgid setuid setfcap sys_chroot"""


def plant_bashrc(root: Path, payload: str) -> None:
    (root / "etc/portage/bashrc").write_text(payload + RUN)


def plant_env(root: Path, payload: str) -> None:
    # ebuild.sh sources etc/portage/env/CATEGORY/PN in every phase of that package.
    (root / "etc/portage/env/app-misc").mkdir(parents=True)
    (root / "etc/portage/env/app-misc/hello").write_text(payload + RUN)


def plant_make_conf_source(root: Path, payload: str) -> None:
    # make.conf is read by Portage, not run; but what it sources becomes settings, and
    # emerge runs PORTAGE_IONICE_COMMAND as a program.
    (root / "etc/portage/escape.sh").write_text(payload + RUN)
    (root / "etc/portage/escape.conf").write_text(
        f'PORTAGE_IONICE_COMMAND="bash {root}/etc/portage/escape.sh"\n'
    )
    with (root / "etc/portage/make.conf").open("a") as conf:
        conf.write(f'source "{root}/etc/portage/escape.conf"\n')


def plant_vdb_environment(root: Path, payload: str) -> None:
    # The phases saved with an installed package run when an update replaces it.
    saved = root / "var/db/pkg/app-misc/hello-1/environment.bz2"
    text = bz2.decompress(saved.read_bytes()).decode()
    saved.write_bytes(
        bz2.compress((text + payload + "pkg_postrm() { gnspawn_escape; }\n").encode())
    )


PLANTS: dict[str, Callable[[Path, str], None]] = {
    "bashrc": plant_bashrc,
    "env": plant_env,
    "make.conf source": plant_make_conf_source,
    "vdb environment.bz2": plant_vdb_environment,
}


@pytest.mark.parametrize("plant", PLANTS)
def test_what_a_root_plants_runs_confined_to_it(daemon: Testbed, plant: str) -> None:
    root = daemon.seed("web")
    host_mark = daemon.dir / f"escaped-{plant.replace(' ', '-')}"
    venv_mark = Path(sys.prefix) / f"escaped-{plant.replace(' ', '-')}"
    assert daemon.daemon is not None
    daemon_pid = daemon.daemon.pid
    payload = PAYLOAD.format(
        host_mark=host_mark,
        venv_mark=venv_mark,
        root=root,
        bus=daemon.bus.socket,
        logs=daemon.work / "logs" / "built",
        daemon=daemon_pid,
    )
    PLANTS[plant](root, payload)

    job = queued(call("Update", "st", "web", "0").stdout)

    # The update is what it would have been without the plant...
    assert wait_job(job) == "done", job_string(job, "Error")
    assert hello_version(root) == "2"
    # ... the plant did run, in the sandbox, and its writes stayed in the root ...
    assert (root / "planted-ran").read_text().startswith("planted")
    # ... where it found no host secret, no control socket, no gnspawnd to signal ...
    assert (root / "leak-shadow").read_text() == ""
    assert (root / "leak-run").read_text() == ""
    assert os.listdir("/var/lib/systemd")  # the host has a credential store there ...
    assert (root / "leak-systemd").read_text() == ""  # ... the sandbox has none
    # The build logs: the machine's own directory, no other machine's logs.
    assert (root / "leak-logs").read_text() == "web\n"
    assert (root / "leak-bus").read_text().splitlines()[-1] != "bus 0"
    assert (root / "leak-kill").read_text() == "kill 1\n"
    assert (root / "leak-caps").read_text().split() == ["CapBnd:", CAP_BOUND]
    assert daemon.daemon.poll() is None
    # ... and nothing outside the root changed.
    assert not host_mark.exists()
    assert not venv_mark.exists()


def test_a_symlink_in_a_root_never_leads_the_daemon_to_a_host_file(daemon: Testbed) -> None:
    root = daemon.seed("web")
    # etc/gentoo-release to a host file the root has no copy of: the host's would say
    # "a Gentoo root", the root's own path says nothing.
    host_release = daemon.dir / "host-release"
    host_release.write_text("Gentoo Base System release 2.17\n")
    (root / "etc/gentoo-release").unlink()
    (root / "etc/gentoo-release").symlink_to(host_release)
    # etc/portage to a host directory whose make.profile names a profile.
    host_etc = daemon.dir / "host-etc-portage"
    host_etc.mkdir()
    (host_etc / "make.profile").symlink_to("/secret/profile")
    portage_dir = root / "etc/portage"
    portage_dir.rename(root / "etc/portage.real")
    portage_dir.symlink_to(host_etc)
    before = {path: os.lstat(path) for path in (host_release, host_etc, host_etc / "make.profile")}

    listed = call("ListMachines").stdout
    assert '"web" "foreign" ""' in listed, listed
    refused = call("Update", "st", "web", "0", check=False)
    assert "org.gnspawn1.Error.NotGentoo" in refused.stderr or "no etc/gentoo-release" in (
        refused.stderr
    ), refused.stderr
    result = gnctl("update", "web")
    assert result.returncode != 0 and "gentoo-release" in result.stderr, result.stderr
    assert call("ListJobs").stdout.strip() == "a(ussssuo) 0"
    for path, stat in before.items():
        assert os.lstat(path).st_mtime_ns == stat.st_mtime_ns
