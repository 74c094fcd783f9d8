"""Calls with a known method and the wrong arguments get InvalidArgs, as sd-bus answers.

dbus-fast looks a method up by its name and signature together, so a call with the
wrong arguments would be answered UnknownMethod: misleading for a method that exists.
"""

from dbus_fast import DBusError, Message, MessageType
from dbus_fast.service import ServiceInterface

INVALID_ARGS = "org.freedesktop.DBus.Error.InvalidArgs"


class SignatureCheck:
    """A message handler that knows the input signatures of the exported interfaces."""

    def __init__(self) -> None:
        self._signatures: dict[tuple[str, str], str] = {}
        self._learned: set[str] = set()

    def learn(self, interface: ServiceInterface) -> None:
        """Remember the methods of an interface; later instances of it cost nothing."""
        if interface.name in self._learned:
            return
        self._learned.add(interface.name)
        for method in ServiceInterface._get_methods(interface):
            self._signatures[(interface.name, method.name)] = method.in_signature

    def __call__(self, msg: Message) -> None:
        if msg.message_type is not MessageType.METHOD_CALL or not msg.interface:
            return
        expected = self._signatures.get((msg.interface, msg.member or ""))
        if expected is not None and msg.signature != expected:
            raise DBusError(
                INVALID_ARGS,
                f"Invalid arguments '{msg.signature}' to {msg.member}(), expecting '{expected}'",
            )
