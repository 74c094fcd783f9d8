"""gnctl: list, update, roll back and follow gnspawn's containers and jobs."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from gnspawn import __version__
from gnspawn.ctl.client import Client, JobWatcher
from gnspawn.ctl.progress import Display, printable
from gnspawn.errors import GnspawnError, NoSuchJob, NoSuchMachine, NoSuchSnapshot
from gnspawn.machines import valid_name
from gnspawn.names import (
    MACHINE_INTERFACE,
    Flags,
    attention_summary,
    change_summary,
    job_title,
    pending_line,
)
from gnspawn.remote import Unreachable, ssh_argv

EXIT_OK, EXIT_FAILED, EXIT_CANCELED, EXIT_REFUSED, EXIT_UNREACHABLE = 0, 1, 2, 3, 4
EXIT_HELD, EXIT_USAGE = 5, 64
RESULT_EXIT = {
    "done": EXIT_OK,
    "skipped": EXIT_OK,
    "failed": EXIT_FAILED,
    "canceled": EXIT_CANCELED,
    "held": EXIT_HELD,
}

EPILOG = """\
The verbs that queue jobs (update, sync, rollback, build, remove, prune) and wait wait
for them: on a terminal one progress line per job is redrawn in place
([3/12] dev-libs/foo-1.2  25%  emerge  0:42), with emerge's output above it when
--verbose; off a terminal each new package or phase is a line of its own.
--no-block prints the job ids and returns at once; Ctrl-C leaves the jobs running.

A verb's options may come before it as well (gnctl --json list); 'gnctl VERB --help'
lists the options of VERB, and any other is refused as wrong usage.

exit status:
  0   done (or skipped: nothing to do)
  1   a job failed (its machine was rolled back to the snapshot taken before it)
  2   a job was canceled
  3   gnspawnd refused the request (the message says why)
  4   gnspawnd or the system bus cannot be reached
  5   a job was held: policy stopped it before it changed anything
  64  wrong usage
