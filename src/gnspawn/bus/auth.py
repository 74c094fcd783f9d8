"""Who is calling: the caller's uid, asked of the bus and cached per connection."""

import contextvars
from collections import OrderedDict

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from gnspawn.errors import AccessDenied

_message: contextvars.ContextVar[Message | None] = contextvars.ContextVar("message", default=None)
_CACHE_SIZE = 4096


class Authority:
    """Decides whether the caller of the current method may change things."""

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus
        self._uids: OrderedDict[str, int] = OrderedDict()
        # dbus-fast hands method handlers only the arguments. This handler runs just
        # before the method and its context is copied into the method's task.
        bus.add_message_handler(self._remember)

    @staticmethod
    def _remember(msg: Message) -> None:
        if msg.message_type is MessageType.METHOD_CALL:
            _message.set(msg)

    async def caller_uid(self) -> int:
        msg = _message.get()
        if msg is None or not msg.sender:
            raise AccessDenied("cannot tell who is calling")
        sender = msg.sender
        if (uid := self._uids.get(sender)) is not None:
            return uid
        reply = await self.bus.call(
            Message(
                destination="org.freedesktop.DBus",
                path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus",
                member="GetConnectionUnixUser",
                signature="s",
                body=[sender],
            )
        )
        if reply is None or reply.message_type is not MessageType.METHOD_RETURN:
            raise AccessDenied(f"cannot tell who {sender} is")
        uid = int(reply.body[0])
        # Unique names are never reused on a bus, so a cached answer stays true.
        self._uids[sender] = uid
        if len(self._uids) > _CACHE_SIZE:
            self._uids.popitem(last=False)
        return uid

    async def require_manage(self) -> int:
        """The caller's uid, if the caller may change machines and jobs."""
        uid = await self.caller_uid()
        if uid != 0:
            raise AccessDenied("changing machines and jobs needs root")
        return uid
