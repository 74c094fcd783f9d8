"""What gnctl shows while it waits for jobs.

On a terminal, one status line per job is redrawn in place (`[3/12] dev-libs/foo-1.2  25%
emerge  0:42`), with gnspawnd's notices (and with --verbose all of emerge's lines)
scrolling above it. Off a terminal, each new package or phase is one plain line, and
the log lines are plain lines too. --quiet shows neither: only the summary `follow`
prints at the end.
"""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

CLEAR_LINE = "\r\x1b[K"
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """`text` without the control characters a terminal would act on (escape
    sequences among them): what a job says may come from a container."""
    return _CONTROLS.sub("\ufffd", text)


NOTICE = 5  # syslog priority: what is shown without --verbose
CURSOR_UP = "\x1b[A"


@dataclass
class JobView:
    """What is known of one job from its properties and their changes."""

    machine: str
    state: str = "waiting"
    phase: str = ""
    current: str = ""
    done: int = 0
    total: int = 0
    progress: int = 0
    started_usec: int = 0
    follows: int = 0
    first_seen: float = field(default_factory=time.monotonic)

    def update(self, props: dict[str, Any]) -> None:
        for key, attr in (
            ("Machine", "machine"),
            ("State", "state"),
            ("Phase", "phase"),
            ("CurrentPackage", "current"),
            ("PackagesDone", "done"),
            ("PackagesTotal", "total"),
            ("Progress", "progress"),
            ("StartedUSec", "started_usec"),
            ("Follows", "follows"),
        ):
            if key in props:
                setattr(self, attr, props[key])

    def elapsed(self, now: float) -> float:
        """Seconds since the job started (or since gnctl saw it, while it waits)."""
        if self.started_usec:
            return max(0.0, now - self.started_usec / 1e6)
        return time.monotonic() - self.first_seen

    def line(self, now: float) -> str:
        minutes, seconds = divmod(int(self.elapsed(now)), 60)
        clock = f"{minutes}:{seconds:02d}"
        if self.state == "waiting" or self.phase == "queued":
            waits = f"waiting for job {self.follows}" if self.follows else "waiting"
            return f"{waits}  {clock}"
        counted = f"[{min(self.done + 1, self.total)}/{self.total}]" if self.total else ""
        parts = [" ".join(p for p in (counted, self.current) if p)]
        if self.total:
            parts.append(f"{self.progress}%")
        parts.append(self.phase)
        parts.append(clock)
        return "  ".join(p for p in parts if p)

    def milestone(self) -> tuple[bool, str, str]:
        """What makes a plain line worth printing: a new phase or package (a job that
        started but has not left its queued phase still reads "waiting")."""
        waiting = self.state == "waiting" or self.phase == "queued"
        return (waiting, "" if waiting else self.phase, self.current)


class Display:
    """Shows the jobs gnctl waits for, as the output stream allows."""

    def __init__(self, out: TextIO, *, verbose: bool, quiet: bool, multiple: bool) -> None:
        self.out = out
        self.tty = out.isatty()
        self.verbose = verbose and not quiet
        self.quiet = quiet
        self.multiple = multiple
        self.jobs: dict[int, JobView] = {}
        self._early: dict[int, list[dict[str, Any]]] = {}
        """Changes of jobs watched but not shown yet (their properties are on the way)."""
        self._printed: dict[int, tuple[bool, str, str]] = {}
        self._drawn = 0

    def _prefix(self, job_id: int) -> str:
        return f"[{job_id}] " if self.multiple else ""

    def watch(self, job_id: int, props: dict[str, Any]) -> None:
        view = JobView(machine=str(props.get("Machine", "")))
        view.update(props)
        for changed in self._early.pop(job_id, []):
            view.update(changed)
        self.jobs[job_id] = view
        self._show(job_id)

    def change(self, job_id: int, changed: dict[str, Any]) -> None:
        if (view := self.jobs.get(job_id)) is None:
            self._early.setdefault(job_id, []).append(changed)
            return
        view.update(changed)
        self._show(job_id)

    def log(self, job_id: int, priority: int, line: str) -> None:
        """A line of the job's log: gnspawnd's notices, warnings and errors always (a
        snapshot taken, a rollback, emerge's ERROR lines), everything with --verbose."""
        if self.quiet or (priority > NOTICE and not self.verbose):
            return
        if (view := self.jobs.get(job_id)) is not None and view.state == "finished":
            return  # the job's closing line: the summary at the end says it
        self._above(self._prefix(job_id) + line)

    def finished(self, job_id: int) -> None:
        self._early.pop(job_id, None)
        if self.jobs.pop(job_id, None) is not None and self.tty and not self.quiet:
            self.redraw()

    def tick(self) -> None:
        """Redraw the clocks: called every second while jobs run."""
        if self.tty and not self.quiet and self.jobs:
            self.redraw()

    def close(self) -> None:
        """Take the status lines away before the summary is printed."""
        if self.tty:
            self._erase()
            self.out.flush()

    def _show(self, job_id: int) -> None:
        if self.quiet:
            return
        if self.tty:
            self.redraw()
            return
        view = self.jobs[job_id]
        if self._printed.get(job_id) != view.milestone() and view.state != "finished":
            self._printed[job_id] = view.milestone()
            self._above(self._prefix(job_id) + view.line(time.time()))

    def _above(self, text: str) -> None:
        """A line that stays, printed above the status lines."""
        text = printable(text)
        if self.tty:
            self._erase()
            self.out.write(text + "\n")
            self._draw()
        else:
            self.out.write(text + "\n")
        self.out.flush()

    def redraw(self) -> None:
        self._erase()
        self._draw()
        self.out.flush()

    def _erase(self) -> None:
        if self._drawn:
            self.out.write(CLEAR_LINE + (CURSOR_UP + CLEAR_LINE) * (self._drawn - 1))
            self._drawn = 0

    def _draw(self) -> None:
        if self.quiet or not self.jobs:
            return
        size = shutil.get_terminal_size()
        width = max(20, size.columns - 1)
        now = time.time()
        views = list(self.jobs.values())
        # More lines than the screen has rows would scroll, and erasing would miss them.
        room = max(1, size.lines - 2)
        shown = views if len(views) <= room else views[: room - 1]
        lines = [(f"{view.machine}: " if self.multiple else "") + view.line(now) for view in shown]
        if len(shown) < len(views):
            hidden = views[len(shown) :]
            waiting = sum(view.state == "waiting" for view in hidden)
            lines.append(f"... and {len(hidden)} more ({waiting} waiting)")
        # A line longer than the terminal would wrap, and erasing would miss a row.
        self.out.write("\n".join(line[:width] for line in lines))
        self._drawn = len(lines)
