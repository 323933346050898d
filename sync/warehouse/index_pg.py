"""The warehouse's document index on PostgreSQL (psycopg 3), for a province whose
warehouse processes outgrow one SQLite file.

Same ``DocumentIndex`` protocol and keys as ``SqliteIndex``: (device, doc) is the
primary key and (device, doc, ciphertext hash) is unique, so ``add`` stores a
document once however many workers in however many processes race on it. The
schema is created at first connection under a transaction-level advisory lock,
because concurrent ``CREATE TABLE IF NOT EXISTS`` can still collide in the
catalogue. One connection per index object, in autocommit mode, behind a lock:
worker threads may share the object, and a connection the server dropped is
opened again on next use. Every failure is a ``WarehouseIndexError`` whose text
never holds the password.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote

import psycopg
from psycopg.conninfo import conninfo_to_dict

from sync.errors import WarehouseIndexError
from sync.warehouse import pg_queries as q
from sync.warehouse.index import StoredDocument, Tally, TextHit, redacted_dsn
from sync.warehouse.search import check_limit
from sync.warehouse.searchtext import query_phrase

log = logging.getLogger("sohoa.warehouse")

CONNECT_TIMEOUT_S = 10  # unless the URL sets connect_timeout
# pg_advisory_xact_lock key serialising schema creation ("sohoa" in ASCII)
SCHEMA_LOCK = 0x736F686F61

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS documents (doc_id TEXT NOT NULL, device TEXT NOT NULL,"
    " ciphertext_sha256 TEXT NOT NULL, stored_at TEXT NOT NULL, bytes BIGINT NOT NULL,"
    " pages INTEGER NOT NULL, pdf_sha256 TEXT NOT NULL, path TEXT NOT NULL,"
    " dossier_code TEXT, doc_type TEXT," + q.CATALOGUE_DDL + " PRIMARY KEY (device, doc_id),"
    " CONSTRAINT documents_envelope UNIQUE (device, doc_id, ciphertext_sha256))"
)
_SELECT = f"SELECT {q.COLS} FROM documents"  # noqa: S608 (column names only)
# byte order, as SQLite compares text, whatever collation the database was created with
_ORDER = ' ORDER BY stored_at COLLATE "C", doc_id COLLATE "C"'

Connection = psycopg.Connection[tuple[Any, ...]]


def _secrets(dsn: str) -> list[str]:
    """The password as written in the URL and as decoded, to scrub from error texts."""
    try:
        password = str(conninfo_to_dict(dsn).get("password") or "")
    except psycopg.Error:
        return []
    return [s for s in {password, unquote(password)} if s]


def _connect_options(dsn: str) -> dict[str, Any]:
    try:
        given = conninfo_to_dict(dsn)
    except psycopg.Error:
        given = {}  # psycopg.connect names the fault
    options: dict[str, Any] = {"autocommit": True}
    if "connect_timeout" not in given:
        options["connect_timeout"] = CONNECT_TIMEOUT_S
    if "application_name" not in given:
        options["application_name"] = "sohoa-warehouse"
    return options


class PostgresIndex:
    """``DocumentIndex`` on the PostgreSQL database that ``dsn`` (a URL) names."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._where = redacted_dsn(dsn)
        self._lock = threading.Lock()
        self._conn: Connection | None = None
        with self._cursor():  # connect and create the schema now: a bad URL fails at start
            pass

    def _connection(self) -> Connection:
        if self._conn is None or self._conn.closed:
            conn = psycopg.connect(self._dsn, **_connect_options(self._dsn))
            try:
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                    conn.execute(_SCHEMA)
                    with conn.cursor() as cur:
                        q.migrate(cur)  # a database an earlier version wrote
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _error(self, exc: psycopg.Error) -> WarehouseIndexError:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        for secret in _secrets(self._dsn):
            reason = reason.replace(secret, "***")
        what = "is unreachable" if isinstance(exc, psycopg.OperationalError) else "failed"
        return WarehouseIndexError(
            f"the warehouse index at {self._where} {what} ({reason})",
            "check [warehouse] index and that PostgreSQL runs",
        )

    @contextmanager
    def _cursor(self) -> Iterator[psycopg.Cursor[tuple[Any, ...]]]:
        with self._lock:
            try:
                with self._connection().cursor() as cur:
                    yield cur
            except psycopg.Error as exc:
                if self._conn is not None and self._conn.broken:
                    log.warning("warehouse index connection lost index=%s", self._where)
                    self._conn.close()
                    self._conn = None
                # from None: the driver's own exception text may repeat the URL
                raise self._error(exc) from None

    def add(self, doc: StoredDocument) -> bool:
        with self._cursor() as cur:
            return q.add(cur, doc)

    def get(self, device: str, doc_id: str) -> StoredDocument | None:
        with self._cursor() as cur:
            return q.get(cur, device, doc_id)

    def all(self) -> list[StoredDocument]:
        with self._cursor() as cur:
            rows = cur.execute(_SELECT + _ORDER).fetchall()
        return [StoredDocument(*r) for r in rows]

    def set_text(self, device: str, doc_id: str, text: str) -> None:
        with self._cursor() as cur:
            q.set_text(cur, device, doc_id, text)

    def search(self, query: str, limit: int = 20) -> list[TextHit]:
        phrase, limit = query_phrase(query), check_limit(limit)
        with self._cursor() as cur:
            return q.search(cur, phrase, limit)

    def tally(self, since: str | None = None, until: str | None = None) -> Tally:
        with self._cursor() as cur:
            return q.tally(cur, since, until)

    def dossier(self, code: str) -> list[StoredDocument]:
        with self._cursor() as cur:
            return q.dossier(cur, code)

    def dossier_codes(self) -> list[str]:
        with self._cursor() as cur:
            return q.dossier_codes(cur)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
