"""A builder host publishes signed packages; another host installs them, verified.

Host A has `[binhost] publish = true`: what its emerges publish to PKGDIR is signed
with the admin's key (gpkg-sign, on the host) and PKGDIR's index is kept current. A
real HTTP server (Python's http.server) serves that PKGDIR. Host B lists it in
`[portage] binrepos` with A's public key in `[binhost] keys`: its builder root fetches
A's packages into B's PKGDIR, each signature verified by Portage with real gpg, and
B's machines install them as binaries. Both hosts are the one test bed, one after the
other, each with a PKGDIR and a builder root of its own (B starts without one).
"""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from ebuilds import write_plain
from helpers import call, gnctl, hello_version, job_string, queued, snapshots, wait_job
from test_recovery import Gate, journal_has, processes_on
from test_recovery import restart as start_again
from testbed import (
    EMERGE,
    Testbed,
    emerge_environment,
    stop_pid,
    tree_hash,
    wait_for,
    write_portage_config,
    zfs,
)

BUILDER = "builder:default"


class Key(NamedTuple):
    home: Path
    fingerprint: str
    public: Path


def make_key(directory: Path, name: str) -> Key:
    """A throwaway signing key without a passphrase, in a GnuPG home of its own."""
    directory.mkdir(mode=0o700)
    gpg = ["gpg", "--homedir", str(directory), "--batch"]
    subprocess.run(
        [*gpg, "--passphrase", "", "--quick-gen-key", f"{name} <{name}@example>", "ed25519"],
        check=True,
        capture_output=True,
    )
    listing = subprocess.run(
        [*gpg, "--with-colons", "--list-keys"], check=True, capture_output=True, text=True
    ).stdout
    fingerprint = next(line.split(":")[9] for line in listing.splitlines() if line[:4] == "fpr:")
    public = directory.parent / f"{name}.asc"
    exported = subprocess.run(
        [*gpg, "--armor", "--export", fingerprint], check=True, capture_output=True
    )
    public.write_bytes(exported.stdout)
    return Key(directory, fingerprint, public)


def stop_agent(key: Key) -> None:
    """The gpg-agent that signing started for the key's home (gpgconf asks it to go)."""
    subprocess.run(["gpgconf", "--homedir", str(key.home), "--kill", "all"], check=False)


@pytest.fixture
def keys(daemon: Testbed) -> Iterator[tuple[Key, Key]]:
    """The builder's key, and one of someone else's that no host trusts."""
    directory = daemon.dir / "keys"
    subprocess.run(["rm", "-rf", str(directory)], check=True)
    directory.mkdir()
    made = (make_key(directory / "builder", "builder"), make_key(directory / "other", "other"))
    try:
        yield made
    finally:
        for key in made:
            stop_agent(key)


class Server(NamedTuple):
    proc: subprocess.Popen[bytes]
    url: str


def serve(directory: Path, log: Path) -> Server:
    """Python's http.server serving `directory` on a free port of 127.0.0.1."""

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=directory,
        stdin=subprocess.DEVNULL,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )

    def listening() -> bool:
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", port)) == 0

    wait_for(listening, "http.server")
    return Server(proc, f"http://127.0.0.1:{port}")


def merged(daemon: Testbed, job: int) -> list[tuple[str, str]]:
    """What job `job` merged: ("binary" or "source", package) per `>>> Emerging` line."""
    found = []
    for entry in daemon.daemon_journal(f"GNSPAWN_JOB={job}"):
        line = entry["MESSAGE"]
        if line.startswith(">>> Emerging "):
            how = "binary" if line.startswith(">>> Emerging binary") else "source"
            found.append((how, line.split(") ", 1)[1].split("::")[0]))
    return found


def packages(pkgdir: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(pkgdir)): path.read_bytes()
        for path in sorted(pkgdir.rglob("*"))
        if path.is_file() and not path.name.startswith("Packages")
    }


