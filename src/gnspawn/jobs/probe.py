"""Ask Portage about a machine's root, from inside its sandbox.

Some questions only Portage can answer: which files CONFIG_PROTECT covers in a root,
which news items are relevant to it. Answering means reading what the container wrote
(its make.conf, profile, package database), so Portage's code runs confined to the root
as emerge does (gnspawn/portage_probe.py, without network), and hands back JSON through
the job's own PORTAGE_TMPDIR, which the daemon reads as it reads a root.
"""

from __future__ import annotations

import json
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from gnspawn import log as journal
from gnspawn import rootfs, sandbox
from gnspawn.jobs.context import Context, JobFailed, uncancellable
from gnspawn.jobs.emerge import confined
from gnspawn.portage import emerge_environment
from gnspawn.run import CommandFailed

ANSWER = "gnspawn-answer.json"
MOST_ANSWER = 4 << 20
"""Bytes of an answer read back: a container could make Portage's answer huge."""


async def ask(ctx: Context, root: Path, question: str, *args: str) -> dict[str, Any]:
    """Portage's answer to `question` about `root` (see portage_probe); JobFailed
    when it cannot answer, or answers with an error."""
    config = ctx.config
    script = resources.files("gnspawn").joinpath("portage_probe.py").read_text()
    seen = sandbox.portage_tmpdir(config)  # the job's tmpdir, as the sandbox sees it
    argv = [sys.executable, "-I", "-c", script, question, str(root), str(seen / ANSWER), *args]
    env = {
        **emerge_environment(config.portage, job=ctx.job.id, tag=ctx.tag),
        **sandbox.directories(config, ctx.job.machine),
    }

    async def line(text: str) -> None:
        ctx.log(journal.INFO, text)

    tmpdir = sandbox.make_job_tmpdir(config, ctx.job.id)
    try:
        await confined(ctx, root, argv, env=env, tmpdir=tmpdir, line=line, network=False)
        text = rootfs.read_text(tmpdir, ANSWER, limit=MOST_ANSWER)
        answer = json.loads(text)
    except CommandFailed as err:
        raise JobFailed(f"Portage could not tell {question}: {err.message}") from err
    except (OSError, ValueError) as err:
        raise JobFailed(f"Portage gave no answer on {question}: {err}") from err
    finally:
        await uncancellable(_remove(ctx))
    if not isinstance(answer, dict):
        raise JobFailed(f"Portage gave no answer on {question}")
    if error := answer.get("error"):
        raise JobFailed(f"Portage could not tell {question}: {error}")
    return answer


async def _remove(ctx: Context) -> None:
    sandbox.remove_job_tmpdir(ctx.config, ctx.job.id)