"""


class Parser(argparse.ArgumentParser):
    """A parser whose usage errors exit EXIT_USAGE; gnctl's own knows its verbs' parsers."""

    verbs: dict[str, argparse.ArgumentParser]

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: {message}\n")


def build_parser() -> Parser:
    parser = Parser(
        prog="gnctl",
        description="Control gnspawnd: Gentoo containers on ZFS, "
        "updated as jobs that roll back when they fail.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"gnctl {__version__}")
    parser.usage = "gnctl [-h] [--version] [-H [USER@]HOST] [VERB-OPTIONS...] VERB ..."
    parser.add_argument(
        "-H",
        "--host",
        metavar="[USER@]HOST",
        help="talk to gnspawnd on HOST over ssh (systemd-stdio-bridge there), as machinectl -H",
    )
    as_json = Parser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print JSON instead of text")
    common = Parser(add_help=False)
    common.add_argument("--json", action="store_true", help="print JSON instead of a table")
    common.add_argument(
        "--no-legend", action="store_true", help="print neither the header nor the count line"
    )
    following = Parser(add_help=False)
    shown = following.add_mutually_exclusive_group()
    shown.add_argument(
        "-q", "--quiet", action="store_true", help="show only how each job ended, no progress"
    )
    shown.add_argument(
        "-v", "--verbose", action="store_true", help="show emerge's output above the progress"
    )
    queueing = Parser(add_help=False, parents=[following])
    queueing.add_argument(
        "--no-block", action="store_true", help="print the job id and return at once"
    )
    busy = Parser(add_help=False)
    busy.add_argument(
        "--fail-if-busy",
        action="store_true",
        help="fail instead of queueing behind another job of the machine",
    )
    job_opts = Parser(add_help=False, parents=[queueing, busy])
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True, prog="gnctl")
    verbs.add_parser("list", parents=[common], help="list machines")
    snaps = verbs.add_parser("snapshots", parents=[common], help="list a machine's snapshots")
    snaps.add_argument("name", metavar="NAME")
    verbs.add_parser("jobs", parents=[common], help="list waiting, running and recent jobs")
    job = verbs.add_parser("job", parents=[as_json], help="show one job")
    job.add_argument("id", metavar="ID", type=int)
    update = verbs.add_parser(
        "update",
        parents=[job_opts],
        help="update machines",
        description="Snapshot, emerge the configured update, roll back if it fails.",
    )
    update.add_argument("names", metavar="NAME", nargs="*")
    update.add_argument("--all", action="store_true", help="every Gentoo machine")
    update.add_argument(
        "--scheduled",
        action="store_true",
        help="with --all: do what [updates] policy says (none, check or apply)",
    )
    update.add_argument(
        "--pretend", action="store_true", help="show what would be merged, change nothing"
    )
    update.add_argument(
        "--no-canary",
        action="store_true",
        help="with --all: no canary per profile (all machines at once, none held)",
    )
    update.add_argument(
        "--keep-failed",
        action="store_true",
        help="keep a copy of a failed state before rolling back",
    )
    verbs.add_parser(
        "sync",
        parents=[queueing],
        help="sync the repositories",
        description="emaint sync of the repositories in [portage] repos, with their "
        "repos.conf sync settings. The sync starts when no other job runs, and the jobs "
        "queued after it wait until it has ended.",
    )
    rollback = verbs.add_parser(
        "rollback",
        parents=[job_opts],
        help="roll a machine back",
        description="Roll back to SNAPSHOT (default: the newest gnspawn "
        "snapshot); newer gnspawn snapshots are destroyed.",
    )
    rollback.add_argument("name", metavar="NAME")
    rollback.add_argument("snapshot", metavar="SNAPSHOT", nargs="?", default="")
    build = verbs.add_parser(
        "build",
        parents=[job_opts],
        help="build a new container",
        description="Create a dataset, write etc/portage, emerge @system (a --nodeps pass "
        "first), write NAME.nspawn. A failed step is rolled back and the machine left "
        "incomplete: --resume continues it, 'gnctl remove' discards it.",
    )
    build.add_argument("name", metavar="NAME")
    build.add_argument("--profile", default="", help="profile name or path (see 'gnctl profiles')")
    build.add_argument("--resume", action="store_true", help="continue an incomplete build")
    build.add_argument(
        "--keep-failed",
        action="store_true",
        help="keep a copy of a failed state before rolling back",
    )
    remove = verbs.add_parser(
        "remove", parents=[job_opts], help="destroy a machine's dataset, snapshots and .nspawn file"
    )
    remove.add_argument("name", metavar="NAME")
    send = verbs.add_parser(
        "send",
        parents=[job_opts],
        help="send a machine to another host's gnspawnd",
        description="zfs send the machine with its snapshots over ssh into HOST's "
        "configured dataset (incremental from the newest snapshot HOST has, whole "
        "otherwise); gnspawnd there picks it up and writes its .nspawn file. The ssh "
        "program is $SYSTEMD_SSH of gnspawnd when set.",
    )
    send.add_argument("name", metavar="NAME")
    send.add_argument("target", metavar="[USER@]HOST[:PORT]")
    send.add_argument(
        "--move", action="store_true", help="remove the machine here once HOST has it ready"
    )
    config = verbs.add_parser(
        "config",
        parents=[job_opts],
        help="show or settle config files with a new default waiting",
        description="Without PATH: each config file of NAME that a merge left a new default "
        "beside (._cfg0000_FILE), with the diff from the admin's file to it. With PATH and "
        "one action, a job settles that file in a snapshot: --keep keeps the admin's file and "
        "removes the new defaults; --replace puts the newest default in; --merge merges the "
        "changes between the previous version's default and the new one into the admin's "
        "file. --replace and --merge keep the admin's file as ._gnspawn-JOB_FILE beside it.",
    )
    config.add_argument("name", metavar="NAME")
    config.add_argument("path", metavar="PATH", nargs="?", default="")
    actions = config.add_mutually_exclusive_group()
    for action in ("keep", "replace", "merge"):
        actions.add_argument(
            f"--{action}", dest="action", action="store_const", const=action, default=""
        )
    news = verbs.add_parser(
        "news",
        parents=[as_json],
        help="show or read the news items a machine has not read",
        description="The news items of NAME's repositories that are relevant to it (its "
        "packages, profile and keywords, as Portage judges them at each update) and not read "
        "yet, or only those named: each with its title and text. With --read, they are shown "
        "and marked read in NAME's root, as eselect news read does; an update that "
        '[updates] news = "hold" held goes on once none is left unread.',
    )
    news.add_argument("name", metavar="NAME")
    news.add_argument("items", metavar="ITEM", nargs="*")
    news.add_argument("--read", action="store_true", help="mark the items shown read")
    verbs.add_parser("profiles", parents=[common], help="list the profiles build accepts")
    prune = verbs.add_parser(
        "prune", parents=[queueing], help="destroy the snapshots retention does not keep"
    )
    prune.add_argument("name", metavar="NAME")
    logs = verbs.add_parser(
        "logs",
        help="show a job's or a machine's log from the journal",
        description="The journal entries of job ID (GNSPAWN_JOB=ID) or of every job of machine "
        "NAME (GNSPAWN_MACHINE=NAME): what `journalctl` shows for those fields.",
    )
    logs.add_argument("target", metavar="ID|NAME")
    logs.add_argument("-f", "--follow", action="store_true", help="keep showing new lines")
    logs.add_argument("-n", "--lines", type=int, default=None, help="show only the last N lines")
    status = verbs.add_parser("status", parents=[as_json], help="show one machine")
    status.add_argument("name", metavar="NAME")
    cancel = verbs.add_parser("cancel", help="cancel a job (a running one is rolled back)")
    cancel.add_argument("ids", metavar="ID", type=int, nargs="+")
    wait = verbs.add_parser("wait", parents=[following], help="wait for jobs to finish")
    wait.add_argument("ids", metavar="ID", type=int, nargs="+")
    packages = verbs.add_parser(
        "packages",
        parents=[common],
        help="list a machine's packages, now or in a snapshot",
        description="The packages installed in NAME, as its vdb records them: now, or as "
        "recorded with SNAPSHOT (a snapshot's name, the id of the job that took it, or "
        "its tag). gnspawn records the packages with every snapshot it takes; they stay "
        "recorded after the snapshot is pruned.",
    )
    packages.add_argument("name", metavar="NAME")
    packages.add_argument("snapshot", metavar="SNAPSHOT", nargs="?", default="")
    diff = verbs.add_parser(
        "diff",
        parents=[common],
        help="show what changed in a machine's packages",
        description="What was added, upgraded, downgraded, rebuilt and removed from FROM "
        "to TO (snapshots named as 'gnctl packages' takes them; \"\" is now). Without FROM: "
        "from the machine's newest gnspawn snapshot (the last job's pre snapshot) to now. "
        "With --all, NAME is a time instead (YYYY-MM-DD, 'YYYY-MM-DD HH:MM', or Nd / Nh "
        "ago): what the jobs that ended since then changed, machine by machine, netted (an "
        "update a rollback undid is nothing), from the job history.",
    )
    diff.add_argument(
        "--all", action="store_true", help="every machine's changes since the time NAME"
    )
    diff.add_argument("name", metavar="NAME")
    diff.add_argument("old", metavar="FROM", nargs="?", default=None)
    diff.add_argument("new", metavar="TO", nargs="?", default="")
    keep = verbs.add_parser(
        "keep",
        help="pin a snapshot: retention never prunes it",
        description="Mark SNAPSHOT of NAME kept (org.gnspawn:keep): neither prune nor "
        "retention destroys it, nor a rollback past it. --tag names it for rollback, "
        "packages and diff; a tag names one snapshot of a machine at a time.",
    )
    keep.add_argument("name", metavar="NAME")
    keep.add_argument("snapshot", metavar="SNAPSHOT")
    keep.add_argument("--tag", default="", help="a name for the snapshot (moved from another)")
    unkeep = verbs.add_parser(
        "unkeep", help="leave a kept snapshot to retention again (its tag goes)"
    )
    unkeep.add_argument("name", metavar="NAME")
    unkeep.add_argument("snapshot", metavar="SNAPSHOT")
    parser.verbs = dict(verbs.choices)
    return parser


def verb_first(parser: Parser, argv: Sequence[str]) -> list[str]:
    """argv with the verb's options that come before the verb moved after it, where its
    parser takes them, or refuses those that are not its own (`gnctl --json list` is
    `gnctl list --json`). gnctl's own options (-H, --version, --help) stay in front."""
    own = {o: a.nargs != 0 for a in parser._actions for o in a.option_strings}
    valued = {
        option
        for verb in parser.verbs.values()
        for action in verb._actions
        if action.nargs != 0
        for option in action.option_strings
    }
    front: list[str] = []
    moved: list[str] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        if word in parser.verbs:
            return [*front, word, *moved, *argv[i + 1 :]]
        if word == "--" or not word.startswith("-") or word == "-":
            break
        if word.startswith("--"):
            name, attached = word.split("=", 1)[0], "=" in word
        else:  # -x, -xVALUE, or -xy for -x -y
            name, attached = word[:2], len(word) > 2
        takes_value = own.get(name, name in valued) and not attached
        words = list(argv[i : i + 1 + takes_value])
        (front if name in own else moved).extend(words)
        i += len(words)
    return list(argv)


