"""Hostile input: every Manager and Job method, given bad arguments, answers the error
that names what is wrong with them, and changes nothing.

The calls go to the real daemon over the real bus with dbus-send, which prints the
error's name (busctl prints only its message) and sends whatever signature it is
given. For each method and input the tests accept only the errors that describe that
input: a generic Failed, StorageFailed, or an error the daemon did not mean to send is
never among them.
"""

from __future__ import annotations

import contextlib
import posixpath
import re
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from helpers import call, wait_job
from testbed import POOL, Testbed, tree_hash, zfs

ERROR = "org.gnspawn1.Error."
INVALID_NAME = ERROR + "InvalidName"
NO_SUCH_MACHINE = ERROR + "NoSuchMachine"
MACHINE_EXISTS = ERROR + "MachineExists"
NOT_GENTOO = ERROR + "NotGentoo"
NO_SUCH_JOB = ERROR + "NoSuchJob"
NO_SUCH_PROFILE = ERROR + "NoSuchProfile"
NO_SUCH_SNAPSHOT = ERROR + "NoSuchSnapshot"
SNAPSHOT_PROTECTED = ERROR + "SnapshotProtected"
BUSY = ERROR + "Busy"
NO_SUCH_NEWS_ITEM = ERROR + "NoSuchNewsItem"
NO_SUCH_CONFIG_FILE = ERROR + "NoSuchConfigFile"
NOT_CANCELLABLE = ERROR + "NotCancellable"
INVALID_TAG = ERROR + "InvalidTag"
INVALID_HOST = ERROR + "InvalidHost"
NO_PACKAGE_RECORD = ERROR + "NoPackageRecord"
STANDARD = "org.freedesktop.DBus.Error."
INVALID_ARGS = STANDARD + "InvalidArgs"

Errors = frozenset[str]
Value = str | int | tuple[str, ...]

SIGNATURES = {
    "Update": "st",
    "UpdateAll": "t",
    "Sync": "t",
    "Build": "sst",
    "Remove": "st",
    "Prune": "st",
    "ListRetention": "s",
    "ListProfiles": "",
    "Rollback": "sst",
    "ListMachines": "",
    "ListSnapshots": "s",
    "ListNews": "s",
    "MarkNewsRead": "sast",
    "ListAttention": "s",
    "ListConfigFiles": "s",
    "ResolveConfig": "ssst",
    "ListPackages": "ss",
    "DiffPackages": "sss",
    "Keep": "ssst",
    "Unkeep": "sst",
    "ListChanges": "t",
    "ListJobs": "",
    "GetJob": "u",
    "CancelJob": "u",
    "Send": "sst",
    "PrepareReceive": "sst",
    "AdoptReceived": "sst",
    "DiscardReceived": "sst",
    "Job.Cancel": "",
}
"""Every method of the Manager, and the Job's Cancel (called on job 1)."""

PACKAGE_LIST_ERRORS = frozenset(
    {INVALID_NAME, NO_SUCH_MACHINE, NOT_GENTOO, NO_SUCH_SNAPSHOT, NO_PACKAGE_RECORD, INVALID_ARGS}
)
"""What ListPackages and DiffPackages may answer."""

ERRORS_OF: dict[str, Errors] = {
    "Update": frozenset({INVALID_NAME, NO_SUCH_MACHINE, NOT_GENTOO, BUSY, INVALID_ARGS}),
    "UpdateAll": frozenset({INVALID_ARGS}),
    "Sync": frozenset({INVALID_ARGS}),
    "Build": frozenset(
        {INVALID_NAME, MACHINE_EXISTS, NO_SUCH_MACHINE, NO_SUCH_PROFILE, BUSY, INVALID_ARGS}
    ),
    "Remove": frozenset({INVALID_NAME, NO_SUCH_MACHINE, BUSY, INVALID_ARGS}),
    "Prune": frozenset({INVALID_NAME, NO_SUCH_MACHINE, INVALID_ARGS}),
    "ListRetention": frozenset({INVALID_NAME, NO_SUCH_MACHINE, INVALID_ARGS}),
    "ListProfiles": frozenset({INVALID_ARGS}),
    "Rollback": frozenset(
        {INVALID_NAME, NO_SUCH_MACHINE, NO_SUCH_SNAPSHOT, SNAPSHOT_PROTECTED, BUSY, INVALID_ARGS}
    ),
    "ListMachines": frozenset({INVALID_ARGS}),
    "ListSnapshots": frozenset({INVALID_NAME, NO_SUCH_MACHINE, INVALID_ARGS}),
    "ListNews": frozenset({INVALID_NAME, NO_SUCH_MACHINE, NOT_GENTOO, INVALID_ARGS}),
    "MarkNewsRead": frozenset(
        {INVALID_NAME, NO_SUCH_MACHINE, NOT_GENTOO, NO_SUCH_NEWS_ITEM, INVALID_ARGS}
    ),
    "ListAttention": frozenset({INVALID_NAME, INVALID_ARGS}),
    "ListConfigFiles": frozenset({INVALID_NAME, NO_SUCH_MACHINE, NOT_GENTOO, INVALID_ARGS}),
    "ResolveConfig": frozenset(
        {INVALID_NAME, NO_SUCH_MACHINE, NOT_GENTOO, NO_SUCH_CONFIG_FILE, BUSY, INVALID_ARGS}
    ),
    "ListPackages": PACKAGE_LIST_ERRORS,
    "DiffPackages": PACKAGE_LIST_ERRORS,
    "Keep": frozenset({INVALID_NAME, NO_SUCH_MACHINE, NO_SUCH_SNAPSHOT, INVALID_TAG, INVALID_ARGS}),
    "Unkeep": frozenset({INVALID_NAME, NO_SUCH_MACHINE, NO_SUCH_SNAPSHOT, INVALID_ARGS}),
    "ListChanges": frozenset({INVALID_ARGS}),
    "ListJobs": frozenset({INVALID_ARGS}),
    "GetJob": frozenset({NO_SUCH_JOB, INVALID_ARGS}),
    "CancelJob": frozenset({NO_SUCH_JOB, NOT_CANCELLABLE, INVALID_ARGS}),
    "Job.Cancel": frozenset({NOT_CANCELLABLE, INVALID_ARGS}),
    "Send": frozenset(
        {INVALID_NAME, NO_SUCH_MACHINE, NOT_GENTOO, INVALID_HOST, BUSY, INVALID_ARGS}
    ),
    "PrepareReceive": frozenset({INVALID_NAME, MACHINE_EXISTS, BUSY, INVALID_ARGS}),
    "AdoptReceived": frozenset({INVALID_NAME, MACHINE_EXISTS, NO_SUCH_MACHINE, INVALID_ARGS}),
    "DiscardReceived": frozenset({INVALID_NAME, INVALID_ARGS}),
}
"""What each method may answer root's bad input with; each input narrows it further."""

