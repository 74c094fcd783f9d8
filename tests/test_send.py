"""Send: a machine from this test bed's gnspawnd to a second gnspawn host on the same
machine (its own pool, bus and gnspawnd, in a mount namespace of its own), through real
ssh to 127.0.0.1 with the tests' own key."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gnspawn import remote
from gnspawn.errors import GnspawnError
from gnspawn.jobs.kinds.send import _streams
from gnspawn.zfs import Snapshot, Zfs
from helpers import (
    call,
    error_of,
    gdbus_argv,
    gdbus_error,
    gnctl,
    gnspawn_processes,
    job_string,
    queued,
    remote_gnctl,
    snapshots,
    wait_job,
    wait_until,
)
from testbed import OTHER_POOL, OtherHost, Testbed, tree_hash, zfs

OTHER_MACHINES = f"{OTHER_POOL}/machines"


@pytest.fixture
def other(bed: Testbed) -> Iterator[OtherHost]:
    """The other host, and this bed's gnspawnd sending to it through its ssh."""
    bed.reset()
    host = OtherHost(bed.dir / "other")
    try:
        bed.start_daemon(env={"SYSTEMD_SSH": str(host.ssh)})
        try:
            yield host
        finally:
            code = bed.stop_daemon()
            assert code == 0, f"gnspawnd exited {code}:\n{bed.daemon_log.read_text()[-3000:]}"
    finally:
        host.stop()


def other_gnctl(other: OtherHost, *args: str) -> subprocess.CompletedProcess[str]:
    """gnctl -H on the other host, as its admin would reach it from here."""
    return remote_gnctl(other.host, other.ssh, *args)


def other_error(other: OtherHost, method: str, *args: str) -> str:
    """'name: message' of a failing Manager call on the other host (gdbus there)."""
    return error_of(
        other.run(*gdbus_argv("/org/gnspawn1", f"org.gnspawn1.Manager.{method}", *args))
    )


def sent_bytes(bed: Testbed, job: int) -> int:
    """What the job's journal says it sent."""
    lines = [e["MESSAGE"] for e in bed.daemon_journal(f"GNSPAWN_JOB={job}")]
    found = [int(m.group(1)) for line in lines if (m := re.fullmatch(r"sent (\d+) bytes .*", line))]
    assert len(found) == 1, lines
    return found[0]


def job_lines(bed: Testbed, job: int) -> list[str]:
    return [e["MESSAGE"] for e in bed.daemon_journal(f"GNSPAWN_JOB={job}")]


def prop(dataset: str, name: str) -> str:
    return zfs("get", "-H", "-o", "value", name, dataset).strip()


def seed(bed: Testbed) -> Path:
    """Machine web, a Gentoo root with 4 MiB of data of its own (a stream of some size)."""
    root = bed.seed("web")
    (root / "var" / "lib" / "data").write_bytes(os.urandom(4 << 20))
    return root


