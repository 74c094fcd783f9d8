"""The target's side of a Send: where a machine is received, and picking it up after.

The sender pipes `zfs send` through ssh into `zfs receive` itself; gnspawnd here says
where (below [storage] dataset only), refuses what must not be overwritten, and takes
the received dataset up as a machine once all of it is there.

From PrepareReceive on, the name is the sender's (Host.receiving) for as long as its
bus connection lives: no other connection prepares, adopts or discards it, and no job
here runs on it. A sender that dies closes its connection, and with it this (once the
bus sees it go: ssh's keepalives bound that in a broken network).
"""

from __future__ import annotations

import contextlib
import logging
import re

from gnspawn import machines, nspawn
from gnspawn.errors import Busy, InvalidArgs, MachineExists, NoSuchMachine, StorageFailed
from gnspawn.inventory import gentoo_root
from gnspawn.jobs.context import Host, Reception, uncancellable
from gnspawn.names import ORIGIN_PROPERTY, RECEIVING_SUFFIX, shown

log = logging.getLogger(__name__)

_ORIGIN = re.compile(r"[A-Za-z0-9_.:@/+-]{1,512}")


def check_origin(origin: str) -> str:
    """The sender as it names itself (HOST:DATASET), or InvalidArgs."""
    if not _ORIGIN.fullmatch(origin):
        raise InvalidArgs(f"not a sender: {shown(origin)}")
    return origin


async def receiver(host: Host, name: str) -> Reception | None:
    """Who is sending machine `name` here: None when nobody is, or the connection that
    was has gone (its reservation is dropped then)."""
    held = host.receiving.get(name)
    gone = held is not None and not await host.services.connected(held.sender)
    if gone and host.receiving.get(name) is held:
        del host.receiving[name]
    return host.receiving.get(name)  # another may have taken it meanwhile


def check_not_receiving(host: Host, name: str) -> None:
    """Busy while a sender sends machine `name` here (see receiver())."""
    if (held := host.receiving.get(name)) is not None:
        raise Busy(f"machine {name} is being received here from {held.origin}")


async def prepare(host: Host, name: str, origin: str, sender: str) -> tuple[str, list[str]]:
    """Where machine `name` from `origin` is to be received, and the snapshots this
    host has of it (oldest first; none: send it whole, into NAME:receiving). The name
    is reserved for the `sender` connection from now on.

    A machine of that name is updated only when it came from the same sender, has no
    job, and does not run; anything half received before is discarded.
    """
    machines.check_name(name)
    check_origin(origin)
    held = await receiver(host, name)
    if held is not None and held.sender != sender:
        check_not_receiving(host, name)
    if host.queue.busy(name):
        raise Busy(f"machine {name} has a job waiting or running here")
    reception = host.receiving[name] = Reception(origin, sender)
    try:
        return await _prepare(host, name, origin)
    except BaseException:
        if host.receiving.get(name) is reception:
            if held is None:
                del host.receiving[name]
            else:
                host.receiving[name] = held
        raise


async def _prepare(host: Host, name: str, origin: str) -> tuple[str, list[str]]:
    dataset = machines.dataset(host.config, name)
    found = await host.zfs.filesystem(dataset, [ORIGIN_PROPERTY])
    if found is None:
        await host.inventory.check_free(name)
        await _destroy_received(host, name)
        return dataset + RECEIVING_SUFFIX, []
    if found.get(ORIGIN_PROPERTY) != origin:
        raise MachineExists(f"machine {name} exists here and was not sent from {origin}")
    if await host.services.machine_running(name):
        raise Busy(f"machine {name} runs here; stop it first (machinectl poweroff {name})")
    return dataset, [s.name for s in await host.zfs.snapshots(dataset)]


async def adopt(host: Host, name: str, origin: str, sender: str) -> None:
    """Take up what was received as machine `name`: renamed into place when it came
    whole, mounted where machines are, its sender recorded, its .nspawn file written
    unless the admin has one. Only the connection that prepared it may."""
    machines.check_name(name)
    check_origin(origin)
    held = host.receiving.get(name)
    if held is None or held != Reception(origin, sender):
        raise NoSuchMachine(f"nothing of {name} was received from {origin} on this connection")
    await _adopt(host, name, origin)
    if host.receiving.get(name) is held:
        del host.receiving[name]


async def _adopt(host: Host, name: str, origin: str) -> None:
    dataset = machines.dataset(host.config, name)
    received = dataset + RECEIVING_SUFFIX
    whole = await host.zfs.exists(received)
    if whole:
        await host.inventory.check_free(name)
        # Renamed before it is looked into: zfs-fuse renames no mounted dataset, and
        # what arrives whole is unmounted until here.
        await host.zfs.rename(received, dataset)
    else:
        found = await host.zfs.filesystem(dataset, [ORIGIN_PROPERTY])
        if found is None:
            raise NoSuchMachine(f"nothing of {name} was received")
        if found.get(ORIGIN_PROPERTY) != origin:  # only a copy from there is updated
            raise MachineExists(f"machine {name} exists here and was not sent from {origin}")
    try:
        await host.zfs.set(dataset, ORIGIN_PROPERTY, origin)
        await host.zfs.set(dataset, "mountpoint", str(machines.directory(host.config, name)))
        locked = await host.zfs.locked(dataset)
        if not locked:  # a raw receive of an encrypted one is mounted once its key is loaded
            gentoo_root(await host.inventory.machine(name, fresh=True))
    except BaseException:
        if whole:  # it was never a machine here: what came goes
            await uncancellable(_refused(host, name, dataset))
        raise
    settings = nspawn.settings_path(host.config.nspawn, name)
    if not (settings.exists() or settings.is_symlink()):
        nspawn.write_settings(host.config, name)
    if locked:
        log.warning(
            "machine %s received from %s, encrypted: load its key (zfs load-key %s) and "
            "mount it (zfs mount %s) before it starts",
            name,
            origin,
            dataset,
            dataset,
        )
    else:
        log.info("machine %s received from %s", name, origin)


async def _refused(host: Host, name: str, dataset: str) -> None:
    """Destroy what came whole and was refused, with the mountpoint it was given: the
    name is free again, for the next send."""
    try:
        await host.zfs.destroy_filesystem(dataset)
    except StorageFailed as err:
        log.error("could not destroy %s, received and refused: %s", dataset, err)
        return
    log.warning("destroyed %s: received whole, and refused", dataset)
    with contextlib.suppress(OSError):
        machines.directory(host.config, name).rmdir()


async def discard(host: Host, name: str, origin: str, sender: str) -> bool:
    """Destroy what a whole send left half received of machine `name`, and end its
    reception; whether there was anything. Busy while another connection sends it."""
    machines.check_name(name)
    check_origin(origin)
    held = await receiver(host, name)
    if held is not None and held.sender != sender:
        check_not_receiving(host, name)
    if held is not None and host.receiving.get(name) is held:
        del host.receiving[name]
    return await _destroy_received(host, name)


async def _destroy_received(host: Host, name: str) -> bool:
    received = machines.dataset(host.config, name) + RECEIVING_SUFFIX
    if not await host.zfs.exists(received):
        return False
    await host.zfs.destroy_filesystem(received)
    log.info("discarded %s, half received", received)
    return True
