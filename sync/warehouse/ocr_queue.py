"""The OCR queue's SQL, shared by both backends, its SQLite implementation (the table
``ocr_jobs`` in the index file, ``archive/index.db``) and ``open_ocr_queue``.

Every statement is written once with ``?`` placeholders; the PostgreSQL backend
(``ocr_queue_pg``) runs the same text with psycopg's. Claims are serialised (SQLite:
``BEGIN IMMEDIATE``; PostgreSQL: an advisory lock), so that two workers never lease
the same document; every later change is guarded by the holder, so that a worker that
lost its lease changes nothing.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from sync.durable import enable_wal, iso
from sync.errors import ConfigError, MissingDependencyError
from sync.warehouse.index import POSTGRES_SCHEMES
from sync.warehouse.ocr_jobs import STOPPED_MID_OCR, JobRecord, OcrJob, OcrQueue

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS ocr_jobs (device TEXT NOT NULL, doc_id TEXT NOT NULL,"
    " state TEXT NOT NULL, attempts INTEGER NOT NULL, holder TEXT NOT NULL,"
    " lease_until DOUBLE PRECISION NOT NULL, error TEXT, chars INTEGER,"
    " updated_at TEXT NOT NULL, PRIMARY KEY (device, doc_id))",
    "CREATE INDEX IF NOT EXISTS ocr_jobs_state ON ocr_jobs (state)",
)
# {dead}: one "?" per dead holder (placeholders only, never values)
_STALLED = " WHERE attempts >= ? AND state = 'running' AND (lease_until <= ? OR holder IN {dead})"
# jobs due again: a retry whose time has come, or a running job whose holder is gone
_DUE = (
    "SELECT d.device, d.doc_id, d.path, d.pages, j.attempts FROM ocr_jobs j"
    " JOIN documents d ON d.device = j.device AND d.doc_id = j.doc_id"
    " WHERE (j.state = 'retry' AND j.lease_until <= ?)"
    " OR (j.state = 'running' AND j.attempts < ? AND (j.lease_until <= ? OR j.holder IN {dead}))"
    " ORDER BY d.stored_at{c}, d.device, d.doc_id LIMIT 1"
)
# stored documents with no job yet, stored at ``since`` or later ("": all of them); the
# index on stored_at keeps an idle worker's look at the newest documents cheap
_NEW = (
    "SELECT d.device, d.doc_id, d.path, d.pages, 0 FROM documents d"
    " WHERE d.stored_at{c} >= ? AND NOT EXISTS (SELECT 1 FROM ocr_jobs j"
    " WHERE j.device = d.device AND j.doc_id = d.doc_id)"
    " ORDER BY d.stored_at{c}, d.device, d.doc_id LIMIT 1"
)
_UPSERT = (
    "INSERT INTO ocr_jobs (device, doc_id, state, attempts, holder, lease_until, error,"
    " chars, updated_at) VALUES (?, ?, 'running', 1, ?, ?, NULL, NULL, ?)"
    " ON CONFLICT (device, doc_id) DO UPDATE SET state = 'running',"
    " attempts = ocr_jobs.attempts + 1, holder = excluded.holder,"
    " lease_until = excluded.lease_until, updated_at = excluded.updated_at"
)
# every change to a claimed job is guarded by its holder: a worker that lost the lease
# changes nothing
_RENEW = (
    "UPDATE ocr_jobs SET lease_until = ?, updated_at = ?"
    " WHERE device = ? AND doc_id = ? AND holder = ? AND state = 'running'"
)
_FINISH = (
    "UPDATE ocr_jobs SET state = 'done', error = NULL, chars = ?, updated_at = ?"
    " WHERE device = ? AND doc_id = ? AND holder = ? AND state = 'running'"
)
_FAIL = (
    "UPDATE ocr_jobs SET state = ?, lease_until = ?, error = ?, updated_at = ?"
    " WHERE device = ? AND doc_id = ? AND holder = ? AND state = 'running'"
)
_RELEASE = (
    "UPDATE ocr_jobs SET state = 'retry', attempts = attempts - 1, lease_until = ?,"
    " updated_at = ? WHERE device = ? AND doc_id = ? AND holder = ? AND state = 'running'"
)


class Db(Protocol):
    """What the queue asks of a database connection."""

    collate: str  # what makes text compare byte by byte, as the stored_at index does

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    def change(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement; the number of rows it changed."""


