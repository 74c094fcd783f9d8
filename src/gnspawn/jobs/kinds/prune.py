"""Prune: destroy the snapshots of a machine that retention does not keep."""

from __future__ import annotations

from gnspawn.jobs import snapshots
from gnspawn.jobs.context import Context, Kind
from gnspawn.names import JobResult, JobType, MachineState, Phase


class Prune(Kind):
    type = JobType.PRUNE
    state = MachineState.PRUNING

    async def run(self, ctx: Context) -> JobResult:
        """Retention's verdicts, and the failed copies KEEP_FAILED kept."""
        machine = await ctx.host.inventory.listed(ctx.job.machine)
        ctx.change(phase=Phase.CLEANUP)
        gone = await snapshots.prune(ctx, machine.dataset)
        gone += await snapshots.drop_failed_copies(ctx, machine.failed_copies)
        return JobResult.DONE if gone else JobResult.SKIPPED

    async def recover(self, ctx: Context) -> tuple[JobResult, str]:
        # Retention decides the same way twice: what is gone already is not planned again.
        return await self.run(ctx), ""
