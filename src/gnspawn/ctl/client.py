"""A thin async client of org.gnspawn1: calls, properties and the signals of jobs."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import socket
import struct
from collections.abc import Callable
from typing import Any

from dbus_fast import BusType, DBusError, Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from gnspawn.driver import add_match
from gnspawn.errors import BY_DBUS_NAME, GnspawnError
from gnspawn.names import BUS_NAME, JOB_INTERFACE, JOB_PATH_PREFIX, MANAGER_INTERFACE, MANAGER_PATH


class Unreachable(Exception):
    """gnspawnd cannot be reached."""


def domain_error(err: DBusError) -> Exception:
    """The D-Bus error as the exception the daemon raised, or Unreachable."""
    if err.type in BY_DBUS_NAME:
        return BY_DBUS_NAME[err.type](err.text)
    if err.type in (
        "org.freedesktop.DBus.Error.ServiceUnknown",
        "org.freedesktop.DBus.Error.NameHasNoOwner",
    ):
        return Unreachable("gnspawnd is not running (nobody owns org.gnspawn1 on the system bus)")
    if err.type == "org.freedesktop.DBus.Error.UnknownObject":
        return Unreachable(f"gnspawnd does not know that object: {err.text}")
    if err.type in ("org.freedesktop.DBus.Error.NoReply", "org.freedesktop.DBus.Error.Timeout"):
        return Unreachable(
            "gnspawnd did not answer in time; 'systemctl status gnspawnd' and "
            "'journalctl -u gnspawnd' tell why"
        )
    return GnspawnError(f"{err.text} ({err.type})")


SYSTEM_BUS_DEFAULT = "unix:path=/run/dbus/system_bus_socket"


def no_system_bus(err: Exception) -> str:
    """Why the system bus cannot be reached: the address tried, and what to check."""
    why = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
    if address := os.environ.get("DBUS_SYSTEM_BUS_ADDRESS"):
        return (
            f"cannot connect to the system bus at {address} (DBUS_SYSTEM_BUS_ADDRESS): {why}; "
            "check that a bus listens there, or unset DBUS_SYSTEM_BUS_ADDRESS for the default "
            f"{SYSTEM_BUS_DEFAULT}"
        )
    return (
        f"cannot connect to the system bus at {SYSTEM_BUS_DEFAULT} (the default; "
        f"DBUS_SYSTEM_BUS_ADDRESS is not set): {why}; check that dbus runs "
        "('systemctl status dbus'), or set DBUS_SYSTEM_BUS_ADDRESS to the bus to use"
    )


HOST = re.compile(
    r"(?:(?P<user>[^@:/\s-][^@:/\s]*)@)?"
    r"(?P<host>[^@:/\s-][^@:/\s]*|\[[0-9a-fA-F:]+\])(?::(?P<port>\d+))?"
)


def ssh_argv(host: str, *command: str) -> list[str]:
    """ssh to [USER@]HOST[:PORT] running COMMAND, as `machinectl -H` runs it: the ssh
    program is $SYSTEMD_SSH when set, so that one setting serves both tools."""
    match = HOST.fullmatch(host)
    if match is None:
        raise ValueError(f"not a host: {host!r} (expected [USER@]HOST[:PORT])")
    argv = [os.environ.get("SYSTEMD_SSH") or "ssh", "-xT"]
    if match["port"]:
        argv += ["-p", match["port"]]
    host_name = match["host"].strip("[]")  # [::1]:2222 is ssh's ::1 with -p 2222
    target = host_name if not match["user"] else f"{match['user']}@{host_name}"
    return [*argv, "--", target, *command]


async def _connect_over_ssh(host: str) -> tuple[MessageBus, asyncio.subprocess.Process]:
    """The remote system bus through `ssh HOST systemd-stdio-bridge`.

    dbus-fast dials sockets only, so the bus connects to a listening socket of our own
    (abstract, so nothing is left on disk) and ssh is started on the accepted end. Only a
    connection from this very process is accepted: the socket has no file permissions.
    """
    argv = ssh_argv(host, "systemd-stdio-bridge")
    loop = asyncio.get_running_loop()
    name = f"gnctl-{os.getpid()}-{secrets.token_hex(8)}"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(b"\0" + name.encode())
    listener.listen(4)
    listener.setblocking(False)

    async def bridge() -> asyncio.subprocess.Process:
        while True:
            conn, _ = await loop.sock_accept(listener)
            creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            if struct.unpack("3i", creds)[0] == os.getpid():
                break
            conn.close()
        with conn:
            return await asyncio.create_subprocess_exec(
                *argv, stdin=conn.fileno(), stdout=conn.fileno()
            )

    spawning = asyncio.create_task(bridge())
    try:
        bus = await MessageBus(bus_address=f"unix:abstract={name}").connect()
        return bus, await spawning
    except (OSError, EOFError, ValueError) as err:  # dbus-fast's AuthError is a ValueError
        if not spawning.done() or spawning.cancelled():
            spawning.cancel()
            raise Unreachable(f"cannot reach {host} over ssh: {err}") from err
        if (failed := spawning.exception()) is not None:
            raise Unreachable(f"cannot run {argv[0]}: {failed}") from failed
        ssh = spawning.result()
        try:
            status = await asyncio.wait_for(ssh.wait(), 5)
        except TimeoutError:
            ssh.kill()
            status = await ssh.wait()
        if status in (0, 127):  # 127: the remote shell found no such command
            raise Unreachable(
                f"cannot reach the system bus of {host}: is systemd-stdio-bridge installed "
                "there, and dbus running?"
            ) from err
        raise Unreachable(f"cannot reach {host} over ssh: ssh exited with status {status}") from err
    finally:
        spawning.cancel()
        listener.close()


class Client:
    """One connection to the system bus (local, or a remote one over ssh), talking to
    gnspawnd."""

    def __init__(self, bus: MessageBus, ssh: asyncio.subprocess.Process | None = None) -> None:
        self.bus = bus
        self.ssh = ssh
        self._signal_handlers: list[Callable[[Message], None]] = []
        bus.add_message_handler(self._dispatch)

    @classmethod
    async def connect(cls, host: str | None = None) -> Client:
        if host:
            bus, ssh = await _connect_over_ssh(host)
            return cls(bus, ssh)
        try:
            bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
        except (OSError, ValueError) as err:
            raise Unreachable(no_system_bus(err)) from err
        return cls(bus)

    async def close(self) -> None:
        self.bus.disconnect()
        if self.ssh is not None:
            # ssh ends when its end of the socket closes; wait so that no zombie is left.
            try:
                await asyncio.wait_for(self.ssh.wait(), 5)
            except TimeoutError:
                self.ssh.kill()
                await self.ssh.wait()

    def on_job_new(self, handler: Callable[[int, str], object]) -> None:
        """Call handler(job id, machine) for each job queued from now on (after a
        subscribe)."""

        def on_signal(msg: Message) -> None:
            if msg.member == "JobNew" and msg.path == MANAGER_PATH:
                handler(int(msg.body[0]), str(msg.body[2]))

        self._signal_handlers.append(on_signal)

    def _dispatch(self, msg: Message) -> None:
        if msg.message_type is MessageType.SIGNAL:
            for handler in self._signal_handlers:
                handler(msg)

    async def call(
        self, path: str, interface: str, member: str, signature: str = "", *body: Any
    ) -> list[Any]:
        reply = await self.bus.call(
            Message(
                destination=BUS_NAME,
                path=path,
                interface=interface,
                member=member,
                signature=signature,
                body=list(body),
            )
        )
        assert reply is not None
        if reply.message_type is MessageType.ERROR:
            raise domain_error(
                DBusError(reply.error_name or "", str(reply.body[0]) if reply.body else "")
            )
        return list(reply.body)

    async def manager(self, member: str, signature: str = "", *body: Any) -> list[Any]:
        return await self.call(MANAGER_PATH, MANAGER_INTERFACE, member, signature, *body)

    async def properties(self, path: str, interface: str) -> dict[str, Any]:
        (props,) = await self.call(
            path, "org.freedesktop.DBus.Properties", "GetAll", "s", interface
        )
        return {key: value.value for key, value in props.items()}

    async def job_properties(self, path: str) -> dict[str, Any]:
        return await self.properties(path, JOB_INTERFACE)

    async def subscribe(self, handler: Callable[[Message], None]) -> None:
        """Receive every signal gnspawnd sends about jobs (before a call, so none is missed)."""
        self._signal_handlers.append(handler)
        rule = f"type='signal',sender='{BUS_NAME}',path_namespace='{MANAGER_PATH}'"
        reply = await self.bus.call(add_match(rule))
        assert reply is not None and reply.message_type is MessageType.METHOD_RETURN

    async def watch_jobs(self) -> JobWatcher:
        """A watcher of job signals, subscribed before any job is queued."""
        watcher = JobWatcher()
        await self.subscribe(watcher)
        return watcher

    async def until_gone(self) -> None:
        """Return when gnspawnd leaves the bus, or the bus (or the ssh under it) goes:
        then no job signal will come, and waiting for one would be waiting forever."""
        gone = asyncio.get_running_loop().create_future()

        def on_signal(msg: Message) -> None:
            ended = msg.member == "NameOwnerChanged" and msg.body[0] == BUS_NAME
            if ended and not msg.body[2] and not gone.done():
                gone.set_result(None)

        self._signal_handlers.append(on_signal)
        rule = (
            "type='signal',sender='org.freedesktop.DBus',member='NameOwnerChanged',"
            f"arg0='{BUS_NAME}'"
        )
        await self.bus.call(add_match(rule))
        disconnected = asyncio.ensure_future(
            self.bus.wait_for_disconnect()  # type: ignore[no-untyped-call]
        )
        try:
            await asyncio.wait([gone, disconnected], return_when=asyncio.FIRST_COMPLETED)
        finally:
            disconnected.cancel()


def _ignore(*args: object) -> None:
    pass


class JobWatcher:
    """Follows jobs by their signals until each has been removed."""

    def __init__(
        self,
        on_log: Callable[[int, int, str], None] = _ignore,
        on_change: Callable[[int, dict[str, Any]], None] = _ignore,
        on_finished: Callable[[int], None] = _ignore,
    ) -> None:
        self.on_log = on_log
        self.on_change = on_change
        self.on_finished = on_finished
        self.results: dict[int, str] = {}
        self._watched: set[int] = set()
        self._early: dict[int, str] = {}
        self._done = asyncio.Event()

    def watch(self, job_id: int) -> None:
        self._watched.add(job_id)
        if job_id in self._early:
            self.finished(job_id, self._early.pop(job_id))

    def finished(self, job_id: int, result: str) -> None:
        if job_id in self._watched:
            self.results[job_id] = result
            self.on_finished(job_id)
            if self._watched <= set(self.results):
                self._done.set()
        else:
            self._early[job_id] = result

    async def wait(self) -> dict[int, str]:
        if self._watched <= set(self.results):
            return self.results
        await self._done.wait()
        return self.results

    def __call__(self, msg: Message) -> None:
        path = msg.path or ""
        if msg.member == "JobRemoved" and path == MANAGER_PATH:
            self.finished(int(msg.body[0]), str(msg.body[3]))
            return
        if not path.startswith(JOB_PATH_PREFIX):
            return
        job_id = int(path[len(JOB_PATH_PREFIX) :])
        if job_id not in self._watched:
            return
        if msg.member == "LogMessage":
            self.on_log(job_id, int(msg.body[0]), str(msg.body[1]))
        elif msg.member == "PropertiesChanged":
            changed = {k: v.value if isinstance(v, Variant) else v for k, v in msg.body[1].items()}
            self.on_change(job_id, changed)
