"""`make bench`: run the benchmarks on the real test bed and write bench/results/latest.md.

Each figure is a ratio against a baseline measured in the same run, alternating,
over several rounds (median and range): raw `zfs snapshot`/`zfs rollback`, the bus's
own round trip (org.freedesktop.DBus.ListNames), the same emerge run by hand, and
hand-written fleet loops.

`run.py SECTION...` runs only the named sections (fleet, basics, logs,
package-lists, load, footprint, scaling) and prints their rows without writing the results file.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from basics import bus_latency, job_overhead, snapshot_cost
from common import HEADER, REPO
from confinement import sandbox_cost
from fleet import MACHINES, fleet
from footprint import footprint
from load import bus_latency_under_load
from logs import throughput
from package_lists import package_list_cost
from scaling import scaling

from testbed import Testbed, enter_private_namespace

RESULTS = REPO / "bench" / "results"


class Report:
    def __init__(self) -> None:
        self.rows: list[str] = []
        self.notes: list[str] = []
        self.scaling: list[str] = []


def run_fleet(bed: Testbed, report: Report) -> None:
    rows, notes = fleet(bed)
    report.rows += rows
    report.notes += notes
    for name in MACHINES:
        bed.remove_machine(name)


def run_basics(bed: Testbed, report: Report) -> None:
    bed.seed("web")
    overhead = job_overhead(bed)  # also leaves jobs to read properties of
    report.rows += [snapshot_cost(bed), *bus_latency(), overhead, sandbox_cost(bed)]


def run_logs(bed: Testbed, report: Report) -> None:
    report.rows += throughput(bed)


def run_package_lists(bed: Testbed, report: Report) -> None:
    report.rows += package_list_cost(bed)


def run_load(bed: Testbed, report: Report) -> None:
    report.rows += bus_latency_under_load(bed)


def run_footprint(bed: Testbed, report: Report) -> None:
    report.rows += footprint(bed)


def run_scaling(bed: Testbed, report: Report) -> None:
    report.scaling += scaling(bed)


SECTIONS: dict[str, Callable[[Testbed, Report], None]] = {
    "fleet": run_fleet,
    "basics": run_basics,
    "logs": run_logs,
    "package-lists": run_package_lists,
    "load": run_load,
    "footprint": run_footprint,
    "scaling": run_scaling,
}


def render(report: Report, elapsed: float) -> str:
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    lines = [f"Measured {time.strftime('%Y-%m-%d')} on {machine}, in {elapsed / 60:.1f} min.", ""]
    lines += [HEADER, *report.rows, ""]
    if report.scaling:
        lines += [
            "Scaling (median of 20 calls, of 3 for UpdateAll, each alternating with its "
            "baselines; a ratio is the median of the rounds' ratios; daemon started fresh "
            "at each size):",
            "",
        ]
        lines += [*report.scaling, ""]
    if report.notes:
        lines += ["Where a binary-package emerge spends its time:", "", *report.notes]
    return "\n".join(lines)


def private_host_config(sandbox: Path) -> Path:
    """Give the venv's etc/portage (which emerge reads even with --config-root) a
    private copy in this mount namespace: a test run at the same time rewrites it."""
    enter_private_namespace()
    host = Path(sys.prefix) / "etc" / "portage"
    private = sandbox / "host-portage"
    private.mkdir()
    host.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "--bind", str(private), str(host)], check=True)
    return sandbox


def main(argv: list[str]) -> int:
    if os.geteuid() != 0:
        print("make bench needs root (zfs-fuse, mounts, journald)", file=sys.stderr)
        return 1
    unknown = set(argv) - set(SECTIONS)
    if unknown:
        print(f"unknown sections {sorted(unknown)}; known: {list(SECTIONS)}", file=sys.stderr)
        return 64
    chosen = argv or list(SECTIONS)
    if "load" in chosen and "logs" not in chosen:
        chosen.insert(chosen.index("load"), "logs")  # load reads a finished job's property
    sandbox = Path(tempfile.mkdtemp(prefix="gnspawn-bench-", dir="/var/tmp"))
    sandbox.chmod(0o755)
    started = time.perf_counter()
    report = Report()
    bed = Testbed(private_host_config(sandbox))
    try:
        bed.start_daemon()
        for name, section in SECTIONS.items():
            if name in chosen:
                print(f"== {name}", file=sys.stderr, flush=True)
                section(bed, report)
    finally:
        bed.stop()
        shutil.rmtree(sandbox, ignore_errors=True)
    text = render(report, time.perf_counter() - started)
    if not argv:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "latest.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
