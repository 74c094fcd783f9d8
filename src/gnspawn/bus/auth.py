"""Who may change things: root, or whom polkit allows org.gnspawn1.manage."""

import asyncio
import contextvars
import logging
from collections import OrderedDict

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from gnspawn.driver import bus_driver, reply_to
from gnspawn.errors import AccessDenied
from gnspawn.names import POLKIT_ACTION

log = logging.getLogger(__name__)

_message: contextvars.ContextVar[Message | None] = contextvars.ContextVar("message", default=None)
_CACHE_SIZE = 4096
POLKIT = (
    "org.freedesktop.PolicyKit1",
    "/org/freedesktop/PolicyKit1/Authority",
    "org.freedesktop.PolicyKit1.Authority",
)
_ABSENT = {
    "org.freedesktop.DBus.Error.ServiceUnknown",
    "org.freedesktop.DBus.Error.NameHasNoOwner",
}


class Authority:
    """Decides whether the caller of the current method may change machines and jobs."""

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus
        self._uids: OrderedDict[str, int] = OrderedDict()
        self._asking: dict[str, asyncio.Future[int]] = {}
        # dbus-fast hands method handlers only the arguments. This handler runs just
        # before the method and its context is copied into the method's task.
        bus.add_message_handler(self._remember)

    @staticmethod
    def _remember(msg: Message) -> None:
        if msg.message_type is MessageType.METHOD_CALL:
            _message.set(msg)

    def sender(self) -> str:
        """The unique bus name of the caller of the current method."""
        return self._sender()

    def _sender(self) -> str:
        msg = _message.get()
        if msg is None or not msg.sender:
            raise AccessDenied("cannot tell who is calling")
        return msg.sender

    async def _call(
        self, target: tuple[str, str, str], member: str, signature: str, body: list[object]
    ) -> Message:
        return await reply_to(self.bus, target, member, signature, *body)

    async def caller_uid(self) -> int:
        sender = self._sender()
        if (uid := self._uids.get(sender)) is not None:
            return uid
        # One question per caller, however many of its calls arrive before the answer:
        # a burst must not turn into a burst of calls to the bus (which limits them).
        if (asking := self._asking.get(sender)) is None:
            asking = asyncio.ensure_future(self._ask_uid(sender))
            self._asking[sender] = asking
            asking.add_done_callback(lambda _: self._asking.pop(sender, None))
        return await asyncio.shield(asking)

    async def _ask_uid(self, sender: str) -> int:
        reply = await self.bus.call(bus_driver("GetConnectionUnixUser", "s", sender))
        assert reply is not None
        if reply.message_type is not MessageType.METHOD_RETURN:
            raise AccessDenied(f"cannot tell who {sender} is")
        uid = int(reply.body[0])
        # Unique names are never reused on a bus, so a cached answer stays true.
        self._uids[sender] = uid
        if len(self._uids) > _CACHE_SIZE:
            self._uids.popitem(last=False)
        return uid

    async def require_manage(self) -> int:
        """The caller's uid, if root or polkit allows it org.gnspawn1.manage."""
        uid = await self.caller_uid()
        if uid == 0:
            return uid
        subject = ["system-bus-name", {"name": Variant("s", self._sender())}]
        reply = await self._call(
            POLKIT, "CheckAuthorization", "(sa{sv})sa{ss}us", [subject, POLKIT_ACTION, {}, 0, ""]
        )
        if reply.message_type is MessageType.ERROR:
            if reply.error_name in _ABSENT:
                raise AccessDenied("changing machines and jobs needs root (polkit is not running)")
            log.warning("polkit failed: %s %s", reply.error_name, reply.body)
            raise AccessDenied(f"polkit could not decide: {reply.error_name}")
        authorized, challenge, _ = reply.body[0]
        if not authorized:
            how = "authentication is required" if challenge else "not allowed"
            raise AccessDenied(f"polkit: {POLKIT_ACTION} {how} for uid {uid}")
        return uid
