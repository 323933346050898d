"""The OCR queue on PostgreSQL: table ``ocr_jobs`` in the index's database, for warehouse
processes on several hosts sharing one index.

The statements are ``ocr_queue``'s, run through psycopg. Each operation is one
transaction; a claim first takes a transaction-level advisory lock, so claims from
every process on every host are serialised. One connection, autocommit between
transactions, behind a lock; a connection the server dropped is opened again on next
use. Failures are ``WarehouseIndexError`` whose text never holds the password.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote

import psycopg
from psycopg.conninfo import conninfo_to_dict

from sync.errors import WarehouseIndexError
from sync.warehouse import ocr_queue as q
from sync.warehouse.index import redacted_dsn
from sync.warehouse.ocr_jobs import JobRecord, OcrJob

log = logging.getLogger("sohoa.warehouse.ocr")

CONNECT_TIMEOUT_S = 10
CLAIM_LOCK = 0x736F686F61_0C  # pg_advisory_xact_lock key serialising claims ("sohoa", OCR)
Connection = psycopg.Connection[tuple[Any, ...]]


class _PgDb:
    collate = ' COLLATE "C"'  # as the index on stored_at is built (index_pg)

    def __init__(self, cur: psycopg.Cursor[tuple[Any, ...]]) -> None:
        self._cur = cur

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._cur.execute(sql.replace("?", "%s"), params).fetchall()

    def change(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._cur.execute(sql.replace("?", "%s"), params).rowcount


def _scrubbed(exc: psycopg.Error, dsn: str) -> str:
    reason = " ".join(str(exc).split()) or type(exc).__name__
    try:
        password = str(conninfo_to_dict(dsn).get("password") or "")
    except psycopg.Error:
        password = ""
    for secret in {password, unquote(password)} - {""}:
        reason = reason.replace(secret, "***")
    return reason


class PostgresOcrQueue:
    """``OcrQueue`` in the PostgreSQL database that ``dsn`` names (the index's)."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._lock = threading.Lock()
        self._conn: Connection | None = None
        with self._tx():  # connect and create the table now: a bad URL fails at start
            pass

    def _connection(self) -> Connection:
        if self._conn is None or self._conn.closed:
            given = conninfo_to_dict(self._dsn)
            options: dict[str, Any] = {"autocommit": True}
            if "connect_timeout" not in given:
                options["connect_timeout"] = CONNECT_TIMEOUT_S
            options.setdefault("application_name", "sohoa-warehouse-ocr")
            conn = psycopg.connect(self._dsn, **options)
            try:
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (CLAIM_LOCK,))
                    for statement in q.SCHEMA:
                        conn.execute(statement)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    @contextmanager
    def _tx(self, *, serialised: bool = False) -> Iterator[q.Db]:
        with self._lock:
            try:
                conn = self._connection()
                with conn.transaction(), conn.cursor() as cur:
                    if serialised:
                        cur.execute("SELECT pg_advisory_xact_lock(%s)", (CLAIM_LOCK,))
                    yield _PgDb(cur)
            except psycopg.Error as exc:
                if self._conn is not None and self._conn.broken:
                    log.warning("OCR queue connection lost index=%s", redacted_dsn(self._dsn))
                    self._conn.close()
                    self._conn = None
                what = "is unreachable" if isinstance(exc, psycopg.OperationalError) else "failed"
                raise WarehouseIndexError(
                    f"the OCR queue at {redacted_dsn(self._dsn)} {what}"
                    f" ({_scrubbed(exc, self._dsn)})",
                    "check [warehouse] index and that PostgreSQL runs",
                ) from None

    def holders(self) -> list[str]:
        with self._tx() as db:
            return q.holders(db)

    def give_up_stalled(self, now: float, dead: Sequence[str], max_attempts: int) -> list[str]:
        with self._tx() as db:
            if not q.stalled(db, now, dead, max_attempts):
                return []
        with self._tx(serialised=True) as db:
            return q.give_up_stalled(db, now, dead, max_attempts)

    def claim(
        self,
        holder: str,
        now: float,
        dead: Sequence[str],
        lease_s: float,
        max_attempts: int,
        since: str = "",
    ) -> OcrJob | None:
        with self._tx() as db:  # an idle worker's look takes no lock
            if q.candidate(db, now, dead, max_attempts, since) is None:
                return None
        with self._tx(serialised=True) as db:
            return q.claim(db, holder, now, dead, lease_s, max_attempts, since)

    def renew(self, job: OcrJob, now: float, lease_s: float) -> bool:
        with self._tx() as db:
            return q.renew(db, job, now, lease_s)

    def finish(self, job: OcrJob, now: float, chars: int) -> bool:
        with self._tx() as db:
            return q.finish(db, job, now, chars)

    def fail(self, job: OcrJob, now: float, reason: str, *, retry_at: float | None) -> bool:
        with self._tx() as db:
            return q.fail(db, job, now, reason, retry_at)

    def release(self, job: OcrJob, now: float) -> bool:
        with self._tx() as db:
            return q.release(db, job, now)

    def requeue_failed(self) -> int:
        with self._tx() as db:
            return q.requeue_failed(db)

    def records(self) -> list[JobRecord]:
        with self._tx() as db:
            return q.records(db)

    def waiting(self) -> int:
        with self._tx() as db:
            return q.waiting(db)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
