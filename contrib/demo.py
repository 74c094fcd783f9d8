"""`make demo`: gnspawn's main job, end to end, in a sandbox under the repository.

It starts a private system bus, journald, a zfs-fuse pool on a sparse file and
gnspawnd, seeds two containers from the demo repository, updates one successfully
and one that fails and is rolled back, reads the journal, rolls the good update back
by hand, shows what gnctl shows, and stops everything.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from testbed import Testbed  # noqa: E402


def step(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m" if sys.stdout.isatty() else f"\n== {text}", flush=True)


def gnctl(*args: str) -> int:
    print(f"$ gnctl {' '.join(args)}", flush=True)
    return subprocess.run([sys.executable, "-m", "gnspawn.ctl.main", *args], check=False).returncode


def show(root: Path) -> None:
    version = (root / "usr/share/hello/version").read_text().strip()
    print(f"   {root.name}: app-misc/hello {version} installed", flush=True)


def main() -> int:
    if os.geteuid() != 0:
        print("make demo needs root (zfs-fuse, mounts, journald)", file=sys.stderr)
        return 1
    sandbox = REPO / "sandbox"
    shutil.rmtree(sandbox, ignore_errors=True)
    step("starting a private system bus, journald, a zfs-fuse pool and gnspawnd")
    bed = Testbed(sandbox)
    try:
        print(f"   pool {bed.dataset} on {bed.pool.file}, bus {bed.bus.address}")
        step("seeding two containers with emerge, as an admin would by hand")
        web = bed.seed("web")
        db = bed.seed("db", ["=app-misc/hello-1", "=app-misc/broken-1"])
        show(web)
        show(db)
        bed.start_daemon()
        gnctl("list")

        step("an update that succeeds: snapshot, emerge, done")
        code = gnctl("update", "web")
        print(f"   exit status {code}")
        show(web)
        gnctl("snapshots", "web")

        step("an update that fails: hello-2 merges, broken-2 fails, the root is rolled back")
        code = gnctl("update", "db")
        print(f"   exit status {code}")
        show(db)
        gnctl("job", "2")

        step("the journal has every line of both jobs, with the job's fields")
        gnctl("logs", "2", "-n", "4")

        step("a rollback by hand: web goes back to the snapshot its update took")
        gnctl("rollback", "web")
        show(web)
        gnctl("snapshots", "web")

        step("what gnspawn knows now")
        gnctl("jobs")
        gnctl("list")
        return 0
    finally:
        step("stopping gnspawnd, the bus, journald and zfs-fuse")
        bed.stop()
        shutil.rmtree(sandbox, ignore_errors=True)
        print("   done; nothing is left running", flush=True)


if __name__ == "__main__":
    sys.exit(main())
