"""Fleet update: `gnctl update --all` on 8 machines against three hand-written loops.

Each machine has app-misc/slow-1; slow-2 takes 3 s to compile. The baselines, each
from the same start (datasets rolled back, PKGDIR as after seeding):
the seed's loop building from source everywhere; the same loop with buildpkg and
--usepkg over a shared PKGDIR; and the floor, where the first machine builds and the
rest install the binary package two at a time.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

from common import emerge, peak_rss, row, value_row
from emerge_profile import profile

from testbed import VENV_BIN, Testbed, zfs

MACHINES = [f"fleet{n}" for n in range(8)]
ROUNDS = 3
SOURCE = ("--usepkg=n", "--buildpkg=n")
BINARY = ("--usepkg=y", "--buildpkg=y")


class Fleet:
    def __init__(self, bed: Testbed) -> None:
        self.bed = bed
        self.pkgdir = bed.work / "packages"
        self.seeded = bed.dir / "packages-seeded"

    def seed(self) -> None:
        for name in MACHINES:
            self.bed.seed(name, ("--usepkg", "=app-misc/slow-1"))
            zfs("snapshot", f"{self.bed.dataset}/{name}@bench-start")
        shutil.rmtree(self.seeded, ignore_errors=True)
        shutil.copytree(self.pkgdir, self.seeded)

    def reset(self) -> None:
        for name in MACHINES:
            zfs("rollback", "-r", f"{self.bed.dataset}/{name}@bench-start")
        shutil.rmtree(self.pkgdir)
        shutil.copytree(self.seeded, self.pkgdir)

    def loop(self, options: tuple[str, ...]) -> None:
        for name in MACHINES:
            emerge(self.bed, self.bed.machines / name, *options)

    def floor(self) -> None:
        first, *rest = MACHINES
        emerge(self.bed, self.bed.machines / first, *BINARY)
        with ThreadPoolExecutor(2) as pool:
            for done in pool.map(lambda m: emerge(self.bed, self.bed.machines / m, *BINARY), rest):
                assert done is None

    def gnspawn(self) -> None:
        subprocess.run(
            [str(VENV_BIN / "gnctl"), "update", "--all", "-q"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            check=True,
        )

    def check_updated(self) -> None:
        for name in MACHINES:
            version = self.bed.machines / name / "usr/share/slow/version"
            assert version.read_text().strip() == "2", f"{name} was not updated"


def fleet(bed: Testbed) -> tuple[list[str], list[str]]:
    """Rows: gnspawn against each baseline, and the daemon's peak RSS meanwhile; and
    where one binary install's time goes."""
    f = Fleet(bed)
    f.seed()
    f.reset()
    emerge(bed, bed.machines / MACHINES[0], *BINARY)
    follower = f"{bed.dataset}/{MACHINES[1]}@bench-start"
    notes = profile(bed, bed.machines / MACHINES[1], lambda: zfs("rollback", "-r", follower))
    assert bed.daemon is not None
    runs: dict[str, list[float]] = {"gnspawn": [], "source": [], "binary": [], "floor": []}
    work = {
        "gnspawn": f.gnspawn,
        "source": lambda: f.loop(SOURCE),
        "binary": lambda: f.loop(BINARY),
        "floor": f.floor,
    }
    peak = 0.0
    for _ in range(ROUNDS):
        for name, run in work.items():
            f.reset()
            with peak_rss(bed.daemon.pid) as sampled:
                started = time.perf_counter()
                run()
                runs[name].append(time.perf_counter() - started)
            f.check_updated()
            if name == "gnspawn":
                peak = max(peak, sampled[0])
    f.reset()
    ours = runs["gnspawn"]
    what = f"fleet update, {len(MACHINES)} machines, 3 s compile"
    return [
        row(f"{what}, vs source loop", ours, runs["source"], "≤ 0.45x"),
        row(f"{what}, vs binary-package loop", ours, runs["binary"], "≤ 0.90x"),
        row(f"{what}, vs floor (1 build, 2 parallel installs)", ours, runs["floor"], "≤ 1.10x"),
        value_row("RSS during the fleet update (peak)", f"{peak:.1f} MB", "≤ 45 MB"),
    ], notes
