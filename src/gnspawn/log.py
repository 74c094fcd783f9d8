"""Logging to journald with structured fields, or to stderr where there is no journal."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
from collections import deque

import systemd.journal as sd_journal

IDENTIFIER = "gnspawnd"
JOURNAL_SOCKET = "/run/systemd/journal/socket"

# syslog priorities, as journald and the LogMessage signal carry them
ERR, WARNING, NOTICE, INFO = 3, 4, 5, 6


class _Journal:
    """The job lines' own connection to journald's socket, which never blocks.

    journald's socket holds only a few datagrams (net.unix.max_dgram_qlen) before a
    blocking send waits for journald; the daemon must go on serving the bus then. So
    a line that does not fit waits in `pending`, the job that printed it waits in
    drain() (and its emerge, once the pipe fills, waits for us): the queue is the
    backpressure, and the event loop stays free.
    """

    LONGEST = 48 * 1024
    """A datagram must fit in the socket's send buffer; longer lines are cut here."""

    def __init__(self) -> None:
        self.sock: socket.socket | None = None
        self.pending: deque[bytes] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        """The loop watching the socket for room, while lines are pending."""
        self._waiters: list[asyncio.Future[None]] = []

    def connect(self, path: str) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        sock.setblocking(False)
        sock.connect(path)
        self.close()
        self.sock = sock

    def close(self) -> None:
        if self.sock is not None:
            if self._loop is not None:
                self._loop.remove_writer(self.sock.fileno())
            self.sock.close()
        self.sock, self._loop = None, None
        self.pending.clear()
        self._wake()

    def send(self, datagram: bytes) -> None:
        if not self.pending and self._send(datagram):
            return
        self.pending.append(datagram)
        if self._loop is None and self.sock is not None:
            try:
                self._loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop (a tool, a test): wait as any program would
                self.sock.setblocking(True)
                self._flush()
                self.sock.setblocking(False)
                return
            self._loop.add_writer(self.sock.fileno(), self._on_writable)

    def _send(self, datagram: bytes) -> bool:
        """False when journald has no room for it now."""
        assert self.sock is not None
        try:
            self.sock.send(datagram)
        except BlockingIOError:
            return False
        except OSError as err:
            # journald went away (or is restarting): the line is lost, as it would be
            # for any program, but the daemon must not fail over it.
            logging.getLogger(__name__).debug("journal send failed: %s", err)
        return True

    def _flush(self) -> None:
        while self.pending and self._send(self.pending[0]):
            self.pending.popleft()

    def _on_writable(self) -> None:
        self._flush()
        if not self.pending and self._loop is not None and self.sock is not None:
            self._loop.remove_writer(self.sock.fileno())
            self._loop = None
            self._wake()

    def _wake(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    async def drain(self) -> None:
        """Return once every pending line is with journald."""
        while self.pending:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter


_journal = _Journal()


def setup(level: int = logging.INFO, *, journal: bool | None = None) -> None:
    """Send the daemon's log to journald when it listens, to stderr otherwise."""
    if journal is None:
        journal = os.path.exists(JOURNAL_SOCKET)
    if journal:
        try:
            _journal.connect(JOURNAL_SOCKET)
        except OSError:
            journal = False
    handler: logging.Handler
    if journal:
        handler = sd_journal.JournalHandler(SYSLOG_IDENTIFIER=IDENTIFIER)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        _journal.close()
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
    """One line of a job's output: the hot path, so straight to the journal socket in
    journald's native protocol. The caller awaits drained() now and then."""
    if _journal.sock is not None:
        message = line.encode(errors="replace")[: _Journal.LONGEST]
        _journal.send(
            b"MESSAGE=%s\n%s\nGNSPAWN_JOB=%d\nGNSPAWN_MACHINE=%s\nGNSPAWN_PHASE=%s\n%s\n"
            % (message, _PRIORITIES[priority], job, machine.encode(), phase.encode(), _IDENTIFIER)
        )
    else:
        sys.stderr.write(f"job {job} ({machine}, {phase}): {line}\n")


def backlog() -> bool:
    """Whether job lines wait for journald."""
    return bool(_journal.pending)


async def drained() -> None:
    """Wait until journald has taken every job line: a job's reader calls this when
    backlog() says so, which slows its emerge to journald's pace."""
    await _journal.drain()


_PRIORITIES = {level: b"PRIORITY=%d" % level for level in range(8)}
_IDENTIFIER = b"SYSLOG_IDENTIFIER=" + IDENTIFIER.encode()
