"""Names shared by the daemon and its clients: bus names, object paths, flags and states."""

from __future__ import annotations

import collections
import enum
from collections.abc import Iterable, Sequence

BUS_NAME = "org.gnspawn1"
MANAGER_PATH = "/org/gnspawn1"
MANAGER_INTERFACE = "org.gnspawn1.Manager"
JOB_INTERFACE = "org.gnspawn1.Job"
MACHINE_INTERFACE = "org.gnspawn1.Machine"
JOB_PATH_PREFIX = "/org/gnspawn1/job/_"
MACHINE_PATH_PREFIX = "/org/gnspawn1/machine/"
ERROR_PREFIX = "org.gnspawn1.Error."
POLKIT_ACTION = "org.gnspawn1.manage"
SNAPSHOT_PREFIX = "gnspawn-"
JOB_PROPERTY = "org.gnspawn:job"
BUILD_PROPERTY = "org.gnspawn:build"
"""On a machine's dataset: the last build step that finished ("done" when all did)."""
PROFILE_PROPERTY = "org.gnspawn:profile"
KEEP_PROPERTY = "org.gnspawn:keep"
"""On a snapshot: kept, never pruned; `pinned`, or `pinned:TAG` with its tag."""
KEPT = "pinned"
SENT_PROPERTY = "org.gnspawn:sent"
"""On a snapshot: the hosts it was sent to last (space-separated): the newest snapshot
each of them has, which the next send to it starts from, so retention keeps it."""
ORIGIN_PROPERTY = "org.gnspawn:origin"
"""On a received machine's dataset: the sender (HOST:DATASET) it came from; only that
sender may update it by another send."""
RECEIVING_SUFFIX = ":receiving"
"""A full send is received into NAME:receiving (no machine has a colon in its name)
and renamed to NAME only once all of it is there."""


class Flags(enum.IntFlag):
    """Bits of the `t flags` argument of every mutating Manager method."""

    FAIL_IF_BUSY = 1
    """Fail with Busy instead of queueing behind another job of the same machine."""
    KEEP_FAILED = 2
    """Keep the failed state for inspection before rolling back."""
    PRETEND = 4
    """Run emerge --pretend: report what would change, change nothing."""
    RESUME = 8
    """Build: continue an incomplete machine from the first step that did not finish."""
    SCHEDULED = 16
    """UpdateAll: do what [updates] policy says (none, check or apply)."""
    NO_CANARY = 32
    """UpdateAll: no canary machine per profile (as with [updates] canary = false)."""
    MOVE = 64
    """Send: remove the machine here once the target has picked it up."""


class MachineState(enum.StrEnum):
    """What a machine is doing or how it is, as ListMachines shows it."""

    READY = "ready"
    FAILED = "failed"
    """Its last job failed and did not roll it back: it may be as the failure left it."""
    INCOMPLETE = "incomplete"
    """A build that did not finish; Build with RESUME continues it."""
    FOREIGN = "foreign"
    """Not gnspawn's, or not a Gentoo root: shown, never touched."""
    UPDATING = "updating"
    BUILDING = "building"
    ROLLING_BACK = "rolling-back"
    REMOVING = "removing"
    PRUNING = "pruning"
    SENDING = "sending"


class BuildStep(enum.StrEnum):
    """A build's steps in order; the dataset's org.gnspawn:build names the last one done."""

    NONE = ""
    CREATED = "created"
    CONFIGURED = "configured"
    EMERGE_NODEPS = "emerge-nodeps"
    EMERGE = "emerge"
    DONE = "done"

    @property
    def order(self) -> int:
        return list(BuildStep).index(self)


class JobType(enum.StrEnum):
    """What a job does."""

    BUILD = "build"
    UPDATE = "update"
    ROLLBACK = "rollback"
    REMOVE = "remove"
    PRUNE = "prune"
    BUILDER = "builder"
    """Build or update a profile's builder root (gnspawnd queues these itself)."""
    SYNC = "sync"
    """Sync the repositories (of the host, machine ""): a barrier in the queue."""
    CONFIG = "config"
    """Settle one pending config file as the admin says (ResolveConfig)."""
    SEND = "send"
    """Send a machine to another host's gnspawnd (zfs send over ssh)."""


class JobState(enum.StrEnum):
    """Where a job is in the queue."""

    WAITING = "waiting"
    """Persisted and queued; runs when its machine and a slot are free."""
    RUNNING = "running"
    FINISHED = "finished"
    """Result is set; the job never runs again."""


