"""Logging to journald with structured fields, or to stderr where there is no journal."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import systemd.journal as sd_journal

IDENTIFIER = "gnspawnd"
JOURNAL_SOCKET = "/run/systemd/journal/socket"

# syslog priorities, as journald and the LogMessage signal carry them
ERR, WARNING, NOTICE, INFO = 3, 4, 5, 6


class _Journal:
    sendv: Callable[..., Any] | None = None
    """systemd.journal.sendv while journald listens."""


_journal = _Journal()


def setup(level: int = logging.INFO, *, journal: bool | None = None) -> None:
    """Send the daemon's log to journald when it listens, to stderr otherwise."""
    if journal is None:
        journal = os.path.exists(JOURNAL_SOCKET)
    handler: logging.Handler
    if journal:
        _journal.sendv = sd_journal.sendv
        handler = sd_journal.JournalHandler(SYSLOG_IDENTIFIER=IDENTIFIER)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        _journal.sendv = None
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    if not journal:
        logging.getLogger(__name__).warning("no journal at %s, logging to stderr", JOURNAL_SOCKET)


def fields(job: int, machine: str, phase: str) -> dict[str, str]:
    """The journal fields that tie an entry to a job, for logging's `extra`."""
    return {"GNSPAWN_JOB": str(job), "GNSPAWN_MACHINE": machine, "GNSPAWN_PHASE": phase}


def job_line(line: str, priority: int, job: int, machine: str, phase: str) -> None:
    """One line of a job's output: the hot path, so straight to the journal socket.

    sendv takes the fields ready-made: journal.send would also look up the caller's
    source line (a stack walk and a stat) for every line emerge prints.
    """
    if _journal.sendv is not None:
        _journal.sendv(
            "MESSAGE=" + line,
            _PRIORITIES[priority],
            _IDENTIFIER_FIELD,
            f"GNSPAWN_JOB={job}",
            "GNSPAWN_MACHINE=" + machine,
            "GNSPAWN_PHASE=" + phase,
        )
    else:
        sys.stderr.write(f"job {job} ({machine}, {phase}): {line}\n")


_PRIORITIES = {level: f"PRIORITY={level}" for level in range(8)}
_IDENTIFIER_FIELD = f"SYSLOG_IDENTIFIER={IDENTIFIER}"
