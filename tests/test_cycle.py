"""The scheduled cycle as a whole, on a small fleet: the tree synced from upstream,
then every machine's whole update (a soname bump with its consumer rebuilt, an
admin's edited config file with a new default beside it) in one snapshot each, a
machine held by a news item it must read first, and what waits for the admin visible
in gnctl list and gnctl status."""

from __future__ import annotations

import json
import re

from ebuilds import write_conf, write_consumer, write_library
from helpers import gnctl, hello_version, job_string, snapshots
from test_config_files import ADMIN, DEFAULT_1, DEFAULT_2, PATH, etc_conf
from test_news import ITEM, NEWS, REPO, TITLE
from test_update_steps import installed, needed, registry
from testbed import Testbed
from upstream import Upstream, git, sync_environment


def test_a_scheduled_cycle_syncs_then_updates_every_machine_and_says_what_waits(
    daemon: Testbed, upstream: Upstream
) -> None:
    work = upstream.work
    write_library(work, "foo", 1)
    write_consumer(work, "fooer", "foo")
    write_conf(work, 1, DEFAULT_1)
    upstream.publish("libfoo 1, its consumer, a package with a config file")
    git(daemon.repo, "pull", "-q")  # the tree the machines are built from
    lib = daemon.seed("lib", ["=app-misc/hello-1", "app-misc/fooer"])
    conf = daemon.seed("conf", ["=app-misc/hello-1", "=app-misc/conf-1"])
    (conf / PATH.lstrip("/")).write_text(ADMIN)
    plain = daemon.seed("plain", ["=app-misc/hello-1", "=app-misc/chatty-2"])
    roots = {"conf": conf, "lib": lib, "plain": plain}
    # Upstream moves on; the host's tree has not seen it yet. Its news item is about
    # chatty, which only plain has.
    write_library(work, "foo", 2)
    write_conf(work, 2, DEFAULT_2)
    news = work / "metadata/news" / ITEM
    news.mkdir(parents=True)
    (news / f"{ITEM}.en.txt").write_text(NEWS)
    moved = upstream.add_hello(3)
    daemon.write_config(
        portage={"environment": sync_environment(daemon, upstream.bare)},
        updates={"sync": True, "news": "hold"},
    )
    daemon.stop_daemon()
    daemon.start_daemon()

    result = gnctl("update", "--all", "--scheduled")

    # Held: exit status 5, the reason said.
    assert result.returncode == 5, result.stdout + result.stderr
    assert job_string(1, "Type") == "sync"
    assert job_string(1, "Result") == "done"
    jobs = {job_string(i, "Machine"): i for i in range(2, 5)}
    assert sorted(jobs) == sorted(roots)
    reason = "1 unread news item: read them with gnctl news plain --read"
    assert f"job {jobs['plain']}: update of plain held: {reason}" in result.stdout, result.stdout
    assert job_string(jobs["plain"], "Result") == "held"
    assert snapshots(f"{daemon.dataset}/plain") == []
    assert hello_version(plain) == "1"
    for name in ("conf", "lib"):
        job = jobs[name]
        assert job_string(job, "Result") == "done", name
        assert job_string(job, "TreeRevision") == moved, name
        # One snapshot before the whole update, and only that one.
        assert snapshots(f"{daemon.dataset}/{name}") == [
            f"{daemon.dataset}/{name}@gnspawn-{job}-pre"
        ]
        assert hello_version(roots[name]) == "3"
    # The soname bump: fooer rebuilt against libfoo.so.2 in the same update.
    assert installed(lib, "foo") == ["foo-2"]
    assert "libfoo.so.2" in needed(lib, "fooer-1")
    assert json.loads(registry(lib) or "{}") == {}
    # The admin's file stays; the new default waits beside it, and says so.
    assert etc_conf(conf) == {"._cfg0000_foo.conf": DEFAULT_2, "foo.conf": ADMIN}
    listed = gnctl("list").stdout
    assert re.search(r"^conf +ready +default +done +1 config$", listed, re.MULTILINE), listed
    assert re.search(r"^lib +ready +default +done +-$", listed, re.MULTILINE), listed
    assert re.search(r"^plain +ready +default +held +1 news$", listed, re.MULTILINE), listed
    status = gnctl("status", "conf").stdout
    assert "      Attention: 1 config\n" in status, status
    text = f"a new default waits in ._cfg0000_foo.conf: gnctl config conf {PATH}"
    assert f"config-file: {PATH}: {text}" in status, status
    status = gnctl("status", "plain").stdout
    assert f"news: {ITEM}: unread news from {REPO}: {TITLE}: gnctl news plain" in status

    # Read, the news lets the update go on.
    assert gnctl("news", "plain", "--read").returncode == 0
    assert gnctl("update", "-q", "plain").returncode == 0
    assert hello_version(plain) == "3"
    assert re.search(r"^plain +ready +default +done +-$", gnctl("list").stdout, re.MULTILINE)
