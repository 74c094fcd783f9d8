"""Binhosts: what a host that builds publishes, and how the other hosts take it.

Portage does the work on both sides. A host with `[binhost] publish = true` signs the
binary packages its emerges add to PKGDIR with `gpkg-sign` and brings PKGDIR's index up
to date with `emaint binhost --fix`, on the host, after each emerge that publishes: the
signing key never enters a sandbox, where the builds run. Any web server that serves
PKGDIR makes it a binhost.

A host that lists binhosts in `[portage] binrepos` gives them to its builder roots only:
a builder root's binrepos.conf names PKGDIR as the download location, so what is fetched
lands in PKGDIR, where the machines install it from, read-only, as they install what the
builder compiles. A machine never fetches: it could not write PKGDIR, and a download
into its own root would be made once per machine, not once per host.

Portage verifies a signed package whenever it installs one (`verify-signature = true`
for a binhost's, on download), with the keyring BINPKG_GPG_VERIFY_GPG_HOME names.
gnspawn makes one per host when it starts, of `[binhost] keys` and the host's own
signing key, and every sandbox sees it read-only at sandbox.KEYRING: a container can
neither change the keys its packages are checked with nor lose a keyring of its own
(getuto's, for Gentoo's binhost) in its /etc/portage/gnupg. A package whose signature
does not verify is not installed, nor put into PKGDIR's index.

Portage checks only the signatures a package has, unless binpkg-request-signature is
set, and with it also refuses the builder root's own unsigned builds (on a host that
does not publish). So a builder downloads in an emerge of its own, --fetchonly before
its snapshot, that requests signatures; its other emerges fetch nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import stat
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from gnspawn import portage, rootfs
from gnspawn import run as commands
from gnspawn.config import Config, PortageConfig
from gnspawn.run import CommandFailed, run

log = logging.getLogger(__name__)

_KEYRING_FILES = ("pubring.kbx", "trustdb.gpg")
_ULTIMATE = 6
"""gpg's ownertrust for a key the admin named: its signatures are valid as they are."""
_PROBE_TIMEOUT = 10.0
_publishing = asyncio.Lock()
"""One signing and indexing at a time: two jobs' emerges may have built the same file."""


class BinhostError(Exception):
    """A binhost step failed; the message says which and why."""


def binrepos_conf(config: PortageConfig) -> str:
    """A builder root's binrepos.conf: each binhost, the first preferred, fetched into
    PKGDIR and verified."""
    lines = ["# Written by gnspawn from [portage] binrepos; rewritten before each build."]
    count = len(config.binrepos)
    for number, uri in enumerate(config.binrepos, 1):
        lines += [
            "",
            f"[gnspawn-binrepo-{number}]",
            f"sync-uri = {uri}",
            f"priority = {count - number + 1}",
            f"location = {config.pkgdir}",
            "verify-signature = true",
        ]
    return "\n".join(lines) + "\n"


def verifies(config: Config) -> bool:
    """Whether this host's emerges see signed packages: its own (it publishes) or its
    binhosts'. Portage verifies a signed package whenever it installs one."""
    return config.binhost.publish or bool(config.binhost.keys)


def keyring_directory(config: Config) -> Path:
    """The host's keyring of the keys its packages may be signed with."""
    return config.daemon.state_directory / "binhost-gnupg"


async def make_keyring(config: Config) -> None:
    """Make the host's keyring anew from `[binhost] keys` and, on a host that publishes,
    the public part of its signing key; raises BinhostError. Made once, when gnspawnd
    starts: every sandbox sees it, read-only, as Portage's verifying keyring."""
    directory = keyring_directory(config)
    if not verifies(config):
        await asyncio.to_thread(shutil.rmtree, directory, True)
        return
    scratch = config.daemon.state_directory
    await asyncio.to_thread(scratch.mkdir, parents=True, exist_ok=True)
    sources = list(config.binhost.keys)
    own = None
    if config.binhost.publish:
        own = await _signing_public_key(config)
        sources.append(own)
    try:
        files = await keyring(sources, scratch)
    finally:
        if own is not None:
            await asyncio.to_thread(own.unlink, True)

    def install() -> None:
        fresh = scratch / "binhost-gnupg.new"
        shutil.rmtree(fresh, ignore_errors=True)
        fresh.mkdir()
        fresh.chmod(0o755)  # whatever the umask: gpg verifies as nobody
        for name, content in files.items():
            (fresh / name).write_bytes(content)
            (fresh / name).chmod(0o644)
        shutil.rmtree(directory, ignore_errors=True)
        fresh.rename(directory)

    try:
        await asyncio.to_thread(install)
    except OSError as err:
        raise BinhostError(f"cannot write the binhost keyring {directory}: {err}") from err


