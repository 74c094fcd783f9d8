"""The daemon killed at many moments of a real update: every root ends up either as it
was before the job or as it is after it, never in between."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from helpers import call, gnspawn_processes, job_string, queued, snapshots, wait_job, wait_until
from testbed import Testbed, emerge_environment, tree_hash, zfs

MOMENTS = 12


def installed(root: Path) -> set[str]:
    """The packages in the root's package database."""
    vdb = root / "var/db/pkg"
    return {f"{cat.name}/{pkg.name}" for cat in vdb.iterdir() for pkg in cat.iterdir()}


def is_after(root: Path) -> bool:
    """The update's whole result: hello-2 recorded and its files in place, hello-1 gone."""
    packages = installed(root)
    return (
        "app-misc/hello-2" in packages
        and "app-misc/hello-1" not in packages
        and (root / "usr/share/hello/version").read_text() == "2\n"
        and (root / "usr/share/hello/hello.txt").read_text() == "hello 2\n"
    )


def test_kill_at_any_moment_leaves_before_or_after(daemon: Testbed) -> None:
    root = daemon.seed("web")
    ds = f"{daemon.dataset}/web"
    zfs("snapshot", f"{ds}@base")
    before = tree_hash(root)

    # Undisturbed runs measure how long a job takes: the first compiles hello-2, the
    # second installs the binary package as every job of the loop below does.
    durations = []
    for _ in range(2):
        zfs("rollback", "-r", f"{ds}@base")
        started = time.monotonic()
        assert wait_job(queued(call("Update", "st", "web", "0").stdout)) == "done"
        durations.append(time.monotonic() - started)
        assert is_after(root)
    duration = max(durations)

    outcomes = []
    for moment in range(MOMENTS):
        zfs("rollback", "-r", f"{ds}@base")
        assert tree_hash(root) == before
        job = queued(call("Update", "st", "web", "0").stdout)
        if moment < MOMENTS - 1:
            # From the call's return to half as long again as a whole job.
            time.sleep(1.5 * duration * moment / (MOMENTS - 2))
        else:
            wait_job(job)  # and once when it is over: the kill must keep the result
        daemon.stop_daemon(signal.SIGKILL)
        daemon.start_daemon()

        result = wait_job(job)
        wait_until(lambda: not gnspawn_processes(), "no emerge of gnspawn's left")
        if tree_hash(root) == before:
            outcomes.append("before")
            assert result == "failed" and job_string(job, "Error") == "interrupted", result
        else:
            assert is_after(root), f"root between two states after a kill at {moment}"
            assert result in ("done", "failed"), result
            outcomes.append("after")
        verdicts = call("ListRetention", "s", "web").stdout
        assert " false " not in verdicts, verdicts
        assert f"{ds}@base" in snapshots(ds)
    # The kills fell both before the end of a job and after it.
    assert "before" in outcomes and "after" in outcomes, (outcomes, durations)


def test_a_build_killed_in_a_step_is_rolled_back_and_resumes(daemon: Testbed) -> None:
    # The sleeper's compile takes GNSPAWN_DEMO_SLEEP seconds: time enough to kill.
    env = {**emerge_environment(daemon.repo), "GNSPAWN_DEMO_SLEEP": "4"}
    daemon.write_config(
        portage={"build_args": ["@system", "=app-misc/sleeper-2"], "environment": env}
    )
    daemon.stop_daemon()
    daemon.start_daemon()
    job = queued(call("Build", "sst", "c1", "", "0").stdout)
    wait_until(lambda: job_string(job, "CurrentPackage") == "app-misc/sleeper-2", "the build")
    phase = job_string(job, "Phase")

    daemon.stop_daemon(signal.SIGKILL)
    daemon.start_daemon()

    assert wait_job(job) == "failed"
    assert job_string(job, "Error") == "interrupted"
    wait_until(lambda: not gnspawn_processes(), "no emerge of gnspawn's left")
    root = daemon.machines / "c1"
    assert not (root / "usr/share/sleeper").exists()
    assert '"c1" "incomplete"' in call("ListMachines").stdout
    step = "emerge-nodeps" if phase == "emerge-nodeps" else "emerge"
    assert snapshots(f"{daemon.dataset}/c1")[-1] == f"{daemon.dataset}/c1@gnspawn-{job}-{step}"

    resumed = queued(call("Build", "sst", "c1", "", "8").stdout)
    assert wait_job(resumed) == "done", job_string(resumed, "Error")
    assert (root / "usr/share/sleeper/version").read_text() == "2\n"


def test_a_rollback_interrupted_by_a_kill_is_finished_at_the_next_start(daemon: Testbed) -> None:
    root = daemon.seed("web")
    assert wait_job(queued(call("Update", "st", "web", "0").stdout)) == "done"
    rollback = queued(call("Rollback", "sst", "web", "", "0").stdout)
    daemon.stop_daemon(signal.SIGKILL)  # wherever the rollback is, it is cut short
    daemon.start_daemon()

    assert wait_job(rollback) == "done"
    assert (root / "usr/share/hello/version").read_text() == "1\n"
