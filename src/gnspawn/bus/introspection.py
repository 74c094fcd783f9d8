"""What dbus-fast's decorators do not say in the introspection data, and the data as files.

sd-bus marks a property that never changes with the annotation EmitsChangedSignal
"const" and names every argument; clients (and code generators) rely on both. dbus-fast
names only input arguments and has no way to annotate, so these decorators add it to
the introspection data dbus-fast builds once per class.
"""

import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any, TypeVar

from dbus_fast import introspection as intr
from dbus_fast.service import ServiceInterface

EMITS_CHANGED_SIGNAL = "org.freedesktop.DBus.Property.EmitsChangedSignal"
DOCTYPE = (
    '<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"\n'
    '"http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">\n'
)

PropertyT = TypeVar("PropertyT", bound=property)
MemberT = TypeVar("MemberT", bound=Callable[..., Any])


def constant(prop: PropertyT) -> PropertyT:
    """Mark a @dbus_property whose value never changes: no PropertiesChanged is sent for
    it, and clients may cache it for the life of the object."""
    introspection = getattr(prop, "introspection", None)
    if not isinstance(introspection, intr.Property):
        raise TypeError("@constant goes above @dbus_property")
    introspection.annotations[EMITS_CHANGED_SIGNAL] = "const"
    return prop


def outputs(*names: str) -> Callable[[MemberT], MemberT]:
    """Name the output arguments of a @dbus_method, or the arguments of a @dbus_signal."""

    def name(member: MemberT) -> MemberT:
        declared = member.__dict__.get("__DBUS_METHOD") or member.__dict__.get("__DBUS_SIGNAL")
        introspection = getattr(declared, "introspection", None)
        if isinstance(introspection, intr.Method):
            args = introspection.out_args
        elif isinstance(introspection, intr.Signal):
            args = introspection.args
        else:
            raise TypeError("@outputs goes above @dbus_method or @dbus_signal")
        if len(args) != len(names):
            raise TypeError(
                f"{member.__name__} has {len(args)} output arguments, {len(names)} names given"
            )
        for arg, arg_name in zip(args, names, strict=True):
            arg.name = arg_name
        return member

    return name


def interface_xml(cls: type[ServiceInterface], name: str) -> str:
    """The introspection XML of one interface, as a file in /usr/share/dbus-1/interfaces
    holds it: the interface alone in a node, without the standard ones every object has."""
    # The data belongs to the class; an instance with nothing behind it is enough to
    # read it (the classes' own __init__ wants a running manager).
    interface = cls.__new__(cls)
    ServiceInterface.__init__(interface, name)
    node = ET.Element("node")
    node.append(interface.introspect().to_xml())
    ET.indent(node, space=" ")
    return DOCTYPE + ET.tostring(node, encoding="unicode") + "\n"
