"""The one module that runs processes.

Every command is an argv list with a clean environment, stdin from /dev/null and a
process group of its own; a failure raises CommandFailed with the command, its exit
status and the tail of its output, never a return code to check.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shlex
import signal
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

_PR_SET_PDEATHSIG = 1
_TAIL_LINES = 20
_BLOCK = 16 << 10
_LONGEST_LINE = 1 << 20
_LINES_PER_TURN = 64
"""Lines a job handles before the event loop gets a turn (about a millisecond's work)."""
_libc = ctypes.CDLL(None, use_errno=True)


class CommandFailed(Exception):
    """A command exited non-zero (or by a signal)."""

    def __init__(self, argv: Sequence[str], returncode: int, output: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.output = output
        tail = "\n".join(output.strip().splitlines()[-_TAIL_LINES:])
        how = f"signal {-returncode}" if returncode < 0 else f"status {returncode}"
        super().__init__(
            f"{shlex.join(self.argv)} failed with {how}" + (f": {tail}" if tail else "")
        )

    @property
    def message(self) -> str:
        """The command's own last words, as a user would read them."""
        return self.output.strip().splitlines()[-1] if self.output.strip() else str(self)


def environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A clean environment: a known PATH and locale, plus `extra`."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
    }
    env.update(extra or {})
    return env


def _die_with_parent() -> None:
    # If the daemon is killed, the kernel kills the direct child with it; the rest of
    # the group is found by the next start (see Process.pid and recovery).
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


async def _start(
    argv: Sequence[str],
    env: Mapping[str, str] | None,
    *,
    stdin: int | None = None,
    stdout: int | None = None,
    die_with_parent: bool = True,
) -> asyncio.subprocess.Process:
    log.debug("running %s", shlex.join(argv))
    return await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL if stdin is None else stdin,
        stdout=asyncio.subprocess.PIPE if stdout is None else stdout,
        stderr=asyncio.subprocess.PIPE,
        env=environment(env),
        start_new_session=True,
        preexec_fn=_die_with_parent if die_with_parent else None,
    )


async def _complete(proc: asyncio.subprocess.Process, argv: Sequence[str]) -> str:
    out, err = await proc.communicate()
    if proc.returncode != 0:
        error = CommandFailed(argv, proc.returncode or 0, (err or b"").decode(errors="replace"))
        log.debug("%s", error)
        raise error
    return (out or b"").decode(errors="replace")


async def _to_the_end(work: Coroutine[Any, Any, T]) -> T:
    """Await `work`; if the caller is cancelled meanwhile, let it finish first.

    Commands run to completion are short (zfs): stopping one half way could leave
    storage half changed, and a subprocess cancelled while it starts can stall the
    event loop's shutdown.
    """
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await task
        raise


async def run(argv: Sequence[str], *, env: Mapping[str, str] | None = None) -> str:
    """Run a command to completion and return its standard output.

    Standard error is kept apart so that the output stays parseable; it becomes the
    message of CommandFailed. These are short commands (zfs) that change storage in
    one step: they need not die with the daemon, and without a preexec_fn Python
    starts them with vfork, not a copy of the daemon's page tables (a third of the
    cost of a `zfs snapshot`).
    """

    async def work() -> str:
        return await _complete(await _start(argv, env, die_with_parent=False), argv)

    return await _to_the_end(work())


async def pipeline(first: Sequence[str], second: Sequence[str]) -> None:
    """Run `first | second`, failing if either fails."""

    async def work() -> None:
        read, write = os.pipe()
        try:
            producer = await _start(first, None, stdout=write)
        finally:
            os.close(write)
        try:
            consumer = await _start(second, None, stdin=read)
        finally:
            os.close(read)
        try:
            await _complete(consumer, second)
        finally:
            await _complete(producer, first)

    await _to_the_end(work())


async def stream(
    first: Sequence[str],
    second: Sequence[str],
    counted: Callable[[int], None],
    *,
    env: Mapping[str, str] | None = None,
    block: int = 1 << 17,
) -> int:
    """Run `first | second` with the bytes passing through this process, and say how
    many went through so far (`counted`) as they go; the total.

    Both die with the daemon. A failure of either raises CommandFailed for the one that
    failed (the receiving end first: its words say why the sender's pipe broke). On
    cancel both are killed, and the cancel passes on.
    """
    # The producer's output is a pipe of our own, not one of asyncio's: zfs-fuse's
    # `zfs send` hands it to the zfs-fuse daemon, which writes to it and keeps it open
    # after the command is gone; an asyncio pipe still open counts the process as
    # running. Ours is closed when the stream ends, which stops such a writer too.
    loop = asyncio.get_running_loop()
    read, write = os.pipe()
    try:
        producer = await _start(first, env, stdout=write)
    finally:
        os.close(write)
    source = asyncio.StreamReader(limit=block)
    pipe, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(source), os.fdopen(read, "rb", 0)
    )
    try:
        consumer = await _start(
            second, env, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL
        )
    except BaseException:
        pipe.close()
        kill_group(producer.pid, signal.SIGKILL)
        await _to_the_end(producer.wait())
        raise
    assert consumer.stdin is not None
    errors = [asyncio.ensure_future(_read_all(p.stderr)) for p in (producer, consumer)]
    total = 0
    try:
        try:
            while chunk := await source.read(block):
                consumer.stdin.write(chunk)
                await consumer.stdin.drain()
                total += len(chunk)
                counted(total)
            consumer.stdin.close()
        except (BrokenPipeError, ConnectionResetError):
            kill_group(producer.pid, signal.SIGKILL)  # the far end is gone: stop sending
        finally:
            pipe.close()
        statuses = [await producer.wait(), await consumer.wait()]
    except BaseException:
        for proc in (producer, consumer):
            kill_group(proc.pid, signal.SIGKILL)
        for proc in (producer, consumer):
            await _to_the_end(proc.wait())
        raise
    said = [(await task).decode(errors="replace") for task in errors]
    for argv, status, output in reversed(list(zip((first, second), statuses, said, strict=True))):
        if status != 0:
            raise CommandFailed(argv, status, output)
    return total