def test_a_whole_send_then_an_incremental_one_that_moves_less(
    bed: Testbed, other: OtherHost
) -> None:
    root = seed(bed)
    dataset = f"{bed.dataset}/web"

    first = gnctl("send", "web", other.host)

    assert first.returncode == 0, first.stdout + first.stderr
    assert "job 1: send of web done" in first.stdout
    there = other.root(other.machines / "web")
    assert tree_hash(there) == tree_hash(root)
    assert other.zfs_list() == [
        OTHER_POOL,
        OTHER_MACHINES,
        f"{OTHER_MACHINES}/web",
        f"{OTHER_MACHINES}/web@gnspawn-1-send",
    ]
    assert (other.root(other.nspawn) / "web.nspawn").read_text().startswith("# Written by gnspawn")
    listed = other_gnctl(other, "list", "--no-legend")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith("web  ready  ")
    assert prop(f"{dataset}@gnspawn-1-send", "org.gnspawn:sent") == other.host
    retention = gnctl("snapshots", "web", "--no-legend").stdout
    assert f"the newest one {other.host} has" in retention

    # The container changes here; the second send carries only that.
    (root / "etc" / "motd").write_text("sent twice\n")
    (root / "var" / "lib" / "more").write_bytes(os.urandom(64 << 10))
    second = gnctl("send", "web", other.host)

    assert second.returncode == 0, second.stdout + second.stderr
    assert "job 2: send of web done" in second.stdout
    assert tree_hash(there) == tree_hash(root)
    assert (there / "etc" / "motd").read_text() == "sent twice\n"
    lines = job_lines(bed, 2)
    assert (
        f"sending {dataset}@gnspawn-2-send from gnspawn-1-send to {other.host}:"
        f"{OTHER_MACHINES}/web" in lines
    ), lines
    assert sent_bytes(bed, 2) < sent_bytes(bed, 1) / 10
    assert f"{OTHER_MACHINES}/web@gnspawn-2-send" in other.zfs_list()
    # The mark moved with it: only the newest snapshot the other host has is kept for it.
    assert prop(f"{dataset}@gnspawn-2-send", "org.gnspawn:sent") == other.host
    assert prop(f"{dataset}@gnspawn-1-send", "org.gnspawn:sent") == "-"


def test_retention_keeps_what_the_target_has_so_the_next_send_is_incremental(
    bed: Testbed, other: OtherHost
) -> None:
    bed.stop_daemon()
    bed.write_config(storage={"keep_snapshots": 1})
    bed.start_daemon(env={"SYSTEMD_SSH": str(other.ssh)})
    root = seed(bed)
    dataset = f"{bed.dataset}/web"
    assert gnctl("send", "web", other.host).returncode == 0

    update = gnctl("update", "web")  # hello-1 to hello-2: a snapshot of its own, then prune
    assert update.returncode == 0, update.stdout + update.stderr
    assert snapshots(dataset) == [f"{dataset}@gnspawn-1-send", f"{dataset}@gnspawn-2-pre"]
    pruned = gnctl("prune", "web")
    assert pruned.returncode == 0, pruned.stdout + pruned.stderr
    assert snapshots(dataset) == [f"{dataset}@gnspawn-1-send", f"{dataset}@gnspawn-2-pre"]

    third = gnctl("send", "web", other.host)

    assert third.returncode == 0, third.stdout + third.stderr
    assert (
        f"sending {dataset}@gnspawn-4-send from gnspawn-1-send to {other.host}:"
        f"{OTHER_MACHINES}/web" in job_lines(bed, 4)
    )
    assert tree_hash(other.root(other.machines / "web")) == tree_hash(root)
    # Now gnspawn-1-send is nothing the other host needs: retention takes it.
    assert snapshots(dataset) == [f"{dataset}@gnspawn-4-send"]


def test_a_stream_cut_midway_leaves_nothing_there(bed: Testbed, other: OtherHost) -> None:
    root = seed(bed)
    dataset = f"{bed.dataset}/web"
    before = tree_hash(root)
    other.cut(str(1 << 20))  # the first MiB of the stream, then the connection breaks

    cut = gnctl("send", "web", other.host)

    assert cut.returncode == 1, cut.stdout + cut.stderr
    assert "job 1: send of web failed: sending web to " in cut.stderr
    assert other.zfs_list() == [OTHER_POOL, OTHER_MACHINES]
    assert not other.root(other.nspawn / "web.nspawn").exists()
    assert snapshots(dataset) == []  # the send's own snapshot went with it
    assert tree_hash(root) == before

    # The next send starts afresh, whole.
    again = gnctl("send", "web", other.host)
    assert again.returncode == 0, again.stdout + again.stderr
    assert sent_bytes(bed, 2) > 1 << 20  # the cut was midway indeed
    assert tree_hash(other.root(other.machines / "web")) == before


