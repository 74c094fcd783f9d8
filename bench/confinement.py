"""The sandbox's cost: one emerge confined to its root, against the same emerge unconfined.

Both install the same binary package into the same root, rolled back in between; the
confined one runs exactly as gnspawnd runs it (bubblewrap, setpriv, a job-private
PORTAGE_TMPDIR), the other as an admin would by hand.
"""

from __future__ import annotations

import subprocess

from common import alternate, emerge_argv, emerge_env, row

from gnspawn import sandbox
from gnspawn.config import load
from testbed import Testbed, zfs


def sandbox_cost(bed: Testbed) -> str:
    root = bed.machines / "web"
    ds = f"{bed.dataset}/web"
    zfs("snapshot", f"{ds}@bench-sandbox")
    config = load(bed.config_file)
    argv = emerge_argv(root, "--usepkg=y", "--buildpkg=y")
    env = {**emerge_env(bed), **sandbox.directories(config, "web")}

    def run(command: list[str]) -> None:
        zfs("rollback", "-r", f"{ds}@bench-sandbox")
        subprocess.run(command, env=env, stdin=subprocess.DEVNULL, capture_output=True, check=True)

    def confined() -> None:
        tmpdir = sandbox.make_job_tmpdir(config, 0)
        try:
            run(sandbox.confine(argv, config=config, root=root, machine="web", tmpdir=tmpdir))
        finally:
            sandbox.remove_job_tmpdir(config, 0)

    def unconfined() -> None:
        run(argv)

    unconfined()  # warm up: the binary package both then install
    a, b = alternate(confined, unconfined)
    zfs("rollback", "-r", f"{ds}@bench-sandbox")
    zfs("destroy", f"{ds}@bench-sandbox")
    return row("emerge confined to its root (bubblewrap), against unconfined", a, b, "≤ 1.05x")
