"""Faults: full pools, bad state, deleted datasets, load, vanishing clients."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus

from helpers import (
    build_with_a_job_waiting,
    call,
    job_property,
    job_string,
    queued,
    snapshots,
    wait_job,
    wait_until,
)
from testbed import Testbed, stop_pid, tree_hash, zfs

TINY = "gnspawn-tiny"


def used(dataset: str) -> int:
    return int(zfs("get", "-H", "-p", "-o", "value", "used", dataset))


def fill(pool: str, directory: Path) -> None:
    """Write into a new dataset of `pool` until the pool takes nothing more.

    ZFS counts the writes in flight at a worst-case size until their transaction group
    lands, and frees a group or two after it: a pool filled while the seed's writes and
    frees are still pending has room again a moment later, and the fetch goes through
    (seen under load). So a few snapshots first (each a sync task, which waits for its
    group) settle all that, and the rounds go on until one writes nothing."""
    zfs("create", "-o", f"mountpoint={directory}", f"{pool}/fill")
    for _ in range(3):
        zfs("snapshot", f"{pool}/fill@settled")
        zfs("destroy", f"{pool}/fill@settled")
    for block in ("64k", "512"):  # then what a lock file takes
        for n in range(50):
            data = directory / f"data-{block}-{n}"
            subprocess.run(
                ["dd", "if=/dev/urandom", f"of={data}", f"bs={block}"], capture_output=True
            )
            if not data.exists() or data.stat().st_size == 0:
                break
        else:
            raise AssertionError(f"{pool} never filled")


def test_a_full_pool_fails_the_job_before_anything_changes(daemon: Testbed) -> None:
    """The pool is full before the update starts: the fetch, the first step, cannot even
    take the root's package-database lock, and the job fails with no snapshot taken and
    no merge run."""
    image = daemon.dir / "tiny.img"
    subprocess.run(["truncate", "-s", "100M", str(image)], check=True)
    zfs("zpool", "create", "-o", "cachefile=none", "-m", "none", TINY, str(image))
    try:
        zfs("create", f"{TINY}/machines")
        daemon.write_config(
            storage={"dataset": f"{TINY}/machines", "machines_directory": str(daemon.machines)}
        )
        daemon.stop_daemon()
        daemon.start_daemon()
        root = daemon.seed("full", parent=f"{TINY}/machines")
        before = tree_hash(root)
        fill(TINY, daemon.dir / "fill")
        assert zfs("get", "-H", "-p", "-o", "value", "available", f"{TINY}/machines/full") == "0\n"

        job = queued(call("Update", "st", "full", "0").stdout)

        assert wait_job(job) == "failed"
        error = job_string(job, "Error")
        assert error.startswith("fetch failed: ") and "No space left on device" in error, error
        assert job_string(job, "Snapshot") == ""
        lines = [e["MESSAGE"] for e in daemon.daemon_journal(f"GNSPAWN_JOB={job}")]
        ran = [line for line in lines if line.startswith("running ")]
        assert ran and all("--fetchonly" in line for line in ran), ran
        assert tree_hash(root) == before
    finally:
        daemon.stop_daemon()
        zfs("set", "mountpoint=none", f"{TINY}/fill", check=False)
        zfs("set", "mountpoint=none", f"{TINY}/machines/full", check=False)
        zfs("zpool", "destroy", "-f", TINY, check=False)
        image.unlink(missing_ok=True)
        daemon.write_config()
        daemon.start_daemon()


def test_an_emerge_that_fills_the_quota_is_rolled_back_and_the_space_freed(daemon: Testbed) -> None:
    root = daemon.seed("web", ["=app-misc/hello-1", "=app-misc/big-1"])
    ds = f"{daemon.dataset}/web"
    before = tree_hash(root)
    # zfs's `used` lags until the next transaction group; du does not.
    on_disk = int(
        subprocess.run(
            ["du", "-sb", str(root)], capture_output=True, text=True, check=True
        ).stdout.split()[0]
    )
    zfs("set", f"quota={on_disk + 3 * 512 * 1024}", ds)  # big-2 needs 4 MiB more
    try:
        job = queued(call("Update", "st", "web", "0").stdout)

        assert wait_job(job) == "failed"
        assert "app-misc/big-2" in job_string(job, "Error")
        assert job_property(job, "RolledBack") == "b true"
        assert tree_hash(root) == before

        # The rollback gives the space back (ZFS frees it with the next transaction
        # group): half a MiB fits again.
        def fits() -> bool:
            try:
                (root / "room").write_bytes(b"\1" * 512 * 1024)
                return True
            except OSError:
                return False
            finally:
                (root / "room").unlink(missing_ok=True)

        wait_until(fits, "the space to come back")
    finally:
        zfs("set", "quota=none", ds)


def test_a_corrupt_job_database_stops_the_daemon_with_a_clear_message(daemon: Testbed) -> None:
    daemon.stop_daemon()
    database = daemon.state / "jobs.sqlite"
    for suffix in ("-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    database.write_bytes(b"this is not a database" * 100)
    proc = daemon.start_daemon(wait=False)
    assert proc.wait(30) == 78
    assert f"{database}: cannot open the job database" in daemon.daemon_log.read_text()
    daemon.daemon = None
    database.unlink()
    daemon.start_daemon()


def test_a_dataset_deleted_behind_the_daemons_back_fails_its_job_cleanly(daemon: Testbed) -> None:
    jobs = build_with_a_job_waiting(daemon)
    daemon.remove_machine("web")

    call("CancelJob", "u", str(jobs.running))

    assert wait_job(jobs.waiting) == "failed"
    assert job_string(jobs.waiting, "Error").startswith("no machine web")
    assert call("ListJobs").returncode == 0


async def hammer(machines: list[str], total: int, connections: int) -> list[int]:
    """`total` Update calls, spread over `connections` connections, all in flight at once."""
    buses = [await MessageBus(bus_type=BusType.SYSTEM).connect() for _ in range(connections)]

    async def update(index: int) -> int:
        bus = buses[index % connections]
        reply = await bus.call(
            Message(
                destination="org.gnspawn1",
                path="/org/gnspawn1",
                interface="org.gnspawn1.Manager",
                member="Update",
                signature="st",
                body=[machines[index % len(machines)], 0],
            )
        )
        assert reply is not None and reply.message_type is MessageType.METHOD_RETURN, reply
        return int(reply.body[0])

    try:
        return await asyncio.gather(*(update(i) for i in range(total)))
    finally:
        for bus in buses:
            bus.disconnect()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_thousand_concurrent_updates_merge_and_lose_nothing(daemon: Testbed) -> None:
    names = ["m1", "m2", "m3", "m4"]
    for name in names:
        daemon.seed(name, ["=app-misc/hello-1", "=app-misc/sleeper-1"])
    assert daemon.daemon is not None
    rss_before = rss_kib(daemon.daemon.pid)

    ids = asyncio.run(hammer(names, total=1000, connections=20))

    listed = {int(job) for job in re.findall(r"/org/gnspawn1/job/_(\d+)", call("ListJobs").stdout)}
    # Every request got a job the daemon lists; per machine at most two: the first
    # (running, or merged into while it had not started) and one waiting behind it.
    assert set(ids) == listed
    assert 4 <= len(listed) <= 6
    per_machine = Counter(job_string(job, "Machine") for job in listed)
    assert set(per_machine) == set(names) and max(per_machine.values()) <= 2
    assert sum(Counter(ids).values()) == 1000
    assert rss_kib(daemon.daemon.pid) - rss_before < 30 * 1024
    for job in sorted(set(ids), reverse=True):
        call("CancelJob", "u", str(job))
    for job in set(ids):
        assert wait_job(job) == "canceled"


def test_a_client_that_goes_away_changes_nothing_about_the_job(daemon: Testbed) -> None:
    root = daemon.seed("web")
    client = subprocess.Popen(
        [sys.executable, "-m", "gnspawn.ctl.main", "update", "web"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    wait_until(lambda: "1" in call("ListJobs").stdout.split()[1], "the job")
    stop_pid(client, signal.SIGKILL)
    assert wait_job(1) == "done"
    assert (root / "usr/share/hello/version").read_text() == "2\n"
    assert snapshots(f"{daemon.dataset}/web") == [f"{daemon.dataset}/web@gnspawn-1-pre"]
