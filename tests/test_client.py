"""gnctl as people meet it: on a terminal (read off a tmux screen), in a pipe, in a
completing shell, and against a remote host over ssh."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import helpers
from helpers import Tmux, call, gnctl, hello_version, job_string, queued, wait_job, wait_until
from testbed import REPO_ROOT, Sshd, Testbed, emerge_environment

# hello comes too (sleeper-2 needs it): sleeper is the second of two packages.
PROGRESS = re.compile(r"^\[2/2\] app-misc/sleeper-2  50%  emerge  \d+:\d\d$")


@pytest.fixture
def terminal(daemon: Testbed) -> Iterator[Tmux]:
    screen = Tmux(daemon.dir)
    try:
        yield screen
    finally:
        screen.stop()


def slow_update(bed: Testbed, seconds: int = 4) -> Path:
    """A machine whose update compiles for a few seconds: time to watch it. A package
    directory of its own, so that no binary package of an earlier test is reused."""
    pkgdir = Path(tempfile.mkdtemp(prefix="packages-", dir=bed.work))
    env = {
        **emerge_environment(bed.repo),
        "GNSPAWN_DEMO_SLEEP": str(seconds),
        "PKGDIR": str(pkgdir),
    }
    bed.write_config(portage={"environment": env})
    bed.stop_daemon()
    bed.start_daemon()
    return bed.seed("web", ["=app-misc/sleeper-1"])


def test_on_a_terminal_one_progress_line_is_redrawn_in_place(
    daemon: Testbed, terminal: Tmux
) -> None:
    slow_update(daemon)
    terminal.run("gnctl update web; echo exit=$?")

    during = terminal.wait_for(
        lambda screen: PROGRESS.match(screen[-1]), "a progress line with package and clock"
    )
    # Redrawn, not scrolled: one progress line, under the command and the notice of the
    # snapshot, whatever the clock says.
    command = "$ gnctl update web; echo exit=$?"
    snapshot = f"snapshot {daemon.dataset}/web@gnspawn-1-pre taken"
    assert during[-3:-1] == [command, snapshot], during
    after = terminal.wait_for(lambda screen: "exit=0" in screen, "the end of the job")
    end = after.index("exit=0")
    summary = "job 1: update of web done: 1 upgraded, 1 added"  # sleeper; hello, its new dependency
    assert after[end - 3 : end] == [command, snapshot, summary]
    assert not any("emerge  " in line for line in after), "the progress line is cleared"


def test_verbose_shows_emerge_above_the_progress_line(daemon: Testbed, terminal: Tmux) -> None:
    slow_update(daemon)
    terminal.run("gnctl update --verbose web")

    screen = terminal.wait_for(
        lambda screen: (
            PROGRESS.match(screen[-1])
            and any(">>> Emerging (2 of 2) app-misc/sleeper-2" in line for line in screen)
        ),
        "emerge's lines above the progress line",
    )
    assert sum(bool(PROGRESS.match(line)) for line in screen) == 1, screen
    terminal.wait_for(
        lambda screen: "job 1: update of web done: 1 upgraded, 1 added" in screen, "the end"
    )


def test_off_a_terminal_progress_is_plain_lines(daemon: Testbed) -> None:
    slow_update(daemon, seconds=1)

    result = gnctl("update", "web")

    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout and "\r" not in result.stdout
    lines = result.stdout.splitlines()
    assert any(re.fullmatch(r"\[2/2\] app-misc/sleeper-2  50%  emerge  \d+:\d\d", x) for x in lines)
    assert lines[-1] == "job 1: update of web done: 1 upgraded, 1 added"
    assert ">>> Emerging" not in result.stdout  # that is --verbose
    quiet = gnctl("update", "--quiet", "--pretend", "web")
    assert quiet.stdout == "job 2: update of web skipped\n"


def test_listings_have_a_legend_and_no_legend_for_scripts(daemon: Testbed) -> None:
    daemon.seed("web")
    daemon.seed("db")

    listed = gnctl("list").stdout.splitlines()
    bare = gnctl("list", "--no-legend").stdout.splitlines()

    assert listed[0].split() == ["NAME", "STATE", "PROFILE", "LAST", "RESULT", "ATTENTION"]
    assert listed[1:3] == [
        "db    ready  default  -            -",
        "web   ready  default  -            -",
    ]
    assert listed[3:] == ["", "2 machines listed."]
    assert bare == ["db  ready  default  -  -", "web  ready  default  -  -"]
    assert gnctl("jobs").stdout == "0 jobs listed.\n"


def test_zsh_completion_asks_the_daemon(daemon: Testbed, terminal: Tmux) -> None:
    daemon.seed("web")
    daemon.seed("db", [])
    zdotdir = daemon.dir / "zsh"
    zdotdir.mkdir(exist_ok=True)
    (zdotdir / ".zshrc").write_text(
        f"fpath=({REPO_ROOT}/contrib/completion $fpath)\n"
        "autoload -Uz compinit && compinit -u -D\nPROMPT='%% '\n"
    )
    terminal.run(f"ZDOTDIR={zdotdir} zsh -i")
    terminal.wait_for(lambda screen: screen[-1:] == ["%"], "a zsh prompt")

    def complete(typed: str) -> None:
        terminal.tmux("send-keys", "-l", typed)  # -l: the text as it is
        terminal.type("Tab")

    complete("gnctl stat")
    terminal.wait_for(lambda screen: screen[-1] == "% gnctl status", "the verb")
    complete(" w")
    terminal.wait_for(lambda screen: screen[-1] == "% gnctl status web", "the machine name")
    terminal.type("C-u")
    complete("gnctl update ")
    terminal.wait_for(
        lambda screen: any(re.search(r"\bdb\b.*\bweb\b", line) for line in screen[-3:]),
        "both machines offered",
    )
    terminal.type("C-u")
    complete("gnctl job ")
    terminal.wait_for(lambda screen: screen[-1] == "% gnctl job", "no jobs, nothing offered")
    terminal.type("C-u")
    assert gnctl("update", "-q", "web").returncode == 0
    complete("gnctl rollback web ")
    terminal.wait_for(
        lambda screen: screen[-1] == "% gnctl rollback web gnspawn-1-pre", "web's snapshot"
    )
    # Nothing to offer: the key typed after Tab (which zsh handles only once the
    # completion is done) follows the word as it was.
    terminal.type("C-u")
    complete("gnctl build w")
    terminal.tmux("send-keys", "-l", "X")
    terminal.wait_for(lambda screen: screen[-1] == "% gnctl build wX", "no existing name")
    terminal.type("C-u")
    complete("gnctl cancel 1")
    terminal.tmux("send-keys", "-l", "X")
    terminal.wait_for(lambda screen: screen[-1] == "% gnctl cancel 1X", "no finished job")


def test_logs_without_a_readable_journal_follow_the_bus(daemon: Testbed) -> None:
    slow_update(daemon, seconds=2)
    job = queued(call("Update", "st", "web", "0").stdout)
    wait_until(lambda: job_string(job, "State") == "running", "the job to start")
    # A mount namespace where the journal's files are out of sight, as for a user not
    # in the systemd-journal group.
    result = subprocess.run(
        [
            *("unshare", "-m", "--propagation", "private", "sh", "-c"),
            *('mount -t tmpfs none /run/log/journal && exec "$@"', "sh"),
            *(sys.executable, "-m", "gnspawn.ctl.main", "logs", str(job)),
        ],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    assert "cannot read the system journal" in result.stderr
    assert ">>> Completed (2 of 2) app-misc/sleeper-2" in result.stdout
    assert wait_job(job) == "done"


@pytest.fixture
def remote(daemon: Testbed) -> Iterator[Sshd]:
    sshd = Sshd(daemon.dir / "sshd")
    try:
        yield sshd
    finally:
        sshd.stop()


def remote_gnctl(sshd: Sshd, *args: str) -> subprocess.CompletedProcess[str]:
    return helpers.remote_gnctl(sshd.host, sshd.ssh, *args)


def test_a_remote_host_over_ssh(daemon: Testbed, remote: Sshd) -> None:
    root = daemon.seed("web")

    listed = remote_gnctl(remote, "list", "--no-legend")
    update = remote_gnctl(remote, "update", "web")
    subprocess.run(["journalctl", "--flush"], capture_output=True)
    logs = remote_gnctl(remote, "logs", "1")
    rollback = remote_gnctl(remote, "rollback", "--quiet", "web")

    assert listed.returncode == 0, listed.stderr
    assert listed.stdout == "web  ready  default  -  -\n"
    assert update.returncode == 0 and "job 1: update of web done" in update.stdout
    assert logs.returncode == 0, logs.stderr
    emerging = r"gnspawnd\[\d+\]: >>> Emerging (binary )?\(1 of 1\) app-misc/hello-2"
    assert re.search(emerging, logs.stdout), logs.stdout
    assert rollback.returncode == 0 and hello_version(root) == "1"


def test_an_unreachable_host_is_said_plainly(daemon: Testbed, remote: Sshd) -> None:
    remote.stop()
    result = remote_gnctl(remote, "list")
    assert result.returncode == 4
    assert "Connection refused" in result.stderr  # ssh's own word
    said = f"gnctl: cannot reach {remote.host} over ssh: ssh exited with status 255"
    assert said in result.stderr
    bad = gnctl("-H", "a b", "list")
    assert bad.returncode == 64 and "not a host" in bad.stderr


def test_waiting_ends_when_gnspawnd_goes(daemon: Testbed) -> None:
    slow_update(daemon, seconds=30)
    waiting = subprocess.Popen(
        [sys.executable, "-m", "gnspawn.ctl.main", "update", "web"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )

    def compiling() -> bool:
        try:
            return job_string(1, "CurrentPackage") == "app-misc/sleeper-2"
        except AssertionError:  # not queued yet
            return False

    try:
        wait_until(compiling, "the compile")
        daemon.stop_daemon(signal.SIGKILL)
        _, stderr = waiting.communicate(timeout=30)
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.wait()
    daemon.start_daemon()  # rolls the job back, as after any crash

    assert waiting.returncode == 4
    assert "gnspawnd left the bus" in stderr
    assert wait_job(1) == "failed" and job_string(1, "Error") == "interrupted"
