"""Another host's gnspawnd, over ssh: how gnctl -H and a Send reach it.

ssh is run as `machinectl -H` runs it ($SYSTEMD_SSH when set), and the far end's
system bus is carried by `systemd-stdio-bridge` there.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import socket
import struct
from typing import Any

from dbus_fast import DBusError, MessageType
from dbus_fast.aio import MessageBus

from gnspawn.driver import reply_to
from gnspawn.errors import BY_DBUS_NAME, GnspawnError, InvalidHost
from gnspawn.names import BUS_NAME, MANAGER_INTERFACE, MANAGER_PATH, shown


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


HOST = re.compile(
    r"(?:(?P<user>[A-Za-z0-9_][A-Za-z0-9_.-]*)@)?"
    r"(?P<host>[A-Za-z0-9][A-Za-z0-9_.-]*|\[[0-9a-fA-F:]+\])(?::(?P<port>\d+))?"
)
"""[USER@]HOST[:PORT]: names and addresses only (ssh puts them into commands that a
shell reads, %h and %r of ProxyCommand)."""


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


async def connect_over_ssh(host: str) -> tuple[MessageBus, asyncio.subprocess.Process]:
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
    except BaseException:  # cancelled, say, while ssh connects: no ssh is left running
        if spawning.done() and not spawning.cancelled() and spawning.exception() is None:
            ssh = spawning.result()
            with contextlib.suppress(ProcessLookupError):
                ssh.kill()
            await ssh.wait()
        raise
    finally:
        spawning.cancel()
        listener.close()


def check_host(host: str) -> str:
    """A host as Send takes it, [USER@]HOST[:PORT], or InvalidHost."""
    if HOST.fullmatch(host) is None or len(host) > 255:
        raise InvalidHost(f"not a host: {shown(host)} (expected [USER@]HOST[:PORT])")
    return host


async def call(
    bus: MessageBus, path: str, interface: str, member: str, signature: str = "", *body: Any
) -> list[Any]:
    """Call gnspawnd on `bus`; its errors come back as the exceptions it raised."""
    reply = await reply_to(bus, (BUS_NAME, path, interface), member, signature, *body)
    if reply.message_type is MessageType.ERROR:
        raise domain_error(
            DBusError(reply.error_name or "", str(reply.body[0]) if reply.body else "")
        )
    return list(reply.body)


class RemoteManager:
    """gnspawnd's Manager on another host, over ssh: what a Send asks of the target."""

    def __init__(self, host: str, bus: MessageBus, ssh: asyncio.subprocess.Process) -> None:
        self.host = host
        self.bus = bus
        self.ssh = ssh

    @classmethod
    async def connect(cls, host: str) -> RemoteManager:
        bus, ssh = await connect_over_ssh(host)
        return cls(host, bus, ssh)

    async def call(self, member: str, signature: str = "", *body: Any) -> list[Any]:
        try:
            return await call(self.bus, MANAGER_PATH, MANAGER_INTERFACE, member, signature, *body)
        except GnspawnError:
            raise
        except Unreachable:
            raise
        except (OSError, EOFError) as err:
            raise Unreachable(f"the connection to {self.host} broke: {err}") from err

    async def close(self) -> None:
        self.bus.disconnect()
        try:
            await asyncio.wait_for(self.ssh.wait(), 5)
        except TimeoutError:
            self.ssh.kill()
            await self.ssh.wait()
