"""Send: a machine's dataset with its snapshots to another host's gnspawnd, over ssh.

The sender snapshots the machine, asks the target's gnspawnd (over its bus, through
ssh, as `gnctl -H` does) where to receive it and which snapshots it has, pipes
`zfs send` into `ssh HOST zfs receive` (incremental from the newest snapshot the target
has, else whole), and tells the target to pick the machine up. The snapshot the target
now has is marked sent (org.gnspawn:sent), so that retention keeps it here.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from collections.abc import Callable

from gnspawn import log as journal
from gnspawn import machines, remote
from gnspawn.errors import GnspawnError, MachineExists, NoSuchMachine
from gnspawn.inventory import gentoo_root
from gnspawn.jobs import snapshots
from gnspawn.jobs.context import (
    FRESH_COUNTERS,
    Context,
    Host,
    JobFailed,
    Kind,
    Request,
    uncancellable,
)
from gnspawn.jobs.kinds.remove import check_not_running, remove
from gnspawn.names import (
    RECEIVING_SUFFIX,
    SENT_PROPERTY,
    SNAPSHOT_PREFIX,
    Flags,
    JobResult,
    JobType,
    MachineState,
    Phase,
)
from gnspawn.run import CommandFailed, stream
from gnspawn.zfs import Snapshot

_LOG_EVERY = 64 << 20
"""Bytes between two lines that say how much went through."""
_DISCARD_TIMEOUT = 30.0
_DATASET = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*(/[A-Za-z0-9_.:-]+)+")
"""Where the target receives: it goes into the command ssh runs there, which a shell reads."""
_SNAPSHOT = re.compile(r"[A-Za-z0-9_.:-]{1,255}")


class Send(Kind):
    type = JobType.SEND
    flags = Flags.FAIL_IF_BUSY | Flags.MOVE
    cancellable = True
    settled = frozenset({Phase.CLEANUP})  # the target has it: what is left must finish
    state = MachineState.SENDING

    async def check(self, host: Host, request: Request) -> str:
        remote.check_host(request.argument)
        gentoo_root(await host.inventory.machine(request.name))
        if Flags.MOVE in request.flags:
            await check_not_running(host, request.name)
        return request.argument

    async def run(self, ctx: Context) -> JobResult:
        job, target = ctx.job, ctx.job.argument
        machine = await ctx.host.inventory.machine(job.machine, fresh=True)
        gentoo_root(machine)
        dataset = machine.dataset
        if Flags.MOVE in job.flags:
            await check_not_running(ctx.host, job.machine)
        ctx.change(phase=Phase.SNAPSHOT, **FRESH_COUNTERS)
        snapshot = await ctx.zfs.snapshot(dataset, f"{SNAPSHOT_PREFIX}{job.id}-send", job=job.id)
        ctx.change(snapshot=snapshot.full_name)
        ctx.log(journal.NOTICE, f"snapshot {snapshot.full_name} taken")
        ctx.change(phase=Phase.SEND)
        far = None
        try:
            far = await remote.RemoteManager.connect(target)
            await _send(ctx, far, dataset, snapshot)
        except BaseException as err:
            await uncancellable(_undo(ctx, far, snapshot.full_name))
            if isinstance(err, remote.Unreachable):
                raise JobFailed(str(err)) from err
            raise
        finally:
            if far is not None:
                await far.close()
        if Flags.MOVE in job.flags:
            await remove(ctx)
            ctx.log(journal.NOTICE, f"removed {job.machine} here: {target} has it now")
            return JobResult.DONE
        await snapshots.prune(ctx, dataset)
        return JobResult.DONE

    async def recover(self, ctx: Context) -> tuple[JobResult, str]:
        """The send died with the daemon: a whole one left at most NAME:receiving on the
        target, which it is told to discard (and discards before the next send anyway);
        an incremental one left the target as it was. Once the target has picked it
        up, it is done (and with MOVE removed here)."""
        if ctx.job.phase is Phase.CLEANUP:  # the target has it, and it is marked sent
            if Flags.MOVE in ctx.job.flags:
                await remove(ctx)
            return JobResult.DONE, ""
        if ctx.job.snapshot:
            await _drop_unsent(ctx, ctx.job.snapshot)
        if ctx.job.phase is Phase.SEND:
            with contextlib.suppress(remote.Unreachable, GnspawnError, TimeoutError):
                far = await asyncio.wait_for(
                    remote.RemoteManager.connect(ctx.job.argument), _DISCARD_TIMEOUT
                )
                try:
                    await _discard(ctx, far)
                finally:
                    await far.close()
        return JobResult.FAILED, "interrupted"


def origin(dataset: str) -> str:
    """Who sends: this host and the machine's dataset, as the target records it."""
    return f"{socket.gethostname()}:{dataset}"


async def _send(ctx: Context, far: remote.RemoteManager, dataset: str, snapshot: Snapshot) -> None:
    name, target = ctx.job.machine, ctx.job.argument
    try:
        into, theirs = await far.call("PrepareReceive", "sst", name, origin(dataset), 0)
    except GnspawnError as err:
        raise JobFailed(f"{target} refused {name}: {err}") from err
    except remote.Unreachable as err:
        raise JobFailed(str(err)) from err
    if not _DATASET.fullmatch(into) or not all(_SNAPSHOT.fullmatch(s) for s in theirs):
        raise JobFailed(f"{target} answered PrepareReceive with what is no dataset or snapshot")
    ours = await ctx.zfs.snapshots(dataset)
    streams = _streams(ours, snapshot, list(theirs), target)
    raw = await ctx.zfs.encrypted(dataset)
    if raw:
        ctx.log(journal.INFO, f"{dataset} is encrypted: sending it raw, its key stays here")
    total = 0
    for since, upto in streams:
        what = f"{upto.full_name}" + (f" from {since.name}" if since else "")
        ctx.log(journal.NOTICE, f"sending {what} to {target}:{into}")
        send = ctx.zfs.send_argv(upto.full_name, since=since.full_name if since else "", raw=raw)
        force = ["-F"] if since else []  # back to the common snapshot, should atime differ
        receive = remote.ssh_argv(target, "zfs", "receive", *force, into)
        try:
            size = int(await ctx.zfs.get(upto.full_name, "referenced"))
            total += await stream(send, receive, _counter(ctx, total, size), env=_tagged(ctx))
        except CommandFailed as err:
            raise JobFailed(f"sending {name} to {target} failed: {err.message}") from err
    ctx.log(journal.NOTICE, f"sent {total} bytes to {target}")
    whole = into.endswith(RECEIVING_SUFFIX)
    await uncancellable(_adopt(ctx, far, dataset, snapshot.name, whole=whole))


