"""The test bed's repository as a clone of a git repository the test moves forward:
what `emaint sync` pulls from in the tests of sync and of the scheduled cycle."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from testbed import Testbed, emerge_environment, repos_conf

GIT_IDENTITY = ("-c", "user.name=gnspawn tests", "-c", "user.email=tests@gnspawn.invalid")


def git(directory: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *GIT_IDENTITY, "-C", str(directory), *args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


@dataclass
class Upstream:
    """The bare git repository the test bed's repository syncs from, and a working copy
    of it where the test commits what comes next."""

    bare: Path
    work: Path

    def head(self) -> str:
        return git(self.bare, "rev-parse", "HEAD")

    def publish(self, message: str) -> str:
        """Commit and push what the test wrote into the working copy; the new HEAD."""
        git(self.work, "add", "-A")
        git(self.work, "commit", "-q", "-m", message)
        git(self.work, "push", "-q", "origin", "HEAD")
        return self.head()

    def add_hello(self, version: int) -> str:
        """A new version of app-misc/hello upstream; the new HEAD."""
        ebuilds = self.work / "app-misc" / "hello"
        shutil.copy(ebuilds / "hello-2.ebuild", ebuilds / f"hello-{version}.ebuild")
        return self.publish(f"app-misc/hello: add {version}")


def sync_environment(daemon: Testbed, upstream: Path) -> dict[str, str]:
    """emerge's and emaint's environment: the repository with its sync settings."""
    conf = repos_conf(daemon.repo) + f"sync-type = git\nsync-uri = file://{upstream}\n"
    return {**emerge_environment(daemon.repo), "PORTAGE_REPOSITORIES": conf}


@contextmanager
def upstream_of(daemon: Testbed) -> Iterator[Upstream]:
    """The test bed's repository as a clone of a bare git repository (file://), and a
    daemon that syncs it from there; the repository as it was afterwards."""
    kept = daemon.dir / "repo-unsynced"
    bare, work = daemon.dir / "upstream.git", daemon.dir / "upstream-work"
    for directory in (kept, bare, work):
        shutil.rmtree(directory, ignore_errors=True)
    shutil.copytree(daemon.repo, work)
    git(work, "init", "-q")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "the demo repository")
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)
    git(work, "remote", "add", "origin", str(bare))
    daemon.repo.rename(kept)
    subprocess.run(["git", "clone", "-q", f"file://{bare}", str(daemon.repo)], check=True)
    try:
        daemon.write_config(portage={"environment": sync_environment(daemon, bare)})
        daemon.stop_daemon()
        daemon.start_daemon()
        yield Upstream(bare, work)
    finally:
        shutil.rmtree(daemon.repo)
        kept.rename(daemon.repo)
        for directory in (work, bare.with_name("upstream.git.gone"), bare):
            shutil.rmtree(directory, ignore_errors=True)