def test_a_whole_send_cut_in_its_second_stream_is_discarded_there(
    bed: Testbed, other: OtherHost
) -> None:
    root = seed(bed)
    assert gnctl("send", "web", other.host).returncode == 0
    removed = other_gnctl(other, "remove", "web")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    (root / "etc" / "motd").write_text("changed\n")
    # Whole again: gnspawn-1-send, then the snapshots after it; the second stream breaks.
    other.cut("all", "600")

    cut = gnctl("send", "web", other.host)

    assert cut.returncode == 1, cut.stdout + cut.stderr
    lines = job_lines(bed, 2)
    assert any(line.startswith("sending ") and " from gnspawn-1-send " in line for line in lines)
    assert other.zfs_list() == [OTHER_POOL, OTHER_MACHINES]
    other_log = other.run("journalctl", "-D", "/run/log/journal", "-o", "cat", "--no-pager")
    assert f"discarded {OTHER_MACHINES}/web:receiving, half received" in other_log.stdout


def test_move_removes_it_here_once_the_target_has_it(bed: Testbed, other: OtherHost) -> None:
    root = seed(bed)
    before = tree_hash(root)

    moved = gnctl("send", "--move", "web", other.host)

    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert "job 1: send of web done" in moved.stdout
    assert zfs("list", "-H", "-o", "name", "-r", bed.dataset).split() == [bed.dataset]
    assert tree_hash(other.root(other.machines / "web")) == before
    listed = gnctl("list", "--no-legend")
    assert listed.stdout == ""
    assert f"removed web here: {other.host} has it now" in job_lines(bed, 1)


def test_what_the_target_refuses_changes_nothing(bed: Testbed, other: OtherHost) -> None:
    root = seed(bed)
    # The other host has a web of its own, which did not come from here.
    made = other.run("zfs", "create", f"{OTHER_MACHINES}/web")
    assert made.returncode == 0, made.stderr
    had = other.zfs_list()

    refused = gnctl("send", "web", other.host)

    assert refused.returncode == 1
    assert "refused web: machine web exists here and was not sent from " in refused.stderr
    assert other.zfs_list() == had
    assert snapshots(f"{bed.dataset}/web") == []
    assert root.exists()


def test_bad_requests_have_their_own_errors(bed: Testbed, other: OtherHost) -> None:
    seed(bed)
    assert gdbus_error("Send", "web", "a host", "0").startswith(
        "org.gnspawn1.Error.InvalidHost: not a host: 'a host'"
    )
    assert gdbus_error("Send", "../web", other.host, "0").startswith(
        "org.gnspawn1.Error.InvalidName:"
    )
    assert gdbus_error("Send", "nope", other.host, "0").startswith(
        "org.gnspawn1.Error.NoSuchMachine:"
    )
    assert gdbus_error("Send", "web", other.host, "128").startswith(
        "org.freedesktop.DBus.Error.InvalidArgs: unknown flags 0x80"
    )
    usage = gnctl("send", "web", "a host")
    assert usage.returncode == 64 and "not a host" in usage.stderr
    # The receiving side checks what it is told, too.
    assert other_error(other, "PrepareReceive", "../web", "h:p/m/web", "0").startswith(
        "org.gnspawn1.Error.InvalidName:"
    )
    assert other_error(other, "PrepareReceive", "web", "h p", "0").startswith(
        "org.freedesktop.DBus.Error.InvalidArgs: not a sender: 'h p'"
    )
    assert other_error(other, "AdoptReceived", "web", "h:p/m/web", "0").startswith(
        "org.gnspawn1.Error.NoSuchMachine: nothing of web was received"
    )
    assert gnctl("jobs", "--no-legend").stdout == ""
    assert snapshots(f"{bed.dataset}/web") == []
    assert other.zfs_list() == [OTHER_POOL, OTHER_MACHINES]


