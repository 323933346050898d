"""The SQLite index beyond storing and fetching: its migration, full-text search (FTS5),
the report's tallies and the documents of a dossier.

Full text lives in two tables: ``search_rows`` (one row per document: a stable
integer id and the document's text as written) and ``documents_fts`` (FTS5, rowid =
that id, the folded metadata and text of ``sync.warehouse.searchtext``). The id is an
``INTEGER PRIMARY KEY`` because a rowid without one may change in a VACUUM. Every
function takes the connection, whose caller holds the index's lock; each write is
one transaction, so a document is never stored without its search row.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sync.warehouse.catalogue import dated
from sync.warehouse.periods import YEAR_SQL, period_sql
from sync.warehouse.records import (
    CATALOGUE_COLUMNS,
    COLUMNS,
    Counts,
    StoredDocument,
    Tally,
    TextHit,
    missing_document,
)
from sync.warehouse.searchtext import metadata_fields, metadata_text, token_text

COLS = ", ".join(COLUMNS)
_D_COLS = ", ".join(f"d.{c}" for c in COLUMNS)
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS search_rows (id INTEGER PRIMARY KEY, device TEXT NOT NULL,"
    " doc_id TEXT NOT NULL, text TEXT NOT NULL DEFAULT '', UNIQUE (device, doc_id))",
    "CREATE VIRTUAL TABLE IF NOT EXISTS documents_fts USING fts5(meta, body)",
    "CREATE INDEX IF NOT EXISTS documents_stored ON documents (stored_at)",
    "CREATE INDEX IF NOT EXISTS documents_dossier ON documents (dossier_code)",
)
_UNSEARCHABLE = (
    f"SELECT {COLS} FROM documents d WHERE NOT EXISTS"  # noqa: S608 (column names only)
    " (SELECT 1 FROM search_rows s WHERE s.device = d.device AND s.doc_id = d.doc_id)"
)


@contextmanager
def transaction(c: sqlite3.Connection) -> Iterator[None]:
    """One write transaction (the connection is in autocommit mode)."""
    c.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        c.execute("ROLLBACK")
        raise
    c.execute("COMMIT")


def _needs_migration(c: sqlite3.Connection) -> bool:
    have = {row[1] for row in c.execute("PRAGMA table_info(documents)")}
    if any(name not in have for name, _ in CATALOGUE_COLUMNS):
        return True
    tables = {row[0] for row in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if not {"search_rows", "documents_fts"} <= tables:
        return True
    # counts, not a join: cheap at every opening; a document an older version stored
    # without its search row (during an upgrade) is caught at the next one
    counted = "SELECT (SELECT count(*) FROM documents) > (SELECT count(*) FROM search_rows)"
    return bool(c.execute(counted).fetchone()[0])


def migrate(c: sqlite3.Connection) -> None:
    """Bring an index file of any earlier version up to date: add the catalogue columns
    that are absent, create the search tables, and make every document already stored
    searchable by its metadata (dated by its dossier code). Nothing is written when
    nothing is missing."""
    if not _needs_migration(c):
        return
    with transaction(c):  # another process may be migrating too: it waits, then sees it done
        have = {row[1] for row in c.execute("PRAGMA table_info(documents)")}
        for name, sqltype in CATALOGUE_COLUMNS:
            if name not in have:
                c.execute(f"ALTER TABLE documents ADD COLUMN {name} {sqltype}")
        for statement in _SCHEMA:
            c.execute(statement)
        for row in c.execute(_UNSEARCHABLE).fetchall():
            doc = dated(StoredDocument(*row))
            c.execute(
                "UPDATE documents SET dossier_date=? WHERE device=? AND doc_id=?",
                (doc.dossier_date, doc.device, doc.doc_id),
            )
            _insert_search(c, doc)


def _insert_search(c: sqlite3.Connection, doc: StoredDocument) -> None:
    cur = c.execute(
        "INSERT INTO search_rows (device, doc_id) VALUES (?, ?)", (doc.device, doc.doc_id)
    )
    meta = metadata_text(metadata_fields(doc))
    c.execute(
        "INSERT INTO documents_fts (rowid, meta, body) VALUES (?, ?, '')", (cur.lastrowid, meta)
    )


def add(c: sqlite3.Connection, doc: StoredDocument) -> bool:
    """Insert ``doc`` and its search row; False when (device, doc) is already stored."""
    marks = ",".join("?" * len(COLUMNS))
    with transaction(c):
        cur = c.execute(
            f"INSERT OR IGNORE INTO documents ({COLS}) VALUES ({marks})",  # noqa: S608
            _row(doc),
        )
        if cur.rowcount != 1:
            return False
        _insert_search(c, doc)
    return True


def _row(doc: StoredDocument) -> tuple[Any, ...]:
    return tuple(getattr(doc, name) for name in COLUMNS)


def get(c: sqlite3.Connection, device: str, doc_id: str) -> StoredDocument | None:
    row = c.execute(
        f"SELECT {COLS} FROM documents WHERE device=? AND doc_id=?",  # noqa: S608
        (device, doc_id),
    ).fetchone()
    return None if row is None else StoredDocument(*row)


def set_text(c: sqlite3.Connection, device: str, doc_id: str, text: str) -> None:
    """Store (or replace) a document's full text; search covers it from now on."""
    with transaction(c):
        doc = get(c, device, doc_id)
        if doc is None:
            raise missing_document(device, doc_id)
        (sid,) = c.execute(
            "SELECT id FROM search_rows WHERE device=? AND doc_id=?", (device, doc_id)
        ).fetchone()
        c.execute("UPDATE search_rows SET text=? WHERE id=?", (text, sid))
        c.execute("DELETE FROM documents_fts WHERE rowid=?", (sid,))
        c.execute(
            "INSERT INTO documents_fts (rowid, meta, body) VALUES (?, ?, ?)",
            (sid, metadata_text(metadata_fields(doc)), token_text(text)),
        )


