"""Rollback: a machine back to one of its snapshots, its unit stopped meanwhile."""

from __future__ import annotations

from gnspawn import log as journal
from gnspawn import machines, nspawn
from gnspawn.jobs import changes, snapshots
from gnspawn.jobs.context import Context, Host, JobFailed, Kind, Request, uncancellable
from gnspawn.names import Flags, JobResult, JobType, MachineState, Phase
from gnspawn.services import ServiceError, Unavailable


class Rollback(Kind):
    type = JobType.ROLLBACK
    flags = Flags.FAIL_IF_BUSY
    state = MachineState.ROLLING_BACK

    async def check(self, host: Host, request: Request) -> str:
        dataset = await host.inventory.dataset(request.name)
        return (await snapshots.rollback_target(host.zfs, dataset, request.argument)).name

    async def run(self, ctx: Context) -> JobResult:
        machine = await ctx.host.inventory.machine(ctx.job.machine, fresh=True)
        dataset = machine.dataset
        target = f"{dataset}@{ctx.job.argument}"
        root = machine.root
        unit = nspawn.unit(ctx.job.machine)
        ctx.change(phase=Phase.ROLLBACK, snapshot=target)
        try:
            async with ctx.host.services.stopped(unit) as was_active:
                if was_active:
                    # Saved before the rollback: recovery starts the unit again.
                    ctx.change(unit_stopped=True)
                    ctx.log(journal.NOTICE, f"stopped {unit} for the rollback")
                before = await changes.read(root) if root else None
                await uncancellable(snapshots.rollback_to(ctx.zfs, dataset, target))
                ctx.change(rolled_back=True)
                if root and before is not None:
                    await changes.settle(ctx, before, root)
        except (ServiceError, Unavailable) as err:
            raise JobFailed(f"stopping or starting {unit} failed: {err}") from err
        if was_active:
            ctx.change(unit_stopped=False)
            ctx.log(journal.NOTICE, f"started {unit} again")
        await snapshots.prune(ctx, dataset)
        return JobResult.DONE

    async def recover(self, ctx: Context) -> tuple[JobResult, str]:
        """Finished (it is what the caller asked for), and the unit it stopped started again."""
        job = ctx.job
        dataset = machines.dataset(ctx.config, job.machine)
        if not job.rolled_back:  # else the machine may run on it again already
            await snapshots.rollback_to(ctx.zfs, dataset, f"{dataset}@{job.argument}")
            ctx.change(rolled_back=True)
        if job.unit_stopped:
            unit = nspawn.unit(job.machine)
            try:
                await ctx.host.services.start(unit)
            except ServiceError as err:
                raise JobFailed(f"rolled back, but starting {unit} again failed: {err}") from err
            except Unavailable as err:
                ctx.log(journal.WARNING, f"not starting {unit} again: {err}")
            ctx.change(unit_stopped=False)
        return JobResult.DONE, ""
