"""The news items a machine has not read, what they say, and marking them read.

Which of a repository's news items (metadata/news/ITEM/ITEM.en.txt, GLEP 42) concern a
root, Portage decides from the root's installed packages, profile and keywords
(Display-If-Installed, -Profile, -Keyword): its news manager runs confined to the root
(probe `news`) and adds the relevant new items to the root's
/var/lib/gentoo/news/news-REPO.unread, as emerge does after a sync, and to news-REPO.skip,
so that an item once judged is never added again. What an item says is read from the
host's repositories, never from the root. The root's lists are read and written through
rootfs: the container writes them too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import posixpath
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from gnspawn import log as journal
from gnspawn import rootfs
from gnspawn.config import NewsPolicy, PortageConfig
from gnspawn.errors import GnspawnError, InvalidArgs, NoSuchNewsItem
from gnspawn.jobs import probe
from gnspawn.jobs.context import Context, JobFailed
from gnspawn.names import NoticeKind, Phase, counted, shown
from gnspawn.portage import repository_name

NEWS_DIRECTORY = "/var/lib/gentoo/news"
"""Where Portage keeps a root's news lists (NEWS_LIB_PATH/news)."""
ITEM_NAME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}-[A-Za-z0-9][A-Za-z0-9+_-]{0,79}")
"""GLEP 42: the date it was posted and a short name; never a path."""
LANGUAGE = "en"
"""The one language Portage's news manager reads."""
MOST_ITEM_BYTES = 64 << 10
MOST_LIST_BYTES = 1 << 20
"""Of a root's news list: the container writes it."""
MOST_ITEMS = 1000


@dataclasses.dataclass(frozen=True)
class NewsItem:
    """An unread news item of a machine, as its repository has it."""

    name: str
    repository: str
    title: str
    body: str
    """The text after the headers."""

    def attention(self, machine: str) -> tuple[str, str]:
        text = f"unread news from {self.repository}: {self.title}: gnctl news {machine}"
        return self.name, text


def valid_name(name: str) -> bool:
    """Whether `name` could name a news item: YYYY-MM-DD-short-name, nothing else."""
    return ITEM_NAME.fullmatch(name) is not None


def check_names(names: Iterable[str]) -> list[str]:
    """The names, or InvalidArgs for the first that names no news item."""
    checked = list(names)
    for name in checked:
        if not valid_name(name):
            raise InvalidArgs(f"not a news item name: {shown(name)}")
    return checked


def parse(text: str) -> tuple[dict[str, str], str]:
    """A GLEP 42 news item: its headers (the first of each, by lower-case name) up to the
    first empty line, and the body after it."""
    head, _, body = text.replace("\r\n", "\n").partition("\n\n")
    headers: dict[str, str] = {}
    for line in head.split("\n"):
        key, colon, value = line.partition(":")
        if colon and key.strip():
            headers.setdefault(key.strip().lower(), value.strip())
    body = body.strip("\n")
    return headers, f"{body}\n" if body.strip() else ""


def repositories(config: PortageConfig) -> dict[str, Path]:
    """The host's repositories by name: where news items are read from."""
    found: dict[str, Path] = {}
    for repo in config.repos:
        found.setdefault(repository_name(repo), repo)
    return found


def _item(repository: str, location: Path, name: str) -> NewsItem | None:
    """The news item `name` of the repository at `location`, or None when it has none
    by that name (or none in English)."""
    path = location / "metadata" / "news" / name / f"{name}.{LANGUAGE}.txt"
    try:
        with path.open("rb") as file:
            data = file.read(MOST_ITEM_BYTES)
    except OSError:
        return None
    headers, body = parse(data.decode(errors="replace"))
    return NewsItem(name, repository, headers.get("title", "") or name, body)


def items(config: PortageConfig, found: Mapping[str, Sequence[str]]) -> list[NewsItem]:
    """The news items named by repository in `found`, of those the host has: names
    come from the root, or from Portage run on it."""
    known = repositories(config)
    result = []
    for repository, names in sorted(found.items()):
        location = known.get(repository)
        if location is None:
            continue
        for name in sorted(set(names)):
            if valid_name(name) and (item := _item(repository, location, name)):
                result.append(item)
    return result[:MOST_ITEMS]


def _list_path(repository: str, which: str) -> str:
    return posixpath.join(NEWS_DIRECTORY, f"news-{repository}.{which}")


