"""What a user does at a shell: busctl, gnctl, zfs, and reading the results."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

from testbed import REPO_ROOT, Testbed, tree_hash, wait_for

# The tests' name for it, as `wait_for` is Tmux's method that reads the screen; an
# assignment, so that modules importing it from here see it as exported.
wait_until = wait_for

MANAGER = ("org.gnspawn1", "/org/gnspawn1", "org.gnspawn1.Manager")


def busctl(
    *args: str, check: bool = True, user: int | None = None
) -> subprocess.CompletedProcess[str]:
    """busctl on the private system bus, as a user would run it."""
    argv = ["busctl", "--system", *args]
    if user is not None:
        argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *argv]
    result = subprocess.run(argv, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"busctl {' '.join(args)} failed: {result.stderr}")
    return result


def gdbus(
    path: str, method: str, *args: str, user: int | None = None
) -> subprocess.CompletedProcess[str]:
    """gdbus call, which (unlike busctl) prints a failing call's error name and message."""
    argv = gdbus_argv(path, method, *args)
    if user is not None:
        argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *argv]
    return subprocess.run(argv, capture_output=True, text=True)


def gdbus_argv(path: str, method: str, *args: str) -> list[str]:
    """The gdbus command that calls `method` of gnspawnd's object `path`."""
    return [
        "gdbus",
        "call",
        "--system",
        "--dest",
        "org.gnspawn1",
        "--object-path",
        path,
        "--method",
        method,
        *args,
    ]


def error_of(result: subprocess.CompletedProcess[str]) -> str:
    """'name: message' of a failed gdbus call."""
    assert result.returncode != 0 and "GDBus.Error:" in result.stderr, result
    return result.stderr.split("GDBus.Error:", 1)[1].strip()


def gdbus_error(method: str, *args: str, user: int | None = None) -> str:
    """'name: message' of a failing Manager call."""
    return error_of(gdbus("/org/gnspawn1", f"org.gnspawn1.Manager.{method}", *args, user=user))


def call(
    method: str, signature: str = "", *args: str, check: bool = True, user: int | None = None
) -> subprocess.CompletedProcess[str]:
    """busctl call of a Manager method (as `user` when given)."""
    body = [signature, *args] if signature else []
    return busctl("call", *MANAGER, method, *body, check=check, user=user)


def gnctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gnspawn.ctl.main", *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )


