"""The sandbox: every process that touches a machine's root runs confined to it.

Portage's ROOT is no security boundary: emerge sources the root's make.conf, bashrc
and env files, and runs the phase functions saved in its package database, as root.
Everything under a root is the container's, and whoever is root inside it can write
it. So gnspawn runs such processes under bubblewrap, in a mount namespace where

- the host's file system is read-only;
- only the machine's root, a job-private PORTAGE_TMPDIR, DISTDIR and the log directory
  are writable, and PKGDIR only for a root gnspawn trusts to publish binary packages
  (a builder root, a machine configured as trusted);
- the host's secrets and control sockets are not there at all: /run (the system bus,
  journald, zfs, systemd), /tmp, /root, /home, /etc/shadow and the ssh host keys,
  gnspawn's configuration and state, the other machines' roots, and host devices
  (/dev is a fresh minimal one: no /dev/zfs, no disks);

with its own PID, IPC, UTS and cgroup namespaces (the daemon and the host's processes are
not visible, let alone signalled), a bounded set of capabilities (what installing
files needs: no CAP_SYS_ADMIN, no ptrace, no module loading, no raw devices), and it
dies with its job.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from gnspawn import binhost
from gnspawn.config import Config

CAPABILITIES = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SYS_CHROOT",
)
"""What emerge needs to install files as their owners with their modes and file
capabilities, to drop privileges for a build, and to signal its own children. Not
CAP_DAC_READ_SEARCH: with it, open_by_handle_at(2) reaches any file of a file system
the sandbox has a descriptor on, hidden ones included."""

KEYRING = "/run/gnspawn-gnupg"
"""Where a sandbox sees the host's keyring of binary package signers, read-only: right
below /run, since bwrap makes the directories it creates for a mount point 0700, and gpg
verifies as nobody."""
HIDDEN_DIRECTORIES = (
    "/run",
    "/tmp",
    "/var/tmp",
    "/root",
    "/home",
    "/dev/shm",
    # Keys and credentials a host commonly keeps outside those.
    "/etc/ssh",
    "/etc/ssl/private",
    "/etc/wireguard",
    "/etc/NetworkManager/system-connections",
    "/etc/sudoers.d",
    "/var/lib/systemd",
)
HIDDEN_FILES = (
    "/etc/shadow",
    "/etc/shadow-",
    "/etc/gshadow",
    "/etc/gshadow-",
    "/etc/sudoers",
    "/etc/krb5.keytab",
)


def confine(
    argv: Sequence[str],
    *,
    config: Config,
    root: Path,
    machine: str,
    tmpdir: Path,
    network: bool = True,
    publish: bool = False,
) -> list[str]:
    """`argv` run under bubblewrap, confined to machine root `root`.

    `tmpdir` is the job's own directory on the host; it is what the process sees at
    the configured PORTAGE_TMPDIR, so no job sees another's build directories. The
    shared PKGDIR is read-only unless the root `publish`es (a builder root, a trusted
    machine): a container cannot plant a package that another installs.
    """
    wrapped = [
        config.sandbox.bwrap,
        "--die-with-parent",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        *([] if network else ["--unshare-net"]),
        "--ro-bind",
        "/",
        "/",
        "--dev",
        "/dev",
        "--proc",
        "/proc",
    ]
    for directory in _hidden(config):
        if os.path.isdir(directory):
            wrapped += ["--tmpfs", directory]
    # Host software that a hidden directory held (a Python under /root, a repository
    # under /var/tmp) comes back read-only.
    software = _host_software(config)
    for path in software:
        wrapped += ["--ro-bind", path, path]
    # After those: the Portage state or a secret file may lie in a directory that came back.
    state = _portage_state(config)
    for directory in state:
        os.makedirs(directory, exist_ok=True)  # as the first unconfined emerge would
        wrapped += ["--tmpfs", directory]
    for path in software:  # the repositories in /var/db/repos, say
        if any(_under(path, directory) for directory in state):
            wrapped += ["--ro-bind", path, path]
    for file in [*HIDDEN_FILES, str(config.path)]:
        if os.path.lexists(file) and not os.path.isdir(file):
            wrapped += ["--ro-bind", "/dev/null", file]
    for path in _writable(config, machine):
        wrapped += ["--bind", path, path]
    pkgdir = str(config.portage.pkgdir)
    wrapped += ["--bind" if publish else "--ro-bind", pkgdir, pkgdir]
    if binhost.verifies(config):
        wrapped += ["--ro-bind", str(binhost.keyring_directory(config)), KEYRING]
    wrapped += ["--bind", str(tmpdir), str(portage_tmpdir(config))]
    wrapped += ["--bind", str(root), str(root)]
    # bwrap sets what the process has, not what an exec could gain: setpriv (given
    # CAP_SETPCAP for it, and dropping it) bounds that too, and no exec in the sandbox
    # gains privileges (a setuid file or file capabilities planted in the root).
    wrapped += ["--cap-drop", "ALL"]
    for capability in (*CAPABILITIES, "CAP_SETPCAP"):
        wrapped += ["--cap-add", capability]
    caps = ",".join(["-all", *(f"+{c.removeprefix('CAP_').lower()}" for c in CAPABILITIES)])
    setpriv = [
        config.sandbox.setpriv,
        "--no-new-privs",
        f"--bounding-set={caps}",
        f"--inh-caps={caps}",
        f"--ambient-caps={caps}",
        "--",
    ]
    return [*wrapped, "--chdir", "/", "--", *setpriv, *argv]


def directories(config: Config, machine: str) -> dict[str, str]:
    """The directories emerge writes for `machine`, and the keyring it verifies binary
    packages with, for its environment: there they override what the root's make.conf
    says, which names paths the sandbox does not let it write."""
    values = {
        "PORTAGE_TMPDIR": str(portage_tmpdir(config)),
        "DISTDIR": str(config.portage.distdir),
        "PKGDIR": str(config.portage.pkgdir),
        "PORTAGE_LOGDIR": str(log_directory(config) / machine),
    }
    if binhost.verifies(config):
        # Portage's default is /etc/portage/gnupg of the host, whatever the ROOT; no
        # trust helper (getuto) makes a keyring of its own.
        values |= {"BINPKG_GPG_VERIFY_GPG_HOME": KEYRING, "PORTAGE_TRUST_HELPER": ""}
    return values


def log_directory(config: Config) -> Path:
    """Where emerge keeps build logs (and elog files), a directory per machine below
    it: PORTAGE_LOGDIR as gnspawn writes it into make.conf, else the state directory's
    logs/; never the job's PORTAGE_TMPDIR, which goes with the job, a failed package's
    log with it. A sandbox sees its machine's directory only: no container reads
    another's logs or plants links where another's emerge writes."""
    if logdir := config.portage.make_conf.get("PORTAGE_LOGDIR"):
        return Path(logdir)
    return config.daemon.state_directory / "logs"


def portage_tmpdir(config: Config) -> Path:
    """Where emerge builds: PORTAGE_TMPDIR as gnspawn writes it into make.conf."""
    return Path(config.portage.make_conf.get("PORTAGE_TMPDIR", "/var/tmp"))


def job_tmpdir(config: Config, job: int) -> Path:
    """The host directory a job's emerges see as PORTAGE_TMPDIR."""
    return portage_tmpdir(config) / f"gnspawn-job-{job}"