async def _signing_public_key(config: Config) -> Path:
    """The public part of the signing key, exported from its home into a file."""
    home, key = config.binhost.signing_home, config.binhost.signing_key
    argv = ["gpg", "--homedir", str(home), "--batch", "--no-tty", "--armor", "--export", key]
    try:
        exported = await run(argv)
    except (CommandFailed, OSError) as err:
        raise BinhostError(f"cannot read signing key {key} in {home}: {_why(err)}") from err
    if not exported.strip():
        raise BinhostError(f"[binhost] signing_key {key} is not a key in {home}")
    path = config.daemon.state_directory / "binhost-signing-key.asc"
    await asyncio.to_thread(path.write_text, exported)
    return path


async def prepare(config: Config, root: Path) -> None:
    """Write a builder root's binrepos.conf from the configuration (or remove it when
    there are no binhosts); raises BinhostError."""

    def write() -> None:
        if config.portage.binrepos:
            rootfs.write_text(root, "etc/portage/binrepos.conf", binrepos_conf(config.portage))
        else:
            rootfs.remove(root, ["etc/portage/binrepos.conf"])

    try:
        await asyncio.to_thread(write)
    except OSError as err:
        raise BinhostError(f"cannot write the binrepos.conf of {root}: {err}") from err


async def keyring(keys: Sequence[Path], scratch: Path) -> dict[str, bytes]:
    """The files of a GnuPG home that trusts exactly the keys in `keys` (files of public
    keys, armored or not), made with gpg in a directory of its own under `scratch`."""
    await asyncio.to_thread(scratch.mkdir, parents=True, exist_ok=True)
    home = Path(await asyncio.to_thread(tempfile.mkdtemp, "", "binhost-keyring-", scratch))
    gpg = ["gpg", "--homedir", str(home), "--batch", "--no-tty", "--no-autostart"]
    try:
        for key in keys:
            try:
                await run([*gpg, "--import", str(key)])
            except CommandFailed as err:
                raise BinhostError(f"cannot import key {key}: {err.message}") from err
        listing = await run([*gpg, "--with-colons", "--list-keys"])
        primaries = _primary_fingerprints(listing)
        if not primaries:
            raise BinhostError("[binhost] keys hold no public key")
        trust = home / "ownertrust"
        text = "".join(f"{fpr}:{_ULTIMATE}:\n" for fpr in primaries)
        await asyncio.to_thread(trust.write_text, text)
        await run([*gpg, "--import-ownertrust", str(trust)])
        await run([*gpg, "--check-trustdb"])
        return {name: await asyncio.to_thread((home / name).read_bytes) for name in _KEYRING_FILES}
    except (CommandFailed, OSError) as err:
        raise BinhostError(f"cannot make the binhost keyring: {err}") from err
    finally:
        await asyncio.to_thread(shutil.rmtree, home, True)


def _primary_fingerprints(listing: str) -> list[str]:
    """The fingerprint of each primary key in `gpg --with-colons --list-keys`."""
    found, primary = [], False
    for line in listing.splitlines():
        fields = line.split(":")
        if fields[0] == "pub":
            primary = True
        elif fields[0] == "sub":
            primary = False
        elif fields[0] == "fpr" and primary and len(fields) > 9:
            found.append(fields[9])
            primary = False
    return found