def signer_of(package: Path, key: Key, scratch: Path) -> str:
    """The fingerprint whose good signature the package's image carries, checked with
    gpg against the key alone; "" when it has none that verifies."""
    home = Path(tempfile.mkdtemp(prefix="verify-", dir=scratch))  # one each: no agent's
    gpg = ["gpg", "--homedir", str(home), "--batch", "--no-autostart", "--status-fd", "1"]
    subprocess.run([*gpg, "--import", str(key.public)], check=True, capture_output=True)
    with tarfile.open(package) as tar:
        names = tar.getnames()
        image = next(n for n in names if "/image.tar" in n and not n.endswith(".sig"))
        if f"{image}.sig" not in names:
            return ""
        for name in (image, f"{image}.sig"):
            member = tar.extractfile(name)
            assert member is not None
            (scratch / Path(name).name).write_bytes(member.read())
    status = subprocess.run(
        [
            *gpg,
            "--verify",
            str(scratch / f"{Path(image).name}.sig"),
            str(scratch / Path(image).name),
        ],
        capture_output=True,
        text=True,
    ).stdout
    for line in status.splitlines():
        if line.startswith("[GNUPG:] VALIDSIG "):
            return line.split()[2]
    return ""


def index(pkgdir: Path) -> dict[str, int]:
    """PKGDIR's Packages index: path -> SIZE of each package it lists."""
    entries: dict[str, int] = {}
    for block in (pkgdir / "Packages").read_text().split("\n\n")[1:]:
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "PATH" in fields:
            entries[fields["PATH"]] = int(fields["SIZE"])
    return entries


def installed(root: Path) -> dict[str, str]:
    """A root's whole tree but the copy of the binhosts' index, which the fetch before
    the snapshot updates (as `emerge --getbinpkg --pretend` would)."""
    return {p: h for p, h in tree_hash(root).items() if not p.startswith("var/cache/edb/binhost")}


def restart(daemon: Testbed, extra: str = "", **sections: dict[str, object]) -> None:
    daemon.stop_daemon()
    daemon.write_config(extra, **sections)
    daemon.start_daemon()


def become_host_b(daemon: Testbed, server: Server, key: Key, **binhost: object) -> Path:
    """The test bed as host B: PKGDIR of its own, no builder root, A's binhost."""
    pkgdir_b = daemon.work / "packages-b"
    subprocess.run(["rm", "-rf", str(pkgdir_b)], check=True)
    daemon.stop_daemon()
    if BUILDER in zfs("list", "-H", "-o", "name", "-r", daemon.dataset):
        daemon.remove_machine(BUILDER)
    subprocess.run(["rm", "-rf", str(daemon.state / "builders")], check=True)
    daemon.write_config(
        portage={"builders": True, "pkgdir": str(pkgdir_b), "binrepos": [server.url]},
        binhost={"keys": [str(key.public)], **binhost},
    )
    daemon.start_daemon()
    return pkgdir_b


def tamper(package: Path) -> None:
    """Change the last bytes of a package's image, keeping its signature and Manifest."""
    members = []
    with tarfile.open(package) as tar:
        for member in tar:
            file = tar.extractfile(member)
            members.append((member, file.read() if file else b""))
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for member, data in members:
            image = "/image.tar" in member.name and not member.name.endswith(".sig")
            changed = data[:-4] + bytes(b ^ 0xFF for b in data[-4:]) if image else data
            tar.addfile(member, io.BytesIO(changed) if member.isfile() else None)
    package.write_bytes(out.getvalue())


def package_signed_by(daemon: Testbed, version: int, key: Key | None, *, tampered: bool) -> None:
    """app-misc/hello-VERSION built apart, signed with `key` (and changed after that
    when `tampered`) and put into A's PKGDIR and its index: what someone who took the
    binhost's web server over could serve."""
    write_plain(daemon.repo, "hello", version)
    scratch = daemon.dir / "scratch-root"
    subprocess.run(["rm", "-rf", str(scratch)], check=True)
    write_portage_config(scratch, daemon.repo, daemon.work, "scratch")
    env = {**emerge_environment(daemon.repo), "NOCOLOR": "true", "PATH": "/usr/bin:/bin"}
    root = [f"--root={scratch}", f"--config-root={scratch}"]
    subprocess.run(
        [str(EMERGE), *root, "--buildpkgonly", "--nodeps", f"=app-misc/hello-{version}"],
        env=env,
        check=True,
        capture_output=True,
    )
    package = next((daemon.work / "packages" / "app-misc/hello").glob(f"hello-{version}-*"))
    home, fingerprint = (str(key.home), key.fingerprint) if key else ("", "")
    portage_env = {
        **env,
        "PKGDIR": str(daemon.work / "packages"),
        "BINPKG_GPG_SIGNING_GPG_HOME": home,
        "BINPKG_GPG_SIGNING_KEY": fingerprint,
        "BINPKG_GPG_VERIFY_GPG_HOME": home,
        "GPG_VERIFY_USER_DROP": "",
        "GPG_VERIFY_GROUP_DROP": "",
    }
    tools = EMERGE.parent
    if key is None:
        portage_env = {**env, "PKGDIR": str(daemon.work / "packages")}
    else:
        subprocess.run([str(tools / "gpkg-sign"), str(package)], env=portage_env, check=True)
    if tampered:
        tamper(package)
    subprocess.run(
        [str(tools / "emaint"), "binhost", "--fix"],
        env=portage_env,
        check=True,
        capture_output=True,
    )
    assert f"app-misc/hello/{package.name}" in index(daemon.work / "packages")


