"""What packages tell the admin when they merge (elog), as notices of the job.

Every emerge gnspawn runs saves each package's elog messages of class warn, error and
log, and copies the file into the job's own PORTAGE_TMPDIR (PORTAGE_ELOG_SYSTEM=custom:
Portage's save module writes it, PORTAGE_ELOG_COMMAND copies it). After the emerge
gnspawnd reads them from there: that directory is writable by what runs in the
sandbox, so it is read as a root is (openat2, RESOLVE_IN_ROOT), regular files only,
each file and the whole cut short.
"""

from __future__ import annotations

import re
from pathlib import Path

from gnspawn import log as journal
from gnspawn import rootfs

DIRECTORY = "gnspawn-elog"
"""Inside the job's PORTAGE_TMPDIR."""
CLASSES = {"WARN": journal.WARNING, "ERROR": journal.ERR, "LOG": journal.INFO}
"""The classes kept (PORTAGE_ELOG_CLASSES), and the priority of each."""
_FILE = re.compile(r"([A-Za-z0-9_][A-Za-z0-9+_.-]*):([A-Za-z0-9_][A-Za-z0-9+_.-]*):[0-9-]+\.log")
_HEADER = re.compile(r"([A-Z]+): [a-z_]+")
_MOST_FILES = 1000
_MOST_BYTES = 64 * 1024
"""Of each file; the job keeps at most recorder.MOST_NOTICES notices in all."""


def environment(portage_tmpdir: Path) -> dict[str, str]:
    """What makes an emerge save its elog messages where `collect` finds them."""
    target = f"{portage_tmpdir}/{DIRECTORY}/"
    return {
        "PORTAGE_ELOG_CLASSES": " ".join(CLASSES).lower(),
        "PORTAGE_ELOG_SYSTEM": "custom",
        "PORTAGE_ELOG_COMMAND": f"cp -- '${{LOGFILE}}' '{target}'",
    }


def prepare(job_tmpdir: Path) -> None:
    (job_tmpdir / DIRECTORY).mkdir(mode=0o755)


def read(job_tmpdir: Path) -> list[tuple[str, int, str]]:
    """The elog messages an emerge left in `job_tmpdir`: (package, priority, text)."""
    try:
        names = sorted(rootfs.listdir(job_tmpdir, DIRECTORY, _MOST_FILES))
    except OSError:
        return []
    found = []
    for name in names:
        if not (match := _FILE.fullmatch(name)):
            continue
        try:
            text = rootfs.read_text(job_tmpdir, f"{DIRECTORY}/{name}", limit=_MOST_BYTES)
        except OSError:
            continue
        package = f"{match[1]}/{match[2]}"
        found += [(package, priority, message) for priority, message in _messages(text)]
    return found


def _messages(text: str) -> list[tuple[int, str]]:
    """The kept messages of a saved elog file: blocks under a `CLASS: phase` line."""
    messages: list[tuple[int, str]] = []
    priority: int | None = None
    lines: list[str] = []

    def flush() -> None:
        if priority is not None and (message := "\n".join(lines).strip()):
            messages.append((priority, message))

    for line in text.splitlines():
        if header := _HEADER.fullmatch(line):
            flush()
            priority, lines = CLASSES.get(header[1]), []
        else:
            lines.append(line)
    flush()
    return messages
