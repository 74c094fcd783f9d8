"""The SQLite table of jobs: written before a call returns, read back after a restart."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from gnspawn.jobs.record import Attention, Job, LastJob, Notice
from gnspawn.names import ChangeAction, Flags, JobResult, JobState, JobType, NoticeKind, Phase
from gnspawn.packages import Change

_SCHEMA_VERSION = 7
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    type TEXT NOT NULL,
    machine TEXT NOT NULL,
    flags INTEGER NOT NULL,
    initiator_uid INTEGER NOT NULL,
    created_usec INTEGER NOT NULL,
    argument TEXT NOT NULL,
    state TEXT NOT NULL,
    result TEXT NOT NULL,
    phase TEXT NOT NULL,
    progress INTEGER NOT NULL,
    packages_done INTEGER NOT NULL,
    packages_total INTEGER NOT NULL,
    current_package TEXT NOT NULL,
    snapshot TEXT NOT NULL,
    rolled_back INTEGER NOT NULL,
    error TEXT NOT NULL,
    started_usec INTEGER NOT NULL,
    finished_usec INTEGER NOT NULL,
    unit_stopped INTEGER NOT NULL DEFAULT 0,
    follows INTEGER NOT NULL DEFAULT 0,
    pending_packages TEXT NOT NULL DEFAULT '',
    notices TEXT NOT NULL DEFAULT '[]',
    tree_revision TEXT NOT NULL DEFAULT '',
    changes TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state);
CREATE INDEX IF NOT EXISTS jobs_machine ON jobs (machine, id);
CREATE TABLE IF NOT EXISTS attention (
    machine TEXT NOT NULL,
    kind TEXT NOT NULL,
    position INTEGER NOT NULL,
    subject TEXT NOT NULL,
    text TEXT NOT NULL,
    job INTEGER NOT NULL,
    PRIMARY KEY (machine, kind, position)
);
CREATE TABLE IF NOT EXISTS package_lists (
    snapshot TEXT PRIMARY KEY,
    machine TEXT NOT NULL,
    job INTEGER NOT NULL,
    digest TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS package_lists_machine ON package_lists (machine, job);
CREATE TABLE IF NOT EXISTS package_sets (
    digest TEXT PRIMARY KEY,
    packages BLOB NOT NULL
);
"""


class StoreError(Exception):
    """The job database cannot be opened or read."""


def _from_row(row: sqlite3.Row) -> Job:
    values: dict[str, Any] = dict(zip(row.keys(), row, strict=True))
    values["type"] = JobType(values["type"])
    values["flags"] = Flags(values["flags"])
    values["state"] = JobState(values["state"])
    values["result"] = JobResult(values["result"])
    values["phase"] = Phase(values["phase"])
    values["rolled_back"] = bool(values["rolled_back"])
    values["unit_stopped"] = bool(values["unit_stopped"])
    values["pending_packages"] = tuple(values["pending_packages"].split())
    values["notices"] = tuple(
        Notice(NoticeKind(kind), subject, priority, text)
        for kind, subject, priority, text in json.loads(values["notices"])
    )
    values["changes"] = _changes(values["changes"])
    return Job(**values)


def _changes(text: str) -> tuple[Change, ...]:
    return tuple(
        Change(ChangeAction(action), package, old, new)
        for action, package, old, new in json.loads(text)
    )


