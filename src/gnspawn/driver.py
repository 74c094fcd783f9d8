"""Messages to the bus itself (org.freedesktop.DBus), for the daemon and gnctl alike."""

from __future__ import annotations

from dbus_fast import Message


def bus_driver(member: str, signature: str = "", *body: object) -> Message:
    """A call to the bus driver, e.g. GetConnectionUnixUser."""
    return Message(
        destination="org.freedesktop.DBus",
        path="/org/freedesktop/DBus",
        interface="org.freedesktop.DBus",
        member=member,
        signature=signature,
        body=list(body),
    )


def add_match(rule: str) -> Message:
    """Ask the bus to route the signals a match rule describes to this connection."""
    return bus_driver("AddMatch", "s", rule)
