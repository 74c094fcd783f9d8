"""`make demo`: gnspawn's main job, end to end, in a sandbox under the repository.

It starts a private system bus, journald, a zfs-fuse pool on a sparse file and
gnspawnd, seeds two containers from the demo repository, updates one successfully
and shows what it changed, updates one that fails and is rolled back, reads the
journal, keeps the good update's snapshot under a tag and rolls back to it by hand;
runs the weekly cycle on four machines (the tree synced from a git repository that
moved on, a soname bump, an admin's edited config file, a news item that holds a
machine until it is read); rolls back an update that breaks a running container's
health check; shows what gnctl shows, ends with a diff, and stops everything.

`make sandbox` (--keep) leaves it all running to practise on, in a process that
keeps it (the keeper); `--enter [COMMAND]` runs a command or a shell inside it;
`make sandbox-stop` (--stop) stops every process it recorded, by PID.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from ebuilds import write_conf, write_consumer, write_library, write_plain  # noqa: E402
from testbed import OtherHost, Testbed, toml_value  # noqa: E402
from upstream import sync_environment, upstream_of  # noqa: E402

STATE = "sandbox.json"
PROMPT_HINT = "inside the gnspawn sandbox: gnctl, busctl, journalctl and zfs reach its own"


def step(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m" if sys.stdout.isatty() else f"\n== {text}", flush=True)


def gnctl(*args: str) -> int:
    print(f"$ gnctl {' '.join(args)}", flush=True)
    return subprocess.run([sys.executable, "-m", "gnspawn.ctl.main", *args], check=False).returncode


def show(root: Path, package: str = "hello") -> None:
    version = (root / f"usr/share/{package}/version").read_text().strip()
    print(f"   {root.name}: app-misc/{package} {version} installed", flush=True)


def restart(bed: Testbed, extra: str = "", **sections: dict[str, object]) -> None:
    """gnspawnd again, on a new config; the demo's builder roots stay on."""
    portage = {"builders": True, **sections.pop("portage", {})}
    bed.write_config(extra, portage=portage, **sections)
    bed.stop_daemon()
    bed.start_daemon()


def demo(bed: Testbed, stack: contextlib.ExitStack) -> None:
    """The story, on a test bed that runs."""
    print(f"   pool {bed.dataset} on {bed.pool.file}, bus {bed.bus.address}")
    step("seeding a container with emerge, as an admin would by hand, and adopting it:")
    print("   zfs set org.gnspawn:profile=default (its packages come from that builder)")
    web = bed.seed("web")
    bed.adopt("web")
    show(web)
    bed.write_config(portage={"builders": True})  # the default; the test bed turns it off
    bed.start_daemon()
    gnctl("list")

    step("an update that succeeds: the profile's builder root first (job 1), then web")
    print("   installs what it built as binary packages: snapshot, emerge, done", flush=True)
    code = gnctl("update", "web")
    print(f"   exit status {code}")
    show(web)
    gnctl("snapshots", "web")

    step("what the update changed: its pre snapshot's recorded packages against now")
    gnctl("diff", "web")

    step("a second container, and an update that fails: broken-2 fails, db is rolled back")
    db = bed.seed("db", ["=app-misc/hello-1", "=app-misc/broken-1"])
    bed.adopt("db")
    code = gnctl("update", "db")
    print(f"   exit status {code}")
    show(db)
    gnctl("job", "4")

    step("the journal has every line of every job, with the job's fields")
    gnctl("logs", "4", "-n", "4")

    step("web's pre-update snapshot kept under a tag, and a rollback by hand to it")
    gnctl("keep", "web", "2", "--tag", "before-update")
    gnctl("rollback", "web", "before-update")
    show(web)
    gnctl("snapshots", "web")
    print("   web against its kept snapshot: nothing changed, the rollback undid the update")
    gnctl("diff", "web", "before-update")

    weekly_cycle(bed, stack)
    health_check(bed)
    send_to_another_host(bed)

    step("what gnspawn knows now")
    gnctl("jobs")
    gnctl("list")

    step("what the weekly cycle changed on lib: its update's pre snapshot against now")
    gnctl("diff", "lib")


