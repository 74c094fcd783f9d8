"""Log throughput: a job whose emerge prints 200,000 lines, against emerge to /dev/null.

app-misc/chatty-2 prints 200,000 lines while it compiles. Through gnspawnd each line
goes through the progress parser, to journald and out as LogMessage (to a listener
that counts them); by hand the same emerge writes to /dev/null.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import subprocess
from pathlib import Path

from common import emerge, row, timed, update_over_the_bus, value_row

from testbed import Testbed, zfs

LINES = 200_000
BINARY = ("--usepkg=y", "--buildpkg=y")
ROUNDS = 3


class Chatty:
    """Machines with chatty-1 installed, put back to that state on demand."""

    def __init__(self, bed: Testbed, names: list[str]) -> None:
        self.bed = bed
        self.names = names
        self.pkgdir = bed.work / "packages"
        self.seeded = bed.dir / "packages-seeded"

    def seed(self) -> None:
        for name in self.names:
            self.bed.seed(name, ("--usepkg", "=app-misc/chatty-1"))
            zfs("snapshot", f"{self.bed.dataset}/{name}@bench-start")
        shutil.rmtree(self.seeded, ignore_errors=True)
        shutil.copytree(self.pkgdir, self.seeded)

    def reset(self) -> None:
        """Back to chatty-1, and PKGDIR without chatty-2: the update compiles again."""
        for name in self.names:
            zfs("rollback", "-r", f"{self.bed.dataset}/{name}@bench-start")
        shutil.rmtree(self.pkgdir)
        shutil.copytree(self.seeded, self.pkgdir)


def cpu_seconds(pid: int) -> float:
    """User and system time of a process itself so far (not its children's: emerge is
    gnspawnd's child)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def journal_lines(job: int) -> int:
    subprocess.run(["journalctl", "--flush"], capture_output=True, check=False)
    out = subprocess.run(
        ["journalctl", "-D", "/run/log/journal", f"GNSPAWN_JOB={job}", "-o", "cat", "-q"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return out.count("\n")


async def follow_update(name: str) -> tuple[int, int]:
    return await update_over_the_bus(name, count_log=True)


def throughput(bed: Testbed) -> list[str]:
    chatty = Chatty(bed, ["chatty0"])
    chatty.seed()
    root = bed.machines / "chatty0"
    ours: list[float] = []
    by_hand: list[float] = []
    jobs: list[tuple[int, int]] = []
    for _ in range(ROUNDS):
        chatty.reset()
        ours.append(timed(lambda: jobs.append(asyncio.run(follow_update("chatty0")))))
        chatty.reset()
        by_hand.append(timed(lambda: emerge(bed, root, *BINARY, output=Path("/dev/null"))))
    # Where the CPU goes in one more run: the cores the lines cost, beside emerge's own.
    chatty.reset()
    assert bed.daemon is not None
    parts = {
        "gnspawnd": bed.daemon.pid,
        "journald": bed.journal.proc.pid,
        "dbus-daemon": bed.bus.proc.pid,
    }
    before = {name: cpu_seconds(pid) for name, pid in parts.items()}
    listener = os.times()
    wall = timed(lambda: jobs.append(asyncio.run(follow_update("chatty0"))))
    spent = {name: cpu_seconds(pid) - before[name] for name, pid in parts.items()}
    spent["listener"] = sum(os.times()[:2]) - sum(listener[:2])
    chatty.reset()
    job, signals = jobs[-1]
    journaled = journal_lines(job)
    assert signals >= LINES, f"only {signals} LogMessage signals"
    rate = LINES / statistics.median(ours)
    return [
        row(f"emerge printing {LINES:,} lines, through gnspawnd", ours, by_hand, "≤ 1.05x"),
        value_row(
            "lines through parser, journald and LogMessage",
            f"{rate:,.0f} lines/s",
            baseline=f"journal {journaled:,}, LogMessage {signals:,} lines of the last job",
        ),
        value_row(
            "CPU seconds beside emerge, per component",
            ", ".join(f"{name} {seconds:.1f}" for name, seconds in spent.items()),
            baseline=f"in {wall:.1f} s of wall time on {os.cpu_count()} cores",
        ),
    ]
