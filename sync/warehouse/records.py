"""What the warehouse index holds and answers, as values: a stored document, a search
hit, a report tally. Both backends (``index``, ``index_pg``) read and write these."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from sync.errors import WarehouseIndexError


@dataclass(frozen=True)
class StoredDocument:
    """One archived document. The fields are the index's columns, in order.

    The catalogue fields (owner id onwards) come from the sealed metadata JSON and the
    PDF at ingest (``sync.warehouse.catalogue``); a document indexed before they
    existed has them None. ``a4_pages`` is None when the page sizes are unknown (a
    report then counts each page as one A4 page); ``issue_year`` is the cover sheet's
    ``Y=``; ``dossier_date`` the date in the dossier code (YYYY-MM-DD).
    """

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
    owner_id: str | None = None
    tthc_code: str | None = None
    issue_year: int | None = None
    dossier_date: str | None = None
    captured_at: str | None = None
    title: str | None = None
    a4_pages: int | None = None
    # PAdES signatures, validated at ingest (``sync.warehouse.signatures``): the signers'
    # names, whether every signature is valid, and why not; None for an unsigned document
    signed_by: str | None = None
    signature_valid: bool | None = None
    signature_problem: str | None = None

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
            "signed_by": self.signed_by,
            # SQLite gives 0/1 for a BOOLEAN column
            "signature_valid": None if self.signature_valid is None else bool(self.signature_valid),
            "signature_problem": self.signature_problem,
        }


COLUMNS = tuple(f.name for f in fields(StoredDocument))
# the columns added since the first index (the catalogue's, then the signatures'), with
# their SQL types: a migration adds those absent, in place, in both backends
CATALOGUE_COLUMNS = (
    ("owner_id", "TEXT"),
    ("tthc_code", "TEXT"),
    ("issue_year", "INTEGER"),
    ("dossier_date", "TEXT"),
    ("captured_at", "TEXT"),
    ("title", "TEXT"),
    ("a4_pages", "INTEGER"),
    ("signed_by", "TEXT"),
    ("signature_valid", "BOOLEAN"),
    ("signature_problem", "TEXT"),
)


@dataclass(frozen=True)
class TextHit:
    """A document a search found, with its full text ("" until OCR has run)."""

    doc: StoredDocument
    text: str


@dataclass(frozen=True)
class Counts:
    """Documents, their pages and their A4 page equivalents."""

    documents: int = 0
    pages: int = 0
    a4_pages: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            self.documents + other.documents,
            self.pages + other.pages,
            self.a4_pages + other.a4_pages,
        )

    def to_json(self) -> dict[str, int]:
        return {"documents": self.documents, "pages": self.pages, "a4_pages": self.a4_pages}


@dataclass(frozen=True)
class Tally:
    """What the index counts for a report, from one snapshot: the documents stored per
    (procedure, period of issue), and per device."""

    procedures: tuple[tuple[str | None, str, Counts], ...]
    devices: tuple[tuple[str, Counts], ...]


def missing_document(device: str, doc_id: str) -> WarehouseIndexError:
    """What ``set_text`` raises for a document the index does not hold."""
    return WarehouseIndexError(
        f"document {doc_id} from {device} is not in the warehouse index",
        "store the document before adding its text",
    )
