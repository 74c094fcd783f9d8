"""Health checks: does the container still work after its update?

After an update that changed a root, the machine's checks (`[updates] health`, or its
own `[machines.NAME] health`) run inside the container:

- a running container (its unit active) is restarted first, so that it runs what the
  update installed; where it runs systemd, the first check is
  `systemctl is-system-running --wait` (it settles, and no unit failed). The checks run
  in its cgroups (so under its device policy) and namespaces (machined's Leader's,
  its user namespace included), as root there but with no capability and no new
  privileges (gnspawn/enter_container.py): what runs is the container's own program,
  and must never run with the host's privileges;
- a container that is not running gets each check in a throwaway container of the new
  root, read-only, bound without devices, without network or capabilities
  (bubblewrap, as every emerge: systemd-nspawn without a scope of its own would let a
  device node planted in the root be opened).

A machine that machined knows running outside its unit fails them: it can be neither
restarted nor stopped. A check that fails or outlives `[updates] health_timeout` fails
the update, which then rolls back; a running container is stopped before that and
started again after it, on its old state.
"""

from __future__ import annotations

import asyncio
import shlex
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from gnspawn import log as journal
from gnspawn import nspawn
from gnspawn.jobs.context import FRESH_COUNTERS, Context, JobFailed, uncancellable
from gnspawn.names import NoticeKind, Phase
from gnspawn.run import CommandFailed, Process
from gnspawn.services import ServiceError

