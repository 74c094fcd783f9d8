"""The target's side of a Send: where a machine is received, and picking it up after.

The sender pipes `zfs send` through ssh into `zfs receive` itself; gnspawnd here says
where (below [storage] dataset only), refuses what must not be overwritten, and takes
the received dataset up as a machine once all of it is there.
"""

from __future__ import annotations

import logging
import re

from gnspawn import machines, nspawn
from gnspawn.errors import Busy, InvalidArgs, MachineExists, NoSuchMachine
from gnspawn.inventory import gentoo_root
from gnspawn.jobs.context import Host
from gnspawn.names import ORIGIN_PROPERTY, RECEIVING_SUFFIX, shown

log = logging.getLogger(__name__)

_ORIGIN = re.compile(r"[A-Za-z0-9_.:@/+-]{1,512}")


def check_origin(origin: str) -> str:
    """The sender as it names itself (HOST:DATASET), or InvalidArgs."""
    if not _ORIGIN.fullmatch(origin):
        raise InvalidArgs(f"not a sender: {shown(origin)}")
    return origin


async def prepare(host: Host, name: str, origin: str) -> tuple[str, list[str]]:
    """Where machine `name` from `origin` is to be received, and the snapshots this
    host has of it (oldest first; none: send it whole, into NAME:receiving).

    A machine of that name is updated only when it came from the same sender, has no
    job, and does not run; anything half received before is discarded.
    """
    machines.check_name(name)
    check_origin(origin)
    dataset = machines.dataset(host.config, name)
    if host.queue.busy(name):
        raise Busy(f"machine {name} has a job waiting or running here")
    found = await host.zfs.filesystem(dataset, [ORIGIN_PROPERTY])
    if found is None:
        await host.inventory.check_free(name)
        await discard(host, name)
        return dataset + RECEIVING_SUFFIX, []
    if found.get(ORIGIN_PROPERTY) != origin:
        raise MachineExists(f"machine {name} exists here and was not sent from {origin}")
    if await host.services.machine_running(name):
        raise Busy(f"machine {name} runs here; stop it first (machinectl poweroff {name})")
    return dataset, [s.name for s in await host.zfs.snapshots(dataset)]


async def adopt(host: Host, name: str, origin: str) -> None:
    """Take up what was received as machine `name`: renamed into place when it came
    whole, mounted where machines are, its sender recorded, its .nspawn file written
    unless the admin has one."""
    machines.check_name(name)
    check_origin(origin)
    dataset = machines.dataset(host.config, name)
    received = dataset + RECEIVING_SUFFIX
    if host.queue.busy(name):
        raise Busy(f"machine {name} has a job waiting or running here")
    if await host.zfs.exists(received):
        await host.inventory.check_free(name)
        await host.zfs.rename(received, dataset)
    else:
        found = await host.zfs.filesystem(dataset, [ORIGIN_PROPERTY])
        if found is None:
            raise NoSuchMachine(f"nothing of {name} was received")
        if found.get(ORIGIN_PROPERTY) != origin:  # only a copy from there is updated
            raise MachineExists(f"machine {name} exists here and was not sent from {origin}")
    await host.zfs.set(dataset, ORIGIN_PROPERTY, origin)
    await host.zfs.set(dataset, "mountpoint", str(machines.directory(host.config, name)))
    gentoo_root(await host.inventory.machine(name, fresh=True))
    settings = nspawn.settings_path(host.config.nspawn, name)
    if not (settings.exists() or settings.is_symlink()):
        nspawn.write_settings(host.config, name)
    log.info("machine %s received from %s", name, origin)


async def discard(host: Host, name: str) -> bool:
    """Destroy what a whole send left half received of machine `name`; whether there
    was anything."""
    machines.check_name(name)
    received = machines.dataset(host.config, name) + RECEIVING_SUFFIX
    if not await host.zfs.exists(received):
        return False
    await host.zfs.destroy_filesystem(received)
    log.info("discarded %s, half received", received)
    return True
