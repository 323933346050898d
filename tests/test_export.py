"""The export for the one-stop system: each dossier as OpenCPS's DongBoHoSoMC JSON, its
digitized documents as TaiLieuNop attachments pointing at the archived files, in the
order they were captured, from either backend."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from sync.warehouse.export import (
    archive_link,
    dossier_record,
    export_file_name,
    national_code,
    sync_body,
)
from sync.warehouse.index import DocumentIndex, StoredDocument, open_index

CODE = "000.00.20.H56-230512-0003"
FIRST = StoredDocument(
    doc_id="d20240510T023000aa",
    device="dev-x-01",
    ciphertext_sha256="c" * 64,
    stored_at="2024-05-10T03:00:00Z",
    bytes=1000,
    pages=2,
    pdf_sha256="p" * 64,
    path="/srv/sohoa/archive/docs/dev-x-01/d20240510T023000aa/document.pdf",
    dossier_code=CODE,
    doc_type="KQ.G15.000031",
    tthc_code="1.001612.000.00.00.H56",
    captured_at="2024-05-10T02:30:00Z",
)
# captured second, stored first, with an id that sorts first: capture order wins
SECOND = replace(
    FIRST,
    doc_id="d20240510T023100zz",
    path="/srv/sohoa/archive/docs/dev-x-01/d20240510T023100zz/document.pdf",
    doc_type=None,
    captured_at="2024-05-10T02:31:00Z",
    stored_at="2024-05-10T02:59:00Z",
)
OTHER = replace(FIRST, doc_id="d-other", dossier_code="000.00.20.H56-230512-0004")


def test_a_dossier_is_exported_in_the_shape_opencps_sends_to_the_portal() -> None:
    link = archive_link(Path("/srv/sohoa/archive"), "https://kho.example.gov.vn/luu-tru/")
    assert sync_body([dossier_record(CODE, [FIRST, SECOND], link)]) == {
        "isUpdating": True,
        "service": "DongBoHoSoMC",
        "data": [
            {
                "MaHoSo": CODE,
                "MaTTHC": "1.001612",
                "TaiLieuNop": [
                    {
                        "TepDinhKemId": "d20240510T023000aa",
                        "TenTepDinhKem": f"{CODE}.01.pdf",
                        "IsDeleted": "False",
                        "MaThanhPhanHoSo": "KQ.G15.000031",
                        "DuongDanTaiTepTin": "https://kho.example.gov.vn/luu-tru/docs/dev-x-01/d20240510T023000aa/document.pdf",
                        "DuocSoHoa": "1",
                    },
                    {
                        "TepDinhKemId": "d20240510T023100zz",
                        "TenTepDinhKem": f"{CODE}.02.pdf",
                        "IsDeleted": "False",
                        "MaThanhPhanHoSo": "",
                        "DuongDanTaiTepTin": "https://kho.example.gov.vn/luu-tru/docs/dev-x-01/d20240510T023100zz/document.pdf",
                        "DuocSoHoa": "1",
                    },
                ],
            }
        ],
    }


def test_without_a_base_url_an_attachment_points_at_the_archived_file() -> None:
    link = archive_link(Path("/srv/sohoa/archive"), None)
    assert link(FIRST) == "file://" + FIRST.path


def test_a_file_outside_the_archive_keeps_its_place_in_one() -> None:
    moved = replace(FIRST, path="/mnt/old/x y/document.pdf")
    link = archive_link(Path("/srv/sohoa/archive"), "https://kho.example.gov.vn")
    assert link(moved) == "https://kho.example.gov.vn/docs/dev-x-01/d20240510T023000aa/document.pdf"


@pytest.mark.parametrize(
    ("tthc", "national"),
    [
        ("1.001612", "1.001612"),
        ("1.001612.000.00.00.H56", "1.001612"),
        ("2.000889", "2.000889"),
        ("KQ.G15", None),
        (None, None),
    ],
)
def test_the_portal_gets_the_national_procedure_code(
    tthc: str | None, national: str | None
) -> None:
    assert national_code(tthc) == national


@pytest.mark.parametrize(
    ("code", "name"),
    [
        (CODE, f"{CODE}.json"),
        ("../../etc/passwd", "_.._etc_passwd.json"),
        ("a b/c", "a_b_c.json"),
    ],
)
def test_an_export_file_is_named_for_its_dossier_and_stays_in_its_folder(
    code: str, name: str
) -> None:
    assert export_file_name(code) == name
    assert "/" not in export_file_name(code)


@pytest.fixture(params=["sqlite", "postgresql"])
def index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DocumentIndex]:
    spec = "sqlite" if request.param == "sqlite" else str(request.getfixturevalue("postgres_db"))
    opened = open_index(spec, tmp_path / "archive")
    for doc in (SECOND, OTHER, FIRST):
        opened.add(doc)
    yield opened
    opened.close()


def test_the_index_gives_a_dossier_in_capture_order(index: DocumentIndex) -> None:
    assert index.dossier(CODE) == [FIRST, SECOND]
    assert index.dossier("000.00.20.H56-999999-0001") == []
    assert index.dossier_codes() == [CODE, "000.00.20.H56-230512-0004"]
