"""Where the CPU time of one binary-package emerge goes.

A fleet's followers install a binary package: there, emerge's own cost is all there
is. perf (when installed) splits the CPU time of the whole process tree by program;
py-spy splits emerge's Python time by what it was doing.
"""

from __future__ import annotations

import collections
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from common import emerge_argv, emerge_env

from testbed import VENV_BIN, Testbed

PYTHON_STEPS = (
    ("filter-bash-environment.py", "helper scripts (filter-bash-environment.py)"),
    ("MergeProcess._target", "merge into the root (dblink, vdb)"),
    ("Scheduler.merge", "scheduler: binpkg extract, ebuild phases"),
    ("action_build", "dependency calculation"),
    ("load_emerge_config", "configuration"),
    ("_find_and_load", "imports"),
)
RATE = 500


def _cpu(work: list[str], bed: Testbed) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(
        work, env=emerge_env(bed), stdin=subprocess.DEVNULL, capture_output=True, check=True
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return time.perf_counter() - started, cpu


def _by_program(report: str) -> list[tuple[str, float]]:
    shares = []
    for line in report.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].endswith("%"):
            shares.append((parts[1], float(parts[0][:-1])))
    return shares


def _perf_report(data: Path, key: str) -> str:
    argv = ["perf", "report", "-i", str(data), "--sort", key, "--stdio", "-q"]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def _python_steps(raw: Path) -> collections.Counter[str]:
    steps: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        names = {frame.split(" (")[0] for frame in frames if not frame.startswith("process ")}
        process = [frame for frame in frames if frame.startswith("process ")][-1]
        for marker, step in PYTHON_STEPS:
            if marker in names or marker in process:
                steps[step] += int(count)
                break
        else:
            steps["other Python"] += int(count)
    return steps


def profile(bed: Testbed, root: Path, reset: object) -> list[str]:
    """Profile one binary install into `root`; `reset()` puts the root back before each run."""
    assert callable(reset)
    argv = emerge_argv(root, "--usepkg=y", "--buildpkg=y")
    reset()
    wall, cpu = _cpu(argv, bed)
    reset()
    pretend_wall, pretend_cpu = _cpu([*argv, "--pretend"], bed)
    lines = [
        f"One binary-package update (`emerge -1uv @system @world @profile`, 1 package): "
        f"{wall:.2f} s wall, {cpu:.2f} s CPU; the same with --pretend (start-up and "
        f"dependency calculation only): {pretend_wall:.2f} s wall, {pretend_cpu:.2f} s CPU.",
        "",
    ]
    scratch = Path(tempfile.mkdtemp(prefix="emerge-profile-"))
    try:
        if shutil.which("perf"):
            reset()
            data = scratch / "perf.data"
            _cpu(["perf", "record", "-q", "-e", "cpu-clock", "-F", "1000", "-o", str(data),
                  "--", *argv], bed)  # fmt: skip
            report, pids = (_perf_report(data, key) for key in ("comm", "pid"))
            processes = sum(1 for line in pids.splitlines() if line.strip())
            lines += [
                f"CPU by program (perf, {processes} processes): "
                + ", ".join(f"{name} {share:.0f}%" for name, share in _by_program(report)[:6])
                + ". `python` is emerge itself (the venv's entry point starts the real "
                "emerge as a second interpreter); `python3.11` are Portage's helper "
                "scripts, one interpreter each.",
                "",
            ]
        reset()
        raw = scratch / "py-spy.txt"
        _cpu([str(VENV_BIN / "py-spy"), "record", "--subprocesses", "--nonblocking",
              "--format", "raw", "-r", str(RATE), "-o", str(raw), "--", *argv], bed)  # fmt: skip
        steps = _python_steps(raw)
        total = sum(steps.values())
        lines += [
            "| emerge's Python CPU (py-spy) | ms | share |",
            "|---|---|---|",
            *(
                f"| {step} | {count * 1000 / RATE:.0f} | {count * 100 / total:.0f}% |"
                for step, count in steps.most_common()
            ),
            "",
        ]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        reset()
    return lines
