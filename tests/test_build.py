"""Building containers from nothing, resuming, removing: through the real daemon."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from helpers import busctl, call, gnctl, job_string, queued, snapshots, wait_job
from testbed import Testbed, wait_for, zfs


def machine_property(name: str, prop: str) -> str:
    return busctl(
        "get-property",
        "org.gnspawn1",
        f"/org/gnspawn1/machine/{name}",
        "org.gnspawn1.Machine",
        prop,
    ).stdout.strip()


def test_build_makes_a_container_systemd_nspawn_can_run(daemon: Testbed) -> None:
    result = gnctl("build", "--verbose", "c1", "--profile", "default/bootable")

    assert result.returncode == 0, result.stderr
    root = daemon.machines / "c1"
    assert (root / "etc/gentoo-release").is_file()
    assert (
        root / "etc/portage/make.profile"
    ).resolve() == daemon.repo / "profiles/default/bootable"
    make_conf = (root / "etc/portage/make.conf").read_text()
    # Not trusted: FEATURES has no buildpkg, PKGDIR is read-only to it.
    features = next(line for line in make_conf.splitlines() if line.startswith("FEATURES="))
    assert features.startswith('FEATURES="-sandbox') and "buildpkg" not in features
    assert f'PKGDIR="{daemon.work}/packages"' in make_conf
    assert "location = " + str(daemon.repo) in (root / "etc/portage/repos.conf").read_text()
    settings = (daemon.dir / "nspawn/c1.nspawn").read_text()
    # The shared PKGDIR, wherever it is, read-only: no container plants packages.
    assert f"BindReadOnly=/var/db/repos\nBindReadOnly={daemon.work}/packages\n" in settings
    assert "Bind=/var/cache/distfiles\n" in settings
    assert f"Bind={daemon.work}/packages" not in settings
    assert "[Network]\nPrivate=yes\nVirtualEthernet=yes\n" in settings
    assert "Bridge=" not in settings
    ds = f"{daemon.dataset}/c1"
    assert snapshots(ds) == [f"{ds}@gnspawn-1-emerge-nodeps", f"{ds}@gnspawn-1-emerge"]
    assert zfs("get", "-H", "-o", "value", "org.gnspawn:build", ds).strip() == "done"
    phases = {e["GNSPAWN_PHASE"] for e in daemon.daemon_journal("GNSPAWN_JOB=1")}
    assert {"configure", "snapshot", "emerge-nodeps", "emerge"} <= phases
    assert ">>> Emerging (1 of 2) " in result.stdout
    # Each snapshot and emerge phase counts anew: none carries the --nodeps pass's
    # [2/2] 100% (off a terminal, each new phase is a line of its own).
    lines = result.stdout.splitlines()
    assert sum(bool(re.fullmatch(r"snapshot  \d+:\d\d", line)) for line in lines) == 2
    assert any(re.fullmatch(r"emerge  \d+:\d\d", line) for line in lines)
    assert not any(re.search(r"%\s+snapshot", line) for line in lines)

    booted = subprocess.run(
        [
            "systemd-nspawn",
            "-q",
            "-D",
            str(root),
            "--register=no",
            "--keep-unit",
            "/bin/sh",
            "-c",
            "cat /etc/gentoo-release",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert booted.stdout.strip() == "Gentoo Base System release 2.17", booted.stderr

    listing = call("ListMachines").stdout
    assert '"c1" "ready" "default/bootable" "done" "/org/gnspawn1/machine/c1"' in listing
    assert machine_property("c1", "State") == 's "ready"'
    assert machine_property("c1", "Dataset") == f's "{ds}"'
    assert machine_property("c1", "Directory") == f's "{root}"'
    assert machine_property("c1", "LastJob") == "u 1"
    assert machine_property("c1", "LatestSnapshot") == 's "gnspawn-1-emerge"'
    status = gnctl("status", "c1")
    assert "State: ready" in status.stdout and "Profile: default/bootable" in status.stdout


def test_build_refuses_what_exists_and_unknown_profiles_creating_nothing(daemon: Testbed) -> None:
    daemon.seed("web")
    (daemon.machines / "plain").mkdir()
    (daemon.dir / "nspawn").mkdir(exist_ok=True)
    (daemon.dir / "nspawn/other.nspawn").write_text("[Exec]\n")
    before = zfs("list", "-H", "-o", "name", "-r", "-t", "all", daemon.dataset)
    cases = {
        ("web",): "machine web exists",
        ("plain",): f"{daemon.machines}/plain exists",
        ("other",): f"{daemon.dir}/nspawn/other.nspawn exists",
        ("new", "--profile", "nope"): "no profile 'nope'",
        ("new", "--profile", "../../etc"): "no profile '../../etc'",
        ("new", "--profile", "/etc"): "no profile '/etc'",
        ("-x",): "invalid machine name",
        ("new", "--resume"): "no machine new to resume",
        ("web", "--resume"): "machine web is complete",
    }
    for args, message in cases.items():
        name, *rest = args
        result = gnctl("build", *rest, "--", name)
        assert result.returncode == 3, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)
    assert zfs("list", "-H", "-o", "name", "-r", "-t", "all", daemon.dataset) == before
    assert call("ListJobs").stdout.strip() == "a(ussssuo) 0"
    assert not (daemon.machines / "new").exists()


def test_a_failed_step_leaves_an_incomplete_machine_that_resume_finishes(daemon: Testbed) -> None:
    # The switch lies in the repository: what emerge runs sees it through its sandbox.
    flaky = daemon.repo / "sys-apps/flaky/files/fail"
    flaky.parent.mkdir(exist_ok=True)
    flaky.touch()
    try:
        failed = gnctl("build", "c2", "--profile", "default/flaky")
    finally:
        flaky.unlink()

    assert failed.returncode == 1
    assert "sys-apps/flaky-1 failed (compile phase)" in failed.stderr
    ds = f"{daemon.dataset}/c2"
    assert zfs("get", "-H", "-o", "value", "org.gnspawn:build", ds).strip() == "configured"
    assert snapshots(ds) == [f"{ds}@gnspawn-1-emerge-nodeps"]
    root = daemon.machines / "c2"
    assert not (root / "etc/gentoo-release").exists()  # rolled back to before the first pass
    assert '"c2" "incomplete" "default/flaky" "failed"' in call("ListMachines").stdout

    resumed = gnctl("build", "--resume", "--verbose", "c2")

    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after step configured" in resumed.stdout
    assert f"created {ds}" not in resumed.stdout
    assert (root / "usr/share/flaky/flaky.txt").read_text() == "ok\n"
    assert '"c2" "ready" "default/flaky" "done"' in call("ListMachines").stdout
    assert (daemon.dir / "nspawn/c2.nspawn").is_file()


def test_cancel_of_a_build_rolls_back_its_step(daemon: Testbed) -> None:
    daemon.write_config(portage={"build_args": ["@system", "=app-misc/sleeper-2"]})
    daemon.stop_daemon()
    daemon.start_daemon()
    job = queued(call("Build", "sst", "c3", "", "0").stdout)
    wait_for(lambda: job_string(job, "CurrentPackage") == "app-misc/sleeper-2", "the slow build")
    assert '"c3" "building"' in call("ListMachines").stdout
    assert gnctl("cancel", str(job)).returncode == 0
    assert wait_job(job) == "canceled"
    assert '"c3" "incomplete"' in call("ListMachines").stdout


def test_remove_destroys_dataset_snapshots_and_settings_and_nothing_else(daemon: Testbed) -> None:
    assert gnctl("build", "-q", "c4").returncode == 0
    (daemon.machines / "plain").mkdir()
    (daemon.machines / "plain/keep").write_text("mine")

    result = gnctl("remove", "c4")

    assert result.returncode == 0, result.stderr
    assert zfs("list", "-H", "-o", "name", "-r", "-t", "all", daemon.dataset).split() == [
        daemon.dataset
    ]
    assert not (daemon.dir / "nspawn/c4.nspawn").exists()
    assert not (daemon.machines / "c4").exists()
    assert (daemon.machines / "plain/keep").read_text() == "mine"
    assert '"plain" "foreign"' in call("ListMachines").stdout
    missing = gnctl("remove", "plain")
    assert missing.returncode == 3 and "no machine plain" in missing.stderr
    assert (daemon.machines / "plain/keep").exists()
    gone = busctl(
        "get-property",
        "org.gnspawn1",
        "/org/gnspawn1/machine/c4",
        "org.gnspawn1.Machine",
        "State",
        check=False,
    )
    assert gone.returncode != 0


def test_profiles_lists_what_build_accepts(daemon: Testbed) -> None:
    result = gnctl("profiles")
    rows = [line.split() for line in result.stdout.splitlines()]
    assert rows[0] == ["PROFILE", "REPOSITORY", "STATUS"]
    assert ["default", "gnspawn-demo", "stable"] in rows
    assert ["default/bootable", "gnspawn-demo", "stable"] in rows
    assert ["default/flaky", "gnspawn-demo", "exp"] in rows


def test_enable_without_systemd_on_the_bus_says_so_and_finishes(daemon: Testbed) -> None:
    daemon.write_config(nspawn={"settings_directory": str(daemon.dir / "nspawn"), "enable": True})
    daemon.stop_daemon()
    daemon.start_daemon()

    result = gnctl("build", "c5")

    assert result.returncode == 0, result.stderr
    assert (
        "not starting systemd-nspawn@c5.service: org.freedesktop.systemd1 is not on the bus"
        in result.stdout
    )


def calls(record: Path) -> list[list[object]]:
    return [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []


def test_enable_starts_the_container_through_systemds_bus_api(daemon: Testbed) -> None:
    # systemd cannot be PID 1 here: a recording org.freedesktop.systemd1 stands in for it.
    daemon.write_config(nspawn={"settings_directory": str(daemon.dir / "nspawn"), "enable": True})
    daemon.stop_daemon()
    daemon.start_daemon()
    with daemon.host_services() as record:
        result = gnctl("build", "c6")

    assert result.returncode == 0, result.stderr
    assert "enabled and started systemd-nspawn@c6.service" in result.stdout
    assert calls(record) == [
        ["EnableUnitFiles", ["systemd-nspawn@c6.service"], False, False],
        ["Reload"],
        ["StartUnit", "systemd-nspawn@c6.service", "replace"],
    ]


def test_remove_refuses_a_running_machine(daemon: Testbed) -> None:
    # A recording org.freedesktop.machine1 says c7 runs, as machined would.
    assert gnctl("build", "-q", "c7").returncode == 0
    with daemon.host_services("c7") as record:
        refused = gnctl("remove", "c7")
    assert refused.returncode == 3
    assert "machine c7 is running; stop it first (machinectl poweroff c7)" in refused.stderr
    assert ["GetMachine", "c7"] in calls(record)
    assert (daemon.machines / "c7/etc/gentoo-release").exists()
    with daemon.host_services() as record:
        assert gnctl("remove", "-q", "c7").returncode == 0
    assert not (daemon.machines / "c7").exists()