def test_host_b_installs_what_host_a_built_and_signed_and_refuses_a_package_signed_otherwise(
    daemon: Testbed, keys: tuple[Key, Key]
) -> None:
    builder_key, other_key = keys
    write_plain(daemon.repo, "twice", 1)
    web = daemon.seed("web", ["=app-misc/hello-1", "=app-misc/twice-1"])
    db = daemon.seed("db", ["=app-misc/hello-1"])
    daemon.adopt("web")
    daemon.adopt("db")
    daemon.empty_pkgdir()
    write_plain(daemon.repo, "twice", 2)  # one emerge on A builds two packages
    pkgdir_a = daemon.work / "packages"

    # Host A: its builder root compiles, and what it publishes is signed and indexed.
    restart(
        daemon,
        portage={"builders": True},
        binhost={
            "publish": True,
            "signing_key": builder_key.fingerprint,
            "signing_home": str(builder_key.home),
        },
    )
    result = gnctl("update", "web")
    assert result.returncode == 0, result.stdout + result.stderr
    assert job_string(1, "Machine") == BUILDER

    assert {("source", "app-misc/hello-2"), ("source", "app-misc/twice-2")} <= set(
        merged(daemon, 1)
    )
    published = packages(pkgdir_a)
    assert "app-misc/twice/twice-2-1.gpkg.tar" in published
    assert "app-misc/hello/hello-2-1.gpkg.tar" in published
    assert any(name.startswith("sys-apps/") for name in published)
    for name in published:
        assert signer_of(pkgdir_a / name, builder_key, daemon.dir) == builder_key.fingerprint, name
    assert index(pkgdir_a) == {name: len(content) for name, content in published.items()}
    assert hello_version(web) == "2"

    server = serve(pkgdir_a, daemon.dir / "http.log")
    try:
        # Host B: a new host; its builder root comes from A's packages, and db installs
        # them from B's PKGDIR. Nothing is compiled on B.
        pkgdir_b = become_host_b(daemon, server, builder_key)
        result = gnctl("update", "db")
        assert result.returncode == 0, result.stdout + result.stderr
        assert job_string(3, "Machine") == BUILDER and job_string(4, "Machine") == "db"
        builder_merged, db_merged = merged(daemon, 3), merged(daemon, 4)
        assert ("binary", "app-misc/hello-2") in builder_merged
        assert {how for how, _ in builder_merged + db_merged} == {"binary"}
        assert db_merged == [("binary", "app-misc/hello-2")]
        assert hello_version(db) == "2"
        assert packages(pkgdir_b) == published  # the very files A signed (web's too)
        binrepos = (daemon.state / "builders/default/etc/portage/binrepos.conf").read_text()
        assert f"sync-uri = {server.url}\n" in binrepos
        assert "verify-signature = true\n" in binrepos

        # Packages on A's server that do not verify: one signed with a key B does not
        # trust, one not signed at all (or not signed yet), one changed after the
        # builder signed it. The builder refuses each and its root goes back; what it
        # downloaded is gone from B's PKGDIR and its index. The first two are refused
        # as they are downloaded, before the snapshot: the builder compiles that hello
        # itself, publishes it, and db installs that. The changed one passes the
        # download and is refused as it is unpacked: db compiles it itself.
        builder_root = daemon.state / "builders" / "default"
        cases = [(3, other_key, False, 5), (4, None, False, 7), (5, builder_key, True, 9)]
        for version, key, tampered, builder in cases:
            package_signed_by(daemon, version, key, tampered=tampered)
            served = (pkgdir_a / f"app-misc/hello/hello-{version}-1.gpkg.tar").read_bytes()
            before = installed(builder_root)
            before_snapshots = snapshots(f"{daemon.dataset}/{BUILDER}")
            result = gnctl("update", "db")
            assert result.returncode == 0, result.stdout + result.stderr
            assert job_string(builder, "Machine") == BUILDER
            assert wait_job(builder) == "failed"
            assert job_string(builder, "Phase") == "rollback"
            error = job_string(builder, "Error")
            assert error.startswith(
                f"app-misc/hello-{version} failed: binary package refused: "
                "GnuPG verification failed"
            ), error
            assert installed(builder_root) == before
            assert snapshots(f"{daemon.dataset}/{BUILDER}") == before_snapshots
            fetched = list((pkgdir_b / "app-misc/hello").glob(f"hello-{version}*"))
            if tampered:
                assert fetched == []
                assert f"hello-{version}" not in (pkgdir_b / "Packages").read_text()
                assert merged(daemon, builder + 1) == [("source", f"app-misc/hello-{version}")]
            else:
                assert ("source", f"app-misc/hello-{version}") in merged(daemon, builder)
                assert len(fetched) == 1 and fetched[0].read_bytes() != served, fetched
                assert f"app-misc/hello/{fetched[0].name}" in index(pkgdir_b)
                assert merged(daemon, builder + 1) == [("binary", f"app-misc/hello-{version}")]
            assert hello_version(db) == str(version)
    finally:
        stop_pid(server.proc)
        for version in (3, 4, 5):
            (daemon.repo / f"app-misc/hello/hello-{version}.ebuild").unlink(missing_ok=True)
        subprocess.run(["rm", "-rf", str(daemon.repo / "app-misc/twice")], check=True)


