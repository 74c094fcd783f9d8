"""Logging to journald with structured fields, or to stderr where there is no journal."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import sys
from collections import deque

IDENTIFIER = "gnspawnd"
JOURNAL_SOCKET = "/run/systemd/journal/socket"

# syslog priorities, as journald and the LogMessage signal carry them
ERR, WARNING, NOTICE, INFO = 3, 4, 5, 6
PRIORITY_NAMES = {ERR: "err", WARNING: "warning", NOTICE: "notice", INFO: "info"}
"""As syslog and journalctl -p name them."""


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
        self.path = ""
        self.pending: deque[bytes] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        """The loop watching the socket for room, while lines are pending."""
        self._waiters: list[asyncio.Future[None]] = []

    def connect(self, path: str) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        sock.setblocking(False)
        sock.connect(path)
        self.close()
        self.sock, self.path = sock, path

    def _reconnect(self) -> bool:
        """A new connection after journald restarted (its socket is a new one)."""
        assert self.sock is not None
        fresh = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        fresh.setblocking(self.sock.getblocking())
        try:
            fresh.connect(self.path)
        except OSError:
            fresh.close()
            return False
        if self._loop is not None:
            self._loop.remove_writer(self.sock.fileno())
            self._loop.add_writer(fresh.fileno(), self._on_writable)
        self.sock.close()
        self.sock = fresh
        return True

    def close(self) -> None:
        if self.sock is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_writer(self.sock.fileno())
            self.sock.close()
        self.sock, self._loop = None, None
        self.pending.clear()
        self._wake()

    def send(self, datagram: bytes) -> None:
        if not self.pending and self._send(datagram):
            return
        self.pending.append(datagram)
        if self.sock is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:  # no loop (at exit, a tool, a test): wait as any program would
            self.flush()
            return
        if self._loop is not running:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_writer(self.sock.fileno())
            self._loop = running
            running.add_writer(self.sock.fileno(), self._on_writable)

    def flush(self) -> None:
        """Hand every pending line to journald, waiting for it: when the daemon stops,
        or where no event loop runs."""
        if self.sock is None:
            return
        if self._loop is not None:
            if not self._loop.is_closed():
                self._loop.remove_writer(self.sock.fileno())
            self._loop = None
        self.sock.setblocking(True)
        try:
            self._flush()
        finally:
            self.sock.setblocking(False)
        self._wake()

    def _send(self, datagram: bytes) -> bool:
        """False when journald has no room for it now."""
        assert self.sock is not None
        for attempt in range(2):
            try:
                self.sock.send(datagram)
            except BlockingIOError:
                return False
            except OSError as err:
                if attempt == 0 and err.errno in _GONE and self._reconnect():
                    continue
                # journald is not there: the line is lost, as it would be for any
                # program, but the daemon must not fail over it.
                sys.stderr.write(f"gnspawnd: journal: {err.strerror}\n")
            return True
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
        handler = JournalHandler()
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


def _field(name: bytes, value: bytes) -> bytes:
    """One field in journald's native protocol: NAME=value, or the length-prefixed form
    when the value spans lines (a bare newline would end the field early)."""
    if b"\n" not in value:
        return b"%s=%s\n" % (name, value)
    return b"%s\n%s%s\n" % (name, len(value).to_bytes(8, "little"), value)


def job_line(
    line: str, priority: int, job: int, machine: str, phase: str, *, package: str = ""
) -> None:
    """One line of a job's output: the hot path, so straight to the journal socket in
    journald's native protocol. The caller awaits drained() now and then. `package`
    (GNSPAWN_PACKAGE) names the package a line is about, when it is about one."""
    if _journal.sock is not None:
        message = line.encode(errors="replace")[: _Journal.LONGEST]
        about = _field(b"GNSPAWN_PACKAGE", package.encode(errors="replace")) if package else b""
        _journal.send(
            _field(b"MESSAGE", message)
            + b"%s\nGNSPAWN_JOB=%d\nGNSPAWN_MACHINE=%s\nGNSPAWN_PHASE=%s\n%s\n"
            % (_PRIORITIES[priority], job, machine.encode(), phase.encode(), _IDENTIFIER)
            + about
        )
    else:
        sys.stderr.write(f"job {job} ({machine}, {phase}): {line}\n")


class JournalHandler(logging.Handler):
    """The daemon's own log records, in the same queue as the job lines: in order with
    them, and never blocking the event loop while journald is behind. Upper-case
    `extra` fields (GNSPAWN_JOB, ...) become journal fields."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record).encode(errors="replace")[: _Journal.LONGEST]
            datagram = [
                _field(b"MESSAGE", message),
                _PRIORITIES[_LEVELS.get(record.levelno, INFO)] + b"\n",
                _IDENTIFIER + b"\n",
                _field(b"LOGGER", record.name.encode()),
            ]
            for key, value in record.__dict__.items():
                if key.isupper() and key.replace("_", "").isalnum():
                    datagram.append(_field(key.encode(), str(value).encode(errors="replace")))
            _journal.send(b"".join(datagram))
        except Exception:
            self.handleError(record)


_LEVELS = {
    logging.CRITICAL: 2,
    logging.ERROR: ERR,
    logging.WARNING: WARNING,
    logging.INFO: INFO,
    logging.DEBUG: 7,
}


def flush() -> None:
    """Hand every pending journal line over, waiting for journald: at the end."""
    _journal.flush()


def backlog() -> bool:
    """Whether job lines wait for journald."""
    return bool(_journal.pending)


async def drained() -> None:
    """Wait until journald has taken every job line: a job's reader calls this when
    backlog() says so, which slows its emerge to journald's pace."""
    await _journal.drain()


_PRIORITIES = {level: b"PRIORITY=%d" % level for level in range(8)}
_GONE = {errno.ECONNREFUSED, errno.ENOTCONN, errno.ENOENT}
_IDENTIFIER = b"SYSLOG_IDENTIFIER=" + IDENTIFIER.encode()
