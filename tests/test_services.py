"""systemd's answers to gnspawnd's unit jobs, waited for: through the real daemon.

systemd cannot be PID 1 here: a recording org.freedesktop.systemd1 stands in for it
and ends each unit job with the result a test asks for, as systemd's JobRemoved does.
"""

from __future__ import annotations

import json
from pathlib import Path

from helpers import (
    busctl,
    call,
    hello_version,
    job_property,
    job_string,
    queued,
    snapshots,
    wait_job,
)
from recording_services import unit_path
from testbed import Testbed, tree_hash


def unit(name: str) -> str:
    """The machine's systemd unit."""
    return f"systemd-nspawn@{name}.service"


def unit_calls(record: Path) -> list[list[object]]:
    """The calls gnspawnd made to systemd, in order (machined's left out)."""
    lines = record.read_text().splitlines() if record.exists() else []
    return [c for c in map(json.loads, lines) if c[0] != "GetMachine"]


def active_state(name: str) -> str:
    """The unit's ActiveState as the stand-in for systemd reports it."""
    out = busctl(
        "get-property",
        "org.freedesktop.systemd1",
        unit_path(unit(name)),
        "org.freedesktop.systemd1.Unit",
        "ActiveState",
    ).stdout.strip()
    assert out.startswith('s "'), out
    return out[3:-1]


def assert_names_unit_and_result(job: int, name: str, result: str) -> None:
    """The job failed, and its Error names the unit and the result systemd's job ended with."""
    assert job_string(job, "Result") == "failed"
    error = job_string(job, "Error")
    assert unit(name) in error, error
    assert f"result {result}" in error, error


def configured(daemon: Testbed, **sections: dict[str, object]) -> None:
    """gnspawnd started again with these settings."""
    daemon.write_config("", **sections)
    daemon.stop_daemon()
    daemon.start_daemon()


def updated(daemon: Testbed, name: str) -> Path:
    """A machine updated once, with `gnspawn-1-pre` to roll back to."""
    root = daemon.seed(name)
    job = queued(call("Update", "st", name, "0").stdout)
    assert wait_job(job) == "done", job_string(job, "Error")
    assert hello_version(root) == "2"
    return root


def test_enable_waits_for_the_start_job_and_leaves_the_unit_active(daemon: Testbed) -> None:
    configured(daemon, nspawn={"enable": True})
    # JobRemoved before the reply that names the job, as systemd can send it.
    with daemon.host_services(signal_first=True) as record:
        job = queued(call("Build", "sst", "web", "", "0").stdout)
        assert wait_job(job) == "done", job_string(job, "Error")
        assert active_state("web") == "active"

    assert unit_calls(record) == [
        ["EnableUnitFiles", [unit("web")], False, False],
        ["Reload"],
        ["StartUnit", unit("web"), "replace"],
    ]


def test_enable_whose_start_job_fails_fails_the_build(daemon: Testbed) -> None:
    configured(daemon, nspawn={"enable": True})
    with daemon.host_services(fail={("StartUnit", unit("web")): "failed"}) as record:
        job = queued(call("Build", "sst", "web", "", "0").stdout)
        assert wait_job(job) == "failed"
        assert active_state("web") == "failed"

    assert_names_unit_and_result(job, "web", "failed")
    assert unit_calls(record) == [
        ["EnableUnitFiles", [unit("web")], False, False],
        ["Reload"],
        ["StartUnit", unit("web"), "replace"],
    ]


def test_restart_and_rollback_of_a_running_machine_wait_for_each_job(daemon: Testbed) -> None:
    configured(daemon, updates={"restart": True})
    root = daemon.seed("web")
    with daemon.host_services("web", signal_first=True) as record:
        update = queued(call("Update", "st", "web", "0").stdout)
        assert wait_job(update) == "done", job_string(update, "Error")
        rollback = queued(call("Rollback", "sst", "web", "", "0").stdout)
        assert wait_job(rollback) == "done", job_string(rollback, "Error")
        assert active_state("web") == "active"

    assert hello_version(root) == "1"
    assert job_property(rollback, "RolledBack") == "b true"
    assert unit_calls(record) == [
        ["TryRestartUnit", unit("web"), "replace"],
        ["StopUnit", unit("web"), "replace"],
        ["StartUnit", unit("web"), "replace"],
    ]


def test_a_failed_restart_after_an_update_fails_the_job(daemon: Testbed) -> None:
    configured(daemon, updates={"restart": True})
    daemon.seed("web")
    with daemon.host_services(
        "web", fail={("TryRestartUnit", unit("web")): "dependency"}
    ) as record:
        job = queued(call("Update", "st", "web", "0").stdout)
        assert wait_job(job) == "failed"

    assert_names_unit_and_result(job, "web", "dependency")
    assert unit_calls(record) == [["TryRestartUnit", unit("web"), "replace"]]


def test_a_stop_that_fails_before_a_rollback_leaves_the_dataset_as_it_was(
    daemon: Testbed,
) -> None:
    root = updated(daemon, "web")
    before = tree_hash(root)
    dataset = f"{daemon.dataset}/web"
    kept = snapshots(dataset)
    with daemon.host_services("web", fail={("StopUnit", unit("web")): "timeout"}) as record:
        job = queued(call("Rollback", "sst", "web", "", "0").stdout)
        assert wait_job(job) == "failed"

    assert_names_unit_and_result(job, "web", "timeout")
    assert tree_hash(root) == before
    assert hello_version(root) == "2"
    assert snapshots(dataset) == kept
    assert job_property(job, "RolledBack") == "b false"
    # A unit that did not stop is not started again.
    assert unit_calls(record) == [["StopUnit", unit("web"), "replace"]]


def test_a_start_that_fails_after_a_rollback_fails_the_job(daemon: Testbed) -> None:
    root = updated(daemon, "web")
    with daemon.host_services("web", fail={("StartUnit", unit("web")): "failed"}) as record:
        job = queued(call("Rollback", "sst", "web", "", "0").stdout)
        assert wait_job(job) == "failed"
        assert active_state("web") == "failed"

    assert_names_unit_and_result(job, "web", "failed")
    assert hello_version(root) == "1"
    assert unit_calls(record) == [
        ["StopUnit", unit("web"), "replace"],
        ["StartUnit", unit("web"), "replace"],
    ]


def test_a_failing_unit_fails_only_its_own_machines_job(daemon: Testbed) -> None:
    configured(daemon, updates={"restart": True})
    for name in ("web", "db"):
        daemon.seed(name)
    with daemon.host_services("web", "db", fail={("TryRestartUnit", unit("db")): "failed"}):
        jobs = {name: queued(call("Update", "st", name, "0").stdout) for name in ("web", "db")}
        results = {name: wait_job(job) for name, job in jobs.items()}

    errors = {name: job_string(job, "Error") for name, job in jobs.items()}
    assert results == {"web": "done", "db": "failed"}, errors
    assert_names_unit_and_result(jobs["db"], "db", "failed")
