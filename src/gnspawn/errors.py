"""The one error hierarchy: each error knows its D-Bus name, so it crosses the bus unchanged."""

from __future__ import annotations

from typing import ClassVar

from gnspawn.names import ERROR_PREFIX


class GnspawnError(Exception):
    """A failure a caller can understand and act on."""

    dbus_name: ClassVar[str] = ERROR_PREFIX + "Failed"
    hint: ClassVar[str] = "'journalctl -u gnspawnd' shows the daemon's side of it."
    """What the user can do about it, for gnctl."""


class InvalidName(GnspawnError):
    dbus_name = ERROR_PREFIX + "InvalidName"
    hint = (
        "Machine names are 1-64 characters of A-Z a-z 0-9 - _ . "
        "and do not start with - or . nor contain '..'."
    )


class NoSuchMachine(GnspawnError):
    dbus_name = ERROR_PREFIX + "NoSuchMachine"
    hint = "'gnctl list' shows the machines gnspawn manages."


class MachineExists(GnspawnError):
    dbus_name = ERROR_PREFIX + "MachineExists"
    hint = "Choose another name, or remove the existing machine first."


class NotGentoo(GnspawnError):
    dbus_name = ERROR_PREFIX + "NotGentoo"
    hint = "gnspawn only updates roots that have etc/gentoo-release."


class NoSuchJob(GnspawnError):
    dbus_name = ERROR_PREFIX + "NoSuchJob"
    hint = "'gnctl jobs' lists waiting, running and recent jobs."


class NoSuchProfile(GnspawnError):
    dbus_name = ERROR_PREFIX + "NoSuchProfile"
    hint = "'gnctl profiles' lists the profiles of the configured repositories."


class NoSuchSnapshot(GnspawnError):
    dbus_name = ERROR_PREFIX + "NoSuchSnapshot"
    hint = "'gnctl snapshots NAME' lists the snapshots of a machine."


class SnapshotProtected(GnspawnError):
    dbus_name = ERROR_PREFIX + "SnapshotProtected"
    hint = (
        "A newer snapshot is the admin's own or has clones; rolling back would destroy it. "
        "Destroy, rename or promote it first."
    )


class InvalidTag(GnspawnError):
    dbus_name = ERROR_PREFIX + "InvalidTag"
    hint = (
        "Tags are 1-64 characters of A-Z a-z 0-9 _ . + - that start with a letter "
        "and not with 'gnspawn-'."
    )


class NoPackageRecord(GnspawnError):
    dbus_name = ERROR_PREFIX + "NoPackageRecord"
    hint = (
        "gnspawn records the packages of the snapshots it takes; the storage does not "
        "show the files of this one (.zfs/snapshot) to read them from."
    )


class NoSuchConfigFile(GnspawnError):
    dbus_name = ERROR_PREFIX + "NoSuchConfigFile"
    hint = "'gnctl config NAME' lists the config files with a new default waiting."


class NoSuchNewsItem(GnspawnError):
    dbus_name = ERROR_PREFIX + "NoSuchNewsItem"
    hint = "'gnctl news NAME' lists the news items NAME has not read."


class InvalidHost(GnspawnError):
    dbus_name = ERROR_PREFIX + "InvalidHost"
    hint = "Name the target as [USER@]HOST[:PORT], as 'gnctl -H' takes it."


class Busy(GnspawnError):
    dbus_name = ERROR_PREFIX + "Busy"
    hint = "Wait for the machine's current job ('gnctl jobs'), or queue without --fail-if-busy."


class StorageFailed(GnspawnError):
    dbus_name = ERROR_PREFIX + "StorageFailed"
    hint = "Check the pool with 'zpool status' and free space with 'zfs list'."


class NotCancellable(GnspawnError):
    dbus_name = ERROR_PREFIX + "NotCancellable"
    hint = "The job has finished, or is in a step that must not be interrupted."


class InvalidArgs(GnspawnError):
    dbus_name = "org.freedesktop.DBus.Error.InvalidArgs"
    hint = "See 'gnctl --help' for the accepted arguments."


class AccessDenied(GnspawnError):
    dbus_name = "org.freedesktop.DBus.Error.AccessDenied"
    hint = "Run it as root (or as a user polkit allows org.gnspawn1.manage)."


def _all_errors() -> dict[str, type[GnspawnError]]:
    found: dict[str, type[GnspawnError]] = {GnspawnError.dbus_name: GnspawnError}
    pending = list(GnspawnError.__subclasses__())
    while pending:
        cls = pending.pop()
        found[cls.dbus_name] = cls
        pending.extend(cls.__subclasses__())
    return found


BY_DBUS_NAME: dict[str, type[GnspawnError]] = _all_errors()
"""Every error by its D-Bus name, for clients that turn bus errors back into exceptions."""
