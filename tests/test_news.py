"""News items, through the real daemon, emerge and Portage's own news manager: a news
item relevant to one machine of two (Display-If-Installed), under each `[updates] news`
policy, `gnctl news`, MarkNewsRead and ListNews."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import (
    attention,
    call,
    complete,
    gdbus_error,
    gnctl,
    hello_version,
    job_string,
    notices,
    queued,
    snapshots,
    wait_job,
    wait_until,
)
from testbed import Testbed, tree_hash

REPO = "gnspawn-demo"
ITEM = "2026-12-01-chatty-moves"
TITLE = "chatty moves its files"
BODY = "chatty 3 keeps its files under /var/lib/chatty.\n\nMove them before you update.\n"
NEWS = f"""Title: {TITLE}
Author: Gentoo Developer <dev@example.org>
Posted: 2026-12-01
Revision: 1
News-Item-Format: 2.0
Display-If-Installed: app-misc/chatty

{BODY}"""
UNREAD = f"var/lib/gentoo/news/news-{REPO}.unread"
TEXT = f"unread news from {REPO}: {TITLE}: gnctl news web"
HOLD_REASON = "1 unread news item: read them with gnctl news web --read"


@pytest.fixture
def news(daemon: Testbed) -> Iterator[Path]:
    """The news item in the test bed's repository, for this test only."""
    directory = daemon.repo / "metadata" / "news" / ITEM
    directory.mkdir(parents=True)
    (directory / f"{ITEM}.en.txt").write_text(NEWS)
    try:
        yield directory
    finally:
        shutil.rmtree(daemon.repo / "metadata" / "news")


def two_machines(daemon: Testbed, policy: str) -> tuple[Path, Path]:
    """web has chatty installed, which the news item is about; db has not. Both have
    hello-1, with hello-2 in the tree. gnspawnd with news = `policy`."""
    daemon.write_config(updates={"news": policy})
    daemon.stop_daemon()
    daemon.start_daemon()
    web = daemon.seed("web", ["=app-misc/hello-1", "=app-misc/chatty-2"])
    db = daemon.seed("db", ["=app-misc/hello-1"])
    return web, db


def listed() -> dict[str, str]:
    """gnctl list: each machine's ATTENTION column."""
    lines = gnctl("list").stdout.splitlines()
    assert lines[0].split()[-1] == "ATTENTION", lines
    rows = [line.split() for line in lines[1:] if line and not line.endswith("listed.")]
    return {row[0]: " ".join(row[-2:]) if row[-1] == "news" else row[-1] for row in rows}


def packages_and_files(root: Path) -> dict[str, str]:
    """tree_hash of the root but Portage's news lists, which judging the news writes."""
    return {p: h for p, h in tree_hash(root).items() if not p.startswith("var/lib/gentoo")}


def unread(root: Path) -> list[str]:
    path = root / UNREAD
    return path.read_text().split() if path.exists() else []


def test_report_lists_the_item_for_the_machine_it_concerns_and_updates(
    daemon: Testbed, news: Path
) -> None:
    web, db = two_machines(daemon, "report")

    result = gnctl("update", "web", "db")

    assert result.returncode == 0, result.stdout + result.stderr
    assert hello_version(web) == hello_version(db) == "2"
    jobs = {job_string(n, "Machine"): n for n in (1, 2)}
    assert job_string(jobs["web"], "Result") == "done"
    assert notices(jobs["web"]) == [["news", ITEM, "warning", TEXT]]
    assert notices(jobs["db"]) == []
    assert attention() == {"web": [{"kind": "news", "subject": ITEM, "text": TEXT}], "db": []}
    assert listed() == {"db": "-", "web": "1 news"}
    status = gnctl("status", "web").stdout
    assert "      Attention: 1 news\n" in status
    assert f"news: {ITEM}: {TEXT}" in status
    # Portage's own lists in each root: the item is unread in web only.
    assert unread(web) == [ITEM]
    assert unread(db) == []
    assert gnctl("news", "db").stdout == "No unread news items.\n"
    # Completion offers the machine's unread items.
    assert complete("news", "web", "") == [ITEM]
    assert complete("news", "db", "") == []
    assert complete("news", "web", "--r") == ["--read"]


def test_hold_holds_the_machine_it_concerns_until_the_item_is_read(
    daemon: Testbed, news: Path
) -> None:
    web, db = two_machines(daemon, "hold")
    before = packages_and_files(web)

    result = gnctl("update", "web", "db")

    assert result.returncode == 5, result.stdout + result.stderr  # held
    jobs = {job_string(n, "Machine"): n for n in (1, 2)}
    assert job_string(jobs["web"], "Result") == "held"
    assert job_string(jobs["web"], "Error") == HOLD_REASON
    assert f"update of web held: {HOLD_REASON}" in result.stdout
    assert job_string(jobs["web"], "Snapshot") == ""
    assert snapshots(f"{daemon.dataset}/web") == []
    assert packages_and_files(web) == before
    assert hello_version(web) == "1"
    assert notices(jobs["web"]) == [["news", ITEM, "warning", TEXT]]
    assert listed() == {"db": "-", "web": "1 news"}
    # The other machine updated.
    assert job_string(jobs["db"], "Result") == "done"
    assert hello_version(db) == "2"
    assert len(snapshots(f"{daemon.dataset}/db")) == 1

    # Read: shown, marked read in the root, and the update goes on.
    shown = gnctl("news", "web")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == f"{ITEM} ({REPO}): {TITLE}\n\n{BODY}"
    as_json = json.loads(gnctl("news", "--json", "web").stdout)
    assert as_json == [{"item": ITEM, "repository": REPO, "title": TITLE, "body": BODY}]
    read = gnctl("news", "web", "--read")
    assert read.returncode == 0, read.stderr
    assert read.stdout == f"{ITEM} ({REPO}): {TITLE}\n\n{BODY}1 news item marked read.\n"
    assert unread(web) == []
    assert (web / f"var/lib/gentoo/news/news-{REPO}.read").read_text() == f"{ITEM}\n"
    assert listed() == {"db": "-", "web": "-"}
    assert gnctl("news", "web").stdout == "No unread news items.\n"

    again = gnctl("update", "web")

    assert again.returncode == 0, again.stdout + again.stderr
    assert hello_version(web) == "2"
    assert job_string(3, "Result") == "done"
    assert notices(3) == []
    assert listed() == {"db": "-", "web": "-"}