class JobResult(enum.StrEnum):
    """How a job ended; empty until it has."""

    NONE = ""
    DONE = "done"
    SKIPPED = "skipped"
    """Nothing to do: emerge had nothing to merge."""
    FAILED = "failed"
    CANCELED = "canceled"
    HELD = "held"
    """Policy stopped it before it changed anything (unread news, a failed sync)."""


class Phase(enum.StrEnum):
    """The step a job is in."""

    QUEUED = "queued"
    SYNC = "sync"
    NEWS = "news"
    FETCH = "fetch"
    SNAPSHOT = "snapshot"
    EMERGE_NODEPS = "emerge-nodeps"
    EMERGE = "emerge"
    PRESERVED_REBUILD = "preserved-rebuild"
    DEPCLEAN = "depclean"
    CONFIG = "config"
    HEALTH = "health"
    CONFIGURE = "configure"
    ROLLBACK = "rollback"
    SEND = "send"
    CLEANUP = "cleanup"


class NoticeKind(enum.StrEnum):
    """What a job's notice is about: something the admin should know or decide."""

    PRESERVED_LIBS = "preserved-libs"
    DEPCLEAN = "depclean"
    ELOG = "elog"
    CONFIG_FILE = "config-file"
    NEWS = "news"
    HEALTH = "health"


class ChangeAction(enum.StrEnum):
    """What happened to a package between two lists of a root's packages, in the order
    summaries count them."""

    UPGRADED = "upgraded"
    DOWNGRADED = "downgraded"
    REBUILT = "rebuilt"
    """The same version again, with another BUILD_TIME or other USE flags."""
    ADDED = "added"
    REMOVED = "removed"


def change_summary(actions: Iterable[str]) -> str:
    """ "3 upgraded, 1 added": changes counted by action."""
    counts = collections.Counter(actions)
    return ", ".join(f"{counts[a]} {a}" for a in ChangeAction if counts[a])


ATTENTION_LABELS = {
    NoticeKind.CONFIG_FILE: "config",
    NoticeKind.NEWS: "news",
    NoticeKind.PRESERVED_LIBS: "preserved",
    NoticeKind.HEALTH: "health",
}
"""The kinds of notice that also wait on the machine until the admin acts (its
Attention), in the order `gnctl list` counts them, and the word it counts them by."""


def attention_summary(kinds: Iterable[str]) -> str:
    """ "2 config, 1 news": what waits on a machine, counted by kind."""
    counts = collections.Counter(kinds)
    labels = {str(kind): label for kind, label in ATTENTION_LABELS.items()}
    return ", ".join(
        f"{counts[kind]} {labels.get(kind, kind)}" for kind in sorted(counts, key=_attention_order)
    )


def _attention_order(kind: str) -> int:
    order = [str(kind) for kind in ATTENTION_LABELS]
    return order.index(kind) if kind in order else len(order)


def shown(text: str, limit: int = 80) -> str:
    """`text` quoted for a message, cut short: an error never echoes a huge argument back."""
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def counted(number: int, noun: str) -> str:
    """ "1 package", "2 packages"."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def pending_line(packages: Sequence[str]) -> str:
    """What a pretend update found, as its log and gnctl say it."""
    return f"{counted(len(packages), 'package')} pending: {' '.join(packages)}"


def job_title(kind: str, machine: str) -> str:
    """ "update of web", or "sync" for a job of no machine."""
    return f"{kind} of {machine}" if machine else kind


def job_path(job_id: int) -> str:
    """The object path of job `job_id`."""
    return f"{JOB_PATH_PREFIX}{job_id}"


def bus_label_escape(label: str) -> str:
    """Escape a string into one object path element, as sd_bus_path_encode() does."""
    if not label:
        return "_"
    out = []
    for i, ch in enumerate(label):
        if ch.isascii() and (ch.isalpha() or (ch.isdigit() and i > 0)):
            out.append(ch)
        else:
            out.extend(f"_{b:02x}" for b in ch.encode())
    return "".join(out)


def bus_label_unescape(element: str) -> str:
    """Reverse bus_label_escape()."""
    if element == "_":
        return ""
    raw = bytearray()
    i = 0
    while i < len(element):
        if element[i] == "_":
            raw.append(int(element[i + 1 : i + 3], 16))
            i += 3
        else:
            raw.extend(element[i].encode())
            i += 1
    return raw.decode()


def machine_path(name: str) -> str:
    """The object path of machine `name`."""
    return MACHINE_PATH_PREFIX + bus_label_escape(name)