def search(c: sqlite3.Connection, phrase: Sequence[str], limit: int) -> list[TextHit]:
    """Documents whose metadata or text holds ``phrase`` (folded tokens), best first."""
    rows = c.execute(
        f"SELECT {_D_COLS}, s.text FROM documents_fts f"  # noqa: S608
        " JOIN search_rows s ON s.id = f.rowid"
        " JOIN documents d ON d.device = s.device AND d.doc_id = s.doc_id"
        " WHERE documents_fts MATCH ? ORDER BY f.rank, d.stored_at, d.doc_id LIMIT ?",
        ('"' + " ".join(phrase) + '"', limit),
    ).fetchall()
    return [TextHit(StoredDocument(*r[:-1]), r[-1]) for r in rows]


def stored_between(since: str | None, until: str | None) -> tuple[str, list[str]]:
    """The WHERE clause (fixed text) and parameters for ``since <= stored_at < until``."""
    clauses, params = [], []
    if since is not None:
        clauses.append("stored_at >= ?")
        params.append(since)
    if until is not None:
        clauses.append("stored_at < ?")
        params.append(until)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def tally(c: sqlite3.Connection, since: str | None, until: str | None) -> Tally:
    """Documents, pages and A4 pages by procedure and period of issue, and by device."""
    where, params = stored_between(since, until)
    c.execute("BEGIN")  # one snapshot for both counts
    try:
        procedures = c.execute(
            "SELECT tthc_code, period, count(*), sum(pages), sum(a4) FROM"  # noqa: S608
            " (SELECT tthc_code, pages, coalesce(a4_pages, pages) AS a4,"
            f" {period_sql('y')} AS period FROM"
            f" (SELECT tthc_code, pages, a4_pages, {YEAR_SQL} AS y FROM documents{where}))"
            " GROUP BY tthc_code, period",
            params,
        ).fetchall()
        devices = c.execute(
            "SELECT device, count(*), sum(pages), sum(coalesce(a4_pages, pages))"  # noqa: S608
            f" FROM documents{where} GROUP BY device",
            params,
        ).fetchall()
    finally:
        c.execute("COMMIT")
    return Tally(
        tuple((code, period, Counts(*n)) for code, period, *n in procedures),
        tuple((device, Counts(*n)) for device, *n in devices),
    )


def dossier(c: sqlite3.Connection, code: str) -> list[StoredDocument]:
    rows = c.execute(
        f"SELECT {COLS} FROM documents WHERE dossier_code = ?"  # noqa: S608
        " ORDER BY coalesce(captured_at, stored_at), doc_id",
        (code,),
    ).fetchall()
    return [StoredDocument(*r) for r in rows]


def dossier_codes(c: sqlite3.Connection) -> list[str]:
    rows = c.execute(
        "SELECT DISTINCT dossier_code FROM documents WHERE dossier_code IS NOT NULL ORDER BY 1"
    ).fetchall()
    return [r[0] for r in rows]