# The machines the tests ask about. Only WEB and PLAIN are datasets, the machines
# gnspawn can act on; FOREIGN and GHOST each hold a name a build must not take.
WEB = "web"
"""A Gentoo machine with two snapshots: PROTECTED (job 1's), then NEWEST (the admin's)."""
PLAIN = "plain"
"""A dataset without etc/gentoo-release and without snapshots; machined says it runs."""
FOREIGN = "foreign"
"""A directory in the machines directory that is no dataset."""
GHOST = "ghost"
"""Nothing but a .nspawn settings file."""
FRESH = "fresh"
"""A name nothing has."""
DATASETS = (WEB, PLAIN)
TAKEN = (WEB, PLAIN, FOREIGN, GHOST)
PROTECTED = "gnspawn-1-pre"
NEWEST = "admin"
MACHINES = f"{POOL}/machines"
PROFILE = "default"
"""The default profile."""
PROFILES = ("", PROFILE, f"{PROFILE}/bootable", f"{PROFILE}/flaky")
"""What Build takes for a profile: "" (the default) and the test repository's profiles."""

FAIL_IF_BUSY, KEEP_FAILED, PRETEND, RESUME, SCHEDULED, NO_CANARY, MOVE = 1, 2, 4, 8, 16, 32, 64
ALL_FLAGS = 0x7F
NO_METHOD_KNOWS = 1 << 7
MAX_U32 = 2**32 - 1
MAX_U64 = 2**64 - 1
HUGE = "x" * 100_000
LONGEST_MESSAGE = 1000
"""An error message is for people: it quotes a long argument shortened, never whole."""

CASES = settings(
    max_examples=500,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


# --- what each input should get --------------------------------------------------


def valid_name(name: str) -> bool:
    """The README's rule: 1-64 of A-Z a-z 0-9 - _ ., not starting with - or ., no '..'."""
    return bool(re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}", name)) and ".." not in name


def flag_errors(flags: int, allowed: int) -> Errors:
    return frozenset({INVALID_ARGS} if flags & ~allowed else ())


def name_errors(name: str) -> Errors:
    """InvalidName for a name no machine can have, NoSuchMachine for one no dataset has."""
    if not valid_name(name):
        return frozenset({INVALID_NAME})
    return frozenset(() if name in DATASETS else {NO_SUCH_MACHINE})


def update_errors(name: str, flags: int) -> Errors:
    errors = name_errors(name) | flag_errors(flags, FAIL_IF_BUSY | KEEP_FAILED | PRETEND)
    if name in (PLAIN, FOREIGN):
        # ListMachines lists a foreign directory: "not Gentoo" is as true of it.
        errors |= {NOT_GENTOO}
    return errors


def update_all_errors(flags: int) -> Errors:
    return flag_errors(flags, FAIL_IF_BUSY | KEEP_FAILED | PRETEND | SCHEDULED | NO_CANARY)


def sync_errors(flags: int) -> Errors:
    return flag_errors(flags, 0)


def build_errors(name: str, profile: str, flags: int) -> Errors:
    errors = set(flag_errors(flags, FAIL_IF_BUSY | KEEP_FAILED | RESUME))
    if not valid_name(name):
        errors.add(INVALID_NAME)
    elif flags & RESUME:
        # gnspawn left nothing incomplete: each dataset is complete, the rest absent.
        errors.add(MACHINE_EXISTS if name in DATASETS else NO_SUCH_MACHINE)
    elif name in TAKEN:
        errors.add(MACHINE_EXISTS)
    if profile not in PROFILES:
        errors.add(NO_SUCH_PROFILE)
    return frozenset(errors)


def remove_errors(name: str, flags: int) -> Errors:
    errors = name_errors(name) | flag_errors(flags, FAIL_IF_BUSY)
    return errors | {BUSY} if name == PLAIN else errors


def prune_errors(name: str, flags: int) -> Errors:
    return name_errors(name) | flag_errors(flags, 0)


def names_a_snapshot(short: str) -> bool:
    """Whether a snapshot of WEB has the name: by its name, its job id or its tag (no
    snapshot has a tag here)."""
    if not re.fullmatch(r"[A-Za-z0-9_.:+-]{1,255}", short):
        return False  # another dataset's snapshot, or no snapshot's name
    return short in (PROTECTED, NEWEST) or (short.isdigit() and int(short) == 1)


def rollback_errors(name: str, snapshot: str, flags: int) -> Errors:
    errors = set(name_errors(name) | flag_errors(flags, FAIL_IF_BUSY))
    short = snapshot.removeprefix(f"{MACHINES}/{name}@")
    if short and not names_a_snapshot(short):
        errors.add(NO_SUCH_SNAPSHOT)
    elif name == WEB and short != NEWEST:
        errors.add(SNAPSHOT_PROTECTED)  # the admin's NEWEST would be lost
    elif name == PLAIN:
        errors.add(NO_SUCH_SNAPSHOT)
    return frozenset(errors)


def list_news_errors(name: str) -> Errors:
    return name_errors(name) | ({NOT_GENTOO} if name == PLAIN else set())


def mark_news_read_errors(name: str, items: tuple[str, ...], flags: int) -> Errors:
    """WEB has no news item unread: any item it is asked to mark is no such item."""
    errors = set(list_news_errors(name) | flag_errors(flags, 0))
    if not all(re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}-[A-Za-z0-9][\w+-]*", i) for i in items):
        errors.add(INVALID_ARGS)
    elif items and name == WEB:
        errors.add(NO_SUCH_NEWS_ITEM)
    return frozenset(errors)


def list_attention_errors(name: str) -> Errors:
    """Every valid name has a list, empty for a machine nothing waits on ("" is all)."""
    return frozenset({INVALID_NAME} if name and not valid_name(name) else ())


def valid_path(path: str) -> bool:
    """The README's rule for a config file's path: absolute, normalized, printable."""
    return (
        path.startswith("/")
        and posixpath.normpath(path) == path
        and path != "/"
        and len(path) <= 4096
        and path.isprintable()
    )


def resolve_config_errors(name: str, path: str, action: str, flags: int) -> Errors:
    """No config file waits on WEB: a request that is right in all else names none."""
    errors = set(list_news_errors(name) | flag_errors(flags, FAIL_IF_BUSY))
    if action not in ("keep", "replace", "merge") or not valid_path(path):
        errors.add(INVALID_ARGS)
    elif name == WEB and not errors:
        errors.add(NO_SUCH_CONFIG_FILE)
    return frozenset(errors)


def package_list_errors(name: str, snapshot: str) -> Errors:
    """A list now ("") or of a snapshot: WEB's have none recorded (the tests took them
    with zfs), and zfs-fuse does not show their files."""
    errors = set(name_errors(name))
    if name not in DATASETS:  # the name is checked first
        return frozenset(errors | {NOT_GENTOO} if name == FOREIGN and not snapshot else errors)
    if not snapshot:
        return frozenset(errors | {NOT_GENTOO} if name in (PLAIN, FOREIGN) else errors)
    short = snapshot.removeprefix(f"{MACHINES}/{name}@")
    named = name == WEB and names_a_snapshot(short)
    errors.add(NO_PACKAGE_RECORD if named else NO_SUCH_SNAPSHOT)
    return frozenset(errors)


def diff_packages_errors(name: str, old: str, new: str) -> Errors:
    return package_list_errors(name, old) | package_list_errors(name, new)


def valid_tag(tag: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z][A-Za-z0-9_.+-]{0,63}", tag)) and not tag.startswith(
        "gnspawn-"
    )