def table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    cells = [list(header), *([str(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return "\n".join(lines)


def listing(
    args: argparse.Namespace,
    records: list[dict[str, Any]],
    header: Sequence[str],
    rows: Sequence[Sequence[object]],
    noun: str,
) -> None:
    """Records as JSON, or as a table with a header and a count line (as machinectl and
    systemctl print them; --no-legend leaves both out, for scripts)."""
    if args.json:
        print(json.dumps(records, indent=2))
        return
    if args.no_legend:
        for row in rows:
            print("  ".join(str(cell) for cell in row))
        return
    if rows:
        print(table(rows, header))
        print()
    print(f"{len(rows)} {noun}{'' if len(rows) == 1 else 's'} listed.")


def timestamp(usec: int) -> str:
    if not usec:
        return "-"
    return datetime.datetime.fromtimestamp(usec / 1e6).strftime("%Y-%m-%d %H:%M:%S")


def size(n: int) -> str:
    value = float(n)
    for unit in ("B", "K", "M", "G", "T"):
        if value < 1024 or unit == "T":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return str(n)


async def cmd_list(client: Client, args: argparse.Namespace) -> int:
    (rows,) = await client.manager("ListMachines")
    (waiting,) = await client.manager("ListAttention", "s", "")
    attention: dict[str, list[dict[str, str]]] = {}
    for machine, kind, subject, text in waiting:
        attention.setdefault(machine, []).append({"kind": kind, "subject": subject, "text": text})
    records = [
        {
            "name": n,
            "state": s,
            "profile": p,
            "last_result": r,
            "attention": attention.get(n, []),
            "object": o,
        }
        for n, s, p, r, o in rows
    ]
    rows = [
        [
            r["name"],
            r["state"],
            r["profile"] or "-",
            r["last_result"] or "-",
            attention_summary(item["kind"] for item in r["attention"]) or "-",
        ]
        for r in records
    ]
    columns = ["NAME", "STATE", "PROFILE", "LAST RESULT", "ATTENTION"]
    listing(args, records, columns, rows, "machine")
    return EXIT_OK


async def cmd_snapshots(client: Client, args: argparse.Namespace) -> int:
    (rows,) = await client.manager("ListSnapshots", "s", args.name)
    (plan,) = await client.manager("ListRetention", "s", args.name)
    verdicts = {name: (keep, reason) for name, keep, reason in plan}
    records = [
        {
            "snapshot": s,
            "created_usec": c,
            "used_bytes": u,
            "job": j,
            "job_type": t,
            "kept": verdicts.get(s, (True, ""))[0],
            "why": verdicts.get(s, (True, ""))[1],
        }
        for s, c, u, j, t in rows
    ]
    rows = [
        [
            r["snapshot"],
            timestamp(r["created_usec"]),
            size(r["used_bytes"]),
            r["job"] or "-",
            r["job_type"] or "-",
            ("kept: " if r["kept"] else "pruned next: ") + r["why"],
        ]
        for r in records
    ]
    header = ["SNAPSHOT", "CREATED", "USED", "JOB", "TYPE", "RETENTION"]
    listing(args, records, header, rows, "snapshot")
    return EXIT_OK


async def cmd_jobs(client: Client, args: argparse.Namespace) -> int:
    (rows,) = await client.manager("ListJobs")
    records = [
        {"id": i, "type": t, "machine": m, "state": s, "result": r, "progress": p, "object": o}
        for i, t, m, s, r, p, o in rows
    ]
    rows = [
        [r["id"], r["type"], r["machine"] or "-", r["state"], r["result"] or "-", shown_progress(r)]
        for r in records
    ]
    listing(args, records, ["ID", "TYPE", "MACHINE", "STATE", "RESULT", "PROGRESS"], rows, "job")
    return EXIT_OK


def shown_progress(job: dict[str, Any]) -> str:
    """A job's progress; none for one that failed or was canceled: its result says why it
    did not get to 100%."""
    if job["result"] in ("failed", "canceled"):
        return "-"
    return f"{job['progress']}%"


async def cmd_job(client: Client, args: argparse.Namespace) -> int:
    (path,) = await client.manager("GetJob", "u", args.id)
    props = await client.job_properties(path)
    if args.json:
        print(json.dumps(props, indent=2, sort_keys=True))
        return EXIT_OK
    for key in (
        "Id",
        "Type",
        "Machine",
        "State",
        "Result",
        "Phase",
        "Progress",
        "PackagesDone",
        "PackagesTotal",
        "CurrentPackage",
        "Snapshot",
        "RolledBack",
        "Error",
        "PendingPackages",
        "TreeRevision",
        "Follows",
        "CreatedUSec",
        "StartedUSec",
        "FinishedUSec",
        "InitiatorUID",
    ):
        value = props.get(key, "")
        if key.endswith("USec"):
            value = timestamp(int(value))
        elif isinstance(value, bool):
            value = "yes" if value else "no"
        elif isinstance(value, list):
            value = " ".join(value)
        print(printable(f"{key:>15}: {value if value != '' else '-'}"))
    notices = notice_lines(props.get("Notices", []))
    print(f"{'Notices':>15}: {notices[0] if notices else '-'}")
    for line in notices[1:]:
        print(f"{'':>15}  {line}")
    changed = [change_line(*change) for change in props.get("Changes", [])]
    print(f"{'Changes':>15}: {changed[0] if changed else '-'}")
    for line in changed[1:]:
        print(f"{'':>15}  {line}")
    return EXIT_OK


def change_line(action: str, package: str, old: str, new: str) -> str:
    """ "upgraded app-misc/hello:0 1 -> 2", "added app-misc/libgreet:0 1"."""
    versions = f"{old} -> {new}" if old and new else old or new
    return printable(f"{action} {package} {versions}")


async def cmd_packages(client: Client, args: argparse.Namespace) -> int:
    (rows,) = await client.manager("ListPackages", "ss", args.name, args.snapshot)
    records = [{"package": p, "version": v, "slot": s} for p, v, s in rows]
    shown = [[printable(p), printable(v), printable(s)] for p, v, s in rows]
    listing(args, records, ["PACKAGE", "VERSION", "SLOT"], shown, "package")
    return EXIT_OK


async def cmd_diff(client: Client, args: argparse.Namespace) -> int:
    if args.all:
        return await fleet_diff(client, args)
    old = args.old
    if old is None:
        old = await newest_snapshot(client, args.name)
    (rows,) = await client.manager("DiffPackages", "sss", args.name, old, args.new)
    records = [{"action": a, "package": p, "old": o, "new": n} for a, p, o, n in rows]
    shown = [[a, printable(p), printable(o) or "-", printable(n) or "-"] for a, p, o, n in rows]
    if not args.json and not args.no_legend:
        print(f"{args.name}: {old or 'now'} -> {args.new or 'now'}")
    listing(args, records, ["ACTION", "PACKAGE", "OLD", "NEW"], shown, "change")
    return EXIT_OK


async def fleet_diff(client: Client, args: argparse.Namespace) -> int:
    since = since_usec(args.name)
    (rows,) = await client.manager("ListChanges", "t", since)
    records = [
        {"machine": m, "action": a, "package": p, "old": o, "new": n} for m, a, p, o, n in rows
    ]
    shown = [
        [m, a, printable(p), printable(o) or "-", printable(n) or "-"] for m, a, p, o, n in rows
    ]
    if not args.json and not args.no_legend:
        print(f"every machine: {timestamp(since)} -> now")
    listing(args, records, ["MACHINE", "ACTION", "PACKAGE", "OLD", "NEW"], shown, "change")
    return EXIT_OK


def since_usec(text: str, now: float | None = None) -> int:
    """A time as `gnctl diff --all` takes it, in µs since the epoch: an ISO date or date
    and time (local), or a number of days (7d) or hours (12h) ago; ValueError else."""
    now = time.time() if now is None else now
    if text[-1:] in ("d", "h") and text[:-1].isdigit():
        ago = int(text[:-1]) * (86400 if text[-1] == "d" else 3600)
        return max(0, int((now - ago) * 1_000_000))
    return int(datetime.datetime.fromisoformat(text).timestamp() * 1_000_000)


async def newest_snapshot(client: Client, name: str) -> str:
    """The machine's newest gnspawn snapshot: the one its last job took."""
    (rows,) = await client.manager("ListSnapshots", "s", name)
    ours = [snapshot for snapshot, _, _, job, _ in rows if job and "@" not in snapshot]
    if not ours:
        raise NoSuchSnapshot(f"{name} has no gnspawn snapshot to compare with; name FROM")
    return str(ours[-1])


async def cmd_keep(client: Client, args: argparse.Namespace) -> int:
    await client.manager("Keep", "ssst", args.name, args.snapshot, args.tag, 0)
    return EXIT_OK


async def cmd_unkeep(client: Client, args: argparse.Namespace) -> int:
    await client.manager("Unkeep", "sst", args.name, args.snapshot, 0)
    return EXIT_OK


def notice_lines(notices: list[list[str]]) -> list[str]:
    """A job's Notices as gnctl shows them: `priority: kind subject: text`, one each
    (a text of several lines indented under its first)."""
    return [
        printable(f"{priority}: {kind} {subject}: " + text.replace("\n", "\n    "))
        for kind, subject, priority, text in notices
    ]


def job_flags(args: argparse.Namespace) -> int:
    flags = Flags(0)
    if args.fail_if_busy:
        flags |= Flags.FAIL_IF_BUSY
    if getattr(args, "keep_failed", False):
        flags |= Flags.KEEP_FAILED
    if getattr(args, "pretend", False):
        flags |= Flags.PRETEND
    if getattr(args, "resume", False):
        flags |= Flags.RESUME
    if getattr(args, "scheduled", False):
        flags |= Flags.SCHEDULED
    if getattr(args, "no_canary", False):
        flags |= Flags.NO_CANARY
    if getattr(args, "move", False):
        flags |= Flags.MOVE
    return int(flags)


async def follow(
    client: Client, args: argparse.Namespace, watcher: JobWatcher, jobs: list[tuple[int, str, str]]
) -> int:
    """Wait for jobs (id, path, machine), showing their progress, and summarise how each
    ended. The watcher was subscribed before the jobs were queued: no signal is missed."""
    if args.no_block:
        for job_id, _, machine in jobs:
            print(f"{job_id}\t{machine}")
        return EXIT_OK
    display = Display(sys.stdout, verbose=args.verbose, quiet=args.quiet, multiple=len(jobs) > 1)
    watcher.on_log = display.log
    watcher.on_change = display.change
    watcher.on_finished = display.finished
    ticker = asyncio.create_task(tick(display))
    try:
        for job_id, path, _ in jobs:
            # Watched before its properties are read: a change that comes meanwhile
            # waits in the display, and is applied over what GetAll said.
            watcher.watch(job_id)
            props = await client.job_properties(path)
            if job_id in watcher.results:
                continue
            if props["State"] == "finished":
                watcher.finished(job_id, props["Result"])
            else:
                display.watch(job_id, props)
        results = await until_done_or_gone(client, watcher)
    finally:
        ticker.cancel()
        display.close()
    codes: set[int] = set()
    for job_id, path, machine in jobs:
        props = await client.job_properties(path)
        result = results[job_id]
        line = f"job {job_id}: {job_title(props['Type'], machine)} {result}"
        if props["Error"]:
            line += f": {props['Error']}"
        if props.get("PendingPackages"):
            line += f": {pending_line(props['PendingPackages'])}"
        if props.get("Changes"):
            line += f": {change_summary(action for action, *_ in props['Changes'])}"
        if props["RolledBack"] and props["Type"] != "rollback":
            line += f" (rolled back to {props['Snapshot']})"
        out = sys.stderr if result in ("failed", "canceled") else sys.stdout
        print(printable(line), file=out)
        for notice in notice_lines(props.get("Notices", [])):
            print(f"  {notice}", file=out)
        codes.add(RESULT_EXIT.get(result, EXIT_FAILED))
    # A failure weighs more than a cancel: it is what needs looking at.
    return min(codes - {EXIT_OK}, default=EXIT_OK)


async def until_done_or_gone(client: Client, watcher: JobWatcher) -> dict[int, str]:
    """The watched jobs' results, or Unreachable when gnspawnd or the bus goes first."""
    done = asyncio.ensure_future(watcher.wait())
    gone = asyncio.ensure_future(client.until_gone())
    try:
        await asyncio.wait([done, gone], return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if not done.done():
        done.cancel()
        raise Unreachable(
            "gnspawnd left the bus (or the connection to it broke) before the jobs ended; "
            "'gnctl jobs' shows them once it is back"
        )
    return done.result()


async def tick(display: Display) -> None:
    while True:
        await asyncio.sleep(1)
        display.tick()


async def cmd_update(client: Client, args: argparse.Namespace) -> int:
    watcher = await client.watch_jobs()
    jobs = []
    if args.all:
        (rows,) = await client.manager("UpdateAll", "t", job_flags(args))
        for name, job_id, _ in rows:
            if not job_id:
                print(f"skipped {name}: not a Gentoo root, or busy")
        jobs = [(job_id, path, name) for name, job_id, path in rows if job_id]
        if not jobs:
            print("No Gentoo machines to update.")
        if not args.no_canary:
            await print_waves(client, jobs)
    else:
        for name in args.names:
            job_id, path = await client.manager("Update", "st", name, job_flags(args))
            jobs.append((job_id, path, name))
    return await follow(client, args, watcher, jobs)


async def print_waves(client: Client, jobs: list[tuple[int, str, str]]) -> None:
    """Which machine is the canary of which others: those that wait for its update."""
    names = {job_id: name for job_id, _, name in jobs}
    waves: dict[int, list[str]] = {}
    for job_id, path, _ in jobs:
        follows = (await client.job_properties(path)).get("Follows", 0)
        if follows in names:
            waves.setdefault(follows, []).append(names[job_id])
    for canary, others in waves.items():
        print(f"canary {names[canary]} (job {canary}) goes first, then {', '.join(others)}")


async def cmd_sync(client: Client, args: argparse.Namespace) -> int:
    watcher = await client.watch_jobs()
    job_id, path = await client.manager("Sync", "t", 0)
    return await follow(client, args, watcher, [(job_id, path, "")])


async def cmd_profiles(client: Client, args: argparse.Namespace) -> int:
    (rows,) = await client.manager("ListProfiles")
    records = [{"profile": p, "repository": r, "status": s} for p, r, s in rows]
    rows = [[r["profile"], r["repository"], r["status"]] for r in records]
    listing(args, records, ["PROFILE", "REPOSITORY", "STATUS"], rows, "profile")
    return EXIT_OK


async def cmd_status(client: Client, args: argparse.Namespace) -> int:
    (rows,) = await client.manager("ListMachines")
    paths = {name: path for name, _, _, _, path in rows}
    if args.name not in paths:
        raise NoSuchMachine(f"no machine {args.name}")
    props = await client.properties(paths[args.name], MACHINE_INTERFACE)
    if args.json:
        print(json.dumps(props, indent=2, sort_keys=True))
        return EXIT_OK
    for key in ("Name", "State", "Profile", "Dataset", "Directory", "LastJob", "LatestSnapshot"):
        value = props.get(key, "")
        print(f"{key:>15}: {printable(str(value)) if value not in ('', 0) else '-'}")
    items = props.get("Attention", [])
    print(f"{'Attention':>15}: {attention_summary(kind for kind, _, _ in items) or '-'}")
    for kind, subject, text in items:
        print(printable(f"{'':>17}{kind}: {subject + ': ' if subject else ''}{text}"))
    return EXIT_OK


async def queue_one(
    client: Client, args: argparse.Namespace, member: str, signature: str, *body: object
) -> int:
    """Call a method that queues one job for args.name, then follow the job."""
    watcher = await client.watch_jobs()
    job_id, path = await client.manager(member, signature, *body)
    return await follow(client, args, watcher, [(job_id, path, args.name)])


async def cmd_rollback(client: Client, args: argparse.Namespace) -> int:
    flags = job_flags(args)
    return await queue_one(client, args, "Rollback", "sst", args.name, args.snapshot, flags)


async def cmd_build(client: Client, args: argparse.Namespace) -> int:
    flags = job_flags(args)
    return await queue_one(client, args, "Build", "sst", args.name, args.profile, flags)


async def cmd_remove(client: Client, args: argparse.Namespace) -> int:
    return await queue_one(client, args, "Remove", "st", args.name, job_flags(args))


async def cmd_send(client: Client, args: argparse.Namespace) -> int:
    flags = job_flags(args)
    return await queue_one(client, args, "Send", "sst", args.name, args.target, flags)


async def cmd_config(client: Client, args: argparse.Namespace) -> int:
    if args.path:
        body = (args.name, args.path, args.action, job_flags(args))
        return await queue_one(client, args, "ResolveConfig", "ssst", *body)
    (rows,) = await client.manager("ListConfigFiles", "s", args.name)
    for path, newest, diff in rows:
        print(printable(f"{path}: a new default waits in {newest}"))
        print(printable(diff), end="" if diff.endswith("\n") else "\n")
    return EXIT_OK


async def cmd_news(client: Client, args: argparse.Namespace) -> int:
    (rows,) = await client.manager("ListNews", "s", args.name)
    records = [
        {"item": item, "repository": repository, "title": title, "body": body}
        for item, repository, title, body in rows
        if not args.items or item in args.items
    ]
    # What is shown is what is marked, never an item that came since (args.items named
    # but not unread are the daemon's NoSuchNewsItem, before anything is shown).
    if args.read and (names := args.items or [record["item"] for record in records]):
        await client.manager("MarkNewsRead", "sast", args.name, names, 0)
    if args.json:
        print(json.dumps(records, indent=2))
        return EXIT_OK
    for n, record in enumerate(records):
        if n:
            print()
        print(printable(f"{record['item']} ({record['repository']}): {record['title']}"))
        if body := record["body"]:
            print()
            print(printable(body), end="" if body.endswith("\n") else "\n")
    if args.read:
        print(f"{len(records)} news item{'' if len(records) == 1 else 's'} marked read.")
    elif not records:
        print("No unread news items.")
    return EXIT_OK


async def cmd_prune(client: Client, args: argparse.Namespace) -> int:
    return await queue_one(client, args, "Prune", "st", args.name, 0)


def journal_argv(args: argparse.Namespace) -> list[str]:
    """journalctl for a job (a number) or a machine (a name)."""
    field = "GNSPAWN_JOB" if is_job_id(args.target) else "GNSPAWN_MACHINE"
    argv = [
        "journalctl",
        "--no-pager",
        "-o",
        "short-iso",
        f"{field}={args.target}",
        "SYSLOG_IDENTIFIER=gnspawnd",
    ]
    if args.follow:
        argv.append("--follow")
    if args.lines is not None:
        argv.append(f"--lines={args.lines}")
    return argv


def is_job_id(target: str) -> bool:
    return target.isascii() and target.isdigit()


def journal_readable() -> bool:
    """Whether this user may read the system journal, where gnspawnd's lines are."""
    for base in ("/run/log/journal", "/var/log/journal"):
        for path in Path(base).glob("*/system*.journal"):
            if os.access(path, os.R_OK):
                return True
    return False


async def check_logs_target(client: Client, args: argparse.Namespace) -> None:
    """NoSuchJob or NoSuchMachine when gnspawnd knows no job or machine of that name: an
    empty journal would not tell a typing mistake from a quiet machine."""
    if is_job_id(args.target):
        if int(args.target) >= 2**32:
            raise NoSuchJob(f"no job {args.target}")
        await client.manager("GetJob", "u", int(args.target))
        return
    (machines,) = await client.manager("ListMachines")
    (jobs,) = await client.manager("ListJobs")
    # A machine removed lately still has jobs, and its log.
    known = {name for name, *_ in machines} | {machine for _, _, machine, *_ in jobs}
    if args.target not in known:
        raise NoSuchMachine(f"no machine {args.target}")


async def logs_target_known(args: argparse.Namespace) -> None:
    """check_logs_target, when gnspawnd can be asked: without it the journal still has
    the log."""
    try:
        client = await Client.connect(args.host)
    except Unreachable:
        return
    try:
        await check_logs_target(client, args)
    except Unreachable:
        pass
    finally:
        await client.close()


def cmd_logs(args: argparse.Namespace) -> int | None:
    """Hand over to journalctl, which pages, follows and filters as users know it (on the
    remote host with -H). None when the journal cannot be read: the bus serves instead."""
    argv = journal_argv(args)
    if args.host:
        argv = ssh_argv(args.host, *map(shlex.quote, argv))
    elif not journal_readable():
        return None
    try:
        os.execvp(argv[0], argv)
    except OSError as err:
        print(f"gnctl: cannot run {argv[0]}: {err.strerror}", file=sys.stderr)
    return EXIT_UNREACHABLE


async def cmd_logs_from_bus(client: Client, args: argparse.Namespace) -> int:
    """The live lines of a job, or of a machine's jobs, as their LogMessage signals bring
    them: what is left to a user who may not read the journal."""
    await check_logs_target(client, args)
    print(
        "gnctl: this user cannot read the system journal (root and the systemd-journal "
        "group can); showing the live log over the bus instead",
        file=sys.stderr,
    )
    watcher = await client.watch_jobs()
    watcher.on_log = lambda job_id, priority, line: print(line, flush=True)
    if args.follow and not is_job_id(args.target):

        def on_new(job_id: int, machine: str) -> None:
            if machine == args.target:
                watcher.watch(job_id)

        client.on_job_new(on_new)
    (rows,) = await client.manager("ListJobs")
    if is_job_id(args.target):
        job_id = int(args.target)
        (path,) = await client.manager("GetJob", "u", job_id)
        props = await client.job_properties(path)
        if props["State"] == "finished":
            print(
                f"gnctl: job {job_id} has finished ({props['Result']}); its log is only in "
                "the journal",
                file=sys.stderr,
            )
            return EXIT_FAILED
        watcher.watch(job_id)
        await until_done_or_gone(client, watcher)
        return EXIT_OK
    active = [
        i for i, _, machine, state, *_ in rows if machine == args.target and state != "finished"
    ]
    for job_id in active:
        watcher.watch(job_id)
    if args.follow:  # until Ctrl-C, as journalctl -f
        await client.until_gone()
        raise Unreachable("gnspawnd left the bus (or the connection to it broke)")
    elif not active:
        print(
            f"gnctl: no job of {args.target} is running; its log is only in the journal",
            file=sys.stderr,
        )
        return EXIT_FAILED
    await until_done_or_gone(client, watcher)
    return EXIT_OK


async def cmd_cancel(client: Client, args: argparse.Namespace) -> int:
    for job_id in args.ids:
        await client.manager("CancelJob", "u", job_id)
    return EXIT_OK


async def cmd_wait(client: Client, args: argparse.Namespace) -> int:
    watcher = await client.watch_jobs()
    jobs = []
    for job_id in args.ids:
        (path,) = await client.manager("GetJob", "u", job_id)
        props = await client.job_properties(path)
        jobs.append((job_id, path, props["Machine"]))
    args.no_block = False
    return await follow(client, args, watcher, jobs)


COMMANDS = {
    "list": cmd_list,
    "snapshots": cmd_snapshots,
    "jobs": cmd_jobs,
    "job": cmd_job,
    "update": cmd_update,
    "sync": cmd_sync,
    "rollback": cmd_rollback,
    "cancel": cmd_cancel,
    "wait": cmd_wait,
    "build": cmd_build,
    "remove": cmd_remove,
    "send": cmd_send,
    "profiles": cmd_profiles,
    "status": cmd_status,
    "prune": cmd_prune,
    "config": cmd_config,
    "news": cmd_news,
    "logs": cmd_logs_from_bus,
    "packages": cmd_packages,
    "diff": cmd_diff,
    "keep": cmd_keep,
    "unkeep": cmd_unkeep,
}


async def run(args: argparse.Namespace) -> int:
    client = await Client.connect(args.host)
    try:
        return await COMMANDS[args.verb](client, args)
    finally:
        await client.close()


def parse(argv: Sequence[str]) -> argparse.Namespace:
    """The arguments, or a usage error (with the verb's usage when there is a verb) for
    what argparse alone would let through: an option of another verb, or a combination
    that means nothing."""
    parser = build_parser()
    args, extra = parser.parse_known_args(verb_first(parser, argv))
    verb = parser.verbs[args.verb]
    if extra:
        verb.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.host:
        try:
            ssh_argv(args.host)
        except ValueError as err:
            parser.error(str(err))
    if args.verb == "update":
        if args.all == bool(args.names):
            verb.error("name the machines to update, or give --all")
        if args.scheduled and not args.all:
            verb.error("--scheduled goes with --all only")
        if args.no_canary and not args.all:
            verb.error("--no-canary goes with --all only")
        if args.keep_failed and args.pretend:
            verb.error("--pretend changes nothing: there is no failed state to keep")
    if args.verb == "send":
        try:
            ssh_argv(args.target)
        except ValueError as err:
            verb.error(str(err))
    if args.verb == "config" and bool(args.path) != bool(args.action):
        verb.error("with PATH give one of --keep, --replace or --merge; without PATH none")
    if args.verb == "diff" and args.all:
        if args.old is not None or args.new:
            verb.error("with --all give only the time to look back to")
        try:
            since_usec(args.name)
        except (ValueError, OverflowError, OSError):
            verb.error(f"not a time (YYYY-MM-DD, 'YYYY-MM-DD HH:MM', Nd or Nh): {args.name!r}")
    if args.verb == "logs" and not is_job_id(args.target) and not valid_name(args.target):
        verb.error(f"not a job id or a machine name: {args.target!r}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    try:
        if args.verb == "logs":
            asyncio.run(logs_target_known(args))
            if (code := cmd_logs(args)) is not None:
                return code
        return asyncio.run(run(args))
    except Unreachable as err:
        print(f"gnctl: {err}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except GnspawnError as err:
        print(f"gnctl: {err}." + (f" {err.hint}" if err.hint else ""), file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt:
        print(
            "gnctl: interrupted; the jobs go on ('gnctl jobs', 'gnctl cancel ID')", file=sys.stderr
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
