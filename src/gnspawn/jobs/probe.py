"""Ask Portage about a machine's root, from inside its sandbox.

Some questions only Portage can answer: which files CONFIG_PROTECT covers in a root,
which news items are relevant to it. Answering means reading what the container wrote
(its make.conf, profile, package database), so Portage's code runs confined to the root
as emerge does (gnspawn/portage_probe.py, without network), and hands back JSON through
the job's own PORTAGE_TMPDIR, which the daemon reads as it reads a root.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Mapping, Sequence
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
FILES = "gnspawn-files"
MOST_ANSWER = 4 << 20
"""Bytes of an answer read back: a container could make Portage's answer huge."""


async def ask(
    ctx: Context,
    root: Path,
    question: str,
    *args: str,
    given: Mapping[str, bytes] | None = None,
    back: Sequence[str] = (),
) -> dict[str, Any]:
    """Portage's answer to `question` about `root` (see portage_probe); JobFailed
    when it cannot answer, or answers with an error.

    `given` are files the question reads, put in a directory of their own, which is
    the question's last argument; the files of it named in `back` (at most MOST_ANSWER
    bytes each, if there) come back in the answer under "files", by name."""
    config = ctx.config
    script = resources.files("gnspawn").joinpath("portage_probe.py").read_text()
    seen = sandbox.portage_tmpdir(config)  # the job's tmpdir, as the sandbox sees it
    argv = [sys.executable, "-I", "-c", script, question, str(root), str(seen / ANSWER), *args]
    if given is not None:
        argv.append(str(seen / FILES))
    env = {
        **emerge_environment(config.portage, job=ctx.job.id, tag=ctx.tag),
        **sandbox.directories(config, ctx.job.machine),
    }

    async def line(text: str) -> None:
        ctx.log(journal.INFO, text)

    tmpdir = sandbox.make_job_tmpdir(config, ctx.job.id)
    try:
        if given is not None:
            await asyncio.to_thread(_give, tmpdir / FILES, given)
        await confined(ctx, root, argv, env=env, tmpdir=tmpdir, line=line, network=False)
        text = rootfs.read_text(tmpdir, ANSWER, limit=MOST_ANSWER)
        answer = json.loads(text)
        if isinstance(answer, dict) and back:
            answer["files"] = await asyncio.to_thread(_take, tmpdir / FILES, back)
    except CommandFailed as err:
        raise JobFailed(f"Portage could not tell {question}: {err.message}") from err
    except (OSError, ValueError, RecursionError) as err:
        raise JobFailed(f"Portage gave no answer on {question}: {err}") from err
    finally:
        await uncancellable(_remove(ctx))
    if not isinstance(answer, dict):
        raise JobFailed(f"Portage gave no answer on {question}")
    if error := answer.get("error"):
        raise JobFailed(f"Portage could not tell {question}: {error}")
    return answer


def _give(directory: Path, files: Mapping[str, bytes]) -> None:
    directory.mkdir(mode=0o755)
    for name, content in files.items():
        (directory / name).write_bytes(content)


def _take(directory: Path, names: Sequence[str]) -> dict[str, bytes]:
    """The files the question left, read as a root is: the sandbox wrote them."""
    found = {}
    for name in names:
        try:
            found[name] = rootfs.read_bytes(directory, name, MOST_ANSWER + 1)
        except FileNotFoundError:
            continue
        if len(found[name]) > MOST_ANSWER:
            raise ValueError(f"{name} is too big")
    return found


async def _remove(ctx: Context) -> None:
    sandbox.remove_job_tmpdir(ctx.config, ctx.job.id)
