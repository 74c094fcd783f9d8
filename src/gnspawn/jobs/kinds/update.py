"""Update: look for unread news (which may hold it), fetch, then in a snapshot that a
failure rolls back to: emerge the update, rebuild what uses preserved libraries, depclean
as configured."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from gnspawn import log as journal
from gnspawn import machines
from gnspawn.inventory import gentoo_root
from gnspawn.jobs import changes, configfiles, health, news, snapshots, steps
from gnspawn.jobs.context import Context, Host, JobFailed, Kind, Request, uncancellable
from gnspawn.jobs.emerge import emerge
from gnspawn.names import Flags, JobResult, JobType, MachineState, Phase, pending_line


class Update(Kind):
    type = JobType.UPDATE
    flags = Flags.FAIL_IF_BUSY | Flags.KEEP_FAILED | Flags.PRETEND
    cancellable = True
    protected = True
    state = MachineState.UPDATING
    joins_waiting = True

    async def check(self, host: Host, request: Request) -> str:
        gentoo_root(request.machine or await host.inventory.machine(request.name))
        return ""

    async def profile(self, host: Host, request: Request, argument: str) -> str:
        if Flags.PRETEND in request.flags:
            return ""  # installs nothing
        machine = request.machine or await host.inventory.machine(request.name)
        return machines.chosen_profile(host.config, machine)

    async def run(self, ctx: Context) -> JobResult:
        machine = await ctx.host.inventory.machine(ctx.job.machine, fresh=True)
        root = gentoo_root(machine)
        args = ctx.config.portage.update_args
        pretend = Flags.PRETEND in ctx.job.flags
        if held := await news.look(ctx, root, ctx.config.updates.news, may_hold=not pretend):
            ctx.change(error=held)  # before the fetch: nothing is changed
            return JobResult.HELD
        if pretend:
            return await self._pretend(ctx, root, args)
        publish = ctx.config.machine(ctx.job.machine).trusted
        await steps.fetch(ctx, root, args, publish=publish)
        checks = ctx.config.health(ctx.job.machine)
        try:
            async with snapshots.protected(ctx, machine.dataset, spent=True) as snapshot:
                before = await changes.record(ctx, snapshot.full_name, root)
                progress = await emerge(ctx, root, args, publish=publish)
                rebuilt = await steps.rebuild_preserved(ctx, root, publish=publish)
                cleaned = await steps.depclean(ctx, root, ctx.config.updates.depclean)
                policy = ctx.config.updates.config_files
                settled = await configfiles.settle(ctx, root, policy, before)
                changed = not progress.merged_nothing or rebuilt or cleaned or settled
                if changed and checks:
                    await health.check(ctx, root, checks)
        except BaseException:
            try:
                await uncancellable(_start_again(ctx))
            except JobFailed as err:  # the failure that stopped it is the job's error
                ctx.log(journal.ERR, str(err))
            raise
        ctx.keep_staged()
        if not changed:
            # Nothing changed: a snapshot equal to the dataset would only push real
            # restore points out of retention.
            await ctx.zfs.destroy(snapshot.full_name)
            ctx.change(snapshot="")
            return JobResult.SKIPPED
        # Kept: the container its checks restarted runs on it, nothing to start again.
        ctx.change(phase=Phase.CLEANUP, unit_stopped=False)
        await changes.settle(ctx, before, root)
        await snapshots.prune(ctx, machine.dataset)
        if ctx.config.updates.restart and not checks:  # the checks restarted it already
            await ctx.unit_job(
                ctx.host.services.try_restart,
                done="restarted {unit} if it was running",
                unavailable="not restarting {unit}: {err}",
                failed="updated, but restarting {unit} failed: {err}",
            )
        return JobResult.DONE

    @staticmethod
    async def _pretend(ctx: Context, root: Path, args: Sequence[str]) -> JobResult:
        """What the update would merge, in PendingPackages; nothing fetched or changed."""
        progress = await emerge(ctx, root, args, pretend=True)
        if not progress.pending:
            ctx.log(journal.INFO, "nothing pending")
            return JobResult.SKIPPED
        ctx.log(journal.NOTICE, pending_line(progress.pending))
        ctx.change(pending_packages=tuple(progress.pending))
        return JobResult.DONE

    async def recover(self, ctx: Context) -> tuple[JobResult, str]:
        if ctx.job.phase is Phase.CLEANUP:  # the emerge succeeded: keep it
            return JobResult.DONE, ""
        if ctx.job.unit_stopped:
            # Restarted for its checks, it may run on the root about to be rolled back
            # (whatever systemd says of it while it goes down: stopping is idempotent).
            try:
                await ctx.unit_job(
                    ctx.host.services.stop,
                    done="stopped {unit} to roll it back",
                    unavailable="not stopping {unit}: {err}",
                    failed="stopping {unit} failed, rolling back all the same: {err}",
                )
            except JobFailed as err:
                ctx.log(journal.ERR, str(err))
        result = await snapshots.undo_interrupted(ctx, spent=True)
        await _start_again(ctx)
        return result


async def _start_again(ctx: Context) -> None:
    """Start the machine's unit again if a failed health check stopped it (on the
    state the update rolled back to)."""
    if not ctx.job.unit_stopped:
        return
    await ctx.unit_job(
        ctx.host.services.start,
        done="started {unit} again",
        unavailable="not starting {unit} again: {err}",
        failed="starting {unit} again failed: {err}",
    )
    ctx.change(unit_stopped=False)
