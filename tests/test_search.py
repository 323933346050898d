"""Search finds stored documents by dossier code, owner id, procedure, type, date and by
words with or without diacritics, the same on SQLite (FTS5) and PostgreSQL (full text);
an index written before search existed is migrated and searchable.

Backend tests run against both: the SQLite file in a temporary archive and a fresh
database in a private PostgreSQL cluster (``tests/support/postgres.py``).
"""

from __future__ import annotations

import sqlite3
import unicodedata
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest

from sync.errors import QueryError, WarehouseIndexError
from sync.warehouse.index import DocumentIndex, StoredDocument, open_index
from sync.warehouse.records import Counts, Tally
from sync.warehouse.search import with_snippets
from sync.warehouse.searchtext import chunks, fold, query_phrase, text_snippet, tokens

BASE = StoredDocument(
    doc_id="doc-a",
    device="dev-s-01",
    ciphertext_sha256="c" * 64,
    stored_at="2024-05-13T02:00:00Z",
    bytes=1000,
    pages=2,
    pdf_sha256="p" * 64,
    path="/archive/docs/dev-s-01/doc-a/document.pdf",
)
A = replace(
    BASE,
    dossier_code="000.00.20.H56-230512-0003",
    doc_type="KQ.G15.000031",
    owner_id="001090012345",
    tthc_code="1.001612",
    issue_year=2019,
    dossier_date="2023-05-12",
)
B = replace(
    BASE,
    doc_id="doc-b",
    dossier_code="000.00.20.H56-230512-0004",
    doc_type="KQ.G15.000041",
    owner_id="079203004567",
    tthc_code="1.004227.000.00.00.H56",
    dossier_date="2023-05-12",
)
C = replace(BASE, doc_id="doc-c", stored_at="2024-06-02T03:00:00Z")
TEXTS = {
    "doc-a": "ỦY BAN NHÂN DÂN XÃ AN BÌNH\nGiấy chứng nhận đăng ký hộ kinh doanh\nsố 12/2023",
    "doc-b": "Trích lục khai sinh của Đỗ Thị Hồng, sinh ngày 01 tháng 02 năm 2003",
    # decomposed (NFD), as some OCR engines write it
    "doc-c": unicodedata.normalize("NFD", "Quyết định cấp giấy phép kinh doanh vận tải"),
}


@pytest.fixture(params=["sqlite", "postgresql"])
def spec(request: pytest.FixtureRequest) -> str:
    """``[warehouse] index`` for each backend: "sqlite", or a fresh database's URL."""
    return "sqlite" if request.param == "sqlite" else str(request.getfixturevalue("postgres_db"))


@pytest.fixture
def index(spec: str, tmp_path: Path) -> Iterator[DocumentIndex]:
    """An index holding A, B and C, each with its text."""
    opened = open_index(spec, tmp_path / "archive")
    for doc in (A, B, C):
        opened.add(doc)
        opened.set_text(doc.device, doc.doc_id, TEXTS[doc.doc_id])
    yield opened
    opened.close()


def found(index: DocumentIndex, query: str) -> set[str]:
    return {h.doc.doc_id for h in index.search(query)}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("000.00.20.H56-230512-0003", {"doc-a"}),  # the exact code, not its neighbour
        ("000.00.20.H56-230512-0004", {"doc-b"}),
        ("230512-0003", {"doc-a"}),  # the end of a code
        ("001090012345", {"doc-a"}),  # owner id
        ("079203004567", {"doc-b"}),
        ("001090012345.KQ.G15.000031", {"doc-a"}),  # digitized document code
        ("1.001612", {"doc-a"}),  # procedure
        ("1.004227", {"doc-b"}),  # national part of a provincial copy
        ("KQ.G15.000041", {"doc-b"}),  # document type
        ("12/05/2023", {"doc-a", "doc-b"}),  # the date in their dossier codes
        ("2023-05-12", {"doc-a", "doc-b"}),
        ("2019", {"doc-a"}),  # issue year
        ("02/06/2024", {"doc-c"}),  # the day it was stored
        ("ho kinh doanh", {"doc-a"}),  # without diacritics
        ("hộ kinh doanh", {"doc-a"}),  # with them
        ("HỘ KINH DOANH", {"doc-a"}),
        ("kinh doanh", {"doc-a", "doc-c"}),
        ("do thi hong", {"doc-b"}),  # đ folds to d
        ("Đỗ Thị Hồng", {"doc-b"}),
        ("quyết định cấp giấy phép", {"doc-c"}),  # NFD text, NFC query
        ("uy ban nhan dan xa an binh", {"doc-a"}),
        ("ho so kinh doanh", set()),  # the words, but not as a phrase
        ("000.00.20.H56-230512-0005", set()),
    ],
)
def test_search_finds_documents_by_code_owner_and_words(
    index: DocumentIndex, query: str, expected: set[str]
) -> None:
    assert found(index, query) == expected