async def _read_all(reader: asyncio.StreamReader | None) -> bytes:
    return await reader.read() if reader is not None else b""


class Process:
    """A long-running command whose merged stdout and stderr are read line by line."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        stop_timeout: float,
        tag: str = "",
    ) -> None:
        self.argv = list(argv)
        self.env = environment(env)
        self.stop_timeout = stop_timeout
        self.tag = tag
        """NAME=value in the environment that marks every process of this command."""
        self._proc: asyncio.subprocess.Process | None = None
        self._tail: list[str] = []

    @property
    def pid(self) -> int:
        """The process id, which is also the process group id."""
        assert self._proc is not None
        return self._proc.pid

    async def start(self) -> None:
        """Start the command in a process group of its own."""
        log.debug("starting %s", shlex.join(self.argv))
        self._proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
            preexec_fn=_die_with_parent,
            limit=1 << 20,
        )

    async def lines(self) -> AsyncIterator[str]:
        """Each line of output, without its newline.

        Output is read in blocks and split here: a readline per line costs more than
        the rest of a line's way. Every few dozen lines the event loop gets a turn, so
        that bus calls and other jobs are not held up by an emerge that prints at full
        speed.
        """
        assert self._proc is not None and self._proc.stdout is not None
        stream = self._proc.stdout
        rest = b""
        while block := await stream.read(_BLOCK):
            buffer = rest + block
            end = buffer.rfind(b"\n")
            if end >= 0:
                complete, rest = buffer[:end], buffer[end + 1 :]
            elif len(buffer) > _LONGEST_LINE:
                complete, rest = buffer, b""  # a line this long is handed over in pieces
            else:
                rest = buffer
                continue
            lines = complete.decode(errors="replace").split("\n")
            self._tail = [*self._tail, *lines][-_TAIL_LINES:]
            for n, line in enumerate(lines, 1):
                yield line.rstrip("\r")
                if n % _LINES_PER_TURN == 0:
                    await asyncio.sleep(0)
            await asyncio.sleep(0)
        if rest:
            line = rest.decode(errors="replace").rstrip("\r")
            self._tail = [*self._tail, line][-_TAIL_LINES:]
            yield line

    async def wait(self) -> None:
        """Wait for the command to exit; raise CommandFailed unless it exited 0."""
        assert self._proc is not None
        returncode = await self._proc.wait()
        if returncode != 0:
            raise CommandFailed(self.argv, returncode, "\n".join(self._tail))

    async def stop(self) -> None:
        """SIGTERM the whole process group, SIGKILL it after the grace period, reap it."""
        if self._proc is None:
            return
        kill_group(self._proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(self._proc.wait()), self.stop_timeout)
        except TimeoutError:
            log.warning("%s did not stop in %.0f s, killing it", self.argv[0], self.stop_timeout)
        # Children may outlive the leader; the group id stays valid while any live.
        kill_group(self._proc.pid, signal.SIGKILL)
        await self._proc.wait()
        if self.tag:
            await kill_tagged(self.tag)


def kill_group(pgid: int, sig: int) -> bool:
    """Signal a process group; False when it no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def tagged(tag: str) -> list[int]:
    """Processes whose environment holds `tag` (NAME=value): all that a command started
    with it, including those that left its process group."""
    wanted = tag.encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as environ:
                if wanted in environ.read().split(b"\0"):
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


async def kill_tagged(tag: str, rounds: int = 200) -> bool:
    """SIGKILL every process tagged `tag` until none is left, nor any process in a PID
    namespace of theirs; False if some survive `rounds` tries 50 ms apart.

    Portage runs some ebuild phases with a filtered environment, without the tag; they
    live in the PID namespace of the sandbox the tagged processes made, and go with it.
    """
    namespaces: set[str] = set()
    for _ in range(rounds):
        pids = tagged(tag)
        namespaces |= _pid_namespaces(pids)
        pids += _in_namespaces(namespaces)
        if not pids:
            return True
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        await asyncio.sleep(0.05)
    return not tagged(tag) and not _in_namespaces(namespaces)


def _pid_namespaces(pids: list[int]) -> set[str]:
    """The PID namespaces of these processes that are not ours."""
    own = os.readlink("/proc/self/ns/pid")
    found = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            namespace = os.readlink(f"/proc/{pid}/ns/pid")
            if namespace != own:
                found.add(namespace)
    return found


def _in_namespaces(namespaces: set[str]) -> list[int]:
    if not namespaces:
        return []
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{entry.name}/ns/pid") in namespaces:
                    found.append(int(entry.name))
    return found
