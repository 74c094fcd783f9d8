"""Sync as a job: `emaint sync` from a git repository the test moves forward, the
revision every emerging job saw, a sync that fails and holds the scheduled cycle, and
the sync as a barrier in the queue."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest

from helpers import (
    call,
    gnctl,
    gnspawn_processes,
    hello_version,
    job_property,
    job_string,
    queued,
    snapshots,
    wait_job,
    wait_until,
)
from test_recovery import Gate, gate_machine, gate_version, journal_has, recovery_line, restart
from testbed import Testbed, tree_hash
from upstream import Upstream, git, sync_environment


def error(job: int) -> str:
    """The job's Error as it is (busctl would escape its quotes)."""
    props: dict[str, Any] = json.loads(gnctl("job", "--json", str(job)).stdout)
    return str(props["Error"])


def usec(job: int, name: str) -> int:
    return int(job_property(job, name).split()[1])


def test_sync_brings_the_new_tree_and_every_emerge_records_its_revision(
    daemon: Testbed, upstream: Upstream
) -> None:
    web = daemon.seed("web")
    before = upstream.head()
    assert git(daemon.repo, "rev-parse", "HEAD") == before
    moved = upstream.add_hello(3)
    assert moved != before
    assert not (daemon.repo / "app-misc/hello/hello-3.ebuild").exists()

    result = gnctl("sync")

    assert result.returncode == 0, result.stderr
    assert "sync done" in result.stdout
    assert (daemon.repo / "app-misc/hello/hello-3.ebuild").exists()
    assert job_string(1, "Type") == "sync"
    assert job_string(1, "Machine") == ""
    assert job_string(1, "TreeRevision") == moved
    assert gnctl("jobs", "--no-legend").stdout == "1  sync  -  finished  done  100%\n"
    lines = [e["MESSAGE"] for e in daemon.daemon_journal("GNSPAWN_JOB=1")]
    assert any("emaint sync --repo gnspawn-demo" in line for line in lines), lines
    assert "Fast-forward" in lines

    update = queued(call("Update", "st", "web", "0").stdout)
    assert wait_job(update) == "done"
    assert hello_version(web) == "3"
    assert job_string(update, "TreeRevision") == moved


@pytest.mark.parametrize("builders", [False, True], ids=["leader", "builder"])
def test_a_failed_sync_holds_the_scheduled_cycle_and_changes_nothing(
    daemon: Testbed, upstream: Upstream, builders: bool
) -> None:
    # The cycle's updates follow the sync through the job that goes first: web (trusted,
    # without builder roots), or the builder root of their profile.
    env = sync_environment(daemon, upstream.bare)
    daemon.write_config(
        "[machines.web]\ntrusted = true\n",
        portage={"environment": env, "builders": builders},
        updates={"sync": True},
    )
    daemon.stop_daemon()
    daemon.start_daemon()
    roots = {name: daemon.seed(name) for name in ("web", "db")}
    for name in roots:  # adopted, their profile recorded: one builder, or web leads
        daemon.adopt(name)
    before = {name: tree_hash(root) for name, root in roots.items()}
    upstream.bare.rename(upstream.bare.with_name("upstream.git.gone"))

    direct = gnctl("sync")

    assert direct.returncode == 1
    reason = (
        "emaint sync of repository gnspawn-demo: "
        f"fatal: '{upstream.bare}' does not appear to be a git repository"
    )
    assert reason in direct.stderr

    cycle = gnctl("update", "--all", "--scheduled")

    assert cycle.returncode == 5, cycle.stdout + cycle.stderr
    sync = 2
    assert job_string(sync, "Type") == "sync"
    assert job_string(sync, "Result") == "failed"
    assert error(sync) == reason
    ids = {job_string(i, "Machine"): i for i in range(3, 5 + builders)}
    assert sorted(ids) == [*(["builder:default"] if builders else []), "db", "web"]
    follows = ids["builder:default"] if builders else ids["web"]
    assert job_string(follows, "Result") == "held"
    for name, root in roots.items():
        job = ids[name]
        assert job_string(job, "Result") == "held"
        assert error(job) == f"the repositories were not synced (sync job {sync} failed: {reason})"
        assert f"job {job}: update of {name} held: the repositories were not synced" in cycle.stdout
        assert job_string(job, "Phase") == "queued"  # no emerge, no snapshot
        assert usec(job, "StartedUSec") >= usec(sync, "FinishedUSec")
        assert tree_hash(root) == before[name]
        assert snapshots(f"{daemon.dataset}/{name}") == []