def test_a_hit_shows_the_text_where_it_matched_as_written(index: DocumentIndex) -> None:
    (hit,) = with_snippets("ho kinh doanh", index.search("ho kinh doanh"))
    assert hit.doc == A
    assert hit.snippet == (
        "ỦY BAN NHÂN DÂN XÃ AN BÌNH Giấy chứng nhận đăng ký hộ kinh doanh số 12/2023"
    )


def test_a_hit_on_metadata_names_the_field(index: DocumentIndex) -> None:
    (hit,) = with_snippets("079203004567", index.search("079203004567"))
    assert hit.to_json() == {
        "doc_id": "doc-b",
        "device": "dev-s-01",
        "dossier_code": "000.00.20.H56-230512-0004",
        "doc_type": "KQ.G15.000041",
        "tthc_code": "1.004227.000.00.00.H56",
        "stored_at": "2024-05-13T02:00:00Z",
        "pages": 2,
        "path": "/archive/docs/dev-s-01/doc-a/document.pdf",
        "snippet": "chủ hồ sơ: 079203004567",
    }


def test_new_text_replaces_the_old_one(index: DocumentIndex) -> None:
    index.set_text(A.device, A.doc_id, "Giấy phép xây dựng nhà ở riêng lẻ")
    assert found(index, "ho kinh doanh") == set()
    assert found(index, "giay phep xay dung") == {"doc-a"}
    assert found(index, "001090012345") == {"doc-a"}  # the metadata stays searchable


def test_a_phrase_deep_in_a_long_text_is_found(index: DocumentIndex) -> None:
    """PostgreSQL keeps word positions only up to 16,383: long texts are split in parts."""
    filler = " ".join(f"trang{n % 97} dòng" for n in range(12_000))
    index.set_text(C.device, C.doc_id, f"{filler} xác nhận tình trạng hôn nhân {filler}")
    assert found(index, "xac nhan tinh trang hon nhan") == {"doc-c"}


def test_text_for_a_document_the_index_does_not_hold_is_refused(index: DocumentIndex) -> None:
    with pytest.raises(WarehouseIndexError, match="doc-zz from dev-s-01 is not in the"):
        index.set_text("dev-s-01", "doc-zz", "văn bản")


@pytest.mark.parametrize("query", ["", "   ", "...", "— / —"])
def test_a_search_without_words_is_one_clear_error(index: DocumentIndex, query: str) -> None:
    with pytest.raises(QueryError, match="has no letters or digits"):
        index.search(query)


def test_the_limit_caps_the_hits(index: DocumentIndex) -> None:
    assert len(index.search("dev-s-01", limit=2)) == 2
    assert len(index.search("dev-s-01")) == 3


# -- an index written by an earlier version -------------------------------------------------

OLD_SCHEMA = (
    "CREATE TABLE documents (doc_id TEXT NOT NULL, device TEXT NOT NULL,"
    " ciphertext_sha256 TEXT NOT NULL, stored_at TEXT NOT NULL, bytes {big} NOT NULL,"
    " pages INTEGER NOT NULL, pdf_sha256 TEXT NOT NULL, path TEXT NOT NULL,"
    " dossier_code TEXT, doc_type TEXT, PRIMARY KEY (device, doc_id))"
)
OLD_ROW = (
    *("old-1", "dev-s-01", "c" * 64, "2023-01-05T01:00:00Z", 10, 3, "p" * 64, "/a/x.pdf"),
    *("000.00.20.H56-211230-0007", "KQ.G15.000031"),
)