def remote_gnctl(host: str, ssh: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """gnctl -H HOST, its ssh the test's (SYSTEMD_SSH)."""
    env = {**os.environ, "SYSTEMD_SSH": str(ssh)}
    # Nothing of the bus's address travels: the far end finds its system bus itself.
    env.pop("DBUS_SYSTEM_BUS_ADDRESS", None)
    return subprocess.run(
        [sys.executable, "-m", "gnspawn.ctl.main", "-H", host, *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=env,
    )


def notices(job: int) -> list[list[str]]:
    """The job's Notices, as gnctl job --json shows them."""
    shown = gnctl("job", "--json", str(job))
    assert shown.returncode == 0, shown.stderr
    return [list(n) for n in json.loads(shown.stdout)["Notices"]]


def attention() -> dict[str, list[dict[str, str]]]:
    """Each machine's Attention, as gnctl list --json shows it."""
    machines = json.loads(gnctl("list", "--json").stdout)
    return {m["name"]: m["attention"] for m in machines}


def complete(*words: str) -> list[str]:
    """What bash completion offers after `gnctl WORDS...` (the last word is the one typed)."""
    script = (
        f"source {REPO_ROOT}/contrib/completion/gnctl.bash; "
        'COMP_WORDS=(gnctl "$@"); COMP_CWORD=$#; _gnctl; printf "%s\\n" "${COMPREPLY[@]}"'
    )
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    result = subprocess.run(
        ["bash", "-c", script, "bash", *words], capture_output=True, text=True, env=env, check=True
    )
    return [line for line in result.stdout.splitlines() if line]


def job_property(job_id: int, name: str) -> str:
    """A Job property as busctl prints it, e.g. 's "done"' or 'b true'."""
    out = busctl(
        "get-property", "org.gnspawn1", f"/org/gnspawn1/job/_{job_id}", "org.gnspawn1.Job", name
    ).stdout.strip()
    return out


def job_string(job_id: int, name: str) -> str:
    value = job_property(job_id, name)
    assert value.startswith('s "'), value
    return value[3:-1]


def wait_job(job_id: int, timeout: float = 120) -> str:
    """Wait until the job has finished; its Result."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if job_string(job_id, "State") == "finished":
            return job_string(job_id, "Result")
        time.sleep(0.1)
    raise TimeoutError(f"job {job_id} did not finish")


def queued(out: str) -> int:
    """The job id from a `uo ID PATH` reply."""
    kind, job_id, _ = out.split(maxsplit=2)
    assert kind == "uo", out
    return int(job_id)


def snapshots(dataset: str) -> list[str]:
    out = subprocess.run(
        ["zfs", "list", "-H", "-t", "snapshot", "-o", "name", "-r", dataset],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line for line in out.splitlines() if line.startswith(dataset + "@")]


def bed_processes() -> Iterator[tuple[int, list[bytes]]]:
    """Each process in this test bed's mount namespace (another test bed may run on the
    machine at the same time) with its environment, this one left out."""
    ours = os.readlink("/proc/self/ns/mnt")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if os.readlink(entry / "ns/mnt") != ours:
                continue
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        yield int(entry.name), environ


def gnspawn_processes(job_id: int | None = None) -> list[int]:
    """Processes of this test bed whose environment says gnspawnd started them for a job."""
    return [
        pid
        for pid, environ in bed_processes()
        if any(
            var.startswith(b"GNSPAWN_JOB=")
            and (job_id is None or var == f"GNSPAWN_JOB={job_id}".encode())
            for var in environ
        )
    ]


def hello_version(root: Path) -> str:
    return (root / "usr/share/hello/version").read_text().strip()


class Interrupted(NamedTuple):
    """A job building on `slow` with an update of `web` waiting behind it."""

    slow: Path
    web: Path
    before: dict[str, str]
    running: int
    waiting: int


def build_with_a_job_waiting(daemon: Testbed) -> Interrupted:
    slow = daemon.seed("slow", ["=app-misc/hello-1", "=app-misc/sleeper-1"])
    web = daemon.seed("web")
    before = tree_hash(slow)
    daemon.write_config(jobs={"max_parallel": 1})
    daemon.stop_daemon()
    daemon.start_daemon()
    running = queued(call("Update", "st", "slow", "0").stdout)
    waiting = queued(call("Update", "st", "web", "0").stdout)
    wait_until(lambda: job_string(running, "CurrentPackage") == "app-misc/sleeper-2", "a build")
    return Interrupted(slow, web, before, running, waiting)


class Tmux:
    """A terminal: a tmux server of our own whose screen the tests read."""

    def __init__(self, directory: Path, width: int = 120, height: int = 30) -> None:
        self.socket = directory / "tmux.sock"
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        env.pop("TMUX", None)
        self.tmux(
            "-f", "/dev/null", "new-session", "-d", "-x", str(width), "-y", str(height),
            "env", "PS1=$ ", "PROMPT=$ ", "bash", "--norc", "--noprofile", env=env,
        )  # fmt: skip
        self.server_pid = int(self.tmux("display-message", "-p", "#{pid}").strip())

    def tmux(self, *args: str, env: dict[str, str] | None = None) -> str:
        return subprocess.run(
            ["tmux", "-S", str(self.socket), *args],
            capture_output=True, text=True, check=True, env=env,
        ).stdout  # fmt: skip

    def type(self, *keys: str) -> None:
        """Keys as tmux names them: text, "Enter", "Tab", "C-c"."""
        self.tmux("send-keys", *keys)

    def run(self, command: str) -> None:
        self.type(command, "Enter")

    def screen(self) -> list[str]:
        """The visible lines, trailing blanks trimmed."""
        lines = self.tmux("capture-pane", "-p").splitlines()
        while lines and not lines[-1].strip():
            lines.pop()
        return [line.rstrip() for line in lines]

    def wait_for(self, check: Callable[[list[str]], object], what: str) -> list[str]:
        """The screen, once check(screen) holds."""
        seen: list[str] = []

        def matches() -> bool:
            seen[:] = self.screen()
            return bool(check(seen))

        try:
            wait_until(matches, what, timeout=90)
        except TimeoutError:
            raise AssertionError(f"{what}; the screen:\n" + "\n".join(seen)) from None
        return seen

    def stop(self) -> None:
        os.kill(self.server_pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                status = Path(f"/proc/{self.server_pid}/stat").read_text()
            except FileNotFoundError:
                return
            if status.rsplit(")", 1)[1].split()[0] == "Z":
                return  # a daemon: its reaper is not us
            time.sleep(0.05)
        os.kill(self.server_pid, signal.SIGKILL)
