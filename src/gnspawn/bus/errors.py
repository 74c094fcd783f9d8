"""The one place domain errors become D-Bus errors."""

import functools
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from dbus_fast import DBusError

from gnspawn.errors import GnspawnError

P = ParamSpec("P")
T = TypeVar("T")


def translated(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Raise GnspawnError from a bus method as the D-Bus error it names."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except GnspawnError as err:
            raise DBusError(err.dbus_name, str(err)) from err

    return wrapper


def translated_now(fn: Callable[P, T]) -> Callable[P, T]:
    """translated, for a bus method that answers without waiting for anything.

    dbus-fast runs such a method in place; an async one costs a task per call, a
    good part of a cheap call like ListJobs.
    """

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except GnspawnError as err:
            raise DBusError(err.dbus_name, str(err)) from err

    return wrapper
