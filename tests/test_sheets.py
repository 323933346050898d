"""Printed cover sheets: what `sohoa sheets` prints is what the scanner reads back."""

from __future__ import annotations

import io

import pypdfium2 as pdfium
import pytest

from agent.capture.codes import CoverSheet, parse_cover_sheet
from agent.capture.sheets import cover_sheet_text, render_sheet, write_sheets_pdf
from agent.errors import CodeError
from device.barcodes import Barcode, ZbarReader

DOSSIER = "000.00.20.H56-230512-0003"

SHEETS = [
    ("SEP", {}, "TRANG PHÂN CÁCH", ["Separator sheet"], CoverSheet("SEP")),
    (
        "DOC",
        {"T": "KQ.G15.000031", "P": 3, "Y": 2019},
        "TÀI LIỆU TIẾP THEO",
        ["Loại: KQ.G15.000031", "Giấy khai sinh — 3 trang, năm 2019"],
        CoverSheet("DOC", doc_type="KQ.G15.000031", pages=3, issue_year=2019),
    ),
    (
        "DOSSIER",
        {"dossier_code": DOSSIER, "tthc_code": "1.001612.000.00.00.H56", "documents": 4},
        "HỒ SƠ",
        [f"Mã hồ sơ: {DOSSIER}", "Thủ tục: Đăng ký khai sinh"],
        CoverSheet(
            "DOSSIER", dossier_code=DOSSIER, tthc_code="1.001612.000.00.00.H56", documents=4
        ),
    ),
]


def test_printed_sheets_read_back_as_the_same_cover_sheets():
    texts = [cover_sheet_text(kind, **fields) for kind, fields, *_ in SHEETS]
    images = [
        render_sheet(t, title, lines)
        for t, (_, _, title, lines, _) in zip(texts, SHEETS, strict=True)
    ]
    pdf = io.BytesIO()
    write_sheets_pdf(images, pdf)
    doc = pdfium.PdfDocument(pdf.getvalue())
    reader = ZbarReader(fallback=None)
    read = [reader.read(page.render(scale=300 / 72).to_pil(), n) for n, page in enumerate(doc)]
    assert len(doc) == len(SHEETS)
    assert width_and_height_mm(doc[0]) == (210, 297)
    doc.close()
    assert read == [(Barcode(n, "QRCODE", t),) for n, t in enumerate(texts)]
    assert [parse_cover_sheet(t) for t in texts] == [expected for *_, expected in SHEETS]


def width_and_height_mm(page: pdfium.PdfPage) -> tuple[int, int]:
    width, height = page.get_size()
    return round(width / 72 * 25.4), round(height / 72 * 25.4)


@pytest.mark.parametrize(
    "kind,fields,expected",
    [
        ("SEP", {}, "SOHOA:1;K=SEP"),
        ("doc", {"Y": 2019, "T": "KQ.G15.000031"}, "SOHOA:1;K=DOC;T=KQ.G15.000031;Y=2019"),
        ("DOC", {"doc_type": "KQ.G15.000031", "pages": None}, "SOHOA:1;K=DOC;T=KQ.G15.000031"),
        (
            "DOSSIER",
            {"N": 2, "TT": "1.001612", "H": DOSSIER},
            f"SOHOA:1;K=DOSSIER;H={DOSSIER};TT=1.001612;N=2",
        ),
    ],
)
def test_cover_sheet_text_in_canonical_order(kind, fields, expected):
    assert cover_sheet_text(kind, **fields) == expected


@pytest.mark.parametrize(
    "kind,fields,reason",
    [
        ("DOC", {}, "needs T="),
        ("DOC", {"T": "KQ.G15.000031", "P": 0}, "page count P"),
        ("DOSSIER", {"H": "000.00.20.H56-230230-0001", "TT": "1.001612"}, "not a real date"),
        ("SEP", {"colour": "red"}, "no field colour"),
        ("BOX", {}, "kind K is not one of"),
    ],
)
def test_a_sheet_the_scanner_would_reject_is_never_printed(kind, fields, reason):
    with pytest.raises(CodeError, match=reason):
        cover_sheet_text(kind, **fields)


def test_writing_no_sheets_is_an_error():
    with pytest.raises(CodeError, match="no sheets"):
        write_sheets_pdf([], io.BytesIO())