SETTLE = ("systemctl", "is-system-running", "--wait")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""What a check finds its programs in (the container's), whatever gnspawnd's PATH is."""
TAIL = 10
"""Lines of a failed check's output kept in the job's Error and Notices."""


class HealthFailed(JobFailed):
    """A health check failed: the update is rolled back."""


async def check(ctx: Context, root: Path, checks: Sequence[Sequence[str]]) -> None:
    """Run the machine's checks on its updated root; HealthFailed when one fails.

    A running container is restarted for them. From then on the job owns its unit
    (the job's unit_stopped says so, for the recovery too, until the update's cleanup):
    whatever fails, the unit is stopped before the update rolls back, and started again
    after it."""
    ctx.change(phase=Phase.HEALTH, **FRESH_COUNTERS)
    name = ctx.job.machine
    unit = nspawn.unit(name)
    services = ctx.host.services
    todo = [tuple(c) for c in checks]
    if await services.unit_active(unit):
        # Until the update's cleanup clears it: a crash before that rolls back.
        ctx.change(unit_stopped=True)
        try:
            await _check_running(ctx, unit, todo)
        except BaseException:
            await uncancellable(_stop(ctx, unit))
            raise
    elif await services.machine_running(name):
        # Started by hand, not by its unit: gnspawn can neither restart it to run what
        # was installed, nor stop it to roll back under it.
        why = f"{name} runs, but not as {unit}: it cannot be restarted to check the update"
        raise _failed(ctx, f"restart of {name}", why)
    else:
        await _run_all(ctx, _throwaway(ctx, root), todo)
    ctx.stage(NoticeKind.HEALTH, [])
    ctx.log(journal.NOTICE, f"{len(todo)} health checks passed")


async def _check_running(ctx: Context, unit: str, todo: list[tuple[str, ...]]) -> None:
    """Restart the container and run the checks inside it."""
    timeout = ctx.config.updates.health_timeout
    ctx.log(journal.NOTICE, f"restarting {unit} to check the update")
    try:
        await ctx.host.services.try_restart(unit)
    except ServiceError as err:
        raise _failed(ctx, f"restart of {unit}", str(err)) from err
    leader = await _leader(ctx, ctx.job.machine, timeout)
    try:
        prefix = await asyncio.to_thread(_inside, leader)
        settles = await asyncio.to_thread(_runs_systemd, leader)
    except OSError as err:  # its init is gone already
        raise _failed(ctx, ctx.job.machine, f"its init {leader} ended: {err.strerror}") from err
    await _run_all(ctx, prefix, [SETTLE, *todo] if settles else todo)


async def _run_all(ctx: Context, prefix: Sequence[str], todo: Sequence[Sequence[str]]) -> None:
    timeout = ctx.config.updates.health_timeout
    for n, command in enumerate(todo, 1):
        ctx.change(current_package=shlex.join(command), progress=100 * (n - 1) // len(todo))
        ctx.log(journal.NOTICE, f"health check {n}/{len(todo)}: {shlex.join(command)}")
        failure = await _run(ctx, [*prefix, *command], timeout)
        if failure:
            raise _failed(ctx, f"health check {shlex.join(command)}", failure)


def _failed(ctx: Context, what: str, failure: str) -> HealthFailed:
    """The failure, in the job's Notices and the machine's Attention until an update's
    checks pass."""
    subject = what.removeprefix("health check ")
    ctx.notice(NoticeKind.HEALTH, subject, failure, journal.ERR)
    # Now, not staged: it stays whatever the root rolls back to.
    ctx.host.recorder.attend(ctx.job, NoticeKind.HEALTH, [(subject, failure)])
    return HealthFailed(f"{what} failed: {failure}")


async def _stop(ctx: Context, unit: str) -> None:
    try:
        await ctx.host.services.stop(unit)
    except ServiceError as err:
        ctx.log(journal.ERR, f"stopping {unit} to roll it back failed: {err}")
    else:
        ctx.log(journal.NOTICE, f"stopped {unit} to roll it back")


async def _run(ctx: Context, argv: Sequence[str], limit: float) -> str:
    """Run one check; "" when it passed, else what went wrong with its last lines."""
    name, _, value = ctx.tag.partition("=")
    # Tagged on the host's side only: enter_container gives the check an environment
    # of its own, so that no straggler hunt ever reaches into the running container.
    env = {"PATH": PATH, "GNSPAWN_JOB": str(ctx.job.id), name: value}
    proc = Process(argv, env=env, stop_timeout=ctx.config.jobs.stop_timeout, tag=ctx.tag)
    lines: list[str] = []

    async def follow() -> None:
        async for line in proc.lines():
            ctx.log(journal.INFO, line)
            if journal.backlog():
                await journal.drained()
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
            why = f"{name} did not come back within {limit:g} s of its restart"
            raise _failed(ctx, f"restart of {name}", why)
        await asyncio.sleep(0.2)
    return leader


def _throwaway(ctx: Context, root: Path) -> list[str]:
    """The argv prefix that runs a command in a throwaway container of `root`: the root
    read-only as /, bound without devices (a node the container made is no way out),
    a /dev and /proc of its own, no network, no capability, no new privileges."""
    prefix = [
        ctx.config.sandbox.bwrap,
        "--ro-bind",
        str(root),
        "/",
        "--dev",
        "/dev",
        "--proc",
        "/proc",
    ]
    for scratch in ("tmp", "run"):  # where there is a directory for them
        if (root / scratch).is_dir() and not (root / scratch).is_symlink():
            prefix += ["--tmpfs", f"/{scratch}"]
    return [
        *prefix,
        "--unshare-all",
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
        "--chdir",
        "/",
        "--",
    ]


def _inside(leader: int) -> list[str]:
    """The argv prefix that runs a command in the container whose init is `leader`, with
    no capability (gnspawn/enter_container.py)."""
    script = resources.files("gnspawn").joinpath("enter_container.py").read_text()
    procs = _cgroup_procs(Path(f"/proc/{leader}/cgroup"))
    return [sys.executable, "-I", "-S", "-c", script, str(leader), *procs, "--"]


def _runs_systemd(leader: int) -> bool:
    """Whether the container's init is systemd, as the kernel names the process (a
    container that lies gets `systemctl is-system-running` run in it, nothing worse)."""
    return Path(f"/proc/{leader}/comm").read_text().strip() == "systemd"


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
