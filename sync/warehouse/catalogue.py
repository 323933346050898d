"""The catalogue: what the index records of a document beyond where it is stored — its
owner, procedure, type, dossier and dates from the sealed metadata JSON, and its size
in A4 page equivalents from the PDF's page sizes.

A page counts by its area against A4 (210 × 297 mm), with a tolerance of
``A4_TOLERANCE`` for scanners that crop a little wide: A4 or smaller is 1, A3 is 2,
larger pages ``ceil(area / A4)``. The metadata comes from an enrolled device, but
every value is still checked for type and length before it reaches the index.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

from sync.warehouse.records import StoredDocument

log = logging.getLogger("sohoa.warehouse")

A4_POINTS = (595.2756, 841.8898)  # 210 × 297 mm at 72 points per inch
A4_AREA = A4_POINTS[0] * A4_POINTS[1]
A4_TOLERANCE = 0.05  # 5 % of area per A4 page: a scanner's margin, never half a page
MAX_TEXT = 200  # longer metadata values are not a code or a title: not indexed
_DOSSIER_DATE = re.compile(r"^[^-\s]+-(\d{2})(\d{2})(\d{2})-\d{4}$")
# pdfium is not thread-safe and warehouse workers may be threads of one process
_PDFIUM = threading.Lock()


def a4_equivalent(width_pt: float, height_pt: float) -> int:
    """A page's size in A4 pages: 1 up to A4 (plus the tolerance), A3 = 2, A2 = 4…"""
    ratio = abs(width_pt * height_pt) / A4_AREA
    return max(1, math.ceil(ratio / (1 + A4_TOLERANCE)))


def a4_pages(sizes: Sequence[tuple[float, float]]) -> int:
    return sum(a4_equivalent(w, h) for w, h in sizes)


def dossier_date(code: str | None) -> str | None:
    """The date a dossier code was received (``…-YYMMDD-NNNN``) as YYYY-MM-DD, or None."""
    m = _DOSSIER_DATE.match(code or "")
    if m is None:
        return None
    try:
        return date(2000 + int(m[1]), int(m[2]), int(m[3])).isoformat()
    except ValueError:
        return None


def _text(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value if 0 < len(value) <= MAX_TEXT else None


def _year(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if 1800 <= value <= 2200 else None


def page_sizes(pdf: Path) -> list[tuple[float, float]] | None:
    """Every page's (width, height) in points, or None when the PDF cannot be read."""
    import pypdfium2 as pdfium  # here: every command imports the index, few read a PDF

    try:
        with _PDFIUM:
            document = pdfium.PdfDocument(pdf)
            try:
                return [document.get_page_size(i) for i in range(len(document))]
            finally:
                document.close()
    except (pdfium.PdfiumError, OSError, ValueError) as exc:
        log.warning(
            "page sizes unknown, pages counted as A4 doc=%s reason=%s",
            pdf.parent.name,
            type(exc).__name__,
        )
        return None


def catalogued(
    doc: StoredDocument, meta: Mapping[str, Any], sizes: Sequence[tuple[float, float]] | None
) -> StoredDocument:
    """``doc`` with the catalogue fields from its metadata and its page sizes."""
    decree30 = meta.get("decree30")
    decree30 = decree30 if isinstance(decree30, Mapping) else {}
    dossier = _text(meta.get("dossier_code"))
    return replace(
        doc,
        dossier_code=dossier,
        doc_type=_text(meta.get("doc_type")),
        owner_id=_text(meta.get("owner_id")),
        tthc_code=_text(meta.get("tthc_code")),
        issue_year=_year(meta.get("issue_year")),
        dossier_date=dossier_date(dossier),
        captured_at=_text(meta.get("captured_at")),
        title=_text(meta.get("title")) or _text(decree30.get("Subject")),
        a4_pages=a4_pages(sizes) if sizes else None,
    )


def dated(doc: StoredDocument) -> StoredDocument:
    """``doc`` with the date of its dossier code, for documents indexed without one."""
    return doc if doc.dossier_date else replace(doc, dossier_date=dossier_date(doc.dossier_code))


def catalogue_pdf(doc: StoredDocument, meta: Mapping[str, Any]) -> StoredDocument:
    """``catalogued`` with the page sizes read from the archived PDF at ``doc.path``."""
    return catalogued(doc, meta, page_sizes(Path(doc.path)))
