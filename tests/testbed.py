"""The real components gnspawn talks to, started by hand in a private mount namespace.

Used by the tests and by `make demo`. Everything started here is stopped by its PID.
Root is required: zfs-fuse, mounts and journald need it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_REPO = REPO_ROOT / "contrib" / "demo-repo"
POLICY = REPO_ROOT / "dbus" / "org.gnspawn1.conf"
POOL = "gnspawn-test"
VENV_BIN = Path(sys.executable).parent
EMERGE = VENV_BIN / "emerge"
CLONE_NEWNS = 0x00020000
MS_REC, MS_PRIVATE = 0x4000, 0x40000

PORTAGE_FEATURES = (
    "-sandbox -usersandbox -userpriv -userfetch -usersync -ipc-sandbox -network-sandbox "
    "-pid-sandbox -news nostrip buildpkg"
)


def enter_private_namespace() -> None:
    """Give this process its own mounts and a private /run, where the sockets of
    zfs-fuse and journald live; everything started later inherits them."""
    if os.environ.get("GNSPAWN_TESTBED_NS") == str(os.getpid()):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNS) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS) failed: the test bed needs root")
    if libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        raise OSError(ctypes.get_errno(), "making / private failed")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "gnspawn-run", "/run"], check=True)
    for directory in ("/run/lock", "/run/zfs", "/run/systemd/journald.conf.d"):
        os.makedirs(directory, exist_ok=True)
    os.environ["GNSPAWN_TESTBED_NS"] = str(os.getpid())


def wait_for(check: Callable[[], object], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


def stop_pid(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 10) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Journald:
    """systemd-journald with volatile storage in the private /run."""

    def __init__(self) -> None:
        self.proc = self._start()

    @staticmethod
    def _start() -> subprocess.Popen[bytes]:
        """journald, waited for until its socket is there."""
        Path("/run/systemd/journald.conf.d/gnspawn-test.conf").write_text(
            "[Journal]\nStorage=volatile\nRateLimitBurst=0\nRateLimitIntervalSec=0\n"
        )
        proc = subprocess.Popen(
            ["/lib/systemd/systemd-journald"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for(lambda: os.path.exists("/run/systemd/journal/socket"), "journald")
        return proc

    def stop(self) -> None:
        stop_pid(self.proc)

    def restart(self) -> None:
        """A new journald on a new socket, as after a crash or `systemctl restart`."""
        self.stop()
        Path("/run/systemd/journal/socket").unlink(missing_ok=True)
        self.proc = self._start()

    def entries(self, *matches: str) -> list[dict[str, str]]:
        """Journal entries matching FIELD=value terms, as `journalctl -o json` gives them."""
        subprocess.run(["journalctl", "--flush"], capture_output=True)
        out = subprocess.run(
            ["journalctl", "-D", "/run/log/journal", "-o", "json", "--no-pager", *matches],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]


class ZfsPool:
    """zfs-fuse with one pool on a sparse file."""

    def __init__(self, directory: Path, size: str = "2G", name: str = POOL) -> None:
        self.name = name
        self.file = directory / "pool.img"
        self.proc = subprocess.Popen(
            ["/usr/sbin/zfs-fuse", "--no-daemon", "--no-kstat-mount"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(
            lambda: subprocess.run(["zpool", "list"], capture_output=True).returncode == 0,
            "zfs-fuse",
        )
        self.file.unlink(missing_ok=True)
        subprocess.run(["truncate", "-s", size, str(self.file)], check=True)
        zfs("zpool", "create", "-o", "cachefile=none", "-m", "none", name, str(self.file))

    def stop(self) -> None:
        zfs("zpool", "destroy", "-f", self.name, check=False)
        stop_pid(self.proc)
        self.file.unlink(missing_ok=True)


def zfs(*argv: str, check: bool = True) -> str:
    """Run zfs or zpool (argv[0] when it is zpool) and return its output."""
    cmd = list(argv) if argv[0] in ("zfs", "zpool") else ["zfs", *argv]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {result.stderr.strip()}")
    return result.stdout


BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_destination="org.freedesktop.DBus"/>
    <allow receive_type="signal"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
  </policy>
  <policy user="root">
    <allow own="org.freedesktop.PolicyKit1"/>
    <allow own="org.freedesktop.systemd1"/>
    <allow own="org.freedesktop.machine1"/>
    <allow send_destination="org.freedesktop.systemd1"/>
    <allow send_destination="org.freedesktop.machine1"/>
    <allow send_interface="org.freedesktop.DBus.Monitoring"/>
    <allow eavesdrop="true"/>
  </policy>
  <include>{policy}</include>
  <include ignore_missing="yes">/usr/share/dbus-1/system.d/org.freedesktop.PolicyKit1.conf</include>
</busconfig>
"""


