"""The warehouse's document index: an interface, its SQLite implementation and
``open_index``, which picks the backend that ``[warehouse] index`` names.

The PostgreSQL implementation (``index_pg``) fills the same ``DocumentIndex``
protocol with the same keys: a (device, doc) is stored once, and ingest is
idempotent on (device, doc, ciphertext hash) through a unique key.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from pathlib import Path
from typing import Protocol

from sync.durable import enable_wal
from sync.errors import ConfigError, MissingDependencyError
from sync.warehouse import sqlite_queries as q
from sync.warehouse.records import CATALOGUE_COLUMNS, StoredDocument, Tally, TextHit
from sync.warehouse.search import check_limit
from sync.warehouse.searchtext import query_phrase

__all__ = ["DocumentIndex", "SqliteIndex", "StoredDocument", "Tally", "TextHit", "open_index"]

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
# scheme://[userinfo@]host[/path][?query]: no '@', '/', '?' or '#' where it could be ambiguous
_URL = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?:[^@/?#]*@)?(?P<host>[^@/?#]*)"
    r"(?P<path>/[^@?#]*)?(?:\?[^@#]*)?"
)


class DocumentIndex(Protocol):
    def add(self, doc: StoredDocument) -> bool:
        """Insert; False when (device, doc, ciphertext) is already stored."""

    def get(self, device: str, doc_id: str) -> StoredDocument | None: ...

    def all(self) -> list[StoredDocument]: ...

    def set_text(self, device: str, doc_id: str, text: str) -> None:
        """Store or replace a stored document's full text (e.g. OCR output); search covers
        it from then on. ``WarehouseIndexError`` when the document is not in the index."""

    def search(self, query: str, limit: int = 20) -> list[TextHit]:
        """Documents whose metadata or text holds ``query`` as a phrase, diacritics or not
        (``sync.warehouse.searchtext``), best first; ``QueryError`` when it has no words."""

    def tally(self, since: str | None = None, until: str | None = None) -> Tally:
        """Documents, pages and A4 pages by procedure and period of issue, and by device,
        of the documents stored at ``since`` <= stored_at < ``until`` (ISO 8601 UTC)."""

    def dossier(self, code: str) -> list[StoredDocument]:
        """The documents of one dossier, in the order they were captured."""

    def dossier_codes(self) -> list[str]: ...

    def close(self) -> None: ...


_COLS = q.COLS


class SqliteIndex:
    """``DocumentIndex`` in one SQLite file. Worker threads may share the object: one
    lock around the connection, because an insert's row count is the connection's and
    would otherwise be another thread's."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._c = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        enable_wal(self._c)
        self._c.execute("PRAGMA synchronous=FULL")
        self._c.execute(
            "CREATE TABLE IF NOT EXISTS documents (doc_id TEXT NOT NULL, device TEXT NOT NULL,"
            " ciphertext_sha256 TEXT NOT NULL, stored_at TEXT NOT NULL, bytes INTEGER NOT NULL,"
            " pages INTEGER NOT NULL, pdf_sha256 TEXT NOT NULL, path TEXT NOT NULL,"
            " dossier_code TEXT, doc_type TEXT,"
            + "".join(f" {name} {sqltype}," for name, sqltype in CATALOGUE_COLUMNS)
            + " PRIMARY KEY (device, doc_id))"
        )
        self._c.execute(
            "CREATE UNIQUE INDEX IF NOT EXISTS documents_envelope"
            " ON documents (device, doc_id, ciphertext_sha256)"
        )
        q.migrate(self._c)  # an index file written by an earlier version

    def add(self, doc: StoredDocument) -> bool:
        with self._lock:
            return q.add(self._c, doc)

    def get(self, device: str, doc_id: str) -> StoredDocument | None:
        with self._lock:
            return q.get(self._c, device, doc_id)

    def all(self) -> list[StoredDocument]:
        with self._lock:
            rows = self._c.execute(
                f"SELECT {_COLS} FROM documents ORDER BY stored_at, doc_id"  # noqa: S608
            ).fetchall()
        return [StoredDocument(*r) for r in rows]

    def set_text(self, device: str, doc_id: str, text: str) -> None:
        with self._lock:
            q.set_text(self._c, device, doc_id, text)

    def search(self, query: str, limit: int = 20) -> list[TextHit]:
        phrase, limit = query_phrase(query), check_limit(limit)
        with self._lock:
            return q.search(self._c, phrase, limit)

    def tally(self, since: str | None = None, until: str | None = None) -> Tally:
        with self._lock:
            return q.tally(self._c, since, until)

    def dossier(self, code: str) -> list[StoredDocument]:
        with self._lock:
            return q.dossier(self._c, code)

    def dossier_codes(self) -> list[str]:
        with self._lock:
            return q.dossier_codes(self._c)

    def close(self) -> None:
        with self._lock:
            self._c.close()


def redacted_dsn(dsn: str) -> str:
    """``dsn`` without user, password or query parameters, fit for messages and logs.

    Only an unambiguous URL shows its host and database; anything a parser could
    split another way is hidden, so a stray ``@``, ``?`` or ``#`` in a password never
    shows part of it.
    """
    m = _URL.fullmatch(dsn)
    if m is not None:
        return f"{m['scheme']}://{m['host']}{m['path'] or ''}"
    if "://" in dsn:
        return f"{dsn.partition('://')[0]}://(not shown)"
    return dsn if re.fullmatch(r"[\w.-]*", dsn) else "(not shown: it may hold a password)"


def open_index(spec: str, archive_dir: Path) -> DocumentIndex:
    """The index ``[warehouse] index`` names: "sqlite" (``archive_dir``/index.db) or a
    PostgreSQL URL."""
    if spec == "sqlite":
        return SqliteIndex(archive_dir / "index.db")
    if not spec.startswith(POSTGRES_SCHEMES):
        raise ConfigError(
            f'[warehouse] index = {redacted_dsn(spec)!r} is not "sqlite" or a postgresql:// URL',
            'write "sqlite" or postgresql://user:password@host:port/database',
        )
    try:
        from sync.warehouse.index_pg import PostgresIndex
    except ImportError as exc:  # psycopg is an optional extra
        raise MissingDependencyError(
            f"[warehouse] index is a PostgreSQL URL but psycopg cannot be imported ({exc})",
            "pip install 'sohoa[postgresql]', or set [warehouse] index = \"sqlite\"",
        ) from None
    return PostgresIndex(spec)