def test_a_binhost_that_does_not_answer_holds_the_updates_or_they_compile(
    daemon: Testbed, keys: tuple[Key, Key]
) -> None:
    builder_key, _ = keys
    db = daemon.seed("db", ["=app-misc/hello-1"])
    daemon.adopt("db")
    daemon.empty_pkgdir()
    server = serve(daemon.work / "packages", daemon.dir / "http.log")
    stop_pid(server.proc)  # the builder host is down

    become_host_b(daemon, server, builder_key, unreachable="hold")
    before = tree_hash(db)
    result = gnctl("update", "db")

    assert result.returncode == 5, result.stdout + result.stderr
    assert wait_job(1) == "held" and wait_job(2) == "held"
    assert job_string(1, "Error").startswith(f"binhost unreachable: {server.url}: ")
    assert job_string(2, "Error").startswith("builder job 1 held: binhost unreachable: ")
    assert BUILDER not in zfs("list", "-H", "-o", "name", "-r", daemon.dataset)
    assert tree_hash(db) == before and snapshots(f"{daemon.dataset}/db") == []

    restart(
        daemon,
        portage={
            "builders": True,
            "pkgdir": str(daemon.work / "packages-b"),
            "binrepos": [server.url],
        },
        binhost={"keys": [str(builder_key.public)], "unreachable": "compile"},
    )
    result = gnctl("update", "db")

    assert result.returncode == 0, result.stdout + result.stderr
    assert ("source", "app-misc/hello-2") in merged(daemon, 3)
    assert merged(daemon, 4) == [("binary", "app-misc/hello-2")]  # the builder's, local
    assert hello_version(db) == "2"
    warned = [e["MESSAGE"] for e in daemon.daemon_journal("GNSPAWN_JOB=3")]
    assert any(
        m.startswith(f"binhost unreachable, compiling instead: {server.url}") for m in warned
    )


