"""Builder: the root where a profile's shared binary packages are built.

Whoever is root in a container can make its emerges build anything into a package, so
what one machine builds is never offered to another. The packages the machines of a
profile share come from that profile's builder root instead: a dataset gnspawn makes
and keeps (STORAGE/builder:SLUG, outside the machine namespace: no machine name has a
colon), mounted under the state directory, never among the machines and never
started, so nothing but gnspawn's own emerges ever writes it.

gnspawnd queues a builder job ahead of every build and update that installs packages
(the manager makes them follow it): it builds the root like a machine when it is not
there yet, then updates it with the packages the world files of its profile's machines
name, publishing what it compiles to PKGDIR. The machines then install those as
binaries and compile only what differs (their USE, say), for themselves.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from gnspawn import binhost, machines, portage
from gnspawn import log as journal
from gnspawn.config import UnreachablePolicy
from gnspawn.inventory import mounted_root
from gnspawn.jobs import snapshots, steps
from gnspawn.jobs.context import Context, JobFailed, Kind
from gnspawn.jobs.emerge import Refused, emerge
from gnspawn.jobs.kinds.build import build_steps, recorded_step, step_done
from gnspawn.names import (
    BUILD_PROPERTY,
    PROFILE_PROPERTY,
    BuildStep,
    JobResult,
    JobType,
    MachineState,
    Phase,
    shown,
)

MOST_PACKAGES = 5000

"""Packages a builder job takes from the machines' world files."""


def _raise_refusal_first(refused: str, err: JobFailed) -> None:
    """When the job's fetch refused a package, its error says that first, then what
    else went wrong (`err`); without a refusal, nothing."""
    if refused:
        raise JobFailed(f"{refused}; {err}") from err


class Builder(Kind):
    type = JobType.BUILDER
    cancellable = True
    protected = True
    state = MachineState.UPDATING
    joins_waiting = True

    async def run(self, ctx: Context) -> JobResult:
        job, name = ctx.job, ctx.job.machine
        dataset = machines.dataset(ctx.config, name)
        profile = portage.resolve_profile(ctx.config.portage, job.argument)
        if profile is None:
            raise JobFailed(f"no profile {shown(job.argument)} to build packages for")
        props = await ctx.zfs.filesystem(dataset, [BUILD_PROPERTY, PROFILE_PROPERTY])
        done = BuildStep.NONE
        if props is not None:
            if props.get(PROFILE_PROPERTY) != job.argument:
                raise JobFailed(
                    f"{dataset} is the builder root of profile "
                    f"{shown(props.get(PROFILE_PROPERTY, ''))}, not of {shown(job.argument)}"
                )
            done = recorded_step(dataset, props.get(BUILD_PROPERTY, ""))
        if held := await self._binhosts_down(ctx):
            ctx.change(error=held)  # nothing is changed yet
            return JobResult.HELD
        if done is not BuildStep.DONE:
            ctx.log(journal.NOTICE, f"building the builder root of profile {job.argument}")
            mountpoint = machines.builder_directory(ctx.config, name)
            await build_steps(ctx, name, mountpoint, profile, done, publish=True)
            await step_done(ctx, dataset, BuildStep.DONE)
        root = mounted_root(await ctx.host.inventory.machine(name, fresh=True))
        await steps.binrepos(ctx, root)
        atoms = set(sorted(await self._fleet_packages(ctx))[:MOST_PACKAGES])
        ctx.log(journal.INFO, f"the machines of profile {job.argument} name {len(atoms)} packages")
        # --keep-going: a package that fails to build does not keep the others from
        # being published; the job fails all the same and the root goes back, but what
        # was built stays in PKGDIR for the machines.
        args = [*ctx.config.portage.update_args, "--keep-going=y"]
        wanted = [*args, *sorted(atoms)]
        refused = await self._fetch(ctx, root, wanted)
        async with snapshots.protected(ctx, dataset, spent=True) as snapshot:
            try:
                progress = await emerge(ctx, root, wanted, publish=True)
            except JobFailed as err:
                if not atoms or ctx.job.packages_total:
                    _raise_refusal_first(refused, err)
                    raise
                # Nothing was merged: the machines' packages do not resolve together
                # (blockers, a package one of them unmasked). The profile's own sets
                # still do, and are worth publishing.
                ctx.log(journal.WARNING, f"the machines' packages do not resolve: {err}")
                refused = await self._fetch(ctx, root, args) or refused  # changes no root
                try:
                    progress = await emerge(ctx, root, args, publish=True)
                except JobFailed as again:
                    _raise_refusal_first(refused, again)
                    raise
            if refused:  # built here instead, and published; the root goes back
                raise JobFailed(refused)
        if progress.merged_nothing:
            await ctx.zfs.destroy(snapshot.full_name)
            ctx.change(snapshot="")
            return JobResult.SKIPPED
        ctx.change(phase=Phase.CLEANUP)
        await snapshots.prune(ctx, dataset)
        return JobResult.DONE

    async def recover(self, ctx: Context) -> tuple[JobResult, str]:
        if ctx.job.phase is Phase.CLEANUP:
            return JobResult.DONE, ""
        # A step of the root's build that finished is recorded on the dataset: the next
        # builder job goes on from there.
        return await snapshots.undo_interrupted(ctx, spent=True)

    @staticmethod
    async def _fetch(ctx: Context, root: Path, args: list[str]) -> str:
        """The fetch step, and on a host with binhosts the download of their packages.
        What cannot be fetched is left to the emerge, which builds what it can (as
        --keep-going does) and publishes it; so is a binhost's package that is refused
        (unsigned, not signed yet, or signed otherwise), but the job fails for it once
        that is done. Why it was refused, or ""."""
        try:
            await steps.fetch(ctx, root, args, publish=True)
        except Refused as err:
            ctx.log(journal.ERR, f"{err}; building it here, and the job fails after that")
            return str(err)
        except JobFailed as err:
            ctx.log(journal.WARNING, f"{err}; building what can be built")
        return ""

    @staticmethod
    async def _binhosts_down(ctx: Context) -> str:
        """Why the builder is held: a binhost does not answer and `[binhost] unreachable`
        says hold; "" otherwise (a binhost that does not answer is then only logged, and
        the builder compiles what it would have fetched)."""
        binrepos = ctx.config.portage.binrepos
        if not binrepos or not (down := await binhost.unreachable(binrepos)):
            return ""
        if ctx.config.binhost.unreachable is UnreachablePolicy.HOLD:
            return f"binhost unreachable: {down}"
        ctx.log(journal.WARNING, f"binhost unreachable, compiling instead: {down}")
        return ""

    @staticmethod
    async def _fleet_packages(ctx: Context) -> set[str]:
        """What the world files of the profile's machines name: one listing, one file
        read per machine (in a thread: a fleet's roots are many)."""
        found = await ctx.host.inventory.all(fresh=True)

        def packages() -> set[str]:
            atoms: set[str] = set()
            for machine in found.values():
                chosen = machines.chosen_profile(ctx.config, machine)
                if chosen == ctx.job.argument and machine.root is not None:
                    atoms |= portage.world_atoms(ctx.config.portage, machine.root)
            return atoms

        return await asyncio.to_thread(packages)
