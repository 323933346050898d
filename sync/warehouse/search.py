"""``sohoa warehouse search``: documents found by words, codes or dates, each with a
snippet that shows where the query matched (in the text as written, diacritics and
all, or the metadata field that holds it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sync.errors import QueryError
from sync.warehouse.records import StoredDocument, TextHit
from sync.warehouse.searchtext import field_snippet, metadata_fields, query_phrase, text_snippet

MAX_LIMIT = 1000


@dataclass(frozen=True)
class SearchHit:
    doc: StoredDocument
    snippet: str

    def to_json(self) -> dict[str, Any]:
        d = self.doc
        return {
            "doc_id": d.doc_id,
            "device": d.device,
            "dossier_code": d.dossier_code,
            "doc_type": d.doc_type,
            "tthc_code": d.tthc_code,
            "stored_at": d.stored_at,
            "pages": d.pages,
            "path": d.path,
            "snippet": self.snippet,
        }


def snippet_of(hit: TextHit, phrase: list[str]) -> str:
    """Where ``phrase`` is in the hit: a passage of its text, else the metadata field."""
    return (
        text_snippet(hit.text, phrase)
        or field_snippet(metadata_fields(hit.doc), phrase)
        or ""  # matched across two fields: the document is still the one asked for
    )


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise QueryError(
            f"--limit {limit} is not between 1 and {MAX_LIMIT}",
            "ask for fewer hits, or narrow the search text",
        )
    return limit


def with_snippets(query: str, hits: list[TextHit]) -> list[SearchHit]:
    """The index's hits for ``query``, each with its snippet."""
    phrase = query_phrase(query)
    return [SearchHit(h.doc, snippet_of(h, phrase)) for h in hits]