class JobStore:
    """Jobs in SQLite: written before a call returns, read back after a restart."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            # A power cut may lose the last commits; a crashed daemon loses nothing.
            self._db.execute("PRAGMA synchronous=NORMAL")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > _SCHEMA_VERSION:
                raise StoreError(f"{path}: written by a newer gnspawnd (schema {version})")
            self._migrate(version)
            self._db.execute("SELECT count(*) FROM jobs").fetchone()
        except (sqlite3.Error, OSError) as err:
            if hasattr(self, "_db"):
                self._db.close()
            raise StoreError(f"{path}: cannot open the job database: {err}") from err

    def _migrate(self, version: int) -> None:
        """From schema `version` to this one, in one transaction: a daemon killed
        halfway leaves the old schema, whole."""
        steps = {
            1: ["ALTER TABLE jobs ADD COLUMN follows INTEGER NOT NULL DEFAULT 0"],
            2: [
                "ALTER TABLE jobs DROP COLUMN pid",
                "ALTER TABLE jobs ADD COLUMN unit_stopped INTEGER NOT NULL DEFAULT 0",
            ],
            3: ["ALTER TABLE jobs ADD COLUMN pending_packages TEXT NOT NULL DEFAULT ''"],
            4: [
                "ALTER TABLE jobs ADD COLUMN notices TEXT NOT NULL DEFAULT '[]'",
                "ALTER TABLE jobs ADD COLUMN tree_revision TEXT NOT NULL DEFAULT ''",
            ],
            5: [],  # the attention table, which _SCHEMA creates
            6: ["ALTER TABLE jobs ADD COLUMN changes TEXT NOT NULL DEFAULT '[]'"],
            # ... and the package_lists and package_sets tables.
        }
        self._db.execute("BEGIN IMMEDIATE")
        try:
            if version:  # a new database gets the schema below, whole
                for step in range(version, _SCHEMA_VERSION):
                    for statement in steps[step]:
                        self._db.execute(statement)
            for statement in _SCHEMA.split(";"):
                self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()

    def add(self, job: Job) -> Job:
        """Insert a new job; the database assigns its id."""
        values = dataclasses.asdict(job)
        del values["id"]
        columns = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        cursor = self._db.execute(
            f"INSERT INTO jobs ({columns}) VALUES ({marks})",
            [_sql(k, v) for k, v in values.items()],
        )
        assert cursor.lastrowid is not None
        job.id = cursor.lastrowid
        return job

    def save(self, job: Job, fields: Iterable[str]) -> None:
        """Write the named fields of a job."""
        names = list(fields)
        if not names:
            return
        assignments = ", ".join(f"{name} = ?" for name in names)
        self._db.execute(
            f"UPDATE jobs SET {assignments} WHERE id = ?",
            [*(_sql(name, getattr(job, name)) for name in names), job.id],
        )

    def get(self, job_id: int) -> Job | None:
        row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _from_row(row) if row else None

    def active(self) -> list[Job]:
        """Waiting and running jobs, in the order they were queued."""
        rows = self._db.execute(
            "SELECT * FROM jobs WHERE state != ? ORDER BY id", (JobState.FINISHED.value,)
        )
        return [_from_row(row) for row in rows]

    def recent(self, limit: int) -> list[Job]:
        """The most recently queued finished jobs, newest first."""
        rows = self._db.execute(
            "SELECT * FROM jobs WHERE state = ? ORDER BY id DESC LIMIT ?",
            (JobState.FINISHED.value, limit),
        )
        return [_from_row(row) for row in rows]

    def last_jobs(self) -> dict[str, LastJob]:
        """Each machine's last finished job: how it ended."""
        rows = self._db.execute(
            "SELECT machine, id, type, result, rolled_back, snapshot != '' FROM jobs WHERE id IN "
            "(SELECT max(id) FROM jobs WHERE state = ? GROUP BY machine)",
            (JobState.FINISHED.value,),
        )
        return {
            machine: LastJob(
                job_id, JobType(kind), JobResult(result), bool(rolled_back), bool(snapshot)
            )
            for machine, job_id, kind, result, rolled_back, snapshot in rows
        }

    def types(self, ids: Iterable[int]) -> dict[int, JobType]:
        """The type of each of the given jobs that exists."""
        wanted = list(ids)
        found: dict[int, JobType] = {}
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            rows = self._db.execute(
                f"SELECT id, type FROM jobs WHERE id IN ({', '.join('?' * len(chunk))})", chunk
            )
            found.update({job_id: JobType(kind) for job_id, kind in rows})
        return found

    def forget_old(self, keep: int) -> None:
        """Drop finished jobs beyond the newest `keep`."""
        self._db.execute(
            "DELETE FROM jobs WHERE state = ? AND id NOT IN "
            "(SELECT id FROM jobs WHERE state = ? ORDER BY id DESC LIMIT ?)",
            (JobState.FINISHED.value, JobState.FINISHED.value, keep),
        )
        self._forget_package_lists("job NOT IN (SELECT id FROM jobs)", ())

    def _forget_package_lists(self, where: str, args: Sequence[Any]) -> None:
        """Drop the package lists `where` selects, and the sets no list names any more."""
        self._db.execute(f"DELETE FROM package_lists WHERE {where}", args)
        self._db.execute(
            "DELETE FROM package_sets WHERE digest NOT IN (SELECT digest FROM package_lists)"
        )

    def add_package_list(self, snapshot: str, machine: str, job: int, blob: bytes) -> None:
        """Record the packages of a snapshot (`dataset@name`), taken by `job`. Equal
        lists (a fleet's machines on one profile's binary packages) are stored once."""
        digest = hashlib.sha256(blob).hexdigest()
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute("INSERT OR IGNORE INTO package_sets VALUES (?, ?)", (digest, blob))
            self._db.execute(
                "INSERT OR REPLACE INTO package_lists VALUES (?, ?, ?, ?)",
                (snapshot, machine, job, digest),
            )
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def package_list(self, snapshot: str) -> bytes | None:
        """The packages recorded with a snapshot (`dataset@name`), or None."""
        row = self._db.execute(
            "SELECT packages FROM package_lists JOIN package_sets USING (digest) "
            "WHERE snapshot = ?",
            (snapshot,),
        ).fetchone()
        return bytes(row[0]) if row else None

    def package_list_of_job(self, machine: str, job: int) -> tuple[str, bytes] | None:
        """The first snapshot of `machine` that `job` took with its packages, or None."""
        row = self._db.execute(
            "SELECT snapshot, packages FROM package_lists JOIN package_sets USING (digest) "
            "WHERE machine = ? AND job = ? ORDER BY package_lists.rowid LIMIT 1",
            (machine, job),
        ).fetchone()
        return (row[0], bytes(row[1])) if row else None

    def changes_since(self, since_usec: int) -> list[tuple[str, tuple[Change, ...]]]:
        """The Changes of the jobs that finished since `since_usec`, by machine, oldest
        job first: one query for the whole fleet."""
        rows = self._db.execute(
            "SELECT machine, changes FROM jobs WHERE state = ? AND finished_usec >= ? "
            "AND changes != '[]' ORDER BY id",
            (JobState.FINISHED.value, since_usec),
        )
        return [(machine, _changes(text)) for machine, text in rows]

    def forget_package_lists(self, machine: str) -> None:
        """A machine that is gone: its snapshots went with it."""
        self._forget_package_lists("machine = ?", (machine,))

    def attention(self) -> dict[str, dict[NoticeKind, tuple[Attention, ...]]]:
        """What waits on each machine, by kind, in the order it was found."""
        found: dict[str, dict[NoticeKind, tuple[Attention, ...]]] = {}
        rows = self._db.execute(
            "SELECT machine, kind, subject, text, job FROM attention "
            "ORDER BY machine, kind, position"
        )
        for machine, kind, subject, text, job in rows:
            item = Attention(subject, text, job)
            kinds = found.setdefault(machine, {})
            kinds[NoticeKind(kind)] = (*kinds.get(NoticeKind(kind), ()), item)
        return found

    def set_attention(
        self, machine: str, kind: NoticeKind | None, items: Sequence[Attention]
    ) -> None:
        """Replace what waits on `machine` of `kind` (of every kind: None) by `items`."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            if kind is None:
                self._db.execute("DELETE FROM attention WHERE machine = ?", (machine,))
            else:
                self._db.execute(
                    "DELETE FROM attention WHERE machine = ? AND kind = ?", (machine, kind.value)
                )
                self._db.executemany(
                    "INSERT INTO attention VALUES (?, ?, ?, ?, ?, ?)",
                    [
                        (machine, kind.value, n, a.subject, a.text, a.job)
                        for n, a in enumerate(items)
                    ],
                )
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def __iter__(self) -> Iterator[Job]:
        return iter(self.active())


def _sql(name: str, value: Any) -> Any:
    if name in ("notices", "changes"):
        return json.dumps(value)
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, Flags):
        return int(value)
    if isinstance(value, tuple):  # package names: no blanks in them
        return " ".join(value)
    return value
