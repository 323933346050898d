"""The PostgreSQL index beyond storing and fetching: its migration, full-text search, the
report's tallies and the documents of a dossier (the same answers as
``sync.warehouse.sqlite_queries``).

Full text: ``document_text`` keeps a document's text as written (for snippets);
``document_search`` holds its folded tokens (``sync.warehouse.searchtext``) in parts
— part 0 the metadata, parts 1… the text — each with a ``tsvector`` generated with
the ``simple`` configuration (no stemming, no stop words: the tokens are folded
already) and a GIN index. A tsvector keeps word positions only up to 16,383 and
holds at most 1 MB, so long texts are split into parts that overlap by
``OVERLAP`` words: a phrase of up to ``OVERLAP + 1`` words is always whole in one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

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
from sync.warehouse.searchtext import (
    MAX_QUERY_TOKENS,
    chunks,
    metadata_fields,
    metadata_text,
    tokens,
)

Cursor = psycopg.Cursor[tuple[Any, ...]]

PART_WORDS = 4000
OVERLAP = MAX_QUERY_TOKENS - 1
COLS = ", ".join(COLUMNS)
_D_COLS = ", ".join(f"d.{c}" for c in COLUMNS)
_SEARCH_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS document_text (device TEXT NOT NULL, doc_id TEXT NOT NULL,"
    " text TEXT NOT NULL, PRIMARY KEY (device, doc_id))",
    "CREATE TABLE IF NOT EXISTS document_search (device TEXT NOT NULL, doc_id TEXT NOT NULL,"
    " part INTEGER NOT NULL, body TEXT NOT NULL,"
    " tsv tsvector GENERATED ALWAYS AS (to_tsvector('simple', body)) STORED,"
    " PRIMARY KEY (device, doc_id, part))",
    "CREATE INDEX IF NOT EXISTS document_search_tsv ON document_search USING GIN (tsv)",
    'CREATE INDEX IF NOT EXISTS documents_stored ON documents ((stored_at COLLATE "C"))',
    "CREATE INDEX IF NOT EXISTS documents_dossier ON documents (dossier_code)",
)
_RELATIONS = ("document_text", "document_search", "document_search_tsv", "documents_stored")
_UNSEARCHABLE = (
    f"SELECT {COLS} FROM documents d WHERE NOT EXISTS"  # noqa: S608 (column names only)
    " (SELECT 1 FROM document_search s"
    " WHERE s.device = d.device AND s.doc_id = d.doc_id AND s.part = 0)"
)
CATALOGUE_DDL = "".join(f" {name} {sqltype}," for name, sqltype in CATALOGUE_COLUMNS)


def _needs_migration(cur: Cursor) -> bool:
    cur.execute(
        "SELECT count(*) FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = 'documents'"
        " AND column_name = ANY(%s)",
        ([name for name, _ in CATALOGUE_COLUMNS],),
    )
    if cur.fetchone() != (len(CATALOGUE_COLUMNS),):
        return True
    for name in _RELATIONS:
        if cur.execute("SELECT to_regclass(%s)", (name,)).fetchone() == (None,):
            return True
    # counts, not a join: cheap at every connection; a document an older version stored
    # without its search part (during an upgrade) is caught at the next one
    cur.execute(
        "SELECT (SELECT count(*) FROM documents)"
        " > (SELECT count(*) FROM document_search WHERE part = 0)"
    )
    return bool(cur.fetchone() == (True,))


def migrate(cur: Cursor) -> None:
    """Bring a database of any earlier version up to date: add the catalogue columns that
    are absent, create the search tables, make every stored document searchable by
    its metadata and give it the date in its dossier code. The caller holds the schema
    lock in a transaction; nothing is altered (no table lock taken) when nothing is
    missing."""
    if not _needs_migration(cur):
        return
    for name, sqltype in CATALOGUE_COLUMNS:
        cur.execute(f"ALTER TABLE documents ADD COLUMN IF NOT EXISTS {name} {sqltype}")
    for statement in _SEARCH_SCHEMA:
        cur.execute(statement)
    for row in cur.execute(_UNSEARCHABLE).fetchall():
        doc = dated(StoredDocument(*row))
        cur.execute(
            "UPDATE documents SET dossier_date = %s WHERE device = %s AND doc_id = %s",
            (doc.dossier_date, doc.device, doc.doc_id),
        )
        _insert_meta(cur, doc)


def _insert_meta(cur: Cursor, doc: StoredDocument) -> None:
    cur.execute(
        "INSERT INTO document_search (device, doc_id, part, body) VALUES (%s, %s, 0, %s)"
        " ON CONFLICT (device, doc_id, part) DO UPDATE SET body = EXCLUDED.body",
        (doc.device, doc.doc_id, metadata_text(metadata_fields(doc))),
    )


def add(cur: Cursor, doc: StoredDocument) -> bool:
    """Insert ``doc`` and its metadata's search part; False when it is stored already."""
    marks = ", ".join(["%s"] * len(COLUMNS))
    with cur.connection.transaction():
        cur.execute(
            f"INSERT INTO documents ({COLS}) VALUES ({marks}) ON CONFLICT DO NOTHING",  # noqa: S608
            tuple(getattr(doc, name) for name in COLUMNS),
        )
        if cur.rowcount != 1:
            return False
        _insert_meta(cur, doc)
    return True