async def unreachable(uris: Sequence[str]) -> str:
    """Why binhosts do not answer, one `URI: reason` per binhost that does not (joined
    by "; "); "" when every one serves a package index."""
    answers = await asyncio.gather(*(asyncio.to_thread(_probe, uri) for uri in uris))
    return "; ".join(f"{uri}: {why}" for uri, why in zip(uris, answers, strict=True) if why)


def _probe(uri: str) -> str:
    index = uri.rstrip("/") + "/Packages"
    try:
        with urllib.request.urlopen(index, timeout=_PROBE_TIMEOUT) as response:
            response.read(1)
    except urllib.error.HTTPError as err:
        return f"{index}: HTTP {err.code} {err.reason}"
    except urllib.error.URLError as err:
        return str(err.reason)
    except (OSError, ValueError) as err:
        return str(err)
    return ""


def new_packages(pkgdir: Path, since: float) -> list[Path]:
    """The binary packages in PKGDIR written since `since` (a time.time()): what an
    emerge that began then built."""
    found = []
    for directory, _, files in os.walk(pkgdir):
        for name in files:
            if not name.endswith((".gpkg.tar", ".xpak", ".tbz2")):
                continue
            path = Path(directory, name)
            with contextlib.suppress(OSError):
                status = path.lstat()
                if status.st_mtime >= since and status.st_size > 0 and path.is_file():
                    found.append(path)
    return sorted(found)


async def discard(config: Config, refused: Sequence[str]) -> None:
    """Remove from PKGDIR the binary packages Portage refused (their signature did not
    verify), so that no machine tries them: a download refused at once (Portage keeps it
    as NAME.partial, beside the empty file it allocated for the package), or a package
    refused when it was unpacked (it is in the index: the index is brought up to date).
    Every root of this host verifies with the same keyring, so none could use it. Only
    regular files under PKGDIR are touched; raises BinhostError."""
    pkgdir = config.portage.pkgdir

    def remove() -> bool:
        indexed = False
        for name in refused:
            path = Path(name)
            if pkgdir not in path.parents or ".." in path.parts:
                continue
            if path.suffix == ".partial":
                _remove_file(path)
                _remove_file(path.with_suffix(""), empty=True)
            else:
                indexed = _remove_file(path) or indexed
        return indexed

    if await asyncio.to_thread(remove):
        env = {
            **_portage_environment(config),
            "BINPKG_GPG_VERIFY_GPG_HOME": str(keyring_directory(config)),
        }
        await _fix_index(config, env)


def _signed(package: Path) -> bool:
    """Whether a gpkg carries signatures: its members' names are read, nothing else."""
    try:
        with tarfile.open(package, "r:") as tar:
            for number, member in enumerate(tar):
                if member.name.endswith(".sig"):
                    return True
                if number > 16:
                    break
    except (OSError, tarfile.TarError):
        pass
    return False


def _remove_file(path: Path, *, empty: bool = False) -> bool:
    """Remove a regular file (only an empty one with `empty`); whether it was there."""
    try:
        status = path.lstat()
        if not stat.S_ISREG(status.st_mode) or (empty and status.st_size):
            return False
        path.unlink()
    except OSError:
        return False
    log.warning("removed %s: Portage refused it", path)
    return True


def _portage_environment(config: Config) -> dict[str, str]:
    """What emaint and gpkg-sign need on the host: PKGDIR, and gpg run as root (Portage
    verifies as nobody, who may not read a GnuPG home under /root or the state directory)."""
    return {
        **config.portage.environment,
        "NOCOLOR": "true",
        "PKGDIR": str(config.portage.pkgdir),
        "GPG_VERIFY_USER_DROP": "",
        "GPG_VERIFY_GROUP_DROP": "",
        "PORTAGE_TRUST_HELPER": "",
    }


async def _fix_index(config: Config, env: dict[str, str]) -> None:
    try:
        await run(
            [portage.tool(config.portage, "emaint"), "binhost", "--fix"],
            env=commands.environment(env),
        )
    except (CommandFailed, OSError) as err:
        why = f"cannot update the index of {config.portage.pkgdir}: {_why(err)}"
        raise BinhostError(why) from err


