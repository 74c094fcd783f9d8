"""Messages to the bus itself (org.freedesktop.DBus), for the daemon and gnctl alike."""

from __future__ import annotations

from dbus_fast import Message
from dbus_fast.aio import MessageBus

BUS = ("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus")
"""The bus driver: destination, path, interface."""


def method_call(
    target: tuple[str, str, str], member: str, signature: str = "", *body: object
) -> Message:
    """A call of `member` on `target`: its destination, object path and interface."""
    destination, path, interface = target
    return Message(
        destination=destination,
        path=path,
        interface=interface,
        member=member,
        signature=signature,
        body=list(body),
    )


async def reply_to(
    bus: MessageBus, target: tuple[str, str, str], member: str, signature: str = "", *body: object
) -> Message:
    """The reply (or error) to a call of `member` on `target`."""
    reply = await bus.call(method_call(target, member, signature, *body))
    assert reply is not None  # a method call that expects a reply gets one
    return reply


def bus_driver(member: str, signature: str = "", *body: object) -> Message:
    """A call to the bus driver, e.g. GetConnectionUnixUser."""
    return method_call(BUS, member, signature, *body)


def add_match(rule: str) -> Message:
    """Ask the bus to route the signals a match rule describes to this connection."""
    return bus_driver("AddMatch", "s", rule)