def _read_list(root: Path, repository: str, which: str) -> list[str]:
    """The lines of the root's news-REPO.unread (or .read), empty when it has none."""
    try:
        text = rootfs.read_text(root, _list_path(repository, which), MOST_LIST_BYTES)
    except OSError:
        return []
    return [line.strip() for line in text.splitlines() if line.strip()]


def unread(root: Path, config: PortageConfig) -> list[NewsItem]:
    """The news items the root's lists have unread, as Portage (or eselect news in the
    container) last left them."""
    found = {repo: _read_list(root, repo, "unread") for repo in repositories(config)}
    return items(config, found)


def mark_read(root: Path, config: PortageConfig, names: Sequence[str]) -> list[NewsItem]:
    """Mark news items of the root read, as `eselect news read` does: out of
    news-REPO.unread, into news-REPO.read; every unread item when `names` is empty.
    The items marked; NoSuchNewsItem, with nothing changed, when one of `names` is not
    unread."""
    waiting = unread(root, config)
    wanted = set(check_names(names)) or {item.name for item in waiting}
    if missing := wanted - {item.name for item in waiting}:
        raise NoSuchNewsItem(f"no unread news item {shown(', '.join(sorted(missing)))}")
    marked = [item for item in waiting if item.name in wanted]
    # Written by gnspawnd itself rather than by eselect or Portage in the sandbox: it is
    # a filter of two lists of names, and a bus call that waits for no job. rootfs
    # replaces each list by a new file resolved inside the root, never written through
    # a link the container planted.
    for repository in sorted({item.repository for item in marked}):
        done = {item.name for item in marked if item.repository == repository}
        left = [name for name in _read_list(root, repository, "unread") if name not in done]
        read = _read_list(root, repository, "read")
        read += sorted(done - set(read))
        try:
            for which, listed in (("read", read), ("unread", left)):
                text = "".join(f"{name}\n" for name in listed)
                rootfs.write_text(root, _list_path(repository, which), text)
        except OSError as err:
            why = err.strerror or str(err)
            raise GnspawnError(f"cannot mark news items of {repository} read: {why}") from err
    return marked


async def look(ctx: Context, root: Path, policy: NewsPolicy, *, may_hold: bool = True) -> str:
    """The step before an update changes anything: which news items relevant to the
    root are unread (Portage judges the new ones first). They go into the job's Notices
    and the machine's Attention. Why the update is held, or "" when it goes on: under
    `hold` (when it `may_hold`: a pretend update may not), unread items hold it, and so
    does not knowing."""
    machine = ctx.job.machine
    if not await asyncio.to_thread(_any_news, ctx.config.portage):
        # Nothing to judge: Portage would only make the root's empty news directory.
        ctx.host.recorder.attend(ctx.job, NoticeKind.NEWS, [])
        return ""
    ctx.change(phase=Phase.NEWS)
    holds = may_hold and policy is NewsPolicy.HOLD
    try:
        answer = await probe.ask(ctx, root, "news")
    except JobFailed as err:
        if holds:
            return f"cannot tell whether news items are unread: {err}"
        ctx.notice(NoticeKind.NEWS, "", f"cannot look for unread news items: {err}")
        return ""
    found = await asyncio.to_thread(items, ctx.config.portage, _found(answer.get("unread")))
    for item in found:
        ctx.notice(NoticeKind.NEWS, item.name, item.attention(machine)[1])
    ctx.host.recorder.attend(ctx.job, NoticeKind.NEWS, [item.attention(machine) for item in found])
    if not found:
        ctx.log(journal.INFO, "no unread news items")
        return ""
    waiting = counted(len(found), "unread news item")
    if holds:
        return f"{waiting}: read them with gnctl news {machine} --read"
    ctx.log(journal.NOTICE, f"{waiting}: gnctl news {machine}")
    return ""


def _any_news(config: PortageConfig) -> bool:
    """Whether any of the host's repositories has a news item."""
    for location in repositories(config).values():
        try:
            with os.scandir(location / "metadata" / "news") as entries:
                if any(valid_name(entry.name) for entry in entries):
                    return True
        except OSError:
            continue
    return False


def _found(unread: Any) -> dict[str, list[str]]:
    """Portage's answer, {repository: [item names]}, as far as it is what it claims to
    be: the answer comes from a process the container's files steer."""
    if not isinstance(unread, dict):
        return {}
    return {
        str(repo): [name for name in names if isinstance(name, str)]
        for repo, names in unread.items()
        if isinstance(names, list)
    }