def test_a_send_canceled_midway_leaves_nothing_there(bed: Testbed, other: OtherHost) -> None:
    seed(bed)
    other.cut(f"pause:{1 << 20}")
    job = queued(call("Send", "sst", "web", other.host, "0").stdout)
    wait_until(other.paused.exists, "the stream to pause")

    canceled = gnctl("cancel", str(job))

    assert canceled.returncode == 0, canceled.stderr
    assert wait_job(job) == "canceled"
    assert snapshots(f"{bed.dataset}/web") == []
    wait_until(lambda: other.zfs_list() == [OTHER_POOL, OTHER_MACHINES], "nothing there")
    assert not gnspawn_processes(job), "a process of the send runs on"


def test_a_machine_being_received_is_the_senders_alone_while_it_is_connected(
    bed: Testbed, other: OtherHost
) -> None:
    root = seed(bed)
    assert gnctl("send", "web", other.host).returncode == 0
    (root / "etc" / "motd").write_text("sent twice\n")
    other.cut(f"pause:{1 << 10}")
    job = queued(call("Send", "sst", "web", other.host, "0").stdout)
    wait_until(other.paused.exists, "the stream to pause")
    sender = f"{socket.gethostname()}:{bed.dataset}/web"
    busy = f"org.gnspawn1.Error.Busy: machine web is being received here from {sender}"

    # Another sender, a job there, another sender discarding it, another connection
    # adopting it.
    assert other_error(other, "PrepareReceive", "web", "elsewhere:p/m/web", "0").startswith(busy)
    assert other_error(other, "Update", "web", "0").startswith(busy)
    assert other_error(other, "DiscardReceived", "web", "elsewhere:p/m/web", "0").startswith(busy)
    assert other_error(other, "AdoptReceived", "web", sender, "0").startswith(
        f"org.gnspawn1.Error.NoSuchMachine: nothing of web was received from {sender} "
        "on this connection"
    )
    assert other_gnctl(other, "jobs", "--no-legend").stdout == ""

    # The sender's connection ends with its job, and the machine is free again.
    assert gnctl("cancel", str(job)).returncode == 0
    assert wait_job(job) == "canceled"
    wait_until(
        lambda: other_error(other, "PrepareReceive", "web", "elsewhere:p/m/web", "0").startswith(
            "org.gnspawn1.Error.MachineExists: machine web exists here and was not sent from "
        ),
        "the reception to end with its connection",
    )
    again = gnctl("send", "web", other.host)
    assert again.returncode == 0, again.stdout + again.stderr
    assert tree_hash(other.root(other.machines / "web")) == tree_hash(root)