def _in(values: Sequence[str]) -> str:
    return "(" + ", ".join("?" for _ in values) + ")" if values else "(NULL)"


def stalled(db: Db, now: float, dead: Sequence[str], max_attempts: int) -> list[str]:
    """The running jobs whose holder is gone after their last attempt: "device/doc"."""
    where = _STALLED.format(dead=_in(dead))
    params = (max_attempts, now, *dead)
    found = db.rows("SELECT device, doc_id FROM ocr_jobs" + where, params)  # noqa: S608
    return [f"{device}/{doc}" for device, doc in found]


def give_up_stalled(db: Db, now: float, dead: Sequence[str], max_attempts: int) -> list[str]:
    where = _STALLED.format(dead=_in(dead))
    params = (max_attempts, now, *dead)
    found = stalled(db, now, dead, max_attempts)
    if found:
        set_failed = "UPDATE ocr_jobs SET state = 'failed', error = ?, updated_at = ?"
        db.change(set_failed + where, (STOPPED_MID_OCR, iso(now), *params))
    return found


Candidate = tuple[str, str, str, int, int]  # device, doc, path, pages, attempts so far


def candidate(
    db: Db, now: float, dead: Sequence[str], max_attempts: int, since: str = ""
) -> Candidate | None:
    """The stored document to OCR next: a job due again, else the oldest document
    stored at ``since`` or later that has none."""
    due = _DUE.format(dead=_in(dead), c=db.collate)
    found = db.rows(due, (now, max_attempts, now, *dead)) or db.rows(
        _NEW.format(c=db.collate), (since,)
    )
    if not found:
        return None
    device, doc_id, path, pages, attempts = found[0]
    return str(device), str(doc_id), str(path), int(pages), int(attempts)


def claim(
    db: Db,
    holder: str,
    now: float,
    dead: Sequence[str],
    lease_s: float,
    max_attempts: int,
    since: str = "",
) -> OcrJob | None:
    found = candidate(db, now, dead, max_attempts, since)
    if found is None:
        return None
    device, doc_id, path, pages, attempts = found
    db.change(_UPSERT, (device, doc_id, holder, now + lease_s, iso(now)))
    return OcrJob(device, doc_id, path, pages, attempts + 1, holder)


def renew(db: Db, job: OcrJob, now: float, lease_s: float) -> bool:
    return db.change(_RENEW, (now + lease_s, iso(now), job.device, job.doc_id, job.holder)) == 1


def finish(db: Db, job: OcrJob, now: float, chars: int) -> bool:
    return db.change(_FINISH, (chars, iso(now), job.device, job.doc_id, job.holder)) == 1


def fail(db: Db, job: OcrJob, now: float, reason: str, retry_at: float | None) -> bool:
    state, until = ("failed", now) if retry_at is None else ("retry", retry_at)
    params = (state, until, reason, iso(now), job.device, job.doc_id, job.holder)
    return db.change(_FAIL, params) == 1


def release(db: Db, job: OcrJob, now: float) -> bool:
    return db.change(_RELEASE, (now, iso(now), job.device, job.doc_id, job.holder)) == 1


def requeue_failed(db: Db) -> int:
    return db.change(
        "UPDATE ocr_jobs SET state = 'retry', attempts = 0, lease_until = 0 WHERE state = 'failed'"
    )


def records(db: Db) -> list[JobRecord]:
    sql = (
        "SELECT device, doc_id, state, attempts, holder, error FROM ocr_jobs"
        " ORDER BY device, doc_id"
    )
    return [JobRecord(d, doc, s, int(a), h, e) for d, doc, s, a, h, e in db.rows(sql)]


