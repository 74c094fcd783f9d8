"""Hostile input: every method with generated arguments answers a named error and
changes nothing. The calls go to the real daemon over the real bus."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import call, snapshots, wait_job
from testbed import Testbed, zfs

NAMED = ("org.gnspawn1.Error.", "org.freedesktop.DBus.Error.InvalidArgs")
CASES = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# D-Bus strings are valid UTF-8 without NUL (no client can send NUL or a lone
# surrogate), so the text below is everything else: path separators, dots, dashes,
# controls, non-ASCII.
hostile_names = st.one_of(
    st.sampled_from(
        [
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
            "/etc",
        ]
    ),
    st.text(
        alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"),
        max_size=300,
    ),
).filter(lambda name: name != "web")
hostile_snapshots = st.one_of(
    st.sampled_from(
        [
            "",
            "@",
            "web@x",
            "gnspawn-test/machines/other@gnspawn-1-pre",
            "../x",
            "-r",
            "gnspawn-1-pre@x",
            "gnspawn-test@x",
            "x" * 5000,
        ]
    ),
    st.text(
        alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"),
        max_size=300,
    ),
)
unknown_flags = st.integers(min_value=0, max_value=2**64 - 1).filter(lambda f: f & ~0x1F)
any_flags = st.integers(min_value=0, max_value=2**64 - 1)
missing_jobs = st.integers(min_value=2, max_value=2**32 - 1)


class Caller:
    """One connection to the test bus, calling the Manager synchronously."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.bus = self.loop.run_until_complete(self._connect())

    @staticmethod
    async def _connect() -> MessageBus:
        return await MessageBus(bus_type=BusType.SYSTEM).connect()

    def error(self, path: str, interface: str, member: str, signature: str, *body: Any) -> str:
        message = Message(
            destination="org.gnspawn1",
            path=path,
            interface=interface,
            member=member,
            signature=signature,
            body=list(body),
        )
        reply = self.loop.run_until_complete(self.bus.call(message))
        assert reply is not None
        assert reply.message_type is MessageType.ERROR, (member, body, reply.body)
        return reply.error_name or ""

    def manager(self, member: str, signature: str, *body: Any) -> str:
        return self.error("/org/gnspawn1", "org.gnspawn1.Manager", member, signature, *body)

    def close(self) -> None:
        self.bus.disconnect()
        self.loop.close()


@pytest.fixture(scope="module")
def hostile(bed: Testbed) -> Iterator[tuple[Testbed, Caller, str]]:
    bed.reset()
    bed.start_daemon()
    bed.seed("web")
    call("Update", "st", "web", "4")  # one finished job, id 1, for the Job methods
    wait_job(1)
    before = zfs("list", "-H", "-o", "name", "-r", "-t", "all", bed.dataset)
    caller = Caller()
    try:
        yield bed, caller, before
    finally:
        caller.close()
        jobs = call("ListJobs").stdout
        code = bed.stop_daemon()
    assert code == 0
    assert zfs("list", "-H", "-o", "name", "-r", "-t", "all", bed.dataset) == before
    assert jobs.startswith("a(ussssuo) 1 1 ")
    assert snapshots(f"{bed.dataset}/web") == []
    assert list(bed.machines.iterdir()) == [bed.machines / "web"]


def named(error: str) -> bool:
    return error.startswith(NAMED)


@CASES
@given(name=hostile_names, flags=any_flags)
def test_update(hostile: tuple[Testbed, Caller, str], name: str, flags: int) -> None:
    assert named(hostile[1].manager("Update", "st", name, flags))


@CASES
@given(flags=unknown_flags)
def test_update_of_a_real_machine_with_unknown_flags(
    hostile: tuple[Testbed, Caller, str], flags: int
) -> None:
    assert (
        hostile[1].manager("Update", "st", "web", flags) == "org.freedesktop.DBus.Error.InvalidArgs"
    )
    assert hostile[1].manager("UpdateAll", "t", flags) == "org.freedesktop.DBus.Error.InvalidArgs"


@CASES
@given(
    name=hostile_names, profile=st.one_of(hostile_names, st.just("../../../etc")), flags=any_flags
)
def test_build(hostile: tuple[Testbed, Caller, str], name: str, profile: str, flags: int) -> None:
    assert named(hostile[1].manager("Build", "sst", name, profile or "nope", flags))


@CASES
@given(snapshot=hostile_snapshots, flags=any_flags)
def test_rollback(hostile: tuple[Testbed, Caller, str], snapshot: str, flags: int) -> None:
    assert named(hostile[1].manager("Rollback", "sst", "web", snapshot, flags))


@CASES
@given(name=hostile_names, snapshot=hostile_snapshots)
def test_rollback_of_hostile_machines(
    hostile: tuple[Testbed, Caller, str], name: str, snapshot: str
) -> None:
    assert named(hostile[1].manager("Rollback", "sst", name, snapshot, 0))


@CASES
@given(name=hostile_names, flags=any_flags)
def test_remove_and_prune(hostile: tuple[Testbed, Caller, str], name: str, flags: int) -> None:
    assert named(hostile[1].manager("Remove", "st", name, flags))
    assert named(hostile[1].manager("Prune", "st", name, flags))


@CASES
@given(name=hostile_names)
def test_list_snapshots_and_retention(hostile: tuple[Testbed, Caller, str], name: str) -> None:
    assert named(hostile[1].manager("ListSnapshots", "s", name))
    assert named(hostile[1].manager("ListRetention", "s", name))


@CASES
@given(job=missing_jobs)
def test_jobs_that_do_not_exist(hostile: tuple[Testbed, Caller, str], job: int) -> None:
    assert hostile[1].manager("GetJob", "u", job) == "org.gnspawn1.Error.NoSuchJob"
    assert hostile[1].manager("CancelJob", "u", job) == "org.gnspawn1.Error.NoSuchJob"


def test_cancel_of_a_finished_job(hostile: tuple[Testbed, Caller, str]) -> None:
    caller = hostile[1]
    assert caller.error("/org/gnspawn1/job/_1", "org.gnspawn1.Job", "Cancel", "") == (
        "org.gnspawn1.Error.NotCancellable"
    )
    assert caller.manager("CancelJob", "u", 1) == "org.gnspawn1.Error.NotCancellable"