def test_a_sync_waits_for_running_jobs_and_holds_the_ones_queued_after_it(
    daemon: Testbed, upstream: Upstream
) -> None:
    web, _ = gate_machine(daemon)
    db = daemon.seed("db")
    # In DISTDIR: emerge runs confined to the root, and that is a directory it may write.
    gate = Gate(daemon.work / "distfiles" / "gate")
    try:
        env = {
            **sync_environment(daemon, upstream.bare),
            "GNSPAWN_DEMO_GATE": str(gate.fifo),
            "GNSPAWN_DEMO_GATE_PHASE": "preinst",
        }
        daemon.write_config(portage={"environment": env})
        daemon.stop_daemon()
        daemon.start_daemon()
        before = upstream.head()
        moved = upstream.add_hello(3)
        running = queued(call("Update", "st", "web", "0").stdout)
        assert gate.wait(running) == ["preinst"]

        sync = queued(call("Sync", "t", "0").stdout)
        after = queued(call("Update", "st", "db", "0").stdout)

        # Two slots, and web's update takes one: only the barrier keeps them waiting.
        assert job_string(sync, "State") == "waiting"
        assert job_string(after, "State") == "waiting"
        assert not (daemon.repo / "app-misc/hello/hello-3.ebuild").exists()
        assert gate.release()
        assert wait_job(running) == "done"
        assert wait_job(sync) == "done"
        assert wait_job(after) == "done"
    finally:
        gate.remove()
    assert usec(sync, "StartedUSec") >= usec(running, "FinishedUSec")
    assert usec(after, "StartedUSec") >= usec(sync, "FinishedUSec")
    assert gate_version(web) == "2"
    assert hello_version(db) == "3"
    assert job_string(running, "TreeRevision") == before
    assert job_string(sync, "TreeRevision") == moved
    assert job_string(after, "TreeRevision") == moved


UPLOAD_PACK = """#!/bin/sh
# git-upload-pack as the sync's fetch runs it: says it got there, then waits for a line
# on the FIFO.
echo "$$ fetch" >>{reached}
read -r line <{fifo}
exec git-upload-pack "$@"
"""


def test_a_sync_killed_with_the_daemon_fails_and_holds_its_cycle(
    daemon: Testbed, upstream: Upstream
) -> None:
    web = daemon.seed("web")
    before = tree_hash(web)
    gate = Gate(daemon.dir / "sync-gate")
    script = daemon.dir / "upload-pack"
    script.write_text(UPLOAD_PACK.format(reached=gate.reached_file, fifo=gate.fifo))
    script.chmod(0o755)
    env = sync_environment(daemon, upstream.bare)
    env["PORTAGE_REPOSITORIES"] += f"sync-git-pull-extra-opts = --upload-pack={script}\n"
    try:
        daemon.write_config(portage={"environment": env}, updates={"sync": True})
        daemon.stop_daemon()
        daemon.start_daemon()
        old = upstream.head()
        upstream.add_hello(3)
        cycle = gnctl("update", "--all", "--scheduled", "--no-block")
        assert cycle.returncode == 0, cycle.stderr
        assert job_string(1, "Type") == "sync"
        (line,) = gate.wait(1)
        blocked = int(line.split()[0])

        daemon.stop_daemon(signal.SIGKILL)
        restart(daemon)

        assert wait_job(1) == "failed"
        reason = "interrupted; the repositories may be partly synced"
        assert error(1) == reason
        assert wait_job(2) == "held"
        assert error(2) == f"the repositories were not synced (sync job 1 failed: {reason})"
        journal_has(daemon, recovery_line(1, "sync", ""))
        # Its processes went with it: the fetch that waited on the gate is gone.
        # (killed by the recovery; reaped by init a moment later)
        wait_until(lambda: not Path(f"/proc/{blocked}").exists(), "the fetch to be gone", 10)
        assert gnspawn_processes(1) == []
        assert git(daemon.repo, "rev-parse", "HEAD") == old
        assert tree_hash(web) == before
        assert snapshots(f"{daemon.dataset}/web") == []
    finally:
        gate.remove()
