"""gnctl's pure logic: how -H becomes an ssh command, where options before the verb go,
and what the progress line says."""

from __future__ import annotations

import io

import pytest

from gnspawn.ctl.main import build_parser, notice_lines, verb_first
from gnspawn.ctl.progress import Display, JobView, printable
from gnspawn.remote import ssh_argv


@pytest.mark.parametrize(
    ("host", "argv"),
    [
        ("web1", ["ssh", "-xT", "--", "web1", "systemd-stdio-bridge"]),
        ("root@web1", ["ssh", "-xT", "--", "root@web1", "systemd-stdio-bridge"]),
        ("root@web1:2222", ["ssh", "-xT", "-p", "2222", "--", "root@web1", "systemd-stdio-bridge"]),
        ("[::1]:22", ["ssh", "-xT", "-p", "22", "--", "::1", "systemd-stdio-bridge"]),
    ],
)
def test_hosts_become_ssh_commands(
    host: str, argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SYSTEMD_SSH", raising=False)
    assert ssh_argv(host, "systemd-stdio-bridge") == argv


@pytest.mark.parametrize("host", ["", "a b", "-oProxyCommand=x", "a@b@c", "host:port", "a/b"])
def test_what_is_not_a_host_is_refused(host: str) -> None:
    with pytest.raises(ValueError, match="not a host"):
        ssh_argv(host)


def test_the_ssh_program_is_systemds_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYSTEMD_SSH", "/opt/ssh")
    assert ssh_argv("h")[0] == "/opt/ssh"


def test_progress_line_reads_like_emerge() -> None:
    view = JobView(machine="web", state="running", phase="emerge", started_usec=1_000_000)
    view.update({"CurrentPackage": "dev-libs/foo-1.2", "PackagesDone": 2, "PackagesTotal": 12})
    view.update({"Progress": 25})
    assert view.line(now=43.0) == "[3/12] dev-libs/foo-1.2  25%  emerge  0:42"
    assert JobView(machine="db").line(now=0.0).startswith("waiting  0:0")


def test_off_a_terminal_each_package_is_one_plain_line() -> None:
    out = io.StringIO()
    display = Display(out, verbose=False, quiet=False, multiple=True)
    display.watch(7, {"Machine": "web", "State": "running", "Phase": "emerge", "StartedUSec": 1})
    display.change(7, {"Progress": 0})  # nothing new: no line
    display.change(7, {"CurrentPackage": "a/b-1", "PackagesTotal": 1})
    display.log(7, 6, ">>> Emerging (1 of 1) a/b-1")  # emerge's own line: --verbose only
    display.log(7, 5, "snapshot tank/web@gnspawn-7-pre taken")
    lines = out.getvalue().splitlines()
    assert [line.split("  ")[0] for line in lines] == [
        "[7] emerge",
        "[7] [1/1] a/b-1",
        "[7] snapshot tank/web@gnspawn-7-pre taken",
    ]
    assert "\x1b" not in out.getvalue()


def test_a_waiting_job_is_one_line_until_its_first_phase() -> None:
    out = io.StringIO()
    display = Display(out, verbose=False, quiet=False, multiple=True)
    display.watch(7, {"Machine": "web", "State": "waiting", "Phase": "queued", "Follows": 6})
    display.change(7, {"State": "running", "StartedUSec": 1})  # still in its queued phase
    display.change(7, {"Phase": "fetch"})
    lines = [line.split("  ")[0] for line in out.getvalue().splitlines()]
    assert lines == ["[7] waiting for job 6", "[7] fetch"]


def test_what_a_container_says_reaches_the_terminal_without_control_characters() -> None:
    out = io.StringIO()
    display = Display(out, verbose=True, quiet=False, multiple=False)
    display.watch(7, {"Machine": "web", "State": "running", "Phase": "emerge", "StartedUSec": 1})
    display.log(7, 4, " * \x1b]0;owned\x07\x1b[2Jred\x9b31m text\x08")
    assert " * \ufffd]0;owned\ufffd\ufffd[2Jred\ufffd31m text\ufffd" in out.getvalue()
    assert not any(c in out.getvalue() for c in "\x1b\x07\x08\x9b")
    assert notice_lines([["elog", "a/b-1", "warning", "one\x1b[1m\ntwo"]]) == [
        "warning: elog a/b-1: one\ufffd[1m\n    two"
    ]
    assert printable("tab\tand\nnewline") == "tab\tand\nnewline"


@pytest.mark.parametrize(
    ("argv", "moved"),
    [
        (["--json", "list"], ["list", "--json"]),
        (["-H", "h", "--no-legend", "jobs"], ["-H", "h", "jobs", "--no-legend"]),
        (["--host=h", "-qv", "update", "web"], ["--host=h", "update", "-qv", "web"]),
        (["--lines", "5", "-f", "logs", "web"], ["logs", "--lines", "5", "-f", "web"]),
        (["-n5", "logs", "7"], ["logs", "-n5", "7"]),
        (["--profile", "list", "build", "web"], ["build", "--profile", "list", "web"]),
        (["-H", "list"], ["-H", "list"]),  # the host is "list"; there is no verb
        (["build", "--", "-x"], ["build", "--", "-x"]),
        (["--json"], ["--json"]),
    ],
)
def test_options_before_the_verb_go_after_it(argv: list[str], moved: list[str]) -> None:
    assert verb_first(build_parser(), argv) == moved