def make_job_tmpdir(config: Config, job: int) -> Path:
    """A fresh, empty job directory (what an earlier run of the job left is removed)."""
    path = job_tmpdir(config, job)
    remove_job_tmpdir(config, job)
    path.mkdir(mode=0o755, parents=True)
    return path


def remove_job_tmpdir(config: Config, job: int) -> None:
    path = job_tmpdir(config, job)
    if path.is_symlink():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def _writable(config: Config, machine: str) -> list[str]:
    """The directories an emerge of `machine` writes: the shared distfiles, the
    machine's own build logs (and binary packages, when a root publishes)."""
    config.portage.pkgdir.mkdir(parents=True, exist_ok=True)
    paths = [config.portage.distdir, log_directory(config) / machine]
    for path in paths:
        path.mkdir(parents=True, exist_ok=True)
    return [str(path) for path in paths]


def _host_software(config: Config) -> list[str]:
    """Read-only paths that emerge needs and a hidden directory may hold: the Python
    it runs on, the repositories, and the host's Portage configuration."""
    paths = {sys.base_prefix, sys.prefix, _emerge_prefix(config), *map(str, config.portage.repos)}
    hidden = [*_hidden(config), *_portage_state(config)]
    return sorted(
        path
        for path in paths
        if os.path.isdir(path) and any(_under(path, directory) for directory in hidden)
    )


def _hidden(config: Config) -> list[str]:
    # The binhost signing key: whatever builds in a sandbox must not sign with it.
    signing = [str(config.binhost.signing_home)] if config.binhost.publish else []
    return [
        *HIDDEN_DIRECTORIES,
        *signing,
        str(config.storage.machines_directory),
        str(config.daemon.state_directory),
        str(log_directory(config)),
        *map(str, config.sandbox.hide),
    ]


def _portage_state(config: Config) -> list[str]:
    """Where Portage keeps the state of the host's own root: emerge takes its package
    database's lock and writes emerge.log there even when it works on another root.
    The sandbox gives it empty, throwaway ones; the host's are neither read nor written.
    """
    prefix = _emerge_prefix(config)
    if prefix == "/":
        return ["/var/db", "/var/log", "/var/cache/edb", "/var/lib/portage"]
    return [f"{prefix}/var"]


def _emerge_prefix(config: Config) -> str:
    """Portage's EPREFIX as the configured emerge has it: / for the system's, the
    virtual environment for one installed from PyPI."""
    emerge = shutil.which(config.portage.emerge)
    if emerge is None:
        return "/"
    prefix = Path(emerge).resolve().parent.parent
    return "/" if str(prefix) in ("/", "/usr") else str(prefix)


def _under(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")