def send_to_another_host(bed: Testbed) -> None:
    """web sent whole to a second gnspawn host, changed, and sent again: incremental."""
    step("web sent to a second gnspawn host (its own pool, bus and gnspawnd) over ssh")
    other = OtherHost(bed.dir / "other")
    try:
        print(f"   gnspawnd sends through ssh to {other.host}, with a key of the demo's own")
        bed.stop_daemon()
        bed.start_daemon(env={"SYSTEMD_SSH": str(other.ssh)})
        code = gnctl("send", "web", other.host)
        print(f"   exit status {code}")
        print(f"$ gnctl -H {other.host} list", flush=True)
        env = {**os.environ, "SYSTEMD_SSH": str(other.ssh)}
        env.pop("DBUS_SYSTEM_BUS_ADDRESS", None)
        argv = [sys.executable, "-m", "gnspawn.ctl.main", "-H", other.host, "list"]
        subprocess.run(argv, env=env, check=False)
        print("   web changes here, and the second send carries only the change")
        (bed.machines / "web" / "etc" / "motd").write_text("sent twice\n")
        gnctl("send", "web", other.host)
        gnctl("snapshots", "web")
        print(f"$ ssh {other.host} zfs list -t all -o name", flush=True)
        print(other.run("zfs", "list", "-t", "all", "-o", "name").stdout, end="", flush=True)
    finally:
        other.stop()
        bed.stop_daemon()
        bed.start_daemon()


NEWS_ITEM = "2026-12-01-broken-3"
NEWS = """Title: broken builds again
Author: A Developer <dev@example.org>
Posted: 2026-12-01
Revision: 1
News-Item-Format: 2.0
Display-If-Installed: app-misc/broken

broken 3 builds again. Its data moved to /var/lib/broken: move yours before you update.
"""


def weekly_cycle(bed: Testbed, stack: contextlib.ExitStack) -> None:
    """The scheduled cycle: sync, then the whole update of every machine."""
    step("the weekly cycle: the tree syncs from a git repository that has moved on")
    upstream = stack.enter_context(upstream_of(bed))
    print(f"   sync-type = git, sync-uri = file://{upstream.bare}")
    write_library(upstream.work, "foo", 1)
    write_consumer(upstream.work, "fooer", "foo")
    write_conf(upstream.work, 1, "# conf\nlisten = 80\nworkers = 2\n")
    upstream.publish("libfoo 1, its consumer, a package with a config file")
    subprocess.run(["git", "-C", str(bed.repo), "pull", "-q"], check=True)
    print("   two more machines: lib runs a program linked against libfoo.so.1; on conf,")
    print("   the admin edited /etc/conf/foo.conf")
    lib = bed.seed("lib", ["=app-misc/hello-1", "app-misc/fooer"])
    conf = bed.seed("conf", ["=app-misc/hello-1", "=app-misc/conf-1"])
    (conf / "etc/conf/foo.conf").write_text("# conf\nlisten = 8080\nworkers = 2\n")
    for name in ("lib", "conf"):
        bed.adopt(name)
    print("   upstream: hello 3, broken 3 (it builds again) with a news item about it,")
    print("   libfoo 2 (a new soname), a new default for foo.conf")
    broken = upstream.work / "app-misc/broken"
    shutil.copy(broken / "broken-1.ebuild", broken / "broken-3.ebuild")
    news = upstream.work / "metadata/news" / NEWS_ITEM
    news.mkdir(parents=True)
    (news / f"{NEWS_ITEM}.en.txt").write_text(NEWS)
    write_library(upstream.work, "foo", 2)
    write_conf(upstream.work, 2, "# conf\nlisten = 80\nworkers = 4\n")
    upstream.add_hello(3)
    print('   [updates] sync = true: the timer\'s cycle syncs first; news = "hold": a machine')
    print("   with unread news waits until the admin has read it")
    restart(
        bed,
        portage={"environment": sync_environment(bed, upstream.bare)},
        updates={"sync": True, "news": "hold"},
    )
    code = gnctl("update", "--all", "--scheduled")
    print(f"   exit status {code}: db was held")
    for root in (lib, conf):
        show(root)
    print("   lib: fooer rebuilt against libfoo.so.2 in the same snapshot (@preserved-rebuild)")

    step("what waits for the admin: conf's new default, db's news")
    gnctl("list")
    gnctl("config", "conf")
    gnctl("news", "db", "--read")
    gnctl("update", "-q", "db")
    show(bed.machines / "db", "broken")


