"""Splitting and tagging a batch: which pages make which document, and what it is tagged with."""

from __future__ import annotations

import pytest

from agent.capture.codes import CoverSheet, Signal
from agent.capture.split import BatchPlan, DocumentPlan, PageFacts, split_batch

A = "000.00.20.H56-230512-0003"
B = "000.00.20.H56-230512-0004"
OWNER = "001090012345"
OTHER_OWNER = "079301004321"
BIRTH = "KQ.G15.000031"
FORM = "TK.G15.000001"


def page(i: int, *signals: Signal, blank: bool = False) -> PageFacts:
    return PageFacts(i, tuple(signals), blank)


def sep(i: int) -> PageFacts:
    return page(i, Signal("separator", i))


def doc_sheet(i: int, doc_type: str, pages: int | None = None, year: int | None = None):
    cover = CoverSheet("DOC", doc_type=doc_type, pages=pages, issue_year=year)
    return page(i, Signal("cover", i, cover=cover))


def dossier_sheet(i: int, code: str, tthc: str, documents: int | None = None) -> PageFacts:
    cover = CoverSheet("DOSSIER", dossier_code=code, tthc_code=tthc, documents=documents)
    return page(i, Signal("cover", i, dossier_code=code, cover=cover))


def receipt(i: int, code: str) -> PageFacts:
    return page(i, Signal("dossier", i, dossier_code=code))


def card(i: int, owner: str) -> PageFacts:
    return page(i, Signal("owner", i, owner_id=owner))


def doc(
    pages: tuple[int, ...],
    *,
    dossier: str | None = None,
    owner: str | None = None,
    doc_type: str | None = None,
    tthc: str | None = None,
    year: int | None = None,
    doc_code: str | None = None,
    flags: tuple[str, ...] = (),
) -> DocumentPlan:
    return DocumentPlan(pages, dossier, owner, doc_type, tthc, year, doc_code, flags)


def batch(*documents, separators=(), dropped_blank=(), warnings=(), flags=()) -> BatchPlan:
    return BatchPlan(tuple(documents), tuple(separators), tuple(dropped_blank), warnings, flags)


CASES = {
    "no barcodes: one untagged document": (
        [page(0), page(1), page(2)],
        batch(doc((0, 1, 2), flags=("untagged",))),
    ),
    "separator ends a document and is dropped": (
        [page(0), sep(1), page(2)],
        batch(doc((0,), flags=("untagged",)), doc((2,), flags=("untagged",)), separators=(1,)),
    ),
    "separators in a row, first or last never give an empty document": (
        [sep(0), page(1), sep(2), sep(3), page(4), sep(5)],
        batch(
            doc((1,), flags=("untagged",)),
            doc((4,), flags=("untagged",)),
            separators=(0, 2, 3, 5),
        ),
    ),
    "DOC cover tags the next document with type, pages and year": (
        [doc_sheet(0, BIRTH, 2, 2019), page(1), page(2), doc_sheet(3, FORM), page(4)],
        batch(
            doc((1, 2), doc_type=BIRTH, year=2019),
            doc((4,), doc_type=FORM),
            separators=(0, 3),
        ),
    ),
    "fewer pages than the DOC cover promises is flagged, not merged": (
        [doc_sheet(0, BIRTH, 3), page(1), page(2), sep(3), page(4)],
        batch(
            doc((1, 2), doc_type=BIRTH, flags=("page_count_mismatch",)),
            doc((4,), flags=("untagged",)),
            separators=(0, 3),
            warnings=(
                "Tài liệu 1: phiếu bìa ghi 3 trang nhưng có 2 trang"
                " / document 1: cover sheet says 3 pages, 2 scanned",
            ),
            flags=("page_count_mismatch",),
        ),
    ),
    "DOSSIER cover sets dossier and procedure for all its documents": (
        [
            dossier_sheet(0, A, "1.001612", 2),
            doc_sheet(1, FORM),
            page(2),
            doc_sheet(3, BIRTH),
            page(4),
        ],
        batch(
            doc((2,), dossier=A, doc_type=FORM, tthc="1.001612"),
            doc((4,), dossier=A, doc_type=BIRTH, tthc="1.001612"),
            separators=(0, 1, 3),
        ),
    ),
    "fewer documents than the DOSSIER cover promises flags the batch": (
        [dossier_sheet(0, A, "1.001612", 3), page(1), sep(2), page(3)],
        batch(
            doc((1,), dossier=A, tthc="1.001612"),
            doc((3,), dossier=A, tthc="1.001612"),
            separators=(0, 2),
            warnings=(
                "Trang 1: phiếu hồ sơ ghi 3 tài liệu nhưng có 2"
                " / page 1: dossier cover sheet says 3 documents, 2 found",
            ),
            flags=("document_count_mismatch",),
        ),
    ),
    "a receipt with a new dossier code starts a new document and is kept": (
        [receipt(0, A), page(1), receipt(2, B), page(3)],
        batch(doc((0, 1), dossier=A), doc((2, 3), dossier=B)),
    ),
    "a receipt repeating the current dossier code does not split": (
        [dossier_sheet(0, A, "1.001612"), receipt(1, A), page(2), receipt(3, A)],
        batch(doc((1, 2, 3), dossier=A, tthc="1.001612"), separators=(0,)),
    ),
    "a receipt after untagged pages starts its own document": (
        [page(0), receipt(1, A), page(2)],
        batch(doc((0,), flags=("untagged",)), doc((1, 2), dossier=A)),
    ),
    "an ID card sets the owner of its whole dossier, before and after it": (
        [receipt(0, A), page(1), sep(2), card(3, OWNER), sep(4), page(5), receipt(6, B), page(7)],
        batch(
            doc((0, 1), dossier=A, owner=OWNER),
            doc((3,), dossier=A, owner=OWNER),
            doc((5,), dossier=A, owner=OWNER),
            doc((6, 7), dossier=B),
            separators=(2, 4),
        ),
    ),
    "a second, different ID card in a dossier keeps the first and warns": (
        [receipt(0, A), card(1, OWNER), card(2, OTHER_OWNER)],
        batch(
            doc((0, 1, 2), dossier=A, owner=OWNER, flags=("owner_conflict",)),
            warnings=(
                "Trang 3: số định danh khác với số đã đọc trong hồ sơ, giữ số đầu tiên"
                " / page 3: owner ID differs from the one already read for this dossier;"
                " the first is kept",
            ),
            flags=("owner_conflict",),
        ),
    ),
    "an invalid code is reported and not used": (
        [
            receipt(0, A),
            page(1, Signal("invalid", 1, reason="dossier code's date part is not a real date")),
        ],
        batch(
            doc((0, 1), dossier=A),
            warnings=(
                "Trang 2: mã vạch không hợp lệ, đã bỏ qua / page 2: barcode ignored:"
                " dossier code's date part is not a real date",
            ),
            flags=("invalid_code",),
        ),
    ),
    "blank pages are kept and flagged by default": (
        [page(0), page(1, blank=True), page(2)],
        batch(
            doc((0, 1, 2), flags=("blank_pages", "untagged")),
            warnings=(
                "Có 1 trang trắng được giữ lại, cần kiểm tra (trang 2)"
                " / 1 blank pages kept, please check (pages 2)",
            ),
        ),
    ),
    "owner and type give the document code, numbered where an owner has several": (
        [
            card(0, OWNER),
            doc_sheet(1, BIRTH),
            page(2),
            doc_sheet(3, BIRTH),
            page(4),
            doc_sheet(5, FORM),
            page(6),
        ],
        batch(
            doc((0,), owner=OWNER),
            doc((2,), owner=OWNER, doc_type=BIRTH, doc_code=f"{OWNER}.{BIRTH}.01"),
            doc((4,), owner=OWNER, doc_type=BIRTH, doc_code=f"{OWNER}.{BIRTH}.02"),
            doc((6,), owner=OWNER, doc_type=FORM, doc_code=f"{OWNER}.{FORM}"),
            separators=(1, 3, 5),
        ),
    ),
    "a DOC cover with no pages after it is reported": (
        [page(0), doc_sheet(1, BIRTH), sep(2), page(3)],
        batch(
            doc((0,), flags=("untagged",)),
            doc((3,), flags=("untagged",)),
            separators=(1, 2),
            warnings=(
                "Trang 2: sau phiếu bìa tài liệu không có trang nào"
                " / page 2: no pages follow this document cover sheet",
            ),
            flags=("empty_document",),
        ),
    ),
    "a sheet and a code on one page: the sheet wins and the page is dropped": (
        [page(0), page(1, Signal("other", 1), Signal("separator", 1)), page(2)],
        batch(doc((0,), flags=("untagged",)), doc((2,), flags=("untagged",)), separators=(1,)),
    ),
    "empty batch": ([], batch()),
}


