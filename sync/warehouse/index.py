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
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any, Protocol

from sync.durable import enable_wal
from sync.errors import ConfigError, MissingDependencyError

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
# scheme://[userinfo@]host[/path][?query]: no '@', '/', '?' or '#' where it could be ambiguous
_URL = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?:[^@/?#]*@)?(?P<host>[^@/?#]*)"
    r"(?P<path>/[^@?#]*)?(?:\?[^@#]*)?"
)


@dataclass(frozen=True)
class StoredDocument:
    doc_id: str
    device: str
    ciphertext_sha256: str
    stored_at: str
    bytes: int
    pages: int
    pdf_sha256: str
    path: str
    dossier_code: str | None = None
    doc_type: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "doc_id": self.doc_id,
            "device": self.device,
            "stored_at": self.stored_at,
            "bytes": self.bytes,
            "pages": self.pages,
            "pdf_sha256": self.pdf_sha256,
            "ciphertext_sha256": self.ciphertext_sha256,
            "path": self.path,
        }


class DocumentIndex(Protocol):
    def add(self, doc: StoredDocument) -> bool:
        """Insert; False when (device, doc, ciphertext) is already stored."""

    def get(self, device: str, doc_id: str) -> StoredDocument | None: ...

    def all(self) -> list[StoredDocument]: ...

    def close(self) -> None: ...


_COLS = "doc_id, device, ciphertext_sha256, stored_at, bytes, pages, pdf_sha256, path, dossier_code, doc_type"


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
            " dossier_code TEXT, doc_type TEXT, PRIMARY KEY (device, doc_id))"
        )
        self._c.execute(
            "CREATE UNIQUE INDEX IF NOT EXISTS documents_envelope"
            " ON documents (device, doc_id, ciphertext_sha256)"
        )

    def add(self, doc: StoredDocument) -> bool:
        row = astuple(doc)  # the fields in the columns' order
        with self._lock:
            cur = self._c.execute(
                f"INSERT OR IGNORE INTO documents ({_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?)",  # noqa: S608
                row,
            )
            return cur.rowcount == 1

    def get(self, device: str, doc_id: str) -> StoredDocument | None:
        with self._lock:
            row = self._c.execute(
                f"SELECT {_COLS} FROM documents WHERE device=? AND doc_id=?",  # noqa: S608
                (device, doc_id),
            ).fetchone()
        return None if row is None else StoredDocument(*row)

    def all(self) -> list[StoredDocument]:
        with self._lock:
            rows = self._c.execute(
                f"SELECT {_COLS} FROM documents ORDER BY stored_at, doc_id"  # noqa: S608
            ).fetchall()
        return [StoredDocument(*r) for r in rows]

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