def get(cur: Cursor, device: str, doc_id: str) -> StoredDocument | None:
    cur.execute(
        f"SELECT {COLS} FROM documents WHERE device = %s AND doc_id = %s",  # noqa: S608
        (device, doc_id),
    )
    found = cur.fetchone()
    return None if found is None else StoredDocument(*found)


def set_text(cur: Cursor, device: str, doc_id: str, text: str) -> None:
    """Store (or replace) a document's full text and its search parts, in one transaction."""
    text = text.replace("\x00", "")  # PostgreSQL text cannot hold NUL; OCR never means one
    with cur.connection.transaction():
        if get(cur, device, doc_id) is None:
            raise missing_document(device, doc_id)
        cur.execute(
            "INSERT INTO document_text (device, doc_id, text) VALUES (%s, %s, %s)"
            " ON CONFLICT (device, doc_id) DO UPDATE SET text = EXCLUDED.text",
            (device, doc_id, text),
        )
        cur.execute(
            "DELETE FROM document_search WHERE device = %s AND doc_id = %s AND part > 0",
            (device, doc_id),
        )
        parts = chunks(tokens(text), PART_WORDS, OVERLAP)
        cur.executemany(
            "INSERT INTO document_search (device, doc_id, part, body) VALUES (%s, %s, %s, %s)",
            [(device, doc_id, n, " ".join(words)) for n, words in enumerate(parts, start=1)],
        )


def search(cur: Cursor, phrase: Sequence[str], limit: int) -> list[TextHit]:
    """Documents with a part that holds ``phrase`` (folded tokens), best first."""
    cur.execute(
        f"SELECT {_D_COLS}, coalesce(t.text, '') FROM"  # noqa: S608
        " (SELECT s.device, s.doc_id, max(ts_rank(s.tsv, q)) AS rank"
        "  FROM document_search s, phraseto_tsquery('simple', %s) q WHERE s.tsv @@ q"
        '  GROUP BY s.device, s.doc_id ORDER BY rank DESC, s.device COLLATE "C",'
        '  s.doc_id COLLATE "C" LIMIT %s) h'
        " JOIN documents d ON d.device = h.device AND d.doc_id = h.doc_id"
        " LEFT JOIN document_text t ON t.device = h.device AND t.doc_id = h.doc_id"
        ' ORDER BY h.rank DESC, d.device COLLATE "C", d.doc_id COLLATE "C"',
        (" ".join(phrase), limit),
    )
    return [TextHit(StoredDocument(*r[:-1]), r[-1]) for r in cur.fetchall()]


def tally(cur: Cursor, since: str | None, until: str | None) -> Tally:
    """Documents, pages and A4 pages by procedure and period of issue, and by device."""
    clauses, params = [], []
    if since is not None:
        clauses.append('stored_at COLLATE "C" >= %s')
        params.append(since)
    if until is not None:
        clauses.append('stored_at COLLATE "C" < %s')
        params.append(until)
    where = " WHERE " + " AND ".join(clauses) if clauses else ""
    with cur.connection.transaction():
        cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")  # one snapshot for both
        cur.execute(
            "SELECT tthc_code, period, count(*), sum(pages), sum(a4) FROM"  # noqa: S608
            " (SELECT tthc_code, pages, coalesce(a4_pages, pages) AS a4,"
            f" {period_sql('y')} AS period FROM"
            f" (SELECT tthc_code, pages, a4_pages, {YEAR_SQL} AS y"
            f" FROM documents{where}) AS years) AS periods"
            " GROUP BY tthc_code, period",
            params,
        )
        procedures = cur.fetchall()
        cur.execute(
            "SELECT device, count(*), sum(pages), sum(coalesce(a4_pages, pages))"  # noqa: S608
            f" FROM documents{where} GROUP BY device",
            params,
        )
        devices = cur.fetchall()
    return Tally(
        tuple((code, period, Counts(*n)) for code, period, *n in procedures),
        tuple((device, Counts(*n)) for device, *n in devices),
    )


def dossier(cur: Cursor, code: str) -> list[StoredDocument]:
    cur.execute(
        f"SELECT {COLS} FROM documents WHERE dossier_code = %s"  # noqa: S608
        ' ORDER BY coalesce(captured_at, stored_at) COLLATE "C", doc_id COLLATE "C"',
        (code,),
    )
    return [StoredDocument(*r) for r in cur.fetchall()]


def dossier_codes(cur: Cursor) -> list[str]:
    cur.execute(
        'SELECT DISTINCT dossier_code COLLATE "C" FROM documents'
        " WHERE dossier_code IS NOT NULL ORDER BY 1"
    )
    return [r[0] for r in cur.fetchall()]
