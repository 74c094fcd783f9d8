"""The bus contract: signals, properties, notifications and restarts, seen by a client."""

from __future__ import annotations

import asyncio
import re
import shlex
import signal
from typing import Any

from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus

from gnspawn.driver import add_match
from helpers import (
    build_with_a_job_waiting,
    busctl,
    call,
    gnctl,
    gnspawn_processes,
    hello_version,
    job_property,
    job_string,
    queued,
    wait_job,
    wait_until,
)
from testbed import Testbed, tree_hash

EMERGING_HELLO = re.compile(r">>> Emerging (binary )?\(1 of 1\) app-misc/hello-2")
MATCH = "type='signal',sender='org.gnspawn1',path_namespace='/org/gnspawn1'"


async def record_signals(action: Any, until_removed: int) -> list[Message]:
    """Every signal gnspawnd sends while `action` runs, until JobRemoved for a job count."""
    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    seen: list[Message] = []
    removed = asyncio.Event()

    def handler(msg: Message) -> None:
        if (
            msg.message_type is MessageType.SIGNAL
            and msg.path
            and msg.path.startswith("/org/gnspawn1")
        ):
            seen.append(msg)
            if sum(m.member == "JobRemoved" for m in seen) >= until_removed:
                removed.set()

    bus.add_message_handler(handler)
    await bus.call(add_match(MATCH))
    await asyncio.get_running_loop().run_in_executor(None, action)
    await asyncio.wait_for(removed.wait(), 120)
    await asyncio.sleep(0.3)  # anything sent after JobRemoved would be a bug
    bus.disconnect()
    return seen


def test_signals_tell_the_whole_story_of_a_job(daemon: Testbed) -> None:
    daemon.seed("web")
    seen = asyncio.run(record_signals(lambda: call("Update", "st", "web", "0"), until_removed=1))

    new = [m for m in seen if m.member == "JobNew"]
    removed = [m for m in seen if m.member == "JobRemoved"]
    assert [m.body for m in new] == [[1, "/org/gnspawn1/job/_1", "web", "update"]]
    assert [m.body for m in removed] == [[1, "/org/gnspawn1/job/_1", "web", "done"]]
    logs = [m.body[1] for m in seen if m.member == "LogMessage"]
    assert any(EMERGING_HELLO.match(line) for line in logs)
    assert all(m.path == "/org/gnspawn1/job/_1" for m in seen if m.member == "LogMessage")
    changes = [
        {k: v.value for k, v in m.body[1].items()}
        for m in seen
        if m.member == "PropertiesChanged" and m.body[0] == "org.gnspawn1.Job"
    ]
    phases = [c["Phase"] for c in changes if "Phase" in c]
    assert phases[:5] == ["fetch", "snapshot", "emerge", "config", "cleanup"]
    states = [c["State"] for c in changes if "State" in c]
    assert states == ["running", "finished"]
    assert {"Progress": 100, "PackagesDone": 1, "PackagesTotal": 1}.items() <= {
        k: v for c in changes for k, v in c.items()
    }.items()
    queue_changes = [
        m for m in seen if m.member == "PropertiesChanged" and m.body[0] == "org.gnspawn1.Manager"
    ]
    assert queue_changes


def test_a_merged_update_is_announced_once(daemon: Testbed) -> None:
    daemon.seed("slow", ["=app-misc/hello-1", "=app-misc/sleeper-1"])

    def action() -> None:
        first = queued(call("Update", "st", "slow", "0").stdout)
        wait_until(lambda: job_string(first, "State") == "running", "first job running")
        assert queued(call("Update", "st", "slow", "0").stdout) == first + 1
        assert queued(call("Update", "st", "slow", "0").stdout) == first + 1
        call("CancelJob", "u", str(first + 1))
        call("CancelJob", "u", str(first))

    seen = asyncio.run(record_signals(action, until_removed=2))
    assert sorted(m.body[0] for m in seen if m.member == "JobNew") == [1, 2]
    assert sorted((m.body[0], m.body[3]) for m in seen if m.member == "JobRemoved") == [
        (1, "canceled"),
        (2, "canceled"),
    ]


