"""Remove: a machine's dataset with its snapshots, its .nspawn file and its directory."""

from __future__ import annotations

import contextlib

from gnspawn import log as journal
from gnspawn import machines, nspawn
from gnspawn.errors import Busy
from gnspawn.jobs import snapshots
from gnspawn.jobs.context import Context, Host, Kind, Request, uncancellable
from gnspawn.names import Flags, JobResult, JobType, MachineState, Phase


class Remove(Kind):
    type = JobType.REMOVE
    flags = Flags.FAIL_IF_BUSY
    state = MachineState.REMOVING

    async def check(self, host: Host, request: Request) -> str:
        await host.inventory.dataset(request.name)
        await check_not_running(host, request.name)
        return ""

    async def run(self, ctx: Context) -> JobResult:
        await ctx.host.inventory.dataset(ctx.job.machine, fresh=True)
        await remove(ctx)
        return JobResult.DONE

    async def recover(self, ctx: Context) -> tuple[JobResult, str]:
        # Repeated until done: a dataset already gone is done.
        await remove(ctx)
        return JobResult.DONE, ""


async def remove(ctx: Context) -> None:
    """What is gone already stays gone, so this can be repeated after a crash."""
    name = ctx.job.machine
    await check_not_running(ctx.host, name)
    ctx.change(phase=Phase.CLEANUP)
    settings = nspawn.settings_path(ctx.config.nspawn, name)
    if settings.exists() or settings.is_symlink():
        settings.unlink()
        ctx.log(journal.NOTICE, f"removed {settings}")
    dataset = machines.dataset(ctx.config, name)
    # The failed copies first: a crash after the machine's dataset went leaves no listing
    # that would name them.
    found = (await ctx.host.inventory.all(fresh=True)).get(name)
    if found is not None:
        await snapshots.drop_failed_copies(ctx, found.failed_copies)
    if await ctx.zfs.exists(dataset):
        await uncancellable(ctx.zfs.destroy_filesystem(dataset))
        ctx.log(journal.NOTICE, f"destroyed {dataset} with its snapshots")
    with contextlib.suppress(OSError):
        machines.directory(ctx.config, name).rmdir()
    ctx.host.recorder.forget_machine(name)


async def check_not_running(host: Host, name: str) -> None:
    if await host.services.machine_running(name):
        raise Busy(f"machine {name} is running; stop it first (machinectl poweroff {name})")