def health_check(bed: Testbed) -> None:
    """A running container whose update breaks its health check, rolled back."""
    step("a health check: app runs, and its update breaks it")
    write_plain(bed.repo, "svc", 1)
    app = bed.seed("app", ["=app-misc/hello-3", "=app-misc/svc-1"])
    bed.adopt("app")
    write_plain(bed.repo, "svc", 2)
    check = ["/bin/busybox", "grep", "-qx", "1", "/usr/share/svc/version"]
    settings = f"\n[machines.app]\nhealth = {toml_value([check])}\n"
    print(f"   {settings.strip()}".replace("\n", "\n   "))
    restart(bed, settings)
    print("   app runs in systemd-nspawn, busybox as its init; a recording systemd and")
    print("   machined stand in for the host's (they restart and stop it on request)")
    with bed.host_services(containers=["app"]):
        code = gnctl("update", "app")
        print(f"   exit status {code}: the check failed inside the restarted container,")
        print("   app was stopped, rolled back and started again on the old state")
        show(app, "svc")
        gnctl("status", "app")


# --- processes, by PID --------------------------------------------------------


def start_time(pid: int) -> int | None:
    """When the process started (clock ticks since boot), None when there is none or it is
    a zombie: with the PID, this tells a recorded process from a later one of that PID."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return None if fields[0] == "Z" else int(fields[19])


def alive(process: dict[str, int]) -> bool:
    started = start_time(process["pid"])
    return started is not None and started == process["start"]


def record(pid: int) -> dict[str, int]:
    started = start_time(pid)
    assert started is not None, f"process {pid} is gone"
    return {"pid": pid, "start": started}


def stop(name: str, process: dict[str, int], timeout: float) -> None:
    """SIGTERM, and SIGKILL after `timeout`, to a recorded process that still runs."""
    signalled = False
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        if not alive(process):
            break
        signalled = True
        print(f"   stopping {name} (PID {process['pid']})", flush=True)
        with contextlib.suppress(ProcessLookupError):
            os.kill(process["pid"], sig)
        deadline = time.monotonic() + wait
        while alive(process) and time.monotonic() < deadline:
            time.sleep(0.1)
    if alive(process):
        raise SystemExit(f"{name} (PID {process['pid']}) survives SIGKILL")
    # A process whose parent has gone is reaped by init, a moment later.
    deadline = time.monotonic() + 5
    while signalled and Path(f"/proc/{process['pid']}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)


# --- the sandbox ----------------------------------------------------------------


def read_state(directory: Path) -> dict[str, object] | None:
    try:
        state: dict[str, object] = json.loads((directory / STATE).read_text())
    except FileNotFoundError:
        return None
    return state


def keeper_of(directory: Path) -> dict[str, int] | None:
    """The keeper of a sandbox that runs in `directory`, if one does."""
    state = read_state(directory)
    if state is None:
        return None
    keeper = state["keeper"]
    assert isinstance(keeper, dict)
    return keeper if alive(keeper) else None


def write_state(bed: Testbed, directory: Path) -> dict[str, object]:
    assert bed.daemon is not None
    processes = {
        "gnspawnd": record(bed.daemon.pid),
        "dbus-daemon": record(bed.bus.proc.pid),
        "systemd-journald": record(bed.journal.proc.pid),
        "zfs-fuse": record(bed.pool.proc.pid),
    }
    state: dict[str, object] = {
        "keeper": record(os.getpid()),
        "processes": processes,
        "mount_namespace": os.readlink("/proc/self/ns/mnt"),
        "bus": f"unix:path={bed.bus.socket}",
        "pool": str(bed.pool.file),
    }
    temporary = directory / f"{STATE}.new"
    temporary.write_text(json.dumps(state, indent=2) + "\n")
    temporary.rename(directory / STATE)
    return state


def write_enter_script(directory: Path) -> Path:
    script = directory / "enter"
    script.write_text(
        "#!/bin/sh\n"
        "# Runs COMMAND, or a shell, inside the gnspawn sandbox (make sandbox).\n"
        f"exec {shlex.quote(sys.executable)} {shlex.quote(str(Path(__file__).resolve()))} "
        f'--directory {shlex.quote(str(directory))} --enter "$@"\n'
    )
    script.chmod(0o755)
    return script


def how_to_reach(directory: Path, state: dict[str, object]) -> str:
    keeper = state["keeper"]
    assert isinstance(keeper, dict)
    pid = keeper["pid"]
    enter = shlex.quote(str(directory / "enter"))
    gnctl_path = shlex.quote(str(Path(sys.executable).parent / "gnctl"))
    return f"""
