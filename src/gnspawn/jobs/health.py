"""Health checks: does the container still work after its update?

After an update that changed a root, the machine's checks (`[updates] health`, or its
own `[machines.NAME] health`) run inside the container:

- a running container (its unit active, or known to machined) is restarted first, so
  that it runs what the update installed; where it runs systemd, the first check is
  `systemctl is-system-running --wait` (it settles, and no unit failed). The checks run
  in its namespaces (nsenter into machined's Leader), with no more than the container
  itself may do: the container's capability bounding set, its cgroups (so its device
  policy), no new privileges. What runs is the container's own program, so it must
  never run with the host's privileges;
- a container that is not running gets each check in a throwaway, read-only
  `systemd-nspawn --register=no` of the new root.

A check that fails or outlives `[updates] health_timeout` fails the update, which then
rolls back; a running container is stopped before that and started again after it, on
its old state.
"""

from __future__ import annotations

import asyncio
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from gnspawn import log as journal
from gnspawn import nspawn
from gnspawn.jobs.context import FRESH_COUNTERS, Context, JobFailed, uncancellable
from gnspawn.names import NoticeKind, Phase
from gnspawn.run import CommandFailed, Process

SETTLE = ("systemctl", "is-system-running", "--wait")
NSPAWN, NSENTER = "systemd-nspawn", "nsenter"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""What a check finds its programs in (the container's), whatever gnspawnd's PATH is."""
TAIL = 10
"""Lines of a failed check's output kept in the job's Error and Notices."""

_JOIN_CGROUPS = """
import os, sys
end = sys.argv.index("--")
for procs in sys.argv[1:end]:
    with open(procs, "w") as file:
        file.write(str(os.getpid()))
os.execvp(sys.argv[end + 1], sys.argv[end + 1:])
"""
"""Moves itself into the container's cgroups, then becomes the command."""


class HealthFailed(JobFailed):
    """A health check failed: the update is rolled back."""


async def check(ctx: Context, root: Path, checks: Sequence[Sequence[str]]) -> None:
    """Run the machine's checks on its updated root; HealthFailed when one fails, with
    a running container stopped (the job's unit_stopped says so)."""
    ctx.change(phase=Phase.HEALTH, **FRESH_COUNTERS)
    name = ctx.job.machine
    unit = nspawn.unit(name)
    services = ctx.host.services
    timeout = ctx.config.updates.health_timeout
    running = await services.unit_active(unit) or await services.machine_running(name)
    todo = [tuple(c) for c in checks]
    if running:
        ctx.log(journal.NOTICE, f"restarting {unit} to check the update")
        await services.try_restart(unit)
        leader = await _leader(ctx, name, timeout)
        prefix = await asyncio.to_thread(_inside, ctx, leader)
        if await asyncio.to_thread(_runs_systemd, leader):
            todo.insert(0, SETTLE)
    else:
        prefix = [
            NSPAWN,
            "--quiet",
            "--register=no",
            "--keep-unit",
            "--read-only",
            f"--directory={root}",
            "--",
        ]
    for n, command in enumerate(todo, 1):
        ctx.change(current_package=shlex.join(command), progress=100 * (n - 1) // len(todo))
        ctx.log(journal.NOTICE, f"health check {n}/{len(todo)}: {shlex.join(command)}")
        failure = await _run(ctx, [*prefix, *command], timeout)
        if failure:
            await _failed(ctx, command, failure, running)
    ctx.host.recorder.attend(ctx.job, NoticeKind.HEALTH, [])
    ctx.log(journal.NOTICE, f"{len(todo)} health checks passed")


async def _failed(ctx: Context, command: Sequence[str], failure: str, running: bool) -> None:
    shown = shlex.join(command)
    ctx.notice(NoticeKind.HEALTH, shown, failure, journal.ERR)
    ctx.host.recorder.attend(ctx.job, NoticeKind.HEALTH, [(shown, failure)])
    if running:
        unit = nspawn.unit(ctx.job.machine)
        ctx.change(unit_stopped=True)  # before: recovery starts it again after a crash
        await uncancellable(ctx.host.services.stop(unit))
        ctx.log(journal.NOTICE, f"stopped {unit} to roll it back")
    raise HealthFailed(f"health check {shown} failed: {failure}")


async def _run(ctx: Context, argv: Sequence[str], limit: float) -> str:
    """Run one check; "" when it passed, else what went wrong with its last lines."""
    name, _, value = ctx.tag.partition("=")
    env = {"PATH": PATH, "GNSPAWN_JOB": str(ctx.job.id), name: value}
    proc = Process(argv, env=env, stop_timeout=ctx.config.jobs.stop_timeout, tag=ctx.tag)
    lines: list[str] = []

    async def follow() -> None:
        async for line in proc.lines():
            ctx.log(journal.INFO, line)
            lines.append(line)
            del lines[:-TAIL]
        await proc.wait()

    try:
        await proc.start()
    except OSError as err:
        return f"cannot run {argv[0]}: {err.strerror}"
    try:
        await asyncio.wait_for(follow(), limit)
    except CommandFailed as err:
        return _said(f"exit status {err.returncode}", lines)
    except TimeoutError:
        await uncancellable(proc.stop())
        return _said(f"no answer within {limit:g} s", lines)
    except BaseException:
        await uncancellable(proc.stop())
        raise
    return ""


def _said(what: str, lines: Sequence[str]) -> str:
    tail = "\n".join(line for line in lines if line.strip())
    return f"{what}" + (f"; its last words:\n{tail}" if tail else "")


async def _leader(ctx: Context, name: str, limit: float) -> int:
    """machined's Leader of the restarted machine, waited for while it registers."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not (leader := await ctx.host.services.machine_leader(name)):
        if loop.time() > deadline:
            raise HealthFailed(f"{name} did not come back within {limit:g} s of its restart")
        await asyncio.sleep(0.2)
    return leader


def _inside(ctx: Context, leader: int) -> list[str]:
    """The argv prefix that runs a command in the namespaces of the machine whose init
    is `leader`, with no more privilege than the container has."""
    bounding = _capabilities(Path(f"/proc/{leader}/status"))
    caps = ",".join(["-all", *(f"+{cap}" for cap in bounding)])
    return [
        sys.executable,
        "-I",
        "-c",
        _JOIN_CGROUPS,
        *_cgroup_procs(Path(f"/proc/{leader}/cgroup")),
        "--",
        ctx.config.sandbox.setpriv,
        "--no-new-privs",
        f"--bounding-set={caps}",
        "--",
        NSENTER,
        f"--target={leader}",
        "--mount",
        "--uts",
        "--ipc",
        "--net",
        "--pid",
        "--root",
        "--wd",
        "--",
    ]


def _runs_systemd(leader: int) -> bool:
    """Whether the container's init is systemd, as the kernel names the process (a
    container that lies gets `systemctl is-system-running` run in it, nothing worse)."""
    try:
        return Path(f"/proc/{leader}/comm").read_text().strip() == "systemd"
    except OSError:
        return False


def _capabilities(status: Path) -> list[str]:
    """The names of the capabilities in a process's bounding set."""
    for line in status.read_text().splitlines():
        if line.startswith("CapBnd:"):
            mask = int(line.split()[1], 16)
            return [name for bit, name in enumerate(_CAPABILITY_NAMES) if mask >> bit & 1]
    raise HealthFailed(f"{status}: no capability bounding set")


def _cgroup_procs(cgroup: Path) -> list[str]:
    """The cgroup.procs files of a process's cgroups, in every hierarchy mounted."""
    found = []
    for line in cgroup.read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            candidates = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        else:
            mounted = controllers.removeprefix("name=")
            candidates = [f"/sys/fs/cgroup/{mounted}"]
        for base in candidates:
            procs = Path(base + path.rstrip("/")) / "cgroup.procs"
            if procs.exists():
                found.append(str(procs))
                break
    return found


_CAPABILITY_NAMES = [
    "chown",
    "dac_override",
    "dac_read_search",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "linux_immutable",
    "net_bind_service",
    "net_broadcast",
    "net_admin",
    "net_raw",
    "ipc_lock",
    "ipc_owner",
    "sys_module",
    "sys_rawio",
    "sys_chroot",
    "sys_ptrace",
    "sys_pacct",
    "sys_admin",
    "sys_boot",
    "sys_nice",
    "sys_resource",
    "sys_time",
    "sys_tty_config",
    "mknod",
    "lease",
    "audit_write",
    "audit_control",
    "setfcap",
    "mac_override",
    "mac_admin",
    "syslog",
    "wake_alarm",
    "block_suspend",
    "audit_read",
    "perfmon",
    "bpf",
    "checkpoint_restore",
]
"""By bit number, as linux/capability.h numbers them."""
