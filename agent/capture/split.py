"""Batch splitting and tagging: which pages make which document, and what each document is.

A pure decision over the signals found on each page (``agent.codes.Signal``):
separator and cover sheets end a document and are dropped; a cover sheet tags
what follows; a receipt's dossier code opens a dossier (and a new document when
it changes); an ID card sets the owner of its whole dossier. What the sheets
promise (pages, documents) is checked, and a mismatch is flagged, never
silently mended. Warnings are one line each, Vietnamese then English; pages are
counted from 1 in them, as an officer counts sheets; they carry no personal data.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from agent.capture.codes import CoverSheet, Signal


@dataclass(frozen=True)
class PageFacts:
    index: int  # 0-based input page index
    signals: tuple[Signal, ...]
    blank: bool = False


@dataclass(frozen=True)
class DocumentPlan:
    pages: tuple[int, ...]  # input page indexes kept, in order
    dossier_code: str | None
    owner_id: str | None
    doc_type: str | None
    tthc_code: str | None
    issue_year: int | None
    doc_code: str | None  # "<owner id>.<doc type>[.NN]"; None when either is unknown
    flags: tuple[str, ...]


@dataclass(frozen=True)
class BatchPlan:
    documents: tuple[DocumentPlan, ...]
    separators: tuple[int, ...]  # input pages dropped as separator/cover sheets
    dropped_blank: tuple[int, ...]
    warnings: tuple[str, ...]
    flags: tuple[str, ...]


@dataclass
class _Dossier:
    """Documents sharing one dossier: from a DOSSIER sheet or receipt code to the next."""

    code: str | None = None
    tthc: str | None = None
    expected_documents: int | None = None
    cover_page: int | None = None
    owner: str | None = None
    owner_conflict: bool = False
    documents: int = 0


@dataclass
class _Document:
    dossier: _Dossier
    cover: CoverSheet | None
    pages: list[int] = field(default_factory=list)
    blank_kept: int = 0
    blank_dropped: int = 0


@dataclass
class _Splitter:
    drop_blank: bool
    dossier: _Dossier = field(default_factory=_Dossier)
    current: _Document | None = None
    pending_cover: tuple[int, CoverSheet] | None = None
    pending_dropped: int = 0
    documents: list[_Document] = field(default_factory=list)
    dossiers: list[_Dossier] = field(default_factory=list)
    separators: list[int] = field(default_factory=list)
    dropped_blank: list[int] = field(default_factory=list)
    blank_kept: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    flags: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.dossiers.append(self.dossier)

    def warn(self, text: str, flag: str | None = None) -> None:
        if text not in self.warnings:
            self.warnings.append(text)
        if flag:
            self.flags.add(flag)

    def close(self) -> None:
        if self.current is not None and self.current.pages:
            self.documents.append(self.current)
        self.current = None

    def expect_nothing_pending(self) -> None:
        if self.pending_cover is not None:
            page = self.pending_cover[0] + 1
            self.warn(
                f"Trang {page}: sau phiếu bìa tài liệu không có trang nào"
                f" / page {page}: no pages follow this document cover sheet",
                "empty_document",
            )
        self.pending_cover = None

    def new_dossier(self, code: str | None, cover: CoverSheet | None, page: int | None) -> None:
        self.close()
        self.dossier = _Dossier(
            code=code,
            tthc=cover.tthc_code if cover else None,
            expected_documents=cover.documents if cover else None,
            cover_page=page,
        )
        self.dossiers.append(self.dossier)

    def sheet(self, facts: PageFacts) -> None:
        """A separator or cover sheet: ends the current document and is dropped."""
        self.separators.append(facts.index)
        self.close()
        self.pending_dropped = 0
        self.expect_nothing_pending()
        for signal in facts.signals:
            cover = signal.cover
            if signal.kind != "cover" or cover is None:
                continue
            if cover.kind == "DOSSIER":
                self.new_dossier(cover.dossier_code, cover, facts.index)
            elif cover.kind == "DOC":
                self.expect_nothing_pending()
                self.pending_cover = (facts.index, cover)

    def dossier_code(self, facts: PageFacts) -> None:
        codes = list(dict.fromkeys(s.dossier_code for s in facts.signals if s.dossier_code))
        if not codes:
            return
        if len(codes) > 1:
            page = facts.index + 1
            self.warn(
                f"Trang {page}: có nhiều mã hồ sơ khác nhau, dùng mã đầu tiên"
                f" / page {page}: several different dossier codes, the first is used",
                "dossier_conflict",
            )
        code = codes[0]
        if code == self.dossier.code:
            return
        started = self.dossier.documents or (self.current is not None and self.current.pages)
        if self.dossier.code is None and not started:
            self.dossier.code = code
        else:
            self.new_dossier(code, None, None)

    def owner(self, facts: PageFacts) -> None:
        for owner in dict.fromkeys(s.owner_id for s in facts.signals if s.owner_id):
            if self.dossier.owner is None:
                self.dossier.owner = owner
            elif owner != self.dossier.owner:
                self.dossier.owner_conflict = True
                page = facts.index + 1
                self.warn(
                    f"Trang {page}: số định danh khác với số đã đọc trong hồ sơ, giữ số đầu tiên"
                    f" / page {page}: owner ID differs from the one already read for this"
                    " dossier; the first is kept",
                    "owner_conflict",
                )

    def content(self, facts: PageFacts) -> None:
        self.dossier_code(facts)
        tagged = any(s.kind in ("dossier", "owner") for s in facts.signals)
        if facts.blank and not tagged and self.drop_blank:
            self.dropped_blank.append(facts.index)
            if self.current is None:
                self.pending_dropped += 1
            else:
                self.current.blank_dropped += 1
            return
        if self.current is None:
            cover = self.pending_cover[1] if self.pending_cover else None
            self.current = _Document(self.dossier, cover, blank_dropped=self.pending_dropped)
            self.pending_cover, self.pending_dropped = None, 0
            self.dossier.documents += 1
        self.current.pages.append(facts.index)
        if facts.blank and not tagged:
            self.current.blank_kept += 1
            self.blank_kept.append(facts.index)
        self.owner(facts)

    def page(self, facts: PageFacts) -> None:
        for signal in facts.signals:
            if signal.kind == "invalid":
                page = facts.index + 1
                self.warn(
                    f"Trang {page}: mã vạch không hợp lệ, đã bỏ qua"
                    f" / page {page}: barcode ignored: {signal.reason or 'invalid'}",
                    "invalid_code",
                )
        if any(s.kind in ("separator", "cover") for s in facts.signals):
            self.sheet(facts)
        else:
            self.content(facts)

    def finish(self) -> None:
        self.close()
        self.expect_nothing_pending()
        if self.dropped_blank:
            self.warn(_blank_line(self.dropped_blank, dropped=True))
        if self.blank_kept:
            self.warn(_blank_line(self.blank_kept, dropped=False))
        for dossier in self.dossiers:
            expected = dossier.expected_documents
            if expected is not None and expected != dossier.documents:
                page = (dossier.cover_page or 0) + 1
                self.warn(
                    f"Trang {page}: phiếu hồ sơ ghi {expected} tài liệu nhưng có"
                    f" {dossier.documents} / page {page}: dossier cover sheet says {expected}"
                    f" documents, {dossier.documents} found",
                    "document_count_mismatch",
                )


def _blank_line(pages: list[int], *, dropped: bool) -> str:
    numbers = ", ".join(str(p + 1) for p in pages)
    if dropped:
        return (
            f"Đã bỏ {len(pages)} trang trắng (trang {numbers})"
            f" / {len(pages)} blank pages dropped (pages {numbers})"
        )
    return (
        f"Có {len(pages)} trang trắng được giữ lại, cần kiểm tra (trang {numbers})"
        f" / {len(pages)} blank pages kept, please check (pages {numbers})"
    )


def _plan(doc: _Document, number: int, splitter: _Splitter) -> DocumentPlan:
    flags: list[str] = []
    cover = doc.cover
    if cover is not None and cover.pages is not None:
        content_pages = len(doc.pages) - doc.blank_kept
        if cover.pages not in (len(doc.pages), content_pages):
            flags.append("page_count_mismatch")
            splitter.warn(
                f"Tài liệu {number}: phiếu bìa ghi {cover.pages} trang nhưng có"
                f" {len(doc.pages)} trang / document {number}: cover sheet says"
                f" {cover.pages} pages, {len(doc.pages)} scanned",
                "page_count_mismatch",
            )
    if doc.blank_kept:
        flags.append("blank_pages")
    if doc.blank_dropped:
        flags.append("blank_pages_dropped")
    if doc.dossier.owner_conflict:
        flags.append("owner_conflict")
    doc_type = cover.doc_type if cover else None
    if doc.dossier.code is None and doc.dossier.owner is None and doc_type is None:
        flags.append("untagged")
    return DocumentPlan(
        pages=tuple(doc.pages),
        dossier_code=doc.dossier.code,
        owner_id=doc.dossier.owner,
        doc_type=doc_type,
        tthc_code=doc.dossier.tthc,
        issue_year=cover.issue_year if cover else None,
        doc_code=None,
        flags=tuple(flags),
    )


def number_doc_codes(documents: Sequence[DocumentPlan]) -> tuple[DocumentPlan, ...]:
    """``<owner id>.<doc type>``, with ``.01``, ``.02``... where an owner has several of a type."""
    keys = [(d.owner_id, d.doc_type) for d in documents]
    totals = Counter(k for k in keys if k[0] and k[1])
    seen: Counter[tuple[str | None, str | None]] = Counter()
    out = []
    for doc, key in zip(documents, keys, strict=True):
        code = None
        if key in totals:
            code = f"{key[0]}.{key[1]}"
            if totals[key] > 1:
                seen[key] += 1
                code += f".{seen[key]:02d}"
        out.append(replace(doc, doc_code=code))
    return tuple(out)


def split_batch(pages: Sequence[PageFacts], *, drop_blank: bool = False) -> BatchPlan:
    """Split one batch into documents and tag them from the pages' signals."""
    splitter = _Splitter(drop_blank=drop_blank)
    for facts in pages:
        splitter.page(facts)
    splitter.finish()
    plans = [_plan(doc, n, splitter) for n, doc in enumerate(splitter.documents, start=1)]
    return BatchPlan(
        documents=number_doc_codes(plans),
        separators=tuple(splitter.separators),
        dropped_blank=tuple(splitter.dropped_blank),
        warnings=tuple(splitter.warnings),
        flags=tuple(sorted(splitter.flags)),
    )
