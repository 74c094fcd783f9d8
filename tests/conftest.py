"""Fixtures: one test bed of real components per session, a fresh gnspawnd per test."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from testbed import Testbed
from upstream import Upstream, upstream_of


@pytest.fixture(scope="session")
def bed() -> Iterator[Testbed]:
    if os.geteuid() != 0:
        pytest.fail("the integration tests need root (zfs-fuse, mounts, journald)")
    # /var/tmp, not /tmp: the pool file is sparse but may grow past a tmpfs.
    sandbox = Path(tempfile.mkdtemp(prefix="gnspawn-test-", dir="/var/tmp"))
    sandbox.chmod(0o755)  # unprivileged callers must reach the bus socket inside
    testbed = Testbed(sandbox)
    try:
        yield testbed
    finally:
        testbed.stop()
        shutil.rmtree(sandbox, ignore_errors=True)


@pytest.fixture
def daemon(bed: Testbed) -> Iterator[Testbed]:
    """A running gnspawnd with an empty job database and no machines."""
    bed.reset()
    bed.start_daemon()
    try:
        yield bed
    finally:
        code = bed.stop_daemon()
        assert code == 0, f"gnspawnd exited {code}:\n{bed.daemon_log.read_text()[-3000:]}"


@pytest.fixture
def upstream(daemon: Testbed) -> Iterator[Upstream]:
    """The test bed's repository syncing from a git repository the test moves forward."""
    with upstream_of(daemon) as moving:
        yield moving