def test_manager_properties(daemon: Testbed) -> None:
    def prop(name: str) -> str:
        return busctl(
            "get-property", "org.gnspawn1", "/org/gnspawn1", "org.gnspawn1.Manager", name
        ).stdout.strip()

    assert prop("Dataset") == f's "{daemon.dataset}"'
    assert prop("MachinesDirectory") == f's "{daemon.machines}"'
    assert prop("MaxParallelJobs") == "u 2"
    assert prop("QueuedJobs") == "u 0"
    assert prop("RunningJobs") == "u 0"
    assert prop("Version").startswith('s "0.')
    introspection = busctl("introspect", "org.gnspawn1", "/org/gnspawn1").stdout
    for member in (
        "Update",
        "UpdateAll",
        "Rollback",
        "ListMachines",
        "ListSnapshots",
        "ListJobs",
        "GetJob",
        "CancelJob",
    ):
        assert f".{member} " in introspection


def test_ready_and_status_are_notified(daemon: Testbed) -> None:
    daemon.seed("web")
    call("Update", "st", "web", "0")
    statuses: list[str] = []
    while "STATUS=0 running, 0 waiting" not in statuses[1:]:
        statuses += [m for m in daemon.notifications() if m.startswith("STATUS=")]
    assert "STATUS=1 running, 0 waiting" in statuses


def test_update_all_queues_every_gentoo_machine(daemon: Testbed) -> None:
    a = daemon.seed("a")
    b = daemon.seed("b")
    (daemon.machines / "plain").mkdir()
    out = call("UpdateAll", "t", "0").stdout
    assert out.startswith("a(suo) 3 ")
    assert '"plain" 0 "/"' in out
    assert '"a" 1 "/org/gnspawn1/job/_1"' in out and '"b" 2 "/org/gnspawn1/job/_2"' in out
    assert wait_job(1) == "done" and wait_job(2) == "done"
    assert hello_version(a) == hello_version(b) == "2"


def test_a_killed_daemon_is_recovered_at_the_next_start(daemon: Testbed) -> None:
    jobs = build_with_a_job_waiting(daemon)

    daemon.stop_daemon(signal.SIGKILL)

    # The emerge dies with the daemon (PR_SET_PDEATHSIG) or at the next start.
    daemon.start_daemon()
    wait_until(lambda: not gnspawn_processes(jobs.running), "the old emerge to be gone")
    assert job_string(jobs.running, "Result") == "failed"
    assert job_string(jobs.running, "Error") == "interrupted"
    assert job_property(jobs.running, "RolledBack") == "b true"
    assert tree_hash(jobs.slow) == jobs.before
    assert wait_job(jobs.waiting) == "done", job_string(jobs.waiting, "Error")


def test_machine_objects_agree_with_list_machines_after_jobs_end_together(
    daemon: Testbed,
) -> None:
    # Short jobs ending close together: each end asks for the machines to be looked at
    # again while another look may be running. None of those requests may be lost.
    names = ("m0", "m1")
    for name in names:
        daemon.seed(name)

    def listed() -> dict[str, str]:
        fields = shlex.split(call("ListMachines").stdout)[2:]
        return {fields[i]: fields[i + 1] for i in range(0, len(fields), 5)}

    def shown() -> dict[str, str]:
        return {name: machine_state(name) for name in names}

    for _ in range(9):
        result = gnctl("update", "--all", "--pretend", "-q")
        assert result.returncode == 0, result.stderr
        wait_until(lambda: listed() == shown(), "Machine objects to match ListMachines", 10)
        assert set(listed().values()) <= {"ready"}, listed()


def machine_state(name: str) -> str:
    out = busctl(
        "get-property",
        "org.gnspawn1",
        f"/org/gnspawn1/machine/{name}",
        "org.gnspawn1.Machine",
        "State",
    ).stdout.strip()
    assert out.startswith('s "'), out
    return out[3:-1]
