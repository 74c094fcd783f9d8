"""The machines on this host, from the storage: one listing per request, one dataset per job.

A request that looks at every machine (ListMachines, UpdateAll) costs one listing, which
requests arriving meanwhile share; a job that starts looks at its own dataset only.
Nothing here costs a listing per machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from pathlib import Path

from gnspawn import machines, nspawn
from gnspawn.config import Config
from gnspawn.errors import MachineExists, NoSuchMachine, NotGentoo, StorageFailed
from gnspawn.machines import Machine
from gnspawn.names import BUILD_PROPERTY, PROFILE_PROPERTY
from gnspawn.zfs import Zfs

_PROPERTIES = [BUILD_PROPERTY, PROFILE_PROPERTY]
_FAILED_COPY = re.compile(r"(.+):failed-\d+")


class Inventory:
    """Machine datasets below [storage] dataset, and directories that are not ours."""

    def __init__(self, config: Config, zfs: Zfs) -> None:
        self.config = config
        self.zfs = zfs
        self._listing: asyncio.Future[dict[str, Machine]] | None = None

    async def all(self, *, fresh: bool = False) -> dict[str, Machine]:
        """Every machine dataset, by name.

        Calls that come while a listing runs share it: a burst of a thousand requests
        costs one zfs call, not a thousand. `fresh` starts a listing of its own, for a
        job that must see what the jobs before it made.
        """
        if fresh or self._listing is None or self._listing.done():
            self._listing = asyncio.ensure_future(self._list())
        return await asyncio.shield(self._listing)

    async def machine(self, name: str, *, fresh: bool = False) -> Machine:
        """The machine from the shared listing, or (`fresh`, for a job that starts)
        from one zfs call on its own dataset; NoSuchMachine when there is none."""
        if fresh:
            dataset = machines.dataset(self.config, name)
            props = await self.zfs.filesystem(dataset, _PROPERTIES)
            machine = None if props is None else _machine_of(name, dataset, props)
        else:
            machine = (await self.all()).get(name)
        return _found(self.config, name, machine)

    async def listed(self, name: str) -> Machine:
        """The machine with its failed copies, from a listing of its own: for a job that
        must see what the jobs before it made."""
        return _found(self.config, name, (await self.all(fresh=True)).get(name))

    async def dataset(self, name: str, *, fresh: bool = False) -> str:
        return (await self.machine(name, fresh=fresh)).dataset

    def names(self, found: dict[str, Machine]) -> list[str]:
        """The names of a listing's machines and of the foreign directories beside them."""
        return sorted({*found, *self._foreign_directories(found)})

    async def latest_snapshots(self) -> dict[str, str]:
        """Each dataset's newest snapshot, in one zfs call."""
        latest: dict[str, str] = {}
        with contextlib.suppress(StorageFailed):
            for snapshot in await self.zfs.all_snapshots(self.config.storage.dataset):
                dataset, _, short = snapshot.partition("@")
                latest[dataset] = short
        return latest

    async def check_free(self, name: str) -> None:
        """MachineExists unless no dataset, directory or .nspawn file has this name."""
        dataset = machines.dataset(self.config, name)
        if await self.zfs.exists(dataset):
            raise MachineExists(f"machine {name} exists (dataset {dataset})")
        directory = machines.directory(self.config, name)
        settings = nspawn.settings_path(self.config.nspawn, name)
        for path in (directory, settings):
            if path.exists() or path.is_symlink():
                raise MachineExists(f"{path} exists")

    async def _list(self) -> dict[str, Machine]:
        parent = self.config.storage.dataset
        if not await self.zfs.exists(parent):
            return {}
        found = await self.zfs.machines(parent, _PROPERTIES)
        prefix = parent + "/"
        result = {}
        copies: dict[str, list[str]] = {}
        for dataset, props in sorted(found.items()):
            name = dataset.removeprefix(prefix)
            if machines.valid_name(name):
                result[name] = _machine_of(name, dataset, props)
            elif match := _FAILED_COPY.fullmatch(name):
                copies.setdefault(match.group(1), []).append(dataset)
        for name, datasets in copies.items():
            if name in result:
                result[name] = result[name]._replace(failed_copies=tuple(datasets))
        return result

    def _foreign_directories(self, found: dict[str, Machine]) -> list[str]:
        """Directories in machines_directory that are no dataset of ours: shown, never touched."""
        try:
            entries = list(self.config.storage.machines_directory.iterdir())
        except OSError:
            return []
        return [
            entry.name
            for entry in entries
            if entry.name not in found and machines.valid_name(entry.name) and entry.is_dir()
        ]


def _found(config: Config, name: str, machine: Machine | None) -> Machine:
    if machine is None:
        raise NoSuchMachine(f"no machine {name} (no dataset {machines.dataset(config, name)})")
    return machine


def _machine_of(name: str, dataset: str, props: dict[str, str]) -> Machine:
    build, profile = props.get(BUILD_PROPERTY, "-"), props.get(PROFILE_PROPERTY, "-")
    return Machine(
        name=name,
        dataset=dataset,
        root=Path(props["root"]) if props["root"] else None,
        build="" if build == "-" else build,
        profile="" if profile == "-" else profile,
    )


def mounted_root(machine: Machine) -> Path:
    """Where the machine's dataset is mounted, or NoSuchMachine."""
    if machine.root is None:
        raise NoSuchMachine(f"dataset {machine.dataset} of machine {machine.name} is not mounted")
    return machine.root


def gentoo_root(machine: Machine) -> Path:
    """The machine's mounted root, or NotGentoo when it is no Gentoo root."""
    root = mounted_root(machine)
    if not machines.is_gentoo(root):
        raise NotGentoo(f"{root} has no etc/gentoo-release")
    return root
