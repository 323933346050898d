"""The warehouse's document index: an interface and its SQLite implementation.

A PostgreSQL implementation fills the same ``DocumentIndex`` protocol; ingest is
idempotent on (device, doc, ciphertext hash) through the unique key.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from sync.durable import enable_wal


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
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._c = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        enable_wal(self._c)
        self._c.execute("PRAGMA synchronous=FULL")
        self._c.execute(
            "CREATE TABLE IF NOT EXISTS documents (doc_id TEXT NOT NULL, device TEXT NOT NULL,"
            " ciphertext_sha256 TEXT NOT NULL, stored_at TEXT NOT NULL, bytes INTEGER NOT NULL,"
            " pages INTEGER NOT NULL, pdf_sha256 TEXT NOT NULL, path TEXT NOT NULL,"
            " dossier_code TEXT, doc_type TEXT, PRIMARY KEY (device, doc_id))"
        )

    def add(self, doc: StoredDocument) -> bool:
        cur = self._c.execute(
            f"INSERT OR IGNORE INTO documents ({_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?)",  # noqa: S608
            (
                doc.doc_id,
                doc.device,
                doc.ciphertext_sha256,
                doc.stored_at,
                doc.bytes,
                doc.pages,
                doc.pdf_sha256,
                doc.path,
                doc.dossier_code,
                doc.doc_type,
            ),
        )
        return cur.rowcount == 1

    def get(self, device: str, doc_id: str) -> StoredDocument | None:
        row = self._c.execute(
            f"SELECT {_COLS} FROM documents WHERE device=? AND doc_id=?",  # noqa: S608
            (device, doc_id),
        ).fetchone()
        return None if row is None else StoredDocument(*row)

    def all(self) -> list[StoredDocument]:
        rows = self._c.execute(f"SELECT {_COLS} FROM documents ORDER BY stored_at, doc_id")  # noqa: S608
        return [StoredDocument(*r) for r in rows]

    def close(self) -> None:
        self._c.close()