def unkeep_errors(name: str, snapshot: str, flags: int) -> Errors:
    errors = set(name_errors(name) | flag_errors(flags, 0))
    short = snapshot.removeprefix(f"{MACHINES}/{name}@")
    if name in DATASETS and not (name == WEB and names_a_snapshot(short)):
        errors.add(NO_SUCH_SNAPSHOT)
    return frozenset(errors)


def keep_errors(name: str, snapshot: str, tag: str, flags: int) -> Errors:
    errors = unkeep_errors(name, snapshot, flags)
    if tag and not valid_tag(tag) and valid_name(name):
        errors |= {INVALID_TAG}  # checked before the machine and the snapshot
    return errors


def valid_host(host: str) -> bool:
    """The README's rule for a host to send to: [USER@]HOST[:PORT], as gnctl -H takes it,
    names and addresses only."""
    return len(host) <= 255 and bool(
        re.fullmatch(
            r"(?:[A-Za-z0-9_][A-Za-z0-9_.-]*@)?"
            r"(?:[A-Za-z0-9][A-Za-z0-9_.-]*|\[[0-9a-fA-F:]+\])(?::\d+)?",
            host,
        )
    )


def send_errors(name: str, host: str, flags: int) -> Errors:
    errors = set(name_errors(name) | flag_errors(flags, FAIL_IF_BUSY | MOVE))
    if not valid_name(name):
        return frozenset(errors)
    if not valid_host(host):
        errors.add(INVALID_HOST)
    if name == PLAIN:
        errors.add(NOT_GENTOO)
    return frozenset(errors)


def valid_origin(origin: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z0-9_.:@/+-]{1,512}", origin))


def discard_received_errors(name: str, origin: str, flags: int) -> Errors:
    """What every call of a receiving side checks first: flags, name, then the sender."""
    errors = set(flag_errors(flags, 0))
    if not valid_name(name):
        errors.add(INVALID_NAME)
    elif not valid_origin(origin):
        errors.add(INVALID_ARGS)
    return frozenset(errors)


def prepare_receive_errors(name: str, origin: str, flags: int) -> Errors:
    """A name that is taken here (by a dataset that came from no sender, a directory or
    a .nspawn file) is refused; a fresh one is a valid request."""
    errors = discard_received_errors(name, origin, flags)
    if valid_name(name) and valid_origin(origin) and name in TAKEN:
        errors |= {MACHINE_EXISTS}
    return errors


def adopt_received_errors(name: str, origin: str, flags: int) -> Errors:
    """Nothing was received here on the caller's connection (it called no
    PrepareReceive): nothing is taken up, a dataset that came from no sender least."""
    errors = discard_received_errors(name, origin, flags)
    if valid_name(name) and valid_origin(origin):
        errors |= {NO_SUCH_MACHINE}
    return errors


def get_job_errors(job: int) -> Errors:
    return frozenset(() if job == 1 else {NO_SUCH_JOB})


def cancel_job_errors(job: int) -> Errors:
    return frozenset({NOT_CANCELLABLE} if job == 1 else {NO_SUCH_JOB})


RULES: dict[str, Callable[..., Errors]] = {
    "Update": update_errors,
    "UpdateAll": update_all_errors,
    "Sync": sync_errors,
    "Build": build_errors,
    "Remove": remove_errors,
    "Prune": prune_errors,
    "ListRetention": name_errors,
    "Rollback": rollback_errors,
    "ListSnapshots": name_errors,
    "ListNews": list_news_errors,
    "MarkNewsRead": mark_news_read_errors,
    "ListAttention": list_attention_errors,
    "ListConfigFiles": list_news_errors,
    "ResolveConfig": resolve_config_errors,
    "ListPackages": package_list_errors,
    "DiffPackages": diff_packages_errors,
    "Keep": keep_errors,
    "Unkeep": unkeep_errors,
    "GetJob": get_job_errors,
    "CancelJob": cancel_job_errors,
    "Job.Cancel": lambda: frozenset({NOT_CANCELLABLE}),
    "Send": send_errors,
    "PrepareReceive": prepare_receive_errors,
    "AdoptReceived": adopt_received_errors,
    "DiscardReceived": discard_received_errors,
}
"""The errors that describe an input; empty for a valid request, which is never sent."""


# --- calling --------------------------------------------------------------------

DBUS_SEND_TYPES = {"s": "string", "t": "uint64", "u": "uint32", "o": "objpath", "i": "int32"}


def codes(signature: str) -> list[str]:
    """The complete types of a signature of basic types and arrays of them."""
    return re.findall(r"a?.", signature)


def typed(signature: str, values: tuple[Value, ...]) -> tuple[str, ...]:
    """The arguments as dbus-send takes them: TYPE:VALUE, array:TYPE:VALUE,VALUE."""
    parts = codes(signature)
    assert len(parts) == len(values), (signature, values)
    return tuple(
        f"array:{DBUS_SEND_TYPES[code[1]]}:{','.join(map(str, v))}"
        if isinstance(v, tuple)
        else f"{DBUS_SEND_TYPES[code]}:{v}"
        for code, v in zip(parts, values, strict=True)
    )


class Answer(NamedTuple):
    """The error a call was answered with."""

    name: str
    message: str


def shown(args: tuple[Value, ...]) -> str:
    """A call's arguments for a message: long ones shortened."""
    short = [
        a if not isinstance(a, str) or len(a) <= 40 else f"{a[:30]}...[{len(a)}]" for a in args
    ]
    return "(" + ", ".join(repr(a) for a in short) + ")"