def test_a_pretend_update_reports_and_is_never_held(daemon: Testbed, news: Path) -> None:
    web, _ = two_machines(daemon, "hold")

    result = gnctl("update", "--pretend", "web")

    assert result.returncode == 0, result.stdout + result.stderr
    assert job_string(1, "Result") == "done"
    assert notices(1) == [["news", ITEM, "warning", TEXT]]
    assert hello_version(web) == "1"


def test_bad_requests_get_named_errors_and_change_nothing(daemon: Testbed, news: Path) -> None:
    web, db = two_machines(daemon, "report")
    assert gnctl("update", "-q", "web", "db").returncode == 0
    before = tree_hash(web), tree_hash(db)

    def error(name: str, *items: str) -> str:
        array = "[" + ", ".join(f"'{item}'" for item in items) + "]"
        return gdbus_error("MarkNewsRead", name, f"@as {array}", "0").split(":")[0]

    assert error("nosuch") == "org.gnspawn1.Error.NoSuchMachine"
    assert error("../web") == "org.gnspawn1.Error.InvalidName"
    assert error("web", "2026-12-02-other") == "org.gnspawn1.Error.NoSuchNewsItem"
    assert error("db", ITEM) == "org.gnspawn1.Error.NoSuchNewsItem"
    for hostile in ("../x", f"../{ITEM}", f"{ITEM}/../x", "", "/etc/shadow", f"{ITEM}\n"):
        assert error("web", hostile) == "org.freedesktop.DBus.Error.InvalidArgs", hostile
    assert error("web", ITEM, "../x") == "org.freedesktop.DBus.Error.InvalidArgs"
    flags = gdbus_error("MarkNewsRead", "web", "@as []", "1").split(":")[0]
    assert flags == "org.freedesktop.DBus.Error.InvalidArgs"
    assert gdbus_error("ListNews", "nosuch").split(":")[0] == "org.gnspawn1.Error.NoSuchMachine"
    assert gdbus_error("ListNews", "a/b").split(":")[0] == "org.gnspawn1.Error.InvalidName"
    # Marking needs the manage right; listing is open, as Attention is.
    denied = call("MarkNewsRead", "sast", "web", "0", "0", check=False, user=65534)
    assert denied.returncode != 0
    assert "Access denied" in denied.stderr or "AccessDenied" in denied.stderr, denied.stderr
    assert call("ListNews", "s", "web", user=65534).stdout.startswith("a(ssss) 1 ")
    unknown = gnctl("news", "web", "2026-12-02-other", "--read")
    assert unknown.returncode == 3 and "NoSuchNewsItem" not in unknown.stdout
    assert "no unread news item '2026-12-02-other'" in unknown.stderr
    assert (tree_hash(web), tree_hash(db)) == before
    assert listed() == {"db": "-", "web": "1 news"}


def test_the_containers_lists_never_reach_the_hosts_files(daemon: Testbed, news: Path) -> None:
    """A root's unread list names what the container wrote: only items of the host's
    repositories are shown, and a planted link is replaced, never written through."""
    web, _ = two_machines(daemon, "report")
    assert gnctl("update", "-q", "web").returncode == 0
    secret = daemon.dir / "host-secret"
    secret.write_text("HOSTSECRET\n")
    planted = web / UNREAD
    planted.write_text(f"../../../../{secret}\n2020-01-01-nosuch\n{ITEM}\n")
    read_list = web / f"var/lib/gentoo/news/news-{REPO}.read"
    read_list.symlink_to(secret)

    shown = json.loads(gnctl("news", "--json", "web").stdout)

    assert [record["item"] for record in shown] == [ITEM]
    assert gnctl("news", "web", "--read").returncode == 0
    assert secret.read_text() == "HOSTSECRET\n"
    assert not read_list.is_symlink() and read_list.read_text() == f"{ITEM}\n"
    assert planted.read_text() == f"../../../../{secret}\n2020-01-01-nosuch\n"


def test_no_item_is_marked_read_while_a_job_may_roll_the_root_back(
    daemon: Testbed, news: Path
) -> None:
    slow = daemon.seed("slow", ["=app-misc/hello-1", "=app-misc/sleeper-1", "=app-misc/chatty-2"])
    running = queued(call("Update", "st", "slow", "0").stdout)
    wait_until(lambda: job_string(running, "CurrentPackage") == "app-misc/sleeper-2", "a build")
    assert unread(slow) == [ITEM]  # judged before the snapshot

    busy = gdbus_error("MarkNewsRead", "slow", "@as []", "0")

    assert busy.split(":")[0] == "org.gnspawn1.Error.Busy", busy
    assert unread(slow) == [ITEM]
    call("CancelJob", "u", str(running))
    assert wait_job(running) == "canceled"
    assert unread(slow) == [ITEM]  # the rollback went back to after the judging
    assert gnctl("news", "slow", "--read").returncode == 0
    assert unread(slow) == []
