"""A second gnspawn host for the tests of Send: run by testbed.OtherHost in a process of
its own, it enters its own mount namespace (its own /run, zfs-fuse socket, bus and
journald), starts a test bed with the pool gnspawn-other, gnspawnd and an sshd, says
where they are as one line of JSON, and stops them all when its standard input ends."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from testbed import OTHER_POOL, Sshd, Testbed


def main() -> None:
    directory = Path(sys.argv[1])
    bed = Testbed(directory, pool=OTHER_POOL)
    sshd = None
    try:
        sshd = Sshd(directory / "sshd")
        bed.start_daemon()
        said = {
            "port": sshd.port,
            "ssh": str(sshd.ssh),
            "dataset": bed.dataset,
            "machines": str(bed.machines),
            "nspawn": str(bed.dir / "nspawn"),
        }
        print(json.dumps(said), flush=True)
        sys.stdin.read()  # until the test is done with this host
    finally:
        code = bed.stop_daemon()
        if code not in (0, None):
            print(f"gnspawnd exited {code}:\n{bed.daemon_log.read_text()[-3000:]}", file=sys.stderr)
        if sshd is not None:
            sshd.stop()
        bed.stop()


if __name__ == "__main__":
    main()