def dbus_send(path: str, method: str, *args: str) -> Answer:
    """Call `method` (interface.member) on `path` with dbus-send; the error it got."""
    result = subprocess.run(
        ["dbus-send", "--system", "--print-reply", "--dest=org.gnspawn1", path, method, *args],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0, f"{method}{shown(args)} succeeded:\n{result.stdout}"
    match = re.fullmatch(r"Error (\S+): (.*)", result.stderr.removesuffix("\n"), re.DOTALL)
    assert match, f"{method}{shown(args)}: {result.stderr}"
    return Answer(match[1], match[2])


def send(member: str, *args: str) -> Answer:
    """A Manager method, or Cancel() of job 1 for "Job.Cancel"."""
    if member == "Job.Cancel":
        return dbus_send("/org/gnspawn1/job/_1", "org.gnspawn1.Job.Cancel", *args)
    return dbus_send("/org/gnspawn1", "org.gnspawn1.Manager." + member, *args)


def ask(member: str, *values: Value, expected: Errors | None = None) -> Answer:
    """Call `member` with `values`; assert it was answered with an error they deserve."""
    expected = RULES[member](*values) if expected is None else expected
    assert expected, f"{member}{shown(values)} is a valid request"
    assert expected <= ERRORS_OF[member], (member, expected - ERRORS_OF[member])
    answer = send(member, *typed(SIGNATURES[member], values))
    assert answer.name in expected, (
        f"{member}{shown(values)}: expected {' or '.join(sorted(expected))}, "
        f"got {answer.name}: {answer.message[:300]}"
    )
    assert answer.message, f"{member}{shown(values)}: {answer.name} without a message"
    return answer


def harmless(member: str, *values: Value) -> bool:
    """Whether the input deserves an error, and sending it does no harm if it got none.

    A request whose only fault is a flag would run if the daemon took that flag; a
    flag no method knows keeps it from doing anything even then.
    """
    expected = RULES[member](*values)
    if expected != {INVALID_ARGS}:
        return bool(expected)
    return "t" not in SIGNATURES[member] or bool(int(str(values[-1])) & ~ALL_FLAGS)


# --- the machines and the daemon ------------------------------------------------


def settings_directory(bed: Testbed) -> Path:
    return bed.dir / "nspawn"


def job_database_rows(bed: Testbed) -> dict[str, int]:
    """How many rows each table of the job database has."""
    rows = {}
    for path in sorted(bed.state.glob("*.sqlite")):
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            names = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
            for (table,) in names:
                (count,) = db.execute(f'SELECT count(*) FROM "{table}"').fetchone()
                rows[f"{path.name}:{table}"] = int(count)
    assert rows, f"no job database in {bed.state}"
    return rows


def inventory(bed: Testbed) -> dict[str, object]:
    """Everything bad input must leave as it was."""
    properties = "name,mountpoint,org.gnspawn:job,org.gnspawn:build,org.gnspawn:profile"
    return {
        "datasets": zfs("list", "-H", "-r", "-t", "all", "-o", properties, POOL).splitlines(),
        "machines directory": sorted(p.name for p in bed.machines.iterdir()),
        "settings files": sorted(p.name for p in settings_directory(bed).iterdir()),
        "web": tree_hash(bed.machines / WEB),
        "plain": tree_hash(bed.machines / PLAIN),
        "job database": job_database_rows(bed),
    }


class World(NamedTuple):
    bed: Testbed
    before: dict[str, object]


@pytest.fixture(scope="module")
def world(bed: Testbed) -> Iterator[World]:
    """The machines above, one finished job (1), and gnspawnd, with machined saying
    that PLAIN runs."""
    bed.reset()
    with bed.host_services(PLAIN):
        bed.start_daemon()
        try:
            bed.seed(WEB)
            call("Update", "st", WEB, str(PRETEND))
            wait_job(1)
            zfs("snapshot", "-o", "org.gnspawn:job=1", f"{MACHINES}/{WEB}@{PROTECTED}")
            zfs("snapshot", f"{MACHINES}/{WEB}@{NEWEST}")
            zfs("create", "-o", f"mountpoint={bed.machines / PLAIN}", f"{MACHINES}/{PLAIN}")
            (bed.machines / FOREIGN).mkdir()
            settings_directory(bed).mkdir(parents=True, exist_ok=True)
            (settings_directory(bed) / f"{GHOST}.nspawn").write_text("[Exec]\nBoot=yes\n")
            yield World(bed, inventory(bed))
        finally:
            bed.stop_daemon()


def test_the_machines_are_as_the_rules_assume(world: World) -> None:
    machines = call("ListMachines").stdout
    assert f'"{WEB}" "ready"' in machines and f'"{PLAIN}" "foreign"' in machines
    assert f'"{FOREIGN}" "foreign"' in machines and f'"{GHOST}"' not in machines
    snapshots = call("ListSnapshots", "s", WEB).stdout
    assert re.search(rf'"{PROTECTED}" \d+ \d+ 1 "update" "{NEWEST}" \d+ \d+ 0 ""', snapshots)
    listed = re.findall(r'"([^"]*)" "[^"]*" "[^"]*"', call("ListProfiles").stdout)
    assert listed == list(PROFILES[1:])


# --- each method, input by input ------------------------------------------------

EXPECTED: list[tuple[str, tuple[Value, ...], str]] = [
    ("Update", ("a/b", 0), INVALID_NAME),
    ("Update", ("../web", 0), INVALID_NAME),
    ("Update", ("", 0), INVALID_NAME),
    ("Update", ("-rf", 0), INVALID_NAME),
    ("Update", ("x" * 65, 0), INVALID_NAME),
    ("Update", ("a..b", 0), INVALID_NAME),
    ("Update", ("wéb", 0), INVALID_NAME),
    ("Update", ("web\n", 0), INVALID_NAME),
    ("Update", ("nosuch", 0), NO_SUCH_MACHINE),
    ("Update", ("x" * 64, 0), NO_SUCH_MACHINE),
    ("Update", (GHOST, 0), NO_SUCH_MACHINE),
    ("Update", (PLAIN, 0), NOT_GENTOO),
    ("Update", (WEB, NO_METHOD_KNOWS), INVALID_ARGS),
    ("Update", (WEB, MAX_U64), INVALID_ARGS),
    ("Update", (WEB, RESUME | PRETEND), INVALID_ARGS),
    ("Update", (WEB, SCHEDULED | PRETEND), INVALID_ARGS),
    ("UpdateAll", (NO_METHOD_KNOWS,), INVALID_ARGS),
    ("UpdateAll", (RESUME | PRETEND,), INVALID_ARGS),
    ("UpdateAll", (MAX_U64,), INVALID_ARGS),
    ("Build", ("a/b", PROFILE, 0), INVALID_NAME),
    ("Build", (".hidden", PROFILE, 0), INVALID_NAME),
    ("Build", (WEB, PROFILE, 0), MACHINE_EXISTS),
    ("Build", (PLAIN, "", 0), MACHINE_EXISTS),
    ("Build", (FOREIGN, PROFILE, 0), MACHINE_EXISTS),
    ("Build", (GHOST, PROFILE, 0), MACHINE_EXISTS),
    ("Build", (WEB, "", RESUME), MACHINE_EXISTS),
    ("Build", (FRESH, "", RESUME), NO_SUCH_MACHINE),
    ("Build", (FRESH, "nope", 0), NO_SUCH_PROFILE),
    ("Build", (FRESH, "../../../etc", 0), NO_SUCH_PROFILE),
    ("Build", (FRESH, f"{PROFILE}/../{PROFILE}", 0), NO_SUCH_PROFILE),
    ("Build", (FRESH, "/etc", 0), NO_SUCH_PROFILE),
    ("Build", (FRESH, "/", 0), NO_SUCH_PROFILE),
    ("Build", (FRESH, "x" * 256, 0), NO_SUCH_PROFILE),
    ("Remove", ("a/b", 0), INVALID_NAME),
    ("Remove", ("nosuch", 0), NO_SUCH_MACHINE),
    ("Remove", (FOREIGN, 0), NO_SUCH_MACHINE),
    ("Remove", (GHOST, 0), NO_SUCH_MACHINE),
    ("Remove", (PLAIN, 0), BUSY),
    ("Remove", (PLAIN, FAIL_IF_BUSY), BUSY),
    ("Remove", (WEB, NO_METHOD_KNOWS), INVALID_ARGS),
    ("Sync", (FAIL_IF_BUSY,), INVALID_ARGS),
    ("Sync", (PRETEND,), INVALID_ARGS),
    ("Sync", (NO_METHOD_KNOWS,), INVALID_ARGS),
    ("Prune", ("a/b", 0), INVALID_NAME),
    ("Prune", ("nosuch", 0), NO_SUCH_MACHINE),
    ("Prune", (WEB, NO_METHOD_KNOWS), INVALID_ARGS),
    ("Prune", (WEB, KEEP_FAILED), INVALID_ARGS),
    ("Prune", (WEB, PRETEND), INVALID_ARGS),
    ("Rollback", ("a/b", "", 0), INVALID_NAME),
    ("Rollback", ("nosuch", "", 0), NO_SUCH_MACHINE),
    ("Rollback", (WEB, "nope", 0), NO_SUCH_SNAPSHOT),
    ("Rollback", (WEB, "@", 0), NO_SUCH_SNAPSHOT),
    ("Rollback", (WEB, "web@x", 0), NO_SUCH_SNAPSHOT),
    ("Rollback", (WEB, f"{PROTECTED}@x", 0), NO_SUCH_SNAPSHOT),
    ("Rollback", (WEB, f"{NEWEST}/", 0), NO_SUCH_SNAPSHOT),
    ("Rollback", (WEB, f"../{NEWEST}", 0), NO_SUCH_SNAPSHOT),
    ("Rollback", (WEB, f"{MACHINES}/{PLAIN}@{NEWEST}", 0), NO_SUCH_SNAPSHOT),
    ("Rollback", (WEB, f"{MACHINES}@{NEWEST}", 0), NO_SUCH_SNAPSHOT),
    ("Rollback", (WEB, "-r", 0), NO_SUCH_SNAPSHOT),
    ("Rollback", (PLAIN, "", 0), NO_SUCH_SNAPSHOT),
    ("Rollback", (WEB, "", 0), SNAPSHOT_PROTECTED),
    ("Rollback", (WEB, PROTECTED, FAIL_IF_BUSY), SNAPSHOT_PROTECTED),
    ("Rollback", (WEB, f"{MACHINES}/{WEB}@{PROTECTED}", 0), SNAPSHOT_PROTECTED),
    ("Rollback", (WEB, NEWEST, KEEP_FAILED), INVALID_ARGS),
    ("Rollback", (WEB, NEWEST, PRETEND), INVALID_ARGS),
    ("Rollback", (WEB, NEWEST, NO_METHOD_KNOWS), INVALID_ARGS),
    ("ListRetention", ("a/b",), INVALID_NAME),
    ("ListRetention", ("",), INVALID_NAME),
    ("ListRetention", (FOREIGN,), NO_SUCH_MACHINE),
    ("ListSnapshots", ("../web",), INVALID_NAME),
    ("ListSnapshots", (f"{WEB}@{NEWEST}",), INVALID_NAME),
    ("ListSnapshots", (GHOST,), NO_SUCH_MACHINE),
    ("ListNews", ("a/b",), INVALID_NAME),
    ("ListNews", ("nosuch",), NO_SUCH_MACHINE),
    ("ListNews", (GHOST,), NO_SUCH_MACHINE),
    ("ListNews", (PLAIN,), NOT_GENTOO),
    ("MarkNewsRead", ("../web", (), 0), INVALID_NAME),
    ("MarkNewsRead", ("nosuch", (), 0), NO_SUCH_MACHINE),
    ("MarkNewsRead", (FOREIGN, (), 0), NO_SUCH_MACHINE),
    ("MarkNewsRead", (PLAIN, (), 0), NOT_GENTOO),
    ("MarkNewsRead", (WEB, ("2026-12-01-item",), 0), NO_SUCH_NEWS_ITEM),
    ("MarkNewsRead", (WEB, ("2026-12-01-item", "2026-12-02-other"), 0), NO_SUCH_NEWS_ITEM),
    ("MarkNewsRead", (WEB, ("../x",), 0), INVALID_ARGS),
    ("MarkNewsRead", (WEB, ("2026-12-01-item/../../../etc/shadow",), 0), INVALID_ARGS),
    ("MarkNewsRead", (WEB, ("2026-12-01-item", "/etc/shadow"), 0), INVALID_ARGS),
    ("MarkNewsRead", (WEB, ("2026-12-01-.hidden",), 0), INVALID_ARGS),
    ("MarkNewsRead", (WEB, (), FAIL_IF_BUSY), INVALID_ARGS),
    ("MarkNewsRead", (WEB, (), NO_METHOD_KNOWS), INVALID_ARGS),
    ("ListAttention", ("../web",), INVALID_NAME),
    ("ListConfigFiles", ("../web",), INVALID_NAME),
    ("ListConfigFiles", (GHOST,), NO_SUCH_MACHINE),
    ("ListConfigFiles", (PLAIN,), NOT_GENTOO),
    ("ResolveConfig", ("a/b", "/etc/x", "keep", 0), INVALID_NAME),
    ("ResolveConfig", ("nosuch", "/etc/x", "keep", 0), NO_SUCH_MACHINE),
    ("ResolveConfig", (PLAIN, "/etc/x", "keep", 0), NOT_GENTOO),
    ("ResolveConfig", (WEB, "/etc/x", "keep", 0), NO_SUCH_CONFIG_FILE),
    ("ResolveConfig", (WEB, "/etc/x", "replace", FAIL_IF_BUSY), NO_SUCH_CONFIG_FILE),
    ("ResolveConfig", (WEB, "/etc/x", "discard", 0), INVALID_ARGS),
    ("ResolveConfig", (WEB, "/etc/x", "", 0), INVALID_ARGS),
    ("ResolveConfig", (WEB, "etc/x", "keep", 0), INVALID_ARGS),
    ("ResolveConfig", (WEB, "/etc/../etc/shadow", "keep", 0), INVALID_ARGS),
    ("ResolveConfig", (WEB, "/etc/x\n", "keep", 0), INVALID_ARGS),
    ("ResolveConfig", (WEB, "/", "keep", 0), INVALID_ARGS),
    ("ResolveConfig", (WEB, "/etc/x", "keep", PRETEND), INVALID_ARGS),
    ("ResolveConfig", (WEB, "/etc/x", "keep", NO_METHOD_KNOWS), INVALID_ARGS),
    ("Rollback", (WEB, "1", 0), SNAPSHOT_PROTECTED),
    ("Rollback", (WEB, "2", 0), NO_SUCH_SNAPSHOT),
    ("ListPackages", ("a/b", ""), INVALID_NAME),
    ("ListPackages", (GHOST, ""), NO_SUCH_MACHINE),
    ("ListPackages", (PLAIN, ""), NOT_GENTOO),
    ("ListPackages", (PLAIN, PROTECTED), NO_SUCH_SNAPSHOT),
    ("ListPackages", (WEB, "../../etc"), NO_SUCH_SNAPSHOT),
    ("ListPackages", (WEB, "web@x"), NO_SUCH_SNAPSHOT),
    ("ListPackages", (WEB, "2"), NO_SUCH_SNAPSHOT),
    ("ListPackages", (WEB, NEWEST), NO_PACKAGE_RECORD),
    ("ListPackages", (WEB, "1"), NO_PACKAGE_RECORD),
    ("DiffPackages", (WEB, "", "nope"), NO_SUCH_SNAPSHOT),
    ("DiffPackages", (WEB, f"{MACHINES}/{PLAIN}@{NEWEST}", ""), NO_SUCH_SNAPSHOT),
    ("Keep", ("a/b", PROTECTED, "", 0), INVALID_NAME),
    ("Keep", (WEB, PROTECTED, "", NO_METHOD_KNOWS), INVALID_ARGS),
    ("Keep", (WEB, PROTECTED, "", FAIL_IF_BUSY), INVALID_ARGS),
    ("Keep", (WEB, PROTECTED, "1234", 0), INVALID_TAG),
    ("Keep", (WEB, PROTECTED, "gnspawn-1-pre", 0), INVALID_TAG),
    ("Keep", (WEB, PROTECTED, "a/b", 0), INVALID_TAG),
    ("Keep", (WEB, PROTECTED, "x" * 65, 0), INVALID_TAG),
    ("Keep", (WEB, PROTECTED, "-r", 0), INVALID_TAG),
    ("Keep", (WEB, PROTECTED, "tag\n", 0), INVALID_TAG),
    ("Keep", (WEB, "nope", "", 0), NO_SUCH_SNAPSHOT),
    ("Keep", (PLAIN, PROTECTED, "", 0), NO_SUCH_SNAPSHOT),
    ("Unkeep", (WEB, "nope", 0), NO_SUCH_SNAPSHOT),
    ("Unkeep", (WEB, "", 0), NO_SUCH_SNAPSHOT),
    ("Unkeep", (FOREIGN, PROTECTED, 0), NO_SUCH_MACHINE),
    ("Unkeep", (WEB, PROTECTED, PRETEND), INVALID_ARGS),
    ("GetJob", (0,), NO_SUCH_JOB),
    ("GetJob", (2,), NO_SUCH_JOB),
    ("GetJob", (MAX_U32,), NO_SUCH_JOB),
    ("CancelJob", (0,), NO_SUCH_JOB),
    ("CancelJob", (2,), NO_SUCH_JOB),
    ("CancelJob", (1,), NOT_CANCELLABLE),
    ("Job.Cancel", (), NOT_CANCELLABLE),
    ("Send", (WEB, "a host", 0), INVALID_HOST),
    ("Send", (WEB, "-oProxyCommand=id", 0), INVALID_HOST),
    ("Send", (WEB, "root@host:22/x", 0), INVALID_HOST),
    ("Send", (WEB, "", 0), INVALID_HOST),
    ("Send", ("../web", "host", 0), INVALID_NAME),
    ("Send", (GHOST, "host", 0), NO_SUCH_MACHINE),
    ("Send", (FOREIGN, "host", 0), NO_SUCH_MACHINE),
    ("Send", (PLAIN, "host", 0), NOT_GENTOO),
    ("Send", (WEB, "host", PRETEND), INVALID_ARGS),
    ("Send", (WEB, "host", NO_METHOD_KNOWS), INVALID_ARGS),
    ("PrepareReceive", (WEB, "h:pool/machines/web", 0), MACHINE_EXISTS),
    ("PrepareReceive", (PLAIN, "h:pool/machines/plain", 0), MACHINE_EXISTS),
    ("PrepareReceive", (FOREIGN, "h:pool/machines/foreign", 0), MACHINE_EXISTS),
    ("PrepareReceive", (GHOST, "h:pool/machines/ghost", 0), MACHINE_EXISTS),
    ("PrepareReceive", ("web@x", "h:p", 0), INVALID_NAME),
    ("PrepareReceive", (FRESH, "h p", 0), INVALID_ARGS),
    ("PrepareReceive", (FRESH, "h:p", MOVE), INVALID_ARGS),
    ("AdoptReceived", (WEB, "h:pool/machines/web", 0), NO_SUCH_MACHINE),
    ("AdoptReceived", (FRESH, "h:pool/machines/fresh", 0), NO_SUCH_MACHINE),
    ("AdoptReceived", ("..", "h:p", 0), INVALID_NAME),
    ("AdoptReceived", (FRESH, "", 0), INVALID_ARGS),
    ("DiscardReceived", ("a/b", "h:p", 0), INVALID_NAME),
    ("DiscardReceived", (FRESH, "h:p", 1), INVALID_ARGS),
]


@pytest.mark.parametrize(
    ("member", "values", "expected"),
    [pytest.param(m, v, e, id=f"{m}{shown(v)}") for m, v, e in EXPECTED],
)
def test_each_input_gets_its_error(
    world: World, member: str, values: tuple[Value, ...], expected: str
) -> None:
    # The rules judge the generated inputs below: they must say the same as this table.
    assert RULES[member](*values) == {expected}
    ask(member, *values, expected=frozenset({expected}))


HUGE_INPUTS: list[tuple[str, tuple[Value, ...], str]] = [
    ("Update", (HUGE, 0), INVALID_NAME),
    ("Build", (HUGE, PROFILE, 0), INVALID_NAME),
    ("Build", (FRESH, HUGE, 0), NO_SUCH_PROFILE),
    ("Build", (FRESH, "/" + HUGE, 0), NO_SUCH_PROFILE),
    ("Build", (FRESH, "x/" * 50_000, 0), NO_SUCH_PROFILE),
    ("Remove", (HUGE, 0), INVALID_NAME),
    ("Prune", (HUGE, 0), INVALID_NAME),
    ("Rollback", (HUGE, "", 0), INVALID_NAME),
    ("Rollback", (WEB, HUGE, 0), NO_SUCH_SNAPSHOT),
    ("Rollback", (WEB, f"{MACHINES}/{WEB}@{HUGE}", 0), NO_SUCH_SNAPSHOT),
    ("Rollback", (WEB, f"{HUGE}@{NEWEST}", 0), NO_SUCH_SNAPSHOT),
    ("ListRetention", (HUGE,), INVALID_NAME),
    ("ListSnapshots", (HUGE,), INVALID_NAME),
    ("ListNews", (HUGE,), INVALID_NAME),
    ("MarkNewsRead", (WEB, (HUGE,), 0), INVALID_ARGS),
    ("ListAttention", (HUGE,), INVALID_NAME),
    ("ListConfigFiles", (HUGE,), INVALID_NAME),
    ("ResolveConfig", (WEB, "/" + HUGE, "keep", 0), INVALID_ARGS),
    ("ResolveConfig", (WEB, "/etc/x", HUGE, 0), INVALID_ARGS),
    ("ListPackages", (WEB, HUGE), NO_SUCH_SNAPSHOT),
    ("DiffPackages", (WEB, "", HUGE), NO_SUCH_SNAPSHOT),
    ("Keep", (WEB, PROTECTED, HUGE, 0), INVALID_TAG),
    ("Keep", (WEB, HUGE, "", 0), NO_SUCH_SNAPSHOT),
    ("Unkeep", (WEB, HUGE, 0), NO_SUCH_SNAPSHOT),
    ("Send", (HUGE, "host", 0), INVALID_NAME),
    ("Send", (WEB, HUGE, 0), INVALID_HOST),
    ("PrepareReceive", (FRESH, HUGE, 0), INVALID_ARGS),
]


@pytest.mark.parametrize(
    ("member", "values", "expected"),
    [pytest.param(m, v, e, id=f"{m}{shown(v)}") for m, v, e in HUGE_INPUTS],
)
def test_100_kB_arguments(
    world: World, member: str, values: tuple[Value, ...], expected: str
) -> None:
    assert RULES[member](*values) == {expected}
    answer = ask(member, *values, expected=frozenset({expected}))
    assert len(answer.message) < LONGEST_MESSAGE, (
        f"{member}{shown(values)}: a message of {len(answer.message)} characters"
    )


# --- generated input --------------------------------------------------------------

# D-Bus strings are valid UTF-8 without NUL (no client can send NUL or a lone
# surrogate), so the text below is everything else: path separators, dots, dashes,
# controls, non-ASCII.
any_text = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\0"), max_size=300)
names = st.one_of(
    st.sampled_from(
        [
            *TAKEN,
            FRESH,
            "x" * 64,
            "_",
            "0",
            "A.b-c_d",
            "web.",
            "Web",
            "",
            ".",
            "..",
            "../web",
            "web/..",
            "-rf",
            "--help",
            ".hidden",
            "a/b",
            "a..b",
            "web@snap",
            "web\n",
            " web",
            "x" * 65,
            "x" * 5000,
            "wéb",
            "web\x7f",
            "@",
            "-o mountpoint=/",
            "web; rm -rf /",
            "$(id)",
            "machines/web",
            f"{MACHINES}/{WEB}",
            "/etc",
        ]
    ),
    any_text,
)
profiles = st.one_of(
    st.sampled_from(
        [
            "",
            PROFILE,
            "nope",
            "../../../etc",
            f"{PROFILE}/..",
            f"{PROFILE}/../{PROFILE}",
            f"{PROFILE} ",
            f"{PROFILE}\n",
            "DEFAULT",
            "/etc",
            "/",
            "/dev/null",
            "-o",
            "$(id)",
            "x" * 256,
        ]
    ),
    # The first element of a relative path that no repository has: such a profile
    # cannot exist, whatever follows.
    any_text.map(lambda text: "nope-" + text),
)
snapshots = st.one_of(
    st.sampled_from(
        [
            "",
            "@",
            PROTECTED,
            NEWEST,
            f" {NEWEST}",
            f"{NEWEST}\n",
            f"{MACHINES}/{WEB}@{NEWEST}",
            f"{MACHINES}/{WEB}@{PROTECTED}",
            f"{MACHINES}/{PLAIN}@{NEWEST}",
            f"{MACHINES}@{NEWEST}",
            "web@x",
            "../x",
            "-r",
            f"{PROTECTED}@x",
            "x" * 5000,
        ]
    ),
    any_text,
)
flags = st.one_of(
    st.sampled_from(
        [0, FAIL_IF_BUSY, KEEP_FAILED, PRETEND, RESUME, SCHEDULED, NO_CANARY, MOVE, ALL_FLAGS]
    ),
    st.sampled_from([NO_METHOD_KNOWS, 1 << 63, MAX_U64]),
    st.integers(min_value=0, max_value=MAX_U64),
)


@CASES
@given(name=names, flag_bits=flags)
def test_update(world: World, name: str, flag_bits: int) -> None:
    assume(harmless("Update", name, flag_bits))
    ask("Update", name, flag_bits)


@CASES
@given(flag_bits=flags)
def test_update_all(world: World, flag_bits: int) -> None:
    assume(harmless("UpdateAll", flag_bits))
    ask("UpdateAll", flag_bits)


@CASES
@given(flag_bits=flags)
def test_sync(world: World, flag_bits: int) -> None:
    assume(harmless("Sync", flag_bits))
    ask("Sync", flag_bits)


@CASES
@given(name=names, profile=profiles, flag_bits=flags)
def test_build(world: World, name: str, profile: str, flag_bits: int) -> None:
    assume(harmless("Build", name, profile, flag_bits))
    ask("Build", name, profile, flag_bits)


@CASES
@given(name=names, flag_bits=flags)
def test_remove(world: World, name: str, flag_bits: int) -> None:
    assume(harmless("Remove", name, flag_bits))
    ask("Remove", name, flag_bits)


hosts = st.one_of(
    st.sampled_from(
        ["", "host", "root@host:22", "-oProxyCommand=id", "a b", "host\n", "[::1]:2222", "@h"]
    ),
    any_text,
)


@CASES
@given(name=names, host=hosts, flag_bits=flags)
def test_send(world: World, name: str, host: str, flag_bits: int) -> None:
    # A valid request would queue a send (to a host that does not answer): not sent.
    assume(harmless("Send", name, host, flag_bits))
    ask("Send", name, host, flag_bits)


@CASES
@given(name=names, flag_bits=flags)
def test_prune(world: World, name: str, flag_bits: int) -> None:
    assume(harmless("Prune", name, flag_bits))
    ask("Prune", name, flag_bits)


@CASES
@given(name=names, snapshot=snapshots, flag_bits=flags)
def test_rollback(world: World, name: str, snapshot: str, flag_bits: int) -> None:
    assume(harmless("Rollback", name, snapshot, flag_bits))
    ask("Rollback", name, snapshot, flag_bits)


@CASES
@given(name=names)
def test_listings(world: World, name: str) -> None:
    assume(harmless("ListSnapshots", name))
    ask("ListSnapshots", name)
    ask("ListRetention", name)
    ask("ListNews", name)
    ask("ListConfigFiles", name)


@CASES
@given(name=names)
def test_list_attention(world: World, name: str) -> None:
    assume(harmless("ListAttention", name))
    ask("ListAttention", name)


@CASES
@given(
    name=names,
    path=st.one_of(st.sampled_from(["/etc/x", "/etc/../x", "etc/x", "/", ""]), any_text),
    action=st.one_of(st.sampled_from(["keep", "replace", "merge", "discard"]), any_text),
    flag_bits=flags,
)
def test_resolve_config(world: World, name: str, path: str, action: str, flag_bits: int) -> None:
    assume(harmless("ResolveConfig", name, path, action, flag_bits))
    ask("ResolveConfig", name, path, action, flag_bits)


@CASES
@given(name=names, snapshot=snapshots, other=snapshots)
def test_packages(world: World, name: str, snapshot: str, other: str) -> None:
    assume(harmless("DiffPackages", name, snapshot, other))
    ask("DiffPackages", name, snapshot, other)
    if harmless("ListPackages", name, snapshot):
        ask("ListPackages", name, snapshot)


tags = st.one_of(
    st.sampled_from(["", "stable", "1", "gnspawn-x", "-r", "a/b", "x" * 65, "Tag.1+x"]),
    any_text,
)


@CASES
@given(name=names, snapshot=snapshots, tag=tags, flag_bits=flags)
def test_keep(world: World, name: str, snapshot: str, tag: str, flag_bits: int) -> None:
    assume(harmless("Keep", name, snapshot, tag, flag_bits))
    ask("Keep", name, snapshot, tag, flag_bits)
    if harmless("Unkeep", name, snapshot, flag_bits):
        ask("Unkeep", name, snapshot, flag_bits)


@CASES
@given(job=st.integers(min_value=0, max_value=MAX_U32))
def test_jobs(world: World, job: int) -> None:
    assume(job != 1)
    ask("GetJob", job)
    ask("CancelJob", job)


# --- wrong signatures and standard errors ---------------------------------------

SIGNATURE_BASE: dict[str, tuple[Value, ...]] = {
    "Update": (WEB, PRETEND),
    "UpdateAll": (PRETEND,),
    "Sync": (NO_METHOD_KNOWS,),
    "Build": (FRESH, "nope", 0),
    "Remove": (GHOST, 0),
    "Prune": (GHOST, 0),
    "ListRetention": (WEB,),
    "ListProfiles": (),
    "Rollback": (WEB, PROTECTED, 0),
    "ListMachines": (),
    "ListSnapshots": (WEB,),
    "ListNews": (GHOST,),
    "MarkNewsRead": (WEB, ("../x",), 0),
    "ListAttention": ("../x",),
    "ListConfigFiles": (GHOST,),
    "ResolveConfig": (WEB, "/etc/x", "discard", 0),
    "ListPackages": (WEB, "nope"),
    "DiffPackages": (WEB, "nope", ""),
    "Keep": (WEB, "nope", "", 0),
    "Unkeep": (WEB, "nope", 0),
    "Send": (GHOST, "host", 0),
    "PrepareReceive": (WEB, "h:p", 0),
    "AdoptReceived": (FRESH, "h:p", 0),
    "DiscardReceived": (FRESH, "h:p", 0),
    "ListChanges": (0,),
    "ListJobs": (),
    "GetJob": (1,),
    "CancelJob": (1,),
    "Job.Cancel": (),
}
"""Arguments that, sent with the right signature, would be harmless (or refused)."""


def wrong_signatures(member: str) -> dict[str, tuple[str, ...]]:
    """The method's arguments with one too few, one too many, and each of another type."""
    signature, values = SIGNATURES[member], SIGNATURE_BASE[member]
    parts = codes(signature)
    args = typed(signature, values)
    wrong: dict[str, tuple[str, ...]] = {signature + "s": (*args, "string:x")}
    if not signature:
        wrong["u"] = ("uint32:1",)
        return wrong
    wrong[""] = ()
    wrong["".join(parts[:-1])] = args[:-1]
    wrong[signature + signature] = args + args
    for i, code in enumerate(parts):
        others = {
            "s": ("o", "v", "as"),
            "t": ("u", "i", "s"),
            "u": ("t", "s"),
            "as": ("s", "ai"),
        }[code]
        for other in others:
            if other == "v":
                arg = f"variant:{args[i]}"
            elif other == "as":
                arg = f"array:string:{values[i]}"
            elif other == "ai":
                arg = "array:int32:1"
            elif other == "o":
                arg = "objpath:/x"
            else:
                arg = typed(other, ("1" if other == "s" else int(str(values[i])),))[0]
            changed = "".join([*parts[:i], other, *parts[i + 1 :]])
            wrong[changed] = (*args[:i], arg, *args[i + 1 :])
    return wrong


@pytest.mark.parametrize("member", list(SIGNATURES))
def test_wrong_signatures(world: World, member: str) -> None:
    """Too few, too many or mistyped arguments are InvalidArgs, as systemd's services and
    GDBus answer them; the method exists, so UnknownMethod would mislead the caller."""
    answers = {
        signature: send(member, *args).name for signature, args in wrong_signatures(member).items()
    }
    assert world.bed.daemon is not None and world.bed.daemon.poll() is None, "gnspawnd is gone"
    wrong = {signature: name for signature, name in answers.items() if name != INVALID_ARGS}
    assert not wrong, f"{member} with signatures other than {SIGNATURES[member]!r}: {wrong}"


def test_what_does_not_exist(world: World) -> None:
    """Methods, interfaces, objects and properties that do not exist have their
    standard errors; read-only properties stay so."""
    assert send("Frobnicate").name == STANDARD + "UnknownMethod"
    other_interface = dbus_send("/org/gnspawn1", "org.gnspawn1.Nope.Update", "string:web")
    assert other_interface.name in {STANDARD + "UnknownInterface", STANDARD + "UnknownMethod"}
    no_job = dbus_send("/org/gnspawn1/job/_2", "org.gnspawn1.Job.Cancel")
    assert no_job.name in {STANDARD + "UnknownObject", STANDARD + "UnknownMethod"}
    properties = "org.freedesktop.DBus.Properties."
    for path, interface, prop in (
        ("/org/gnspawn1", "org.gnspawn1.Manager", "Version"),
        ("/org/gnspawn1/job/_1", "org.gnspawn1.Job", "Result"),
    ):
        answer = dbus_send(
            path, properties + "Set", f"string:{interface}", f"string:{prop}", "variant:string:x"
        )
        assert answer.name == STANDARD + "PropertyReadOnly"
    answer = dbus_send(
        "/org/gnspawn1", properties + "Get", "string:org.gnspawn1.Manager", "string:Nope"
    )
    assert answer.name == STANDARD + "UnknownProperty"
    answer = dbus_send("/org/gnspawn1", properties + "Get", "string:org.gnspawn1.Nope", "string:x")
    assert answer.name == STANDARD + "UnknownInterface"


# --- afterwards -----------------------------------------------------------------


def test_nothing_changed_and_the_daemon_stops_cleanly(world: World) -> None:
    """Runs last: no job, dataset, snapshot, property, file or row came of all the above;
    the daemon still answers, exits 0, and logged no error for any of it."""
    bed = world.bed
    assert bed.daemon is not None and bed.daemon.poll() is None, "gnspawnd is gone"
    pid = bed.daemon.pid
    jobs = call("ListJobs").stdout
    assert jobs.startswith("a(ussssuo) 1 1 "), jobs
    assert f'"{WEB}" "ready"' in call("ListMachines").stdout
    code = bed.stop_daemon()
    assert code == 0, bed.daemon_log.read_text()[-3000:]
    assert inventory(bed) == world.before
    errors = bed.journal.entries(*(f"PRIORITY={level}" for level in range(4)), f"_PID={pid}")
    assert [str(entry["MESSAGE"])[:300] for entry in errors] == []