def publish_environment(config: Config) -> dict[str, str]:
    """gpkg-sign's and emaint's settings on a host that publishes: the signing key and
    its home; and for emaint, which reads each signed package it indexes, the same home
    to verify with (Portage's default is /etc/portage/gnupg)."""
    home = str(config.binhost.signing_home)
    return {
        **_portage_environment(config),
        "BINPKG_GPG_SIGNING_GPG_HOME": home,
        "BINPKG_GPG_SIGNING_KEY": config.binhost.signing_key,
        "BINPKG_GPG_VERIFY_GPG_HOME": home,
    }


async def publish(config: Config, packages: Sequence[Path]) -> int:
    """Sign those of `packages` (a publishing host's new ones) that carry no signature
    yet, and bring PKGDIR's index up to date; how many it signed. Signing the same
    packages again signs none twice (a pending note, see begin). Raises BinhostError
    after it tried them all."""
    env = publish_environment(config)
    sign = portage.tool(config.portage, "gpkg-sign")
    xpak = [str(p) for p in packages if not p.name.endswith(".gpkg.tar")]
    if xpak:
        log.warning("cannot sign %s: only gpkg packages carry a signature", ", ".join(xpak))

    def unsigned() -> list[Path]:
        return [p for p in packages if p.name.endswith(".gpkg.tar") and not _signed(p)]

    failed, signed = [], 0
    for package in await asyncio.to_thread(unsigned):  # gpkg-sign signs its first file only
        try:
            await run([sign, str(package)], env=commands.environment(env))
            signed += 1
        except (CommandFailed, OSError) as err:
            failed.append(f"cannot sign {package}: {_why(err)}")
    await _fix_index(config, env)
    if failed:
        raise BinhostError("; ".join(failed))
    return signed


def _pending(config: Config) -> Path:
    return config.daemon.state_directory / "binhost-pending"


def begin(config: Config, job: int, since: float) -> None:
    """Note that an emerge of job `job` that began at `since` publishes: should gnspawnd
    die before it signed what it built, the next start signs it (publish_pending). The
    first note of a job stands until what it covers is signed."""
    directory = _pending(config)
    directory.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError), (directory / str(job)).open("x") as note:
        note.write(repr(since))


async def publish_since(config: Config, job: int, since: float) -> int:
    """Sign what job `job`'s emerges built since `since` and bring the index up to date;
    how many packages that was. Raises BinhostError (the job's note then stays)."""
    async with _publishing:
        built = await asyncio.to_thread(new_packages, config.portage.pkgdir, since)
        count = await publish(config, built) if built else 0
        await asyncio.to_thread((_pending(config) / str(job)).unlink, True)
    return count


def has_pending(config: Config) -> bool:
    """Whether a gnspawnd that died left packages to sign (see begin)."""
    with contextlib.suppress(OSError), os.scandir(_pending(config)) as notes:
        return any(True for _ in notes)
    return False


async def publish_pending(config: Config) -> None:
    """Sign what the emerges of a gnspawnd that died did not sign (see begin); on a
    host that no longer publishes, forget it. Run beside the jobs once gnspawnd is
    ready (a backlog must not hold its start up); failures are logged, and a note is
    tried again at the next start while a package of it is left unsigned."""
    directory = _pending(config)
    notes = await asyncio.to_thread(lambda: sorted(directory.glob("*")))
    for note in notes:
        try:
            job, since = int(note.name), float(await asyncio.to_thread(note.read_text))
        except (OSError, ValueError):
            await asyncio.to_thread(note.unlink, True)
            continue
        if not config.binhost.publish:
            await asyncio.to_thread(note.unlink, True)
            continue
        try:
            count = await publish_since(config, job, since)
        except BinhostError as err:
            log.error("job %d: %s", job, err)
            continue
        log.info("job %d: signed %d binary packages it built before gnspawnd stopped", job, count)


def _why(err: Exception) -> str:
    return err.message if isinstance(err, CommandFailed) else str(err)
