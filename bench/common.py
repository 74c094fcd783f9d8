"""What every benchmark shares: the test bed, timing rounds, and the table they print."""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

ROUNDS = 7


def timed(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def alternate(
    ours: Callable[[], object], baseline: Callable[[], object], rounds: int = ROUNDS
) -> tuple[list[float], list[float]]:
    """Time both, alternating, so that drift in the machine hits both alike."""
    a, b = [], []
    for _ in range(rounds):
        a.append(timed(ours))
        b.append(timed(baseline))
    return a, b


def row(what: str, ours: list[float], baseline: list[float], target: str) -> str:
    """A markdown table row: medians, spread, and the ratio that matters."""
    mo, mb = statistics.median(ours), statistics.median(baseline)
    spread = f"{min(ours) / mb:.2f} to {max(ours) / mb:.2f}" if mb else "-"
    times = f"{mo * 1000:.2f} ms | {mb * 1000:.2f} ms"
    return f"| {what} | {times} | {mo / mb:.2f}x | {spread} | {target} |"


HEADER = (
    "| measure | gnspawn (median) | baseline (median) | ratio | ratio range | target |\n"
    "|---|---|---|---|---|---|"
)