gnspawnd, its system bus, journald and the zfs-fuse pool keep running, in a mount
namespace of their own: its private /run holds the journal and zfs's socket. Their
PIDs are in {directory / STATE}. In another terminal, as root:

  # a shell inside the sandbox, where gnctl, busctl, journalctl, zfs and the
  # machines' files are the sandbox's:
  {enter}
  # or one command in it:
  {enter} gnctl update web
  {enter} gnctl logs 1

  # the bus is reachable from outside as well (gnctl logs and zfs are not):
  export DBUS_SYSTEM_BUS_ADDRESS={state["bus"]}
  {gnctl_path} list
  busctl --address=$DBUS_SYSTEM_BUS_ADDRESS call org.gnspawn1 /org/gnspawn1 \\
      org.gnspawn1.Manager ListMachines

  # the journal, the pool and the machines' files through the keeper, PID {pid}:
  journalctl -D /proc/{pid}/root/run/log/journal GNSPAWN_JOB=4
  nsenter -t {pid} -m zfs list -t all
  ls /proc/{pid}/root{directory / "machines" / "web"}

make sandbox-stop stops it all.
"""


def keep(bed: Testbed, directory: Path, ready: int) -> None:
    """Record the sandbox, say how to reach it, hand the terminal back, and wait for
    SIGTERM (make sandbox-stop); the caller stops the test bed after."""
    # Nobody reads gnspawnd's notifications any more: refused at once, they cost it
    # nothing (a full socket would delay its STOPPING=1).
    if bed.notify is not None:
        bed.notify.close()
        bed.notify = None
    state = write_state(bed, directory)
    write_enter_script(directory)
    step("the sandbox keeps running")
    print(how_to_reach(directory, state), flush=True)
    log = os.open(directory / "keeper.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    for fd in (1, 2):
        os.dup2(log, fd)
    os.close(log)
    os.write(ready, b"ready")
    os.close(ready)
    while True:
        signal.pause()


def run(directory: Path, *, ready: int | None = None) -> int:
    """The demo, and with `ready` (a pipe to the waiting caller) the sandbox after it."""
    if (keeper := keeper_of(directory)) is not None:
        print(
            f"a sandbox runs in {directory} (keeper PID {keeper['pid']}): make sandbox-stop first",
            file=sys.stderr,
        )
        return 1
    if read_state(directory) is not None:
        stop_sandbox(directory)
    shutil.rmtree(directory, ignore_errors=True)
    step("starting a private system bus, journald, a zfs-fuse pool and gnspawnd")
    bed = Testbed(directory)
    try:
        with contextlib.ExitStack() as stack:
            demo(bed, stack)
            if ready is not None:
                keep(bed, directory, ready)
        return 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        step("stopping gnspawnd, the bus, journald and zfs-fuse")
        bed.stop()
        shutil.rmtree(directory, ignore_errors=True)
        print("   done; nothing is left running", flush=True)


def start_sandbox(directory: Path) -> int:
    """Run the demo in a child that becomes the keeper; return once it keeps the sandbox
    (0) or has failed and cleaned up (its exit status)."""
    ready, signal_ready = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(ready)
        # Its own session: the terminal's Ctrl-C and hangup are not the keeper's.
        os.setsid()
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        code = 1
        try:
            code = run(directory, ready=signal_ready)
        except SystemExit as stopped:
            code = stopped.code if isinstance(stopped.code, int) else 1
        except BaseException:
            traceback.print_exc()
        finally:
            # Never back into the caller's code: this process is the keeper.
            os._exit(code)
    os.close(signal_ready)
    try:
        with os.fdopen(ready, "rb") as pipe:
            if pipe.read() == b"ready":
                return 0
        return os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
    except KeyboardInterrupt:
        os.kill(child, signal.SIGTERM)
        os.waitpid(child, 0)
        return 130


def stop_sandbox(directory: Path) -> int:
    """Stop the keeper (which stops the rest in order), then any recorded process left,
    each by its PID; remove the sandbox's files. Safe to run again."""
    state = read_state(directory)
    if state is None:
        print(f"no sandbox runs in {directory}")
        return 0
    keeper, processes = state["keeper"], state["processes"]
    assert isinstance(keeper, dict) and isinstance(processes, dict)
    stop("the sandbox's keeper", keeper, timeout=120)
    for name, process in processes.items():
        stop(name, process, timeout=20)
    left = [
        pid
        for pid in (int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit())
        if namespace_of(pid) == state["mount_namespace"]
    ]
    shutil.rmtree(directory, ignore_errors=True)
    named = ", ".join(f"{name} {p['pid']}" for name, p in processes.items())
    print(f"sandbox stopped: keeper {keeper['pid']}, {named}; pool and {directory} removed")
    if left:
        print(
            f"processes still in its mount namespace (a shell of {directory / 'enter'}?): "
            f"{' '.join(map(str, left))}; its mounts go when they end"
        )
    return 0