@pytest.mark.parametrize("pages,expected", CASES.values(), ids=CASES.keys())
def test_split_batch(pages, expected):
    assert split_batch(pages) == expected


DROP_CASES = {
    "blank pages are dropped and flagged on their document": (
        [page(0), page(1, blank=True), page(2), sep(3), page(4, blank=True), page(5)],
        batch(
            doc((0, 2), flags=("blank_pages_dropped", "untagged")),
            doc((5,), flags=("blank_pages_dropped", "untagged")),
            separators=(3,),
            dropped_blank=(1, 4),
            warnings=("Đã bỏ 2 trang trắng (trang 2, 5) / 2 blank pages dropped (pages 2, 5)",),
        ),
    ),
    "a blank page counts neither for nor against a DOC cover's pages": (
        [doc_sheet(0, BIRTH, 2), page(1), page(2, blank=True), page(3)],
        batch(
            doc((1, 3), doc_type=BIRTH, flags=("blank_pages_dropped",)),
            separators=(0,),
            dropped_blank=(2,),
            warnings=("Đã bỏ 1 trang trắng (trang 3) / 1 blank pages dropped (pages 3)",),
        ),
    ),
    "a blank-only stretch between separators gives no document": (
        [page(0), sep(1), page(2, blank=True), sep(3), page(4)],
        batch(
            doc((0,), flags=("untagged",)),
            doc((4,), flags=("untagged",)),
            separators=(1, 3),
            dropped_blank=(2,),
            warnings=("Đã bỏ 1 trang trắng (trang 3) / 1 blank pages dropped (pages 3)",),
        ),
    ),
    "a blank page carrying an ID card is kept": (
        [receipt(0, A), page(1, Signal("owner", 1, owner_id=OWNER), blank=True)],
        batch(doc((0, 1), dossier=A, owner=OWNER)),
    ),
}


@pytest.mark.parametrize("pages,expected", DROP_CASES.values(), ids=DROP_CASES.keys())
def test_split_batch_dropping_blank_pages(pages, expected):
    assert split_batch(pages, drop_blank=True) == expected


def test_blank_page_keeps_the_cover_page_count_satisfied_when_kept():
    plan = split_batch([doc_sheet(0, BIRTH, 2), page(1), page(2, blank=True), page(3)])
    assert plan.documents == (doc((1, 2, 3), doc_type=BIRTH, flags=("blank_pages",)),)