def waiting(db: Db) -> int:
    sql = (
        "SELECT COUNT(*) FROM documents d LEFT JOIN ocr_jobs j"
        " ON j.device = d.device AND j.doc_id = d.doc_id WHERE j.device IS NULL"
    )
    return int(db.rows(sql)[0][0])


def holders(db: Db) -> list[str]:
    return [h for (h,) in db.rows("SELECT DISTINCT holder FROM ocr_jobs WHERE state = 'running'")]


class _SqliteDb:
    collate = ""  # SQLite compares text byte by byte already

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._c = conn

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return list(self._c.execute(sql, params).fetchall())

    def change(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._c.execute(sql, params).rowcount


class SqliteOcrQueue:
    """``OcrQueue`` in the SQLite index file; the index must have created ``documents``."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._c = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        enable_wal(self._c)
        self._c.execute("PRAGMA synchronous=FULL")
        for statement in SCHEMA:
            self._c.execute(statement)
        self._db = _SqliteDb(self._c)

    @contextmanager
    def _tx(self) -> Iterator[Db]:
        """One write transaction, taken at once so that claims never interleave."""
        with self._lock:
            self._c.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._c.execute("ROLLBACK")
                raise
            self._c.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[Db]:
        """Reads in autocommit: WAL lets them run beside any writer."""
        with self._lock:
            yield self._db

    def holders(self) -> list[str]:
        with self._read() as db:
            return holders(db)

    def give_up_stalled(self, now: float, dead: Sequence[str], max_attempts: int) -> list[str]:
        with self._read() as db:
            if not stalled(db, now, dead, max_attempts):
                return []
        with self._tx() as db:
            return give_up_stalled(db, now, dead, max_attempts)

    def claim(
        self,
        holder: str,
        now: float,
        dead: Sequence[str],
        lease_s: float,
        max_attempts: int,
        since: str = "",
    ) -> OcrJob | None:
        with self._read() as db:  # an idle worker's look never holds up ingest's writes
            if candidate(db, now, dead, max_attempts, since) is None:
                return None
        with self._tx() as db:
            return claim(db, holder, now, dead, lease_s, max_attempts, since)

    def renew(self, job: OcrJob, now: float, lease_s: float) -> bool:
        with self._tx() as db:
            return renew(db, job, now, lease_s)

    def finish(self, job: OcrJob, now: float, chars: int) -> bool:
        with self._tx() as db:
            return finish(db, job, now, chars)

    def fail(self, job: OcrJob, now: float, reason: str, *, retry_at: float | None) -> bool:
        with self._tx() as db:
            return fail(db, job, now, reason, retry_at)

    def release(self, job: OcrJob, now: float) -> bool:
        with self._tx() as db:
            return release(db, job, now)

    def requeue_failed(self) -> int:
        with self._tx() as db:
            return requeue_failed(db)

    def records(self) -> list[JobRecord]:
        with self._read() as db:
            return records(db)

    def waiting(self) -> int:
        with self._read() as db:
            return waiting(db)

    def close(self) -> None:
        with self._lock:
            self._c.close()


def open_ocr_queue(spec: str, archive_dir: Path) -> OcrQueue:
    """The queue beside the index ``[warehouse] index`` names: the same SQLite file
    (``archive_dir``/index.db) or the same PostgreSQL database. Open the index first:
    it creates the ``documents`` table the queue reads."""
    if spec == "sqlite":
        return SqliteOcrQueue(archive_dir / "index.db")
    if not spec.startswith(POSTGRES_SCHEMES):
        raise ConfigError(
            '[warehouse] index is not "sqlite" or a postgresql:// URL',
            'write "sqlite" or postgresql://user:password@host:port/database',
        )
    try:
        from sync.warehouse.ocr_queue_pg import PostgresOcrQueue
    except ImportError as exc:  # psycopg is an optional extra
        raise MissingDependencyError(
            f"[warehouse] index is a PostgreSQL URL but psycopg cannot be imported ({exc})",
            "pip install 'sohoa[postgresql]', or set [warehouse] index = \"sqlite\"",
        ) from None
    return PostgresOcrQueue(spec)