class Bus:
    """A private dbus-daemon configured like the system bus, with gnspawn's policy."""

    def __init__(self, directory: Path) -> None:
        self.socket = directory / "system_bus_socket"
        self.config = directory / "bus.conf"
        self.config.write_text(BUS_CONFIG.format(socket=self.socket, policy=POLICY))
        self.socket.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            [
                "dbus-daemon",
                f"--config-file={self.config}",
                "--nofork",
                "--nopidfile",
                "--print-address",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert self.proc.stdout is not None
        self.address = self.proc.stdout.readline().decode().strip()
        os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = self.address
        # Where programs that do not read the variable look for the system bus, such as
        # systemd-stdio-bridge at the far end of `gnctl -H` (the private /run is ours).
        standard = Path("/run/dbus/system_bus_socket")
        standard.parent.mkdir(exist_ok=True)
        standard.unlink(missing_ok=True)
        standard.symlink_to(self.socket)

    def stop(self) -> None:
        stop_pid(self.proc)


def write_portage_config(root: Path, repo: Path, work: Path, name: str) -> None:
    """R/etc/portage as a container of the demo repository needs it."""
    write_portage_directory(root / "etc" / "portage", repo, work, name)


def write_portage_directory(portage: Path, repo: Path, work: Path, name: str) -> None:
    """An etc/portage directory for the demo repository, with `name`'s work directories."""
    portage.mkdir(parents=True, exist_ok=True)
    profile = portage / "make.profile"
    if profile.is_symlink() or profile.exists():
        profile.unlink()
    profile.symlink_to(repo / "profiles" / "default")
    (portage / "repos.conf").write_text(repos_conf(repo))
    (portage / "make.conf").write_text(
        f'FEATURES="{PORTAGE_FEATURES}"\n'
        "PORTAGE_USERNAME=root\nPORTAGE_GRPNAME=root\n"
        f"PORTAGE_TMPDIR={work}/tmp/{name}\nDISTDIR={work}/distfiles\n"
        f"PKGDIR={work}/packages\nPORTAGE_LOGDIR={work}/logs/{name}\n"
    )
    for sub in (f"tmp/{name}", "distfiles", "packages", f"logs/{name}"):
        (work / sub).mkdir(parents=True, exist_ok=True)


def repos_conf(repo: Path) -> str:
    return f"[DEFAULT]\nmain-repo = gnspawn-demo\n\n[gnspawn-demo]\nlocation = {repo}\n"


def emerge_environment(repo: Path) -> dict[str, str]:
    """What emerge from PyPI needs in its environment here (see TESTBED.md)."""
    return {"EPREFIX": "", "PORTAGE_REPOSITORIES": repos_conf(repo)}


class Testbed:
    __test__ = False
    """All components, a repository, a config, and gnspawnd itself."""

    def __init__(self, directory: Path, pool: str = POOL) -> None:
        self.dir = directory
        self.pool_name = pool
        self.dir.mkdir(parents=True, exist_ok=True)
        self.repo = self.dir / "repo"
        self.machines = self.dir / "machines"
        self.work = self.dir / "work"
        self.state = self.dir / "state"
        self.config_file = self.dir / "gnspawn.toml"
        self.daemon: subprocess.Popen[bytes] | None = None
        self.daemon_log = self.dir / "gnspawnd.log"
        self.notify: socket.socket | None = None
        self._started: list[object] = []
        self.host_portage = self.dir / "host-portage"
        self._host_portage_mount: Path | None = None
        self._prefix_bin_mount: Path | None = None
        enter_private_namespace()
        if self.repo.exists():
            shutil.rmtree(self.repo)
        shutil.copytree(DEMO_REPO, self.repo)
        self._mount_host_portage_config()
        self._mount_prefix_tools()
        self._share_machines_directory()
        self.journal = Journald()
        self.pool = ZfsPool(self.dir, name=pool)
        zfs("create", "-p", self.dataset)
        self.bus = Bus(self.dir)
        self.write_config()

    @property
    def dataset(self) -> str:
        return f"{self.pool_name}/machines"

    def _mount_host_portage_config(self) -> None:
        """The test bed's own <venv>/etc/portage, which Portage from PyPI reads even with
        --config-root: written in the bed's directory and bind-mounted over the venv's in
        the private mount namespace, so that test beds running at the same time on the
        one venv each see theirs and the venv itself stays as installed."""
        # Its PORTAGE_TMPDIR is gnspawnd's: emerge wants the host root's to exist, and in
        # gnspawn's sandbox only gnspawn's is there.
        write_portage_directory(self.host_portage, self.repo, self.work, "built")
        target = Path(sys.prefix) / "etc" / "portage"
        target.mkdir(parents=True, exist_ok=True)  # the mount point: pip installs none
        subprocess.run(["mount", "--bind", str(self.host_portage), str(target)], check=True)
        self._host_portage_mount = target

    def _share_machines_directory(self) -> None:
        """The machines directory as a shared mount, as systemd makes every mount: the
        mounts of the datasets below it are then copied into a sandbox as slaves, and a
        dataset unmounted here (to be destroyed) is unmounted there too."""
        self.machines.mkdir(parents=True, exist_ok=True)
        machines = str(self.machines)
        subprocess.run(["mount", "--bind", machines, machines], check=True)
        subprocess.run(["mount", "--make-rshared", machines], check=True)

    def _mount_prefix_tools(self) -> None:
        """scanelf where Portage from PyPI looks for it: under its EPREFIX, the venv
        (<venv>/usr/bin/scanelf), not on PATH. preserve-libs needs it. A directory of
        the bed's, bind-mounted in the private mount namespace as the config is."""
        tools = self.dir / "prefix-bin"
        tools.mkdir(exist_ok=True)
        scanelf = tools / "scanelf"
        if not scanelf.is_symlink():
            scanelf.symlink_to("/usr/bin/scanelf")
        target = Path(sys.prefix) / "usr" / "bin"
        target.mkdir(parents=True, exist_ok=True)  # the mount point: pip installs none
        subprocess.run(["mount", "--bind", str(tools), str(target)], check=True)
        self._prefix_bin_mount = target

    def _unmount_host_portage_config(self) -> None:
        for mount in (self._host_portage_mount, self._prefix_bin_mount):
            if mount is not None:
                subprocess.run(["umount", str(mount)], check=False)
        self._host_portage_mount = self._prefix_bin_mount = None

    def write_config(self, extra: str = "", **sections: dict[str, object]) -> None:
        for sub in ("tmp/built", "logs/built"):
            (self.work / sub).mkdir(parents=True, exist_ok=True)
        env = emerge_environment(self.repo)
        settings: dict[str, dict[str, object]] = {
            "daemon": {"state_directory": str(self.state)},
            "storage": {
                "dataset": self.dataset,
                "machines_directory": str(self.machines),
                "keep_snapshots": 5,
            },
            "portage": {
                "emerge": str(EMERGE),
                "repos": [str(self.repo)],
                "default_profile": "default",
                "environment": env,
                "features": PORTAGE_FEATURES.split(),
                # A builder root per test would double every test's emerges: the
                # tests of builder roots (test_builders, test_fleet) turn them on.
                "builders": False,
                "distdir": str(self.work / "distfiles"),
                "pkgdir": str(self.work / "packages"),
                "make_conf": {
                    "PORTAGE_USERNAME": "root",
                    "PORTAGE_GRPNAME": "root",
                    "PORTAGE_TMPDIR": str(self.work / "tmp" / "built"),
                    "PORTAGE_LOGDIR": str(self.work / "logs" / "built"),
                },
            },
            "nspawn": {"settings_directory": str(self.dir / "nspawn")},
            "jobs": {"max_parallel": 2, "stop_timeout": 5},
        }
        for section, values in sections.items():
            settings.setdefault(section, {}).update(values)
        lines = []
        for section, values in settings.items():
            lines.append(f"[{section}]")
            for key, value in values.items():
                lines.append(f"{key} = {toml_value(value)}")
            lines.append("")
        self.config_file.write_text("\n".join(lines) + extra)

    # --- machines ---------------------------------------------------------------

    def seed(
        self, name: str, packages: Sequence[str] = ("=app-misc/hello-1",), parent: str = ""
    ) -> Path:
        """A Gentoo container as an admin would have made it: a dataset, emerge into it."""
        root = self.machines / name
        zfs("create", "-o", f"mountpoint={root}", f"{parent or self.dataset}/{name}")
        write_portage_config(root, self.repo, self.work, name)
        self.emerge(root, "@system", *packages)
        return root

    def adopt(self, name: str, profile: str = "default") -> None:
        """What the README tells an admin who adopts a container: record its profile,
        so that its packages come from that profile's builder root."""
        zfs("set", f"org.gnspawn:profile={profile}", f"{self.dataset}/{name}")

    def empty_pkgdir(self) -> None:
        """No binary packages: what a test installs does not hang on what ran before."""
        pkgdir = self.work / "packages"
        shutil.rmtree(pkgdir, ignore_errors=True)
        pkgdir.mkdir(parents=True)

    def emerge(self, root: Path, *args: str) -> None:
        env = {**os.environ, **emerge_environment(self.repo), "NOCOLOR": "true"}
        result = subprocess.run(
            [str(EMERGE), f"--root={root}", f"--sysroot={root}", f"--config-root={root}", *args],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise RuntimeError(f"emerge {' '.join(args)} failed:\n{result.stdout[-3000:]}")

    def reset(self) -> None:
        """No machines, no jobs, no settings files, the default config: a fresh start."""
        assert self.daemon is None
        for dataset in zfs("list", "-H", "-o", "name", "-r", "-d", "1", self.dataset).split()[1:]:
            self.remove_machine(dataset.rsplit("/", 1)[1])
        for directory in (self.machines, self.dir / "nspawn", self.state):
            shutil.rmtree(directory, ignore_errors=True)
        self.empty_pkgdir()
        self.write_config()

    def remove_machine(self, name: str) -> None:
        # zfs-fuse calls a dataset whose files were touched "busy" until it is
        # unmounted through its mountpoint property.
        zfs("set", "mountpoint=none", f"{self.dataset}/{name}")
        # ... and now and then for a moment after that, while it writes a txg out.
        for _ in range(50):
            try:
                zfs("destroy", "-r", f"{self.dataset}/{name}")
                return
            except RuntimeError as err:
                if "dataset is busy" not in str(err):
                    raise
                time.sleep(0.1)
        zfs("destroy", "-r", f"{self.dataset}/{name}")

    # --- the daemon -------------------------------------------------------------

    def start_daemon(
        self, *args: str, wait: bool = True, env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """gnspawnd, waited for until it says READY=1 on a notify socket of ours; `env`
        goes into its environment over this process's (PATH, say, for a zfs of the
        test's in front of the real one)."""
        assert self.daemon is None or self.daemon.poll() is not None
        notify_path = self.dir / "notify.sock"
        notify_path.unlink(missing_ok=True)
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(notify_path))
        environment = {
            **os.environ,
            **(env or {}),
            "NOTIFY_SOCKET": str(notify_path),
            "PYTHONUNBUFFERED": "1",
        }
        with self.daemon_log.open("ab") as logfile:
            self.daemon = subprocess.Popen(
                [sys.executable, "-m", "gnspawn.daemon", "--config", str(self.config_file), *args],
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=logfile,
                stderr=logfile,
            )
        self.notify = notify
        if wait:
            notify.settimeout(30)
            try:
                while "READY=1" not in self.notifications():
                    pass
            except TimeoutError:
                raise RuntimeError(
                    f"gnspawnd did not get ready:\n{self.daemon_log.read_text()}"
                ) from None
        return self.daemon

    def notifications(self) -> list[str]:
        """The next sd_notify message of the daemon, one assignment an item."""
        assert self.notify is not None
        return self.notify.recv(4096).decode().split("\n")

    def daemon_journal(self, *matches: str) -> list[dict[str, str]]:
        """Journal entries the running gnspawnd wrote that match FIELD=value terms."""
        assert self.daemon is not None
        return self.journal.entries(*matches, f"_PID={self.daemon.pid}")

    def stop_daemon(self, sig: int = signal.SIGTERM) -> int | None:
        if self.daemon is None:
            return None
        stop_pid(self.daemon, sig, timeout=60)
        code = self.daemon.returncode
        self.daemon = None
        if self.notify is not None:
            self.notify.close()
            self.notify = None
        return code

    @contextlib.contextmanager
    def host_services(
        self,
        *running: str,
        fail: dict[tuple[str, str], str] | None = None,
        signal_first: bool = False,
        containers: Sequence[str] = (),
    ) -> Iterator[Path]:
        """Recording systemd and machined on the bus; yields the file of their calls."""
        record = self.dir / "host-services.jsonl"
        record.unlink(missing_ok=True)
        # fail: (method, unit) -> the result its job ends with instead of done, as
        # systemd's does for a unit that fails; signal_first: JobRemoved before the reply.
        options = [
            arg
            for (method, unit), result in (fail or {}).items()
            for arg in ("--fail", method, unit, result)
        ]
        if signal_first:
            options.append("--signal-first")
        # Real containers of those machines' roots, their init the test bed's busybox.
        for name in containers:
            root = self.machines / name
            (root / "bin").mkdir(exist_ok=True)
            shutil.copy2("/bin/busybox", root / "bin" / "busybox")
            options += ["--container", name, str(root)]
        proc = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).parent / "recording_services.py"),
                *options,
                str(record),
                *running,
            ],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == b"ready"
            yield record
        finally:
            stop_pid(proc)

    @contextlib.contextmanager
    def polkit(self, rules: str) -> Iterator[None]:
        """The real polkitd on the test bus, with gnspawn's action and `rules`.

        Its configuration and the users it knows are bind-mounted over the system's
        inside the test bed's private mount namespace, so the host is not touched:
        daemon (uid 1) in group gnspawn-admins, nobody (65534) outside it.
        """
        conf = self.dir / "polkit"
        actions, rules_d, empty = conf / "actions", conf / "rules.d", conf / "empty"
        for directory in (actions, rules_d, empty):
            directory.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO_ROOT / "dbus" / "org.gnspawn1.policy", actions)
        (rules_d / "50-gnspawn-test.rules").write_text(rules)
        # The users are the system's own (the bus knows them): daemon (uid 1) joins a
        # group the rules grant, nobody (65534) stays outside.
        group = conf / "group"
        group.write_text(Path("/etc/group").read_text() + "gnspawn-admins:x:4243:daemon\n")
        binds = [
            (actions, "/usr/share/polkit-1/actions"),
            (rules_d, "/etc/polkit-1/rules.d"),
            (empty, "/usr/share/polkit-1/rules.d"),
            (group, "/etc/group"),
        ]
        mounted = []
        try:
            for source, target in binds:
                subprocess.run(["mount", "--bind", str(source), target], check=True)
                mounted.append(target)
            proc = subprocess.Popen(
                ["/usr/lib/polkit-1/polkitd", "--no-debug"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                wait_for(
                    lambda: (
                        subprocess.run(
                            ["busctl", "--system", "status", "org.freedesktop.PolicyKit1"],
                            capture_output=True,
                        ).returncode
                        == 0
                    ),
                    "polkitd",
                )
                yield
            finally:
                stop_pid(proc)
        finally:
            for target in reversed(mounted):
                subprocess.run(["umount", target], check=False)

    def stop(self) -> None:
        self.stop_daemon()
        for component in (self.bus, self.pool, self.journal):
            with contextlib.suppress(Exception):
                component.stop()
        self._unmount_host_portage_config()
        subprocess.run(["umount", "--recursive", str(self.machines)], check=False)


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def tree_hash(root: Path) -> dict[str, str]:
    """Every file, link and directory under root: its type and permission bits, owner,
    extended attributes, and its content or target. Not its times: a rollback restores
    them, but a directory's mtime also changes when a file in it is made and removed
    again, which is no change of the tree."""
    result: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        st = path.lstat()
        meta = f"{st.st_mode:o} {st.st_uid}:{st.st_gid}{xattrs(path)}"
        if stat.S_ISLNK(st.st_mode):
            result[rel] = f"{meta} link:{os.readlink(path)}"
        elif stat.S_ISREG(st.st_mode):
            result[rel] = f"{meta} {hashlib.sha256(path.read_bytes()).hexdigest()}"
        elif stat.S_ISDIR(st.st_mode):
            result[rel] = f"{meta} dir"
        else:
            result[rel] = f"{meta} dev:{st.st_rdev:x}"
    return result


def xattrs(path: Path) -> str:
    """The extended attributes of path itself (not of a link's target), as text; none
    where the file system has none (zfs-fuse answers ENOTSUP)."""
    try:
        names = sorted(os.listxattr(path, follow_symlinks=False))
        values = [os.getxattr(path, name, follow_symlinks=False) for name in names]
    except OSError as err:
        if err.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return ""
        raise
    return "".join(f" {name}={value.hex()}" for name, value in zip(names, values, strict=True))


@contextlib.contextmanager
def testbed(directory: Path) -> Iterator[Testbed]:
    bed = Testbed(directory)
    try:
        yield bed
    finally:
        bed.stop()


class Sshd:
    """An OpenSSH server on 127.0.0.1 that lets root in with a key of our own, and the
    ssh program that uses it ($SYSTEMD_SSH): the far end of `gnctl -H`."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(exist_ok=True)
        host_key, user_key = directory / "host_key", directory / "user_key"
        for key in (host_key, user_key):
            key.unlink(missing_ok=True)
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True
            )
        (directory / "authorized_keys").write_text((directory / "user_key.pub").read_text())
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        config = directory / "sshd_config"
        config.write_text(
            f"ListenAddress 127.0.0.1\nPort {self.port}\nHostKey {host_key}\n"
            f"AuthorizedKeysFile {directory}/authorized_keys\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
            "StrictModes no\nPidFile none\n"
        )
        Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation, in the private /run
        self.proc = subprocess.Popen(
            ["/usr/sbin/sshd", "-D", "-e", "-f", str(config)],
            stdin=subprocess.DEVNULL,
            stderr=(directory / "sshd.log").open("ab"),
        )
        wait_for(self._listening, "sshd")
        client_config = directory / "ssh_config"
        client_config.write_text(
            f"Host *\n  IdentityFile {user_key}\n  IdentitiesOnly yes\n  BatchMode yes\n"
            f"  StrictHostKeyChecking no\n  UserKnownHostsFile {directory}/known_hosts\n"
            "  LogLevel ERROR\n"
        )
        self.ssh = directory / "ssh"
        self.ssh.write_text(f'#!/bin/sh\nexec ssh -F {client_config} "$@"\n')
        self.ssh.chmod(0o755)

    def _listening(self) -> bool:
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", self.port)) == 0

    @property
    def host(self) -> str:
        return f"root@127.0.0.1:{self.port}"

    def stop(self) -> None:
        stop_pid(self.proc)


OTHER_POOL = "gnspawn-other"


class OtherHost:
    """A second gnspawn host on this machine: a test bed of its own (pool
    gnspawn-other, bus, journald, gnspawnd) with an sshd that lets root in, all in a
    child process with its own mount namespace and /run, where zfs-fuse's fixed
    socket is its own. It is reached as a real other host: over ssh to 127.0.0.1.

    `ssh` is the ssh program for $SYSTEMD_SSH: ssh with the bed's key, which cuts the
    stream of a `zfs receive` when told to (cut()). `root()` shows a path as that
    host sees it, through /proc/PID/root."""

    def __init__(self, directory: Path) -> None:
        # Afresh: zfs-fuse leaves the mountpoints of the last one's machines behind.
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        self.dir = directory
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).parent / "other_host.py"), str(directory)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=(directory / "other_host.log").open("ab"),
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the other host did not start:\n{self.log()}")
        said = json.loads(line)
        self.port: int = said["port"]
        self.dataset: str = said["dataset"]
        self.machines = Path(said["machines"])
        self.nspawn = Path(said["nspawn"])
        self.cuts = directory / "cuts"
        self.cuts.unlink(missing_ok=True)
        self.paused = directory / "paused"
        self.paused.unlink(missing_ok=True)
        self.ssh = directory / "ssh-cutting"
        self.ssh.write_text(CUTTING_SSH.format(ssh=said["ssh"], cuts=self.cuts, paused=self.paused))
        self.ssh.chmod(0o755)

    def log(self) -> str:
        return (self.dir / "other_host.log").read_text()

    @property
    def host(self) -> str:
        return f"root@127.0.0.1:{self.port}"

    def cut(self, *plan: str) -> None:
        """What the next `zfs receive` streams get, one each: `all`, a number of bytes
        after which the stream is cut, or `pause:BYTES` (that many, then nothing more
        until the sender dies; the file `paused` says it is there). `connect` first:
        the next bus connection hangs before ssh runs (`paused` holds its PID)."""
        self.cuts.write_text("".join(f"{step}\n" for step in plan))

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """A command on the other host, over ssh, as its admin would run it."""
        return subprocess.run(
            [str(self.ssh), "-p", str(self.port), "root@127.0.0.1", shlex.join(argv)],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )

    def zfs_list(self) -> list[str]:
        """Every dataset and snapshot of the other host's pool."""
        result = self.run("zfs", "list", "-H", "-t", "all", "-o", "name", "-r", OTHER_POOL)
        assert result.returncode == 0, result.stderr
        return result.stdout.split()

    def root(self, path: Path) -> Path:
        return Path(f"/proc/{self.proc.pid}/root{path}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


CUTTING_SSH = """#!/bin/sh
# ssh, but the stream of a `zfs receive` goes as the first line of {cuts} says; with
# `connect` there, the next bus connection hangs (its PID in {paused}).
case "$*" in
*"systemd-stdio-bridge"*)
    if [ "$(head -n 1 {cuts} 2>/dev/null)" = connect ]; then
        sed -i 1d {cuts}; echo $$ > {paused}.new; mv {paused}.new {paused}; exec sleep 600
    fi ;;
*"zfs receive"*)
    if [ -s {cuts} ]; then
        step=$(head -n 1 {cuts}); sed -i 1d {cuts}
        case "$step" in
        all) ;;
        pause:*)
            {{ head -c "${{step#pause:}}"; touch {paused}; sleep 600; }} | {ssh} "$@"
            exit 1 ;;
        *) head -c "$step" | {ssh} "$@"; exit 1 ;;
        esac
    fi ;;
esac
exec {ssh} "$@"
"""
