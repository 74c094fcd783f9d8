"""gnspawnd's own connection to journald, against the real journald."""

from __future__ import annotations

import subprocess
import sys

from helpers import gnctl
from testbed import Testbed


def test_a_message_of_several_lines_stays_one_entry_with_its_fields(daemon: Testbed) -> None:
    script = (
        "import logging; from gnspawn import log; log.setup(); "
        "log.job_line('first\\nsecond', 6, 4242, 'web', 'emerge'); "
        "logging.getLogger('gnspawn.x').warning('warned', extra={'GNSPAWN_JOB': '4242'}); "
        "log.flush()"
    )
    subprocess.run([sys.executable, "-c", script], check=True)

    entries = daemon.journal.entries("GNSPAWN_JOB=4242")

    assert [e["MESSAGE"] for e in entries] == ["first\nsecond", "warned"]
    assert entries[0]["GNSPAWN_MACHINE"] == "web" and entries[0]["PRIORITY"] == "6"
    assert entries[1]["PRIORITY"] == "4" and entries[1]["SYSLOG_IDENTIFIER"] == "gnspawnd"


def test_job_lines_reach_a_journald_that_restarted(daemon: Testbed) -> None:
    daemon.seed("web")
    daemon.journal.restart()

    assert gnctl("update", "--quiet", "web").returncode == 0

    messages = [e["MESSAGE"] for e in daemon.daemon_journal("GNSPAWN_JOB=1")]
    assert "update of web done" in messages
    assert any(m.startswith("snapshot ") and m.endswith(" taken") for m in messages)