def namespace_of(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return ""


def enter(directory: Path, command: list[str]) -> int:
    """Run `command` (a shell when empty) in the sandbox's mount namespace."""
    state = read_state(directory)
    keeper = keeper_of(directory)
    if state is None or keeper is None:
        print(f"no sandbox runs in {directory}: make sandbox starts one", file=sys.stderr)
        return 1
    environment = {
        **os.environ,
        "DBUS_SYSTEM_BUS_ADDRESS": str(state["bus"]),
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
    }
    if not command:
        command = [os.environ.get("SHELL", "/bin/sh")]
        print(f"{PROMPT_HINT}; exit leaves it", file=sys.stderr)
    argv = ["nsenter", f"--target={keeper['pid']}", "--mount", "--", *command]
    os.execvpe(argv[0], argv, environment)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--keep", action="store_true", help="leave the sandbox running after")
    action.add_argument("--stop", action="store_true", help="stop a sandbox left running")
    action.add_argument(
        "--enter", nargs=argparse.REMAINDER, metavar="COMMAND", help="run COMMAND inside it"
    )
    parser.add_argument("--directory", type=Path, default=REPO / "sandbox", help=argparse.SUPPRESS)
    args = parser.parse_args()
    directory = args.directory.resolve()
    if os.geteuid() != 0:
        print("the demo needs root (zfs-fuse, mounts, journald)", file=sys.stderr)
        return 1
    if args.stop:
        return stop_sandbox(directory)
    if args.enter is not None:
        return enter(directory, args.enter)
    if args.keep:
        return start_sandbox(directory)
    return run(directory)


if __name__ == "__main__":
    sys.exit(main())