def test_what_a_builder_built_before_gnspawnd_was_killed_is_signed_when_it_starts(
    daemon: Testbed, keys: tuple[Key, Key]
) -> None:
    builder_key, _ = keys
    daemon.seed("web", ["=app-misc/gate-1"])
    daemon.adopt("web")
    daemon.empty_pkgdir()
    pkgdir = daemon.work / "packages"
    builder_root = daemon.state / "builders" / "default"
    signing = {
        "publish": True,
        "signing_key": builder_key.fingerprint,
        "signing_home": str(builder_key.home),
    }
    gate = Gate(daemon.work / "distfiles" / "gate")
    try:
        env = {
            **emerge_environment(daemon.repo),
            "GNSPAWN_DEMO_GATE": str(gate.fifo),
            "GNSPAWN_DEMO_GATE_PHASE": "postinst",
        }
        restart(daemon, portage={"builders": True, "environment": env}, binhost=signing)
        web = queued(call("Update", "st", "web", "0").stdout)
        builder = web - 1
        # gate-2 is built and packaged; its pkg_postinst waits at the FIFO.
        assert gate.wait(builder) == ["postinst"]
        package = next((pkgdir / "app-misc/gate").glob("gate-2-*.gpkg.tar"))
        assert signer_of(package, builder_key, daemon.dir) == ""
        daemon.stop_daemon(signal.SIGKILL)
        daemon.write_config(portage={"builders": True}, binhost=signing)

        start_again(daemon)

        # Once it is ready, beside the jobs: a backlog does not hold its start up.
        journal_has(
            daemon, f"job {builder}: signed 1 binary packages it built before gnspawnd stopped"
        )
        assert signer_of(package, builder_key, daemon.dir) == builder_key.fingerprint
        assert index(pkgdir)[f"app-misc/gate/{package.name}"] == package.stat().st_size
        assert wait_job(builder, timeout=30) == "failed"
        assert wait_job(web) == "done", job_string(web, "Error")
        assert merged(daemon, web) == [("binary", "app-misc/gate-2")]
        assert not (daemon.state / "binhost-pending").exists() or not any(
            (daemon.state / "binhost-pending").iterdir()
        )
    finally:
        for pid in processes_on(builder_root):
            os.kill(pid, signal.SIGKILL)
        gate.remove()


def test_gnspawnd_will_not_start_with_keys_it_cannot_use(
    daemon: Testbed, keys: tuple[Key, Key]
) -> None:
    builder_key, other_key = keys
    daemon.stop_daemon()
    missing = daemon.dir / "keys" / "missing.asc"
    not_a_key = daemon.dir / "keys" / "not-a-key.asc"
    not_a_key.write_text("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nnonsense\n")
    binrepos: dict[str, object] = {"builders": True, "binrepos": ["http://127.0.0.1:9"]}
    cases: list[tuple[dict[str, object], dict[str, object], str]] = [
        (
            binrepos,
            {"keys": [str(missing)]},
            f"gnspawnd: cannot import key {missing}: ",
        ),
        (
            binrepos,
            {"keys": [str(not_a_key)]},
            f"gnspawnd: cannot import key {not_a_key}: ",
        ),
        (
            {},
            {
                "publish": True,
                "signing_key": "nobody@example",
                "signing_home": str(builder_key.home),
            },
            f"gnspawnd: [binhost] signing_key nobody@example is not a key in {builder_key.home}",
        ),
    ]
    for portage, binhost, message in cases:
        daemon.write_config(portage=portage, binhost=binhost)
        proc = daemon.start_daemon(wait=False)
        assert proc.wait(30) == 1
        daemon.daemon = None
        assert message in daemon.daemon_log.read_text()
        assert not (daemon.state / "binhost-gnupg").exists()

    # With a key it can use, it starts, and the keyring holds exactly that key.
    daemon.write_config(
        portage={"builders": True, "binrepos": ["http://127.0.0.1:9"]},
        binhost={"keys": [str(other_key.public)]},
    )
    daemon.start_daemon()
    listing = subprocess.run(
        ["gpg", "--homedir", str(daemon.state / "binhost-gnupg"), "--with-colons", "-k"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    trusted = {line.split(":")[9] for line in listing.splitlines() if line[:4] == "fpr:"}
    assert trusted == {other_key.fingerprint}


def test_no_sandbox_sees_the_signing_key(daemon: Testbed, keys: tuple[Key, Key]) -> None:
    """Wherever the admin keeps it: a machine's bashrc lists the signing home."""
    builder_key, _ = keys
    home = Path(tempfile.mkdtemp(prefix="gnspawn-test-signing-", dir="/opt"))
    try:
        subprocess.run(["cp", "-a", f"{builder_key.home}/.", str(home)], check=True)
        root = daemon.seed("web", ["=app-misc/hello-1"])
        leak = root / "leak-signing"
        (root / "etc/portage/bashrc").write_text(
            f"[[ ${{EBUILD_PHASE}} == depend ]] || ls -A {home} >> {leak} 2>&1\n"
        )
        daemon.empty_pkgdir()
        restart(
            daemon,
            binhost={
                "publish": True,
                "signing_key": builder_key.fingerprint,
                "signing_home": str(home),
            },
        )
        result = gnctl("update", "web")
        assert result.returncode == 0, result.stdout + result.stderr
        assert hello_version(root) == "2"
        assert leak.exists() and "pubring" not in leak.read_text()
        assert "private-keys" not in leak.read_text()
    finally:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)
        subprocess.run(["rm", "-rf", str(home)], check=True)