OLD_INSERT = (
    "INSERT INTO documents (doc_id, device, ciphertext_sha256, stored_at, bytes, pages,"
    " pdf_sha256, path, dossier_code, doc_type) VALUES ({marks})"
)


def write_old_index(spec: str, archive: Path, *, schema: bool = True) -> None:
    """What an earlier version wrote: its table (``schema``) and one row, as it added rows."""
    if spec == "sqlite":
        archive.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(archive / "index.db") as conn:
            if schema:
                conn.execute(OLD_SCHEMA.format(big="INTEGER"))
            conn.execute(OLD_INSERT.format(marks=",".join("?" * 10)), OLD_ROW)
        return
    with psycopg.connect(spec, autocommit=True) as conn:
        if schema:
            conn.execute(OLD_SCHEMA.format(big="BIGINT"))
        conn.execute(OLD_INSERT.format(marks=",".join(["%s"] * 10)).encode(), OLD_ROW)


def test_an_index_from_before_search_is_migrated_and_searchable(spec: str, tmp_path: Path) -> None:
    write_old_index(spec, tmp_path / "archive")
    for _ in range(2):  # the second opening finds nothing left to do
        index = open_index(spec, tmp_path / "archive")
        assert index.get("dev-s-01", "old-1") == StoredDocument(*OLD_ROW, dossier_date="2021-12-30")
        assert found(index, "000.00.20.H56-211230-0007") == {"old-1"}
        assert index.tally() == Tally(
            procedures=((None, "2016-2021", Counts(1, 3, 3)),),  # A4 pages unknown: as pages
            devices=(("dev-s-01", Counts(1, 3, 3)),),
        )
        index.close()
    index = open_index(spec, tmp_path / "archive")
    assert index.add(A) is True
    index.set_text(A.device, A.doc_id, TEXTS["doc-a"])
    assert found(index, "ho kinh doanh") == {"doc-a"}
    index.close()


# -- the folding, by itself -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "folded"),
    [
        ("Hộ kinh doanh", "ho kinh doanh"),
        ("ĐĂNG KÝ KẾT HÔN", "dang ky ket hon"),
        ("Đỗ Thị Hồng Ngọc", "do thi hong ngoc"),
        (unicodedata.normalize("NFD", "Nguyễn Văn Ửng"), "nguyen van ung"),
        ("Ðinh (eth, as OCR reads Đ)", "dinh (eth, as ocr reads d)"),
    ],
)
def test_folding_drops_diacritics_and_case(text: str, folded: str) -> None:
    assert fold(text) == folded


def test_a_code_becomes_its_tokens_in_order() -> None:
    assert tokens("000.00.20.H56-230512-0003") == ["000", "00", "20", "h56", "230512", "0003"]
    assert query_phrase("  Hộ  kinh—doanh! ") == ["ho", "kinh", "doanh"]


def test_every_short_phrase_is_whole_in_some_chunk() -> None:
    words = [f"w{n}" for n in range(50)]
    parts = list(chunks(words, size=10, overlap=3))
    assert parts[0][0] == "w0" and parts[-1][-1] == "w49"
    for start in range(len(words) - 3):
        phrase = words[start : start + 4]
        assert any(phrase == part[i : i + 4] for part in parts for i in range(len(part))), phrase


def test_a_snippet_of_decomposed_text_is_shown_composed() -> None:
    text = unicodedata.normalize("NFD", "Đăng ký hộ kinh doanh")
    assert text_snippet(text, ["ho", "kinh"]) == "Đăng ký hộ kinh doanh"
    assert text_snippet(text, ["kinh", "ho"]) is None


def test_a_document_an_older_worker_stored_during_an_upgrade_is_found_later(
    spec: str, tmp_path: Path
) -> None:
    open_index(spec, tmp_path / "archive").close()  # the new version migrated the index
    write_old_index(spec, tmp_path / "archive", schema=False)  # an old worker still runs
    index = open_index(spec, tmp_path / "archive")
    assert found(index, "211230-0007") == {"old-1"}
    index.close()
