"""The job store: SQLite rows written and read back."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from gnspawn.jobs.record import Job, Notice, now_usec
from gnspawn.jobs.store import JobStore, StoreError
from gnspawn.names import Flags, JobResult, JobState, JobType, NoticeKind, Phase


def new_job(
    machine: str = "web",
    kind: JobType = JobType.UPDATE,
    flags: int = 0,
    argument: str = "",
) -> Job:
    return Job(
        id=0,
        type=kind,
        machine=machine,
        flags=Flags(flags),
        initiator_uid=1000,
        created_usec=now_usec(),
        argument=argument,
    )


def finish(store: JobStore, job: Job, result: JobResult = JobResult.DONE) -> Job:
    job.state = JobState.FINISHED
    job.result = result
    job.finished_usec = now_usec()
    store.save(job, ["state", "result", "finished_usec"])
    return job


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "jobs.sqlite"


@pytest.fixture
def store(path: Path) -> Iterator[JobStore]:
    jobs = JobStore(path)
    try:
        yield jobs
    finally:
        jobs.close()


def test_creates_the_directory_and_file(path: Path, store: JobStore) -> None:
    assert path.is_file()
    assert store.path == path


def test_add_assigns_increasing_ids(store: JobStore) -> None:
    ids = [store.add(new_job(f"m{n}")).id for n in range(5)]
    assert ids[0] >= 1
    assert ids == sorted(ids)
    assert len(set(ids)) == 5


def test_add_returns_the_same_job_with_its_id(store: JobStore) -> None:
    job = new_job()
    added = store.add(job)
    assert added is job
    assert job.id > 0


def test_get_returns_every_field(store: JobStore) -> None:
    job = store.add(
        new_job(
            "db",
            JobType.BUILD,
            Flags.KEEP_FAILED | Flags.PRETEND,
            argument="default/linux/amd64/23.0/systemd",
        )
    )
    got = store.get(job.id)
    assert got is not None
    assert got is not job
    assert got.id == job.id
    assert got.type is JobType.BUILD
    assert got.machine == "db"
    assert got.flags == Flags.KEEP_FAILED | Flags.PRETEND
    assert isinstance(got.flags, Flags)
    assert got.initiator_uid == 1000
    assert got.created_usec == job.created_usec
    assert got.argument == "default/linux/amd64/23.0/systemd"
    assert got.state is JobState.WAITING
    assert got.result is JobResult.NONE
    assert got.phase is Phase.QUEUED
    assert got.rolled_back is False
    assert (got.progress, got.packages_done, got.packages_total) == (0, 0, 0)
    assert (got.current_package, got.snapshot, got.error) == ("", "", "")
    assert (got.started_usec, got.finished_usec, got.unit_stopped) == (0, 0, False)
    assert got.active


def test_get_unknown_id(store: JobStore) -> None:
    assert store.get(12345) is None


def test_save_writes_only_the_named_fields(store: JobStore) -> None:
    job = store.add(new_job())
    job.state = JobState.RUNNING
    job.phase = Phase.EMERGE
    job.progress = 40
    job.packages_done = 2
    job.packages_total = 5
    job.current_package = "app-misc/hello-2"
    job.snapshot = "zpool/machines/web@gnspawn-1-pre"
    job.rolled_back = True
    job.unit_stopped = True
    job.error = "not saved"
    store.save(
        job,
        [
            "state",
            "phase",
            "progress",
            "packages_done",
            "packages_total",
            "current_package",
            "snapshot",
            "rolled_back",
            "unit_stopped",
        ],
    )
    got = store.get(job.id)
    assert got is not None
    assert got.state is JobState.RUNNING
    assert got.phase is Phase.EMERGE
    assert (got.progress, got.packages_done, got.packages_total) == (40, 2, 5)
    assert got.current_package == "app-misc/hello-2"
    assert got.snapshot == "zpool/machines/web@gnspawn-1-pre"
    assert got.rolled_back is True
    assert got.unit_stopped is True
    assert got.error == ""
    assert got.active


def test_save_nothing(store: JobStore) -> None:
    job = store.add(new_job())
    job.error = "changed"
    store.save(job, [])
    got = store.get(job.id)
    assert got is not None
    assert got.error == ""


def test_save_touches_only_that_job(store: JobStore) -> None:
    first = store.add(new_job("a"))
    second = store.add(new_job("b"))
    first.error = "boom"
    store.save(first, ["error"])
    got = store.get(second.id)
    assert got is not None
    assert got.error == ""


def test_active_lists_waiting_and_running_in_queue_order(store: JobStore) -> None:
    a = store.add(new_job("a"))
    b = store.add(new_job("b"))
    c = store.add(new_job("c"))
    d = store.add(new_job("d"))
    b.state = JobState.RUNNING
    store.save(b, ["state"])
    finish(store, c)
    assert [job.id for job in store.active()] == [a.id, b.id, d.id]
    assert [job.state for job in store.active()] == [
        JobState.WAITING,
        JobState.RUNNING,
        JobState.WAITING,
    ]
    assert [job.id for job in store] == [a.id, b.id, d.id]


def test_recent_lists_finished_newest_first(store: JobStore) -> None:
    jobs = [store.add(new_job(f"m{n}")) for n in range(5)]
    for job in jobs[:4]:
        finish(store, job)
    assert [job.id for job in store.recent(10)] == [j.id for j in reversed(jobs[:4])]
    assert [job.id for job in store.recent(2)] == [jobs[3].id, jobs[2].id]
    assert store.recent(0) == []


def test_last_jobs_per_machine(store: JobStore) -> None:
    finish(store, store.add(new_job("web")), JobResult.FAILED)
    finish(store, store.add(new_job("web")), JobResult.DONE)
    finish(store, store.add(new_job("db")), JobResult.CANCELED)
    finish(store, store.add(new_job("db")), JobResult.SKIPPED)
    store.add(new_job("db"))
    store.add(new_job("new"))
    assert {m: last.result for m, last in store.last_jobs().items()} == {
        "web": JobResult.DONE,
        "db": JobResult.SKIPPED,
    }


def test_last_jobs_empty(store: JobStore) -> None:
    assert store.last_jobs() == {}


def test_types(store: JobStore) -> None:
    build = store.add(new_job("web", JobType.BUILD))
    update = store.add(new_job("web", JobType.UPDATE))
    rollback = store.add(new_job("web", JobType.ROLLBACK))
    remove = store.add(new_job("web", JobType.REMOVE))
    assert store.types([build.id, update.id, rollback.id, remove.id, 9999]) == {
        build.id: JobType.BUILD,
        update.id: JobType.UPDATE,
        rollback.id: JobType.ROLLBACK,
        remove.id: JobType.REMOVE,
    }
    assert store.types([]) == {}


def test_types_of_many_ids(store: JobStore) -> None:
    ids = [store.add(new_job(f"m{n}", JobType.REMOVE)).id for n in range(1200)]
    found = store.types(iter([*ids, 0, -1]))
    assert found == dict.fromkeys(ids, JobType.REMOVE)


def test_forget_old_keeps_the_newest_finished_and_every_active(store: JobStore) -> None:
    finished = [finish(store, store.add(new_job(f"f{n}"))) for n in range(6)]
    waiting = store.add(new_job("w"))
    store.forget_old(2)
    assert [job.id for job in store.recent(100)] == [finished[5].id, finished[4].id]
    assert [job.id for job in store.active()] == [waiting.id]
    assert store.get(finished[0].id) is None


def test_forget_old_zero_drops_all_finished(store: JobStore) -> None:
    finish(store, store.add(new_job()))
    waiting = store.add(new_job())
    store.forget_old(0)
    assert store.recent(10) == []
    assert [job.id for job in store.active()] == [waiting.id]


def test_ids_are_not_reused_after_forgetting(store: JobStore) -> None:
    last = finish(store, store.add(new_job()))
    store.forget_old(0)
    assert store.add(new_job()).id > last.id


def test_reopening_returns_the_same_data(path: Path) -> None:
    first = JobStore(path)
    running = first.add(new_job("web", JobType.UPDATE, Flags.KEEP_FAILED))
    running.state = JobState.RUNNING
    running.phase = Phase.EMERGE
    running.snapshot = "zpool/machines/web@gnspawn-1-pre"
    running.unit_stopped = True
    first.save(running, ["state", "phase", "snapshot", "unit_stopped"])
    done = finish(first, first.add(new_job("db", JobType.BUILD, argument="p")))
    before = [first.get(running.id), first.get(done.id)]
    first.close()

    second = JobStore(path)
    try:
        after = [second.get(running.id), second.get(done.id)]
        assert [vars(job) for job in after if job] == [vars(job) for job in before if job]
        assert len(after) == 2
        assert [job.id for job in second.active()] == [running.id]
        assert [job.id for job in second.recent(10)] == [done.id]
        assert {m: last.result for m, last in second.last_jobs().items()} == {"db": JobResult.DONE}
        assert second.add(new_job()).id > done.id
    finally:
        second.close()


@pytest.mark.parametrize(
    "garbage",
    [
        b"this is not a database\n" * 200,
        bytes(range(256)) * 16,
        b"SQLite format 3\0" + b"\xff" * 4080,
    ],
)
def test_corrupt_file_raises_store_error(path: Path, garbage: bytes) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(garbage)
    with pytest.raises(StoreError) as caught:
        JobStore(path)
    assert str(path) in str(caught.value)


def test_newer_schema_is_refused(path: Path) -> None:
    store = JobStore(path)
    store._db.execute("PRAGMA user_version=99")
    store.close()
    with pytest.raises(StoreError) as caught:
        JobStore(path)
    assert str(path) in str(caught.value)
    assert "newer" in str(caught.value)


def test_directory_that_cannot_be_created(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    path = blocker / "jobs.sqlite"
    with pytest.raises(StoreError) as caught:
        JobStore(path)
    assert str(path) in str(caught.value)


def test_notices_and_the_tree_revision_are_kept(path: Path) -> None:
    store = JobStore(path)
    job = store.add(new_job("db", JobType.UPDATE, Flags(0)))
    first = store.get(job.id)
    assert first is not None and first.notices == ()
    job.notices = (
        Notice(NoticeKind.PRESERVED_LIBS, "/usr/lib64/libfoo.so.1", "warning", "kept"),
        Notice(NoticeKind.DEPCLEAN, "app-misc/hello", "notice", 'says "go"\nand more'),
    )
    job.tree_revision = "0123abc"
    store.save(job, ["notices", "tree_revision"])
    store.close()
    got = JobStore(path).get(job.id)
    assert got is not None
    assert got.notices == job.notices
    assert all(isinstance(n.kind, NoticeKind) for n in got.notices)
    assert got.tree_revision == "0123abc"


def test_a_database_of_the_previous_schema_gains_the_new_columns(path: Path) -> None:
    store = JobStore(path)
    job = store.add(new_job("db", JobType.UPDATE, Flags(0)))
    store._db.execute("ALTER TABLE jobs DROP COLUMN notices")
    store._db.execute("ALTER TABLE jobs DROP COLUMN tree_revision")
    store._db.execute("ALTER TABLE jobs DROP COLUMN changes")
    store._db.execute("PRAGMA user_version=4")
    store.close()
    got = JobStore(path).get(job.id)
    assert got is not None
    assert (got.notices, got.tree_revision, got.machine) == ((), "", "db")


def test_a_migration_that_fails_halfway_leaves_the_old_schema_whole(path: Path) -> None:
    store = JobStore(path)
    store.add(new_job("db", JobType.UPDATE, Flags(0)))
    store._db.execute("ALTER TABLE jobs DROP COLUMN notices")  # tree_revision stays:
    store._db.execute("PRAGMA user_version=4")  # adding it again fails, after notices
    store.close()
    with pytest.raises(StoreError) as caught:
        JobStore(path)
    assert "duplicate column" in str(caught.value)
    db = sqlite3.connect(path)
    columns = [row[1] for row in db.execute("PRAGMA table_info(jobs)")]
    assert "notices" not in columns  # the first step of the migration was undone
    assert db.execute("PRAGMA user_version").fetchone()[0] == 4
    db.close()