async def _adopt(
    ctx: Context, far: remote.RemoteManager, dataset: str, snapshot: str, *, whole: bool
) -> None:
    """The target picks the machine up; `snapshot` is then the newest it has. It is
    marked sent first: should the answer be lost, or this daemon die before it, the
    target may well have it, and the next send must find it here (a mark the target
    turns out not to have only keeps a snapshot until the next send moves it). A whole
    send the target refuses is discarded there: the mark goes. Not cancelled half way."""
    name, target = ctx.job.machine, ctx.job.argument
    await _mark_sent(ctx, dataset, snapshot, target)
    try:
        await far.call("AdoptReceived", "sst", name, origin(dataset), 0)
    except (GnspawnError, remote.Unreachable) as err:
        if whole and isinstance(err, NoSuchMachine | MachineExists):
            # Refused before it renamed anything: it discards what it received.
            await _mark_sent(ctx, dataset, None, target)
        raise JobFailed(f"{target} did not pick {name} up: {err}") from err
    ctx.log(journal.NOTICE, f"{target} has {name} ready")
    ctx.change(phase=Phase.CLEANUP)


def _streams(
    ours: list[Snapshot], snapshot: Snapshot, theirs: list[str], target: str
) -> list[tuple[Snapshot | None, Snapshot]]:
    """The sends that bring the target to `snapshot`: (from, to) each, from None for a
    whole one. From the newest snapshot the target has, which must be one of ours (else
    its copy changed there); with none there, the oldest of gnspawn's whole and the
    rest after it."""
    snapshot = next(s for s in ours if s.name == snapshot.name)
    if theirs:
        base = next((s for s in ours if s.name == theirs[-1]), None)
        if base is None:
            raise JobFailed(
                f"the copy on {target} has snapshot {theirs[-1]}, which this host does not "
                "have: it changed there since it was sent; remove it there to send it whole"
            )
        return [(base, snapshot)]
    first = next(s for s in ours if s.job is not None)
    return [(None, first)] + ([(first, snapshot)] if first != snapshot else [])


def _tagged(ctx: Context) -> dict[str, str]:
    """The job's marks on the processes of the send: a daemon that dies leaves none
    running unseen (recovery kills what carries them)."""
    name, _, value = ctx.tag.partition("=")
    return {"GNSPAWN_JOB": str(ctx.job.id), name: value}


def _counter(ctx: Context, before: int, size: int) -> Callable[[int], None]:
    """Progress from the bytes that went through: a share of the snapshot's size (an
    estimate: a stream is not the size of the data), and a line now and then."""
    estimate = max(size, 1)
    state = {"logged": before}

    def counted(now: int) -> None:
        done = before + now
        ctx.change(progress=min(99, done * 100 // estimate))
        if done - state["logged"] >= _LOG_EVERY:
            state["logged"] = done
            ctx.log(journal.INFO, f"{done} bytes sent")

    return counted


async def _undo(ctx: Context, far: remote.RemoteManager | None, snapshot: str) -> None:
    """After a failed or cancelled send: nothing half received left on the target
    (`far`, None when it was never reached), and the job's snapshot gone here unless
    the target has it."""
    if far is not None:
        await _discard(ctx, far)
    await _drop_unsent(ctx, snapshot)


async def _discard(ctx: Context, far: remote.RemoteManager) -> None:
    """Ask the target to discard what a whole send left half received; never raises."""
    try:
        await asyncio.wait_for(
            far.call(
                "DiscardReceived",
                "sst",
                ctx.job.machine,
                origin(machines.dataset(ctx.config, ctx.job.machine)),
                0,
            ),
            _DISCARD_TIMEOUT,
        )
    except (GnspawnError, remote.Unreachable, TimeoutError, OSError) as err:
        ctx.log(
            journal.WARNING, f"could not have {ctx.job.argument} discard what it received: {err}"
        )


async def _drop_unsent(ctx: Context, snapshot: str) -> None:
    """The job's own snapshot, unless a target has it: it would only fill retention."""
    dataset = snapshot.partition("@")[0]
    for found in await ctx.zfs.snapshots(dataset):
        if found.full_name == snapshot and not found.sent:
            await ctx.zfs.destroy(snapshot)
            ctx.change(snapshot="")


async def _mark_sent(ctx: Context, dataset: str, name: str | None, target: str) -> None:
    """Mark `name` as the newest snapshot `target` has, and no other one (None: none)."""
    for snap in await ctx.zfs.snapshots(dataset):
        hosts = [h for h in snap.sent_to if h != target]
        if snap.name == name:
            hosts.append(target)
        if hosts == snap.sent_to:
            continue
        if hosts:
            await ctx.zfs.set(snap.full_name, SENT_PROPERTY, " ".join(hosts))
        else:
            await ctx.zfs.inherit(snap.full_name, SENT_PROPERTY)
