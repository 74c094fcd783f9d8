"""Prune: destroy the snapshots of a machine that retention does not keep."""

from __future__ import annotations

from gnspawn.jobs import snapshots
from gnspawn.jobs.context import Context, Kind
from gnspawn.names import JobResult, JobType, MachineState, Phase


class Prune(Kind):
    type = JobType.PRUNE
    state = MachineState.PRUNING

    async def run(self, ctx: Context) -> JobResult:
        dataset = await ctx.host.inventory.dataset(ctx.job.machine, fresh=True)
        ctx.change(phase=Phase.CLEANUP)
        return JobResult.DONE if await snapshots.prune(ctx, dataset) else JobResult.SKIPPED

    async def recover(self, ctx: Context) -> tuple[JobResult, str]:
        # Retention decides the same way twice: what is gone already is not planned again.
        return await self.run(ctx), ""