def test_a_received_root_is_read_within_it_as_the_container_wrote_it(
    bed: Testbed, other: OtherHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What arrives is the container's to write: here its etc/gentoo-release is a link
    to a host file (/etc/hostname) that the root itself lacks. The target reads it
    within the root, never the host's, refuses to take it up as a Gentoo root, and
    destroys what came: it was never a machine there."""
    monkeypatch.setenv("SYSTEMD_SSH", str(other.ssh))
    origin = "sender.example:pool/machines/web"
    received = f"{OTHER_MACHINES}/web:receiving"
    there = other.machines / "web"
    arriving = other.machines.parent / "arriving-web"
    assert Path("/etc/hostname").is_file()  # following the link would find one

    async def receive() -> str:
        far = await remote.RemoteManager.connect(other.host)
        try:
            into, theirs = await far.call("PrepareReceive", "sst", "web", origin, 0)
            assert (into, theirs) == (received, [])
            # What a stream would have brought: a root with the hostile link.
            made = other.run("zfs", "create", "-o", f"mountpoint={arriving}", received)
            assert made.returncode == 0, made.stderr
            (other.root(arriving) / "etc").mkdir()
            (other.root(arriving) / "etc" / "gentoo-release").symlink_to("/etc/hostname")
            # Unmounted, as a received stream is there (mountpoint none).
            made = other.run("zfs", "inherit", "mountpoint", received)
            assert made.returncode == 0, made.stderr
            try:
                await far.call("AdoptReceived", "sst", "web", origin, 0)
            except GnspawnError as err:
                return f"{err.dbus_name}: {err}"
            return ""
        finally:
            await far.close()

    error = asyncio.run(receive())

    assert error == f"org.gnspawn1.Error.NotGentoo: {there} has no etc/gentoo-release", error
    assert not other.root(other.nspawn / "web.nspawn").exists()
    assert other.zfs_list() == [OTHER_POOL, OTHER_MACHINES]
    assert not other.root(there).exists()
    other_log = other.run("journalctl", "-D", "/run/log/journal", "-o", "cat", "--no-pager")
    assert f"destroyed {OTHER_MACHINES}/web: received whole, and refused" in other_log.stdout


def test_a_send_canceled_while_it_connects_leaves_nothing(bed: Testbed, other: OtherHost) -> None:
    root = seed(bed)
    before = tree_hash(root)
    other.cut("connect")
    job = queued(call("Send", "sst", "web", other.host, "0").stdout)
    wait_until(other.paused.exists, "the connection to hang")
    ssh = Path("/proc", other.paused.read_text().strip())
    assert job_string(job, "Phase") == "send"

    canceled = gnctl("cancel", str(job))

    assert canceled.returncode == 0, canceled.stderr
    assert wait_job(job) == "canceled"
    assert snapshots(f"{bed.dataset}/web") == []
    assert not ssh.exists(), "the ssh of the bus connection runs on"
    assert other.zfs_list() == [OTHER_POOL, OTHER_MACHINES]
    assert tree_hash(root) == before


def test_a_daemon_killed_mid_send_fails_the_job_and_leaves_nothing_there(
    bed: Testbed, other: OtherHost
) -> None:
    root = seed(bed)
    dataset = f"{bed.dataset}/web"
    other.cut(f"pause:{1 << 20}")
    job = queued(call("Send", "sst", "web", other.host, "0").stdout)
    wait_until(other.paused.exists, "the stream to pause")
    assert bed.daemon is not None
    os.kill(bed.daemon.pid, signal.SIGKILL)
    bed.stop_daemon()

    bed.start_daemon(env={"SYSTEMD_SSH": str(other.ssh)})

    assert job_string(job, "Result") == "failed"
    assert job_string(job, "Error") == "interrupted"
    assert snapshots(dataset) == []
    wait_until(lambda: other.zfs_list() == [OTHER_POOL, OTHER_MACHINES], "nothing there")
    again = gnctl("send", "web", other.host)
    assert again.returncode == 0, again.stdout + again.stderr
    assert tree_hash(other.root(other.machines / "web")) == tree_hash(root)


def test_unit_streams_whole_then_from_the_oldest() -> None:
    def snap(name: str, job: int | None) -> Snapshot:
        return Snapshot(name, "p/m/web", 0, 0, job)

    admin, first, newest = snap("mine", None), snap("gnspawn-1-pre", 1), snap("gnspawn-3-send", 3)
    ours = [admin, first, newest]
    assert _streams(ours, newest, [], "h") == [(None, first), (first, newest)]
    assert _streams([newest], newest, [], "h") == [(None, newest)]
    assert _streams(ours, newest, ["mine", "gnspawn-1-pre"], "h") == [(first, newest)]
    with pytest.raises(Exception, match="changed there since it was sent"):
        _streams(ours, newest, ["gnspawn-9-pre"], "h")


def test_unit_an_encrypted_dataset_is_sent_raw() -> None:
    zfs_ = Zfs("zfs")
    assert zfs_.send_argv("p/m/web@b") == ["zfs", "send", "p/m/web@b"]
    assert zfs_.send_argv("p/m/web@b", since="p/m/web@a", raw=True) == [
        "zfs",
        "send",
        "-w",
        "-I",
        "p/m/web@a",
        "p/m/web@b",
    ]
