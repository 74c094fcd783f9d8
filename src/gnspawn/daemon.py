"""gnspawnd: the daemon's start, its life on the bus, and its stop."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from pathlib import Path

from dbus_fast import BusType, RequestNameReply
from dbus_fast.aio import MessageBus

from gnspawn import __version__, binhost
from gnspawn import log as journal
from gnspawn.bus.service import BusService, interface_files
from gnspawn.config import DEFAULT_PATH, Config, ConfigError, load
from gnspawn.jobs.store import JobStore, StoreError
from gnspawn.manager import Manager
from gnspawn.names import BUS_NAME
from gnspawn.services import HostServices
from gnspawn.zfs import Zfs

log = logging.getLogger(__name__)

EX_CONFIG = 78
EX_UNAVAILABLE = 69


def _notify(state: str) -> None:
    """Tell the service manager `state`, never waiting for it.

    sd_notify's socket blocks once the manager has not read the last few datagrams
    (net.unix.max_dgram_qlen, 10 by default); a STATUS= nobody reads must not stall
    every job and bus call, so a status that does not fit at once is dropped. READY=1
    and STOPPING=1 are waited for: without them the service manager would time the
    start out, or take the stop for a crash.
    """
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            if state.startswith("STATUS="):
                sock.sendto(state.encode(), socket.MSG_DONTWAIT, address)
            else:
                sock.settimeout(5)
                sock.sendto(state.encode(), address)
    except OSError as err:
        # The service manager is busy or went away; the daemon's work does not depend on it.
        log.debug("sd_notify %s failed: %s", state.split("=", 1)[0], err)


class StartFailed(Exception):
    """Something the daemon needs is not there."""


class Daemon:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.stopping = asyncio.Event()
        self.signing = False
        """Signing what a gnspawnd that died left: the jobs wait (_publish_pending)."""

    def _status(self, manager: Manager) -> None:
        queue = manager.queue
        status = f"STATUS={queue.running} running, {queue.waiting} waiting"
        if self.signing:
            status += "; signing the packages a gnspawnd that died left first"
        _notify(status)

    async def serve(self) -> int:
        try:
            await binhost.make_keyring(self.config)
        except binhost.BinhostError as err:
            raise StartFailed(str(err)) from err
        store = JobStore(self.config.daemon.state_directory / "jobs.sqlite")
        try:
            bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
        except (OSError, ValueError) as err:
            store.close()
            raise StartFailed(f"cannot connect to the system bus: {err}") from err
        _make_room(bus)
        service = BusService(bus)
        manager = Manager(self.config, store, Zfs(), service, HostServices(bus))
        service.attach(manager)
        queue_changed = manager.on_queue_changed

        def on_queue_changed() -> None:
            queue_changed()
            self._status(manager)

        manager.on_queue_changed = on_queue_changed
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        # The jobs wait for what a gnspawnd that died left unsigned in PKGDIR: signing
        # changes a package that an emerge would be reading (_publish_pending).
        manager.queue.paused = True
        try:
            await manager.start()
            service.export_known()
            reply = await bus.request_name(BUS_NAME)
            if reply not in (RequestNameReply.PRIMARY_OWNER, RequestNameReply.ALREADY_OWNER):
                log.error("%s is owned by another process; is gnspawnd already running?", BUS_NAME)
                await manager.stop()
                return EX_UNAVAILABLE
            log.info("gnspawnd %s ready on %s", __version__, BUS_NAME)
            _notify("READY=1")
            self._status(manager)
            pending = asyncio.create_task(self._publish_pending(manager))
            await self.stopping.wait()
            pending.cancel()  # what it did not sign, the next start does
            with contextlib.suppress(asyncio.CancelledError):
                await pending
            log.info("stopping: running jobs are rolled back, waiting jobs are kept")
            _notify("STOPPING=1")
            await bus.release_name(BUS_NAME)
            await manager.stop()
            await service.settle()
        finally:
            bus.disconnect()
            store.close()
            journal.flush()  # the last lines, e.g. of jobs rolled back while stopping
        return 0

    async def _publish_pending(self, manager: Manager) -> None:
        """Sign what a gnspawnd that died left unsigned, once this one is ready (a
        backlog must not hold its start up), then let the jobs start."""
        try:
            if self.config.binhost.publish:
                self.signing = await asyncio.to_thread(binhost.has_pending, self.config)
            if self.signing:
                self._status(manager)
            await binhost.publish_pending(self.config)
        except Exception:  # the jobs must not wait for ever, nor the stop fail on it
            log.exception("signing the binary packages left unsigned failed")
        finally:
            signed, self.signing = self.signing, False
            if not self.stopping.is_set():
                manager.queue.paused = False
                manager.queue.schedule()
                if signed:
                    self._status(manager)


SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)
SEND_BUFFER = 16 << 20


def _make_room(bus: MessageBus) -> None:
    """Give the bus socket room for thousands of queued messages.

    dbus-fast (5.x, as dbus-next before it) treats a send that would block (EAGAIN)
    as a broken connection and drops off the bus. A burst of replies (a thousand
    Update calls at once) fills the default send buffer, so the daemon makes the
    buffer large enough that a burst never blocks; root may exceed wmem_max.
    """
    sock = bus._sock
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, SEND_BUFFER)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="gnspawnd",
        description="Queue builds and updates of Gentoo systemd-nspawn containers on ZFS "
        "as D-Bus jobs (org.gnspawn1 on the system bus), each protected by a snapshot.",
        epilog="Exit status: 0 stopped cleanly, 1 failed, 69 bus name taken, "
        "78 configuration or job database unusable.",
    )
    parser.add_argument(
        "--config",
        metavar="PATH",
        default=str(DEFAULT_PATH),
        help=f"configuration file (default {DEFAULT_PATH})",
    )
    parser.add_argument(
        "--check-config", action="store_true", help="validate the configuration and exit"
    )
    parser.add_argument("--debug", action="store_true", help="log debug messages")
    parser.add_argument(
        "--bus-introspect",
        metavar="DIRECTORY",
        help="write the introspection XML of each D-Bus interface into DIRECTORY and exit",
    )
    parser.add_argument("--version", action="version", version=f"gnspawnd {__version__}")
    return parser.parse_args(argv)


def write_interfaces(directory: Path) -> int:
    """`--bus-introspect`: the interface files, as systemd's daemons write theirs."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for name, xml in interface_files().items():
            (directory / name).write_text(xml)
    except OSError as err:
        print(f"gnspawnd: cannot write {err.filename}: {err.strerror}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.bus_introspect is not None:
        return write_interfaces(Path(args.bus_introspect))
    try:
        config = load(Path(args.config))
    except ConfigError as err:
        print(f"gnspawnd: {err}", file=sys.stderr)
        return EX_CONFIG
    if args.check_config:
        print(f"{args.config}: configuration is valid")
        return 0
    journal.setup(logging.DEBUG if args.debug else logging.INFO)
    try:
        return asyncio.run(Daemon(config).serve())
    except StoreError as err:
        log.error("%s", err)
        print(f"gnspawnd: {err}", file=sys.stderr)
        return EX_CONFIG
    except StartFailed as err:
        log.error("%s", err)
        print(f"gnspawnd: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
