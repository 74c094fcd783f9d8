"""Config: one config file with new defaults waiting, settled as the admin says
(ResolveConfig), in a snapshot that a failure rolls back to."""

from __future__ import annotations

from gnspawn import log as journal
from gnspawn.errors import InvalidArgs, NoSuchConfigFile
from gnspawn.inventory import gentoo_root
from gnspawn.jobs import configfiles, snapshots
from gnspawn.jobs.configfiles import ConfigAction
from gnspawn.jobs.context import Context, Host, JobFailed, Kind, Request
from gnspawn.names import Flags, JobResult, JobType, MachineState, NoticeKind, Phase, shown


def argument(action: str, path: str) -> str:
    """The job's argument: the action, a blank, the path (which may hold blanks)."""
    return f"{action} {path}"


def _parsed(argument: str) -> tuple[str, str]:
    action, _, path = argument.partition(" ")
    return action, path


class ResolveConfig(Kind):
    type = JobType.CONFIG
    flags = Flags.FAIL_IF_BUSY
    state = MachineState.UPDATING
    protected = True

    async def check(self, host: Host, request: Request) -> str:
        action, path = _parsed(request.argument)
        actions = [a.value for a in ConfigAction]
        if action not in actions:
            raise InvalidArgs(f"action {shown(action)}: not one of {', '.join(actions)}")
        if not configfiles.valid_path(path):
            raise InvalidArgs(f"{shown(path)} is no absolute, normalized path")
        gentoo_root(request.machine or await host.inventory.machine(request.name))
        waiting = host.recorder.attention.get(request.name, {}).get(NoticeKind.CONFIG_FILE, ())
        if path not in {item.subject for item in waiting}:
            raise NoSuchConfigFile(f"no new default waits for {shown(path)} on {request.name}")
        return request.argument

    async def run(self, ctx: Context) -> JobResult:
        machine = await ctx.host.inventory.machine(ctx.job.machine, fresh=True)
        root = gentoo_root(machine)
        action, path = _parsed(ctx.job.argument)
        async with snapshots.protected(ctx, machine.dataset, spent=True):
            ctx.change(phase=Phase.CONFIG)
            pending = await configfiles.find(ctx, root)
            item = next((p for p in pending if p.path == path), None)
            if item is None:
                left = [p.attention(ctx.job.machine) for p in pending]
                ctx.host.recorder.attend(ctx.job, NoticeKind.CONFIG_FILE, left)
                raise JobFailed(f"no new default waits for {path} any more")
            done = await configfiles.apply(ctx, root, item, action)
            ctx.log(journal.NOTICE, f"{path}: {done}")
            left = [p.attention(ctx.job.machine) for p in pending if p is not item]
        ctx.host.recorder.attend(ctx.job, NoticeKind.CONFIG_FILE, left)
        ctx.change(phase=Phase.CLEANUP)
        await snapshots.prune(ctx, machine.dataset)
        return JobResult.DONE

    async def recover(self, ctx: Context) -> tuple[JobResult, str]:
        if ctx.job.phase is Phase.CLEANUP:
            return JobResult.DONE, ""
        return await snapshots.undo_interrupted(ctx, spent=True)
