"""Build: a new machine, step by step; each step is recorded on its dataset, so an
interrupted build resumes where it stopped."""

from __future__ import annotations

from pathlib import Path

from gnspawn import log as journal
from gnspawn import machines, nspawn, portage
from gnspawn.config import Config
from gnspawn.errors import MachineExists, NoSuchMachine, NoSuchProfile
from gnspawn.inventory import mounted_root
from gnspawn.jobs import changes, snapshots, steps
from gnspawn.jobs.context import Context, Host, JobFailed, Kind, Request
from gnspawn.jobs.emerge import downloads, emerge
from gnspawn.names import (
    BUILD_PROPERTY,
    PROFILE_PROPERTY,
    BuildStep,
    Flags,
    JobResult,
    JobType,
    MachineState,
    Phase,
    shown,
)


class Build(Kind):
    type = JobType.BUILD
    flags = Flags.FAIL_IF_BUSY | Flags.KEEP_FAILED | Flags.RESUME
    cancellable = True
    protected = True
    state = MachineState.BUILDING

    async def check(self, host: Host, request: Request) -> str:
        """The profile to build with: the request's, the machine's, or the default."""
        name, profile = request.name, request.argument
        for job in host.queue.jobs:
            if job.machine == name and job.type is JobType.BUILD:
                raise MachineExists(f"machine {name} is being built by job {job.id}")
        if Flags.RESUME in request.flags:
            machine = (await host.inventory.all()).get(name)
            if machine is None or not machine.dataset:
                raise NoSuchMachine(f"no machine {name} to resume")
            if machine.build in (BuildStep.NONE, BuildStep.DONE):
                raise MachineExists(f"machine {name} is complete; there is nothing to resume")
            profile = profile or machine.profile
        else:
            await host.inventory.check_free(name)
        profile = profile or _default_profile(host.config, name)
        if portage.resolve_profile(host.config.portage, profile) is None:
            raise NoSuchProfile(f"no profile {shown(profile)} in {repositories(host.config)}")
        return profile

    async def profile(self, host: Host, request: Request, argument: str) -> str:
        return argument

    async def run(self, ctx: Context) -> JobResult:
        job, name = ctx.job, ctx.job.machine
        dataset = machines.dataset(ctx.config, name)
        profile = portage.resolve_profile(ctx.config.portage, job.argument)
        if profile is None:
            raise NoSuchProfile(f"no profile {shown(job.argument)} in {repositories(ctx.config)}")
        done = BuildStep.NONE
        if Flags.RESUME in job.flags:
            machine = await ctx.host.inventory.machine(name, fresh=True)
            done = recorded_step(dataset, machine.build)
            ctx.log(journal.NOTICE, f"resuming after step {done or 'none'}")
        publish = ctx.config.machine(name).trusted
        root = machines.directory(ctx.config, name)
        before = {} if done is BuildStep.NONE else await changes.read(root)
        done = await build_steps(ctx, name, root, profile, done, publish=publish)
        ctx.change(phase=Phase.CONFIGURE)
        if done is not BuildStep.DONE:
            path = nspawn.write_settings(ctx.config, name)
            ctx.log(journal.NOTICE, f"wrote {path}")
            done = await step_done(ctx, dataset, BuildStep.DONE)
        await changes.settle(ctx, before, root)
        if ctx.config.nspawn.enable:
            await ctx.unit_job(
                ctx.host.services.enable_and_start,
                done="enabled and started {unit}",
                unavailable="not starting {unit}: {err}",
                failed="could not enable and start {unit}: {err}",
            )
        return JobResult.DONE

    async def recover(self, ctx: Context) -> tuple[JobResult, str]:
        # The steps that finished are recorded on the dataset: Build with RESUME goes on.
        return await snapshots.undo_interrupted(ctx)


async def build_steps(
    ctx: Context, name: str, mountpoint: Path, profile: Path, done: BuildStep, *, publish: bool
) -> BuildStep:
    """Create, configure and emerge a root with the job's profile, each step after `done`
    recorded on its dataset when it finishes; the last step done."""
    dataset = machines.dataset(ctx.config, name)
    if done is BuildStep.NONE:
        ctx.change(phase=Phase.CONFIGURE)
        await ctx.zfs.create(
            dataset,
            mountpoint,
            {BUILD_PROPERTY: BuildStep.CREATED, PROFILE_PROPERTY: ctx.job.argument},
        )
        ctx.log(journal.NOTICE, f"created {dataset} at {mountpoint}")
        done = BuildStep.CREATED
    root = mounted_root(await ctx.host.inventory.machine(name, fresh=True))
    if done is BuildStep.CREATED:
        ctx.change(phase=Phase.CONFIGURE)
        portage.write_config(ctx.config.portage, root, profile, publish=publish)
        ctx.log(journal.INFO, f"wrote {root}/etc/portage for profile {ctx.job.argument}")
        done = await step_done(ctx, dataset, BuildStep.CONFIGURED)
    if ctx.job.type is JobType.BUILDER:
        await steps.binrepos(ctx, root)
    args = ctx.config.portage.build_args
    passes = (
        (BuildStep.EMERGE_NODEPS, [*args, "--nodeps"], Phase.EMERGE_NODEPS),
        (BuildStep.EMERGE, list(args), Phase.EMERGE),
    )
    for step, argv, phase in passes:
        if done.order >= step.order:
            continue
        if downloads(ctx):  # the binhosts' packages, each verified, before the snapshot
            await steps.fetch(ctx, root, argv, publish=publish)
        async with snapshots.protected(ctx, dataset, step) as snapshot:
            await changes.record(ctx, snapshot.full_name, root)
            await emerge(ctx, root, argv, phase=phase, publish=publish)
        done = await step_done(ctx, dataset, step)
    return done


def recorded_step(dataset: str, recorded: str) -> BuildStep:
    """The build step a dataset's BUILD_PROPERTY records; JobFailed for anything else."""
    if recorded not in list(BuildStep):
        raise JobFailed(f"{dataset} has an unknown {BUILD_PROPERTY}: {shown(recorded)}")
    return BuildStep(recorded)


async def step_done(ctx: Context, dataset: str, step: BuildStep) -> BuildStep:
    # A user property is not part of a snapshot: a rollback keeps what finished.
    await ctx.zfs.set(dataset, BUILD_PROPERTY, step)
    # What the step's snapshot protected is done: recovery must not undo it.
    ctx.change(snapshot="")
    return step


def _default_profile(config: Config, name: str) -> str:
    return config.machine(name).profile or config.portage.default_profile


def repositories(config: Config) -> str:
    return ", ".join(str(repo) for repo in config.portage.repos) or "no repositories"
