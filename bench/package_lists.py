"""What recording a root's package list costs a job: reading its vdb, compressing the
list and storing it, against the snapshot it is taken with."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from common import alternate, row, value_row

from gnspawn import packages
from gnspawn.jobs.store import JobStore
from gnspawn.zfs import Zfs
from testbed import Testbed, zfs

PACKAGES = 1_000
"""About what a Gentoo server root has installed."""


def fake_vdb(root: Path, count: int) -> None:
    """A vdb of `count` entries with the files gnspawn reads, sized like real ones."""
    use = " ".join(f"flag{n}" for n in range(12)) + " amd64 elibc_glibc kernel_linux"
    for n in range(count):
        entry = root / "var/db/pkg" / f"cat-{n % 60}" / f"package{n}-{n % 7}.{n % 13}.{n % 3}"
        entry.mkdir(parents=True)
        (entry / "SLOT").write_text("0/1\n")
        (entry / "repository").write_text("gentoo\n")
        (entry / "BUILD_TIME").write_text(f"{1_700_000_000 + n}\n")
        (entry / "USE").write_text(use + "\n")
        (entry / "CONTENTS").write_text(f"obj /usr/bin/p{n} 0123456789abcdef {n}\n")


def package_list_cost(bed: Testbed) -> list[str]:
    """A snapshot with the package list recorded, against the snapshot alone."""
    ds = f"{bed.dataset}/vdb"
    root = bed.machines / "vdb"
    zfs("create", "-o", f"mountpoint={root}", ds)
    fake_vdb(root, PACKAGES)
    layer = Zfs()
    counter = iter(range(1_000_000))
    blob = b""
    with tempfile.TemporaryDirectory() as state:
        store = JobStore(Path(state) / "jobs.sqlite")

        def ours() -> None:
            nonlocal blob
            n = next(counter)
            asyncio.run(layer.snapshot(ds, f"gnspawn-{n}-pre", job=n))
            blob = packages.encode(packages.read(root))
            store.add_package_list(f"{ds}@gnspawn-{n}-pre", "vdb", n, blob)

        def snapshot_alone() -> None:
            n = next(counter)
            asyncio.run(layer.snapshot(ds, f"gnspawn-{n}-pre", job=n))

        a, b = alternate(ours, snapshot_alone, rounds=9)
        store.close()
    bed.remove_machine("vdb")
    return [
        row(
            f"snapshot with its package list ({PACKAGES:,} packages), vs the snapshot", a, b, "≤ 5x"
        ),
        value_row(f"package list of {PACKAGES:,} packages, stored", f"{len(blob) / 1024:.1f} KiB"),
    ]
