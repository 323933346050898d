"""Code texts: what the parsers accept, what they refuse and why; what a barcode means."""

from __future__ import annotations

from datetime import date

import pytest

from agent.capture.codes import (
    CitizenCard,
    CoverSheet,
    DossierCode,
    Signal,
    interpret,
    parse_cccd_qr,
    parse_cover_sheet,
    parse_dossier_code,
    parse_id_number,
    parse_lookup_url,
    parse_procedure_code,
    parse_tax_code,
)
from agent.errors import CodeError
from device.barcodes import Barcode

DOSSIER = "000.00.20.H56-230512-0003"
ID = "001090012345"  # Hà Nội, male, born 1990
ID_F = "079301004321"  # Hồ Chí Minh City, female, born 2001


@pytest.mark.parametrize(
    "text,expected",
    [
        (DOSSIER, DossierCode(DOSSIER, "000.00.20.H56", date(2023, 5, 12), 3)),
        (
            " 001.02.03.A99-240229-9999 ",
            DossierCode("001.02.03.A99-240229-9999", "001.02.03.A99", date(2024, 2, 29), 9999),
        ),
    ],
)
def test_dossier_code_is_split_into_agency_date_and_sequence(text, expected):
    assert parse_dossier_code(text) == expected


@pytest.mark.parametrize(
    "text,reason",
    [
        ("000.00.20.H56-230230-0003", "not a real date"),
        ("000.00.20.H56-230229-0003", "not a real date"),
        ("000.00.20.H56-231301-0003", "not a real date"),
        ("000.00.20.H56-2305-0003", "not 6 digits"),
        ("00.00.20.H56-230512-0003", "agency part"),
        ("000.00.20.56H-230512-0003", "agency part"),
        ("000.00.20.h56-230512-0003", "agency part"),
        ("000-00-20-H56-230512-0003", "is not <agency>"),
        ("000.00.20.H56-230512-0000", "sequence"),
        ("000.00.20.H56-230512-03", "sequence"),
        ("000.00.20.H56-230512", "is not <agency>"),
        ("", "is not <agency>"),
    ],
)
def test_malformed_dossier_code_is_refused_with_the_reason(text, reason):
    with pytest.raises(CodeError, match=reason) as exc:
        parse_dossier_code(text)
    assert text.strip() == "" or text not in exc.value.message


@pytest.mark.parametrize(
    "text,ok",
    [
        ("1.001612", True),
        ("2.000123", True),
        ("1.001612.000.00.00.H56", True),
        (" 1.001612 ", True),
        ("1.00161", False),
        ("1001612", False),
        ("1.001612.000.00.H56", False),
        ("1.001612.000.00.00.56", False),
        ("1.001612-H56", False),
    ],
)
def test_procedure_codes_national_and_provincial(text, ok):
    if ok:
        assert parse_procedure_code(text) == text.strip()
    else:
        with pytest.raises(CodeError, match="procedure code is not"):
            parse_procedure_code(text)


@pytest.mark.parametrize(
    "text,reason",
    [
        (ID, None),
        (ID_F, None),
        ("096203000001", None),
        ("00109001234", "not 12 digits"),
        ("0010900123456", "not 12 digits"),
        ("00109001234A", "not 12 digits"),
        ("003090012345", "province code"),
        ("097090012345", "province code"),
        ("001490012345", "century/sex"),
        ("001990012345", "century/sex"),
    ],
)
def test_personal_id_number_is_validated(text, reason):
    if reason is None:
        assert parse_id_number(text) == text
    else:
        with pytest.raises(CodeError, match=reason):
            parse_id_number(text)


@pytest.mark.parametrize(
    "text,reason",
    [
        ("0100109106", None),  # a real tax code: check digit 6
        ("0100112437", None),  # another real one: check digit 7
        ("0100109106-001", None),
        ("0100109107", "check digit"),
        ("0100112430", "check digit"),
        ("0000000000", "check digit"),  # sum ≡ 0 (mod 11) would need check digit 10
        ("0100109106-000", "-000"),
        ("0100109106-01", "10 digits"),
        ("010010910", "10 digits"),
        ("01001091066", "10 digits"),
    ],
)
def test_tax_code_check_digit_and_branch(text, reason):
    if reason is None:
        assert parse_tax_code(text) == text
    else:
        with pytest.raises(CodeError, match=reason):
            parse_tax_code(text)


CARD = CitizenCard(
    id_number=ID,
    old_id="012345678",
    name="Nguyễn Văn An",
    birth_date=date(1990, 1, 15),
    sex="Nam",
    address="Số 1 Tràng Tiền, Hoàn Kiếm, Hà Nội",
    issued=date(2021, 7, 1),
)


@pytest.mark.parametrize(
    "text,expected",
    [
        (
            f"{ID}|012345678|Nguyễn Văn An|15011990|Nam|Số 1 Tràng Tiền, Hoàn Kiếm, Hà Nội|01072021",
            CARD,
        ),
        (
            f"{ID}||Nguyễn Văn An|15011990|Nam|Số 1 Tràng Tiền, Hoàn Kiếm, Hà Nội|01072021",
            CitizenCard(**{**CARD.__dict__, "old_id": None}),
        ),
        (
            f"{ID}|Nguyễn Văn An|15011990|Nam|Số 1 Tràng Tiền, Hoàn Kiếm, Hà Nội|01072021",
            CitizenCard(**{**CARD.__dict__, "old_id": None}),
        ),
        (
            f"{ID_F}||Trần Thị Bình|02032001|Nữ||",
            CitizenCard(ID_F, None, "Trần Thị Bình", date(2001, 3, 2), "Nữ", None, None),
        ),
        (
            f"{ID}||Nguyễn Văn An|15011990|Nam|Hà Nội|01072021|extra|fields",
            CitizenCard(
                ID, None, "Nguyễn Văn An", date(1990, 1, 15), "Nam", "Hà Nội", date(2021, 7, 1)
            ),
        ),
    ],
)
def test_id_card_qr_with_six_or_seven_fields(text, expected):
    assert parse_cccd_qr(text) == expected


@pytest.mark.parametrize(
    "text,reason",
    [
        (f"{ID}|Nguyễn Văn An|15011990|Nam|Hà Nội", "6 or 7 fields"),
        ("00109001234||Nguyễn Văn An|15011990|Nam|Hà Nội|01072021", "not 12 digits"),
        (f"{ID}|12345|Nguyễn Văn An|15011990|Nam|Hà Nội|01072021", "old ID"),
        (f"{ID}|||15011990|Nam|Hà Nội|01072021", "no name"),
        (f"{ID}||Nguyễn Văn An|31021990|Nam|Hà Nội|01072021", "birth date"),
        (f"{ID}||Nguyễn Văn An|15011991|Nam|Hà Nội|01072021", "birth year disagrees"),
        (f"{ID}||Nguyễn Văn An|15011990|Nữ|Hà Nội|01072021", "sex disagrees"),
        (f"{ID}||Nguyễn Văn An|15011990|Nam|Hà Nội|2021", "issue date"),
    ],
)
def test_broken_id_card_qr_is_refused_without_repeating_its_data(text, reason):
    with pytest.raises(CodeError, match=reason) as exc:
        parse_cccd_qr(text)
    assert "Nguyễn" not in exc.value.message and ID not in exc.value.message


@pytest.mark.parametrize(
    "text,expected",
    [
        (f"https://dichvucong.gov.vn/tra-cuu?MHS={DOSSIER}&SGT={ID}", (DOSSIER, ID)),
        (f"http://dvc.hanoi.gov.vn/p/?mhs={DOSSIER}", (DOSSIER, None)),
        ("https://x.gov.vn/tc?SGT=0100109106", (None, "0100109106")),
        (f"https://x.gov.vn/tc?a=1&MHS={DOSSIER.replace('.', '%2E')}&b=2", (DOSSIER, None)),
    ],
)
def test_lookup_url_gives_dossier_and_owner(text, expected):
    assert parse_lookup_url(text) == expected


@pytest.mark.parametrize(
    "text,reason",
    [
        ("dichvucong.gov.vn/?MHS=" + DOSSIER, "not an http"),
        ("https://dichvucong.gov.vn/?q=1", "no MHS= or SGT="),
        ("https://dichvucong.gov.vn/?MHS=000.00.20.H56-230230-0003", "not a real date"),
        ("https://dichvucong.gov.vn/?SGT=12345", "neither a personal ID number nor a tax code"),
    ],
)
def test_bad_lookup_url_is_refused(text, reason):
    with pytest.raises(CodeError, match=reason):
        parse_lookup_url(text)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("SOHOA:1;K=SEP", CoverSheet("SEP")),
        (
            "SOHOA:1;K=DOC;T=KQ.G15.000031;P=3;Y=2019",
            CoverSheet("DOC", doc_type="KQ.G15.000031", pages=3, issue_year=2019),
        ),
        ("SOHOA:1;K=DOC;T=KQ.G15.000031", CoverSheet("DOC", doc_type="KQ.G15.000031")),
        (
            f"SOHOA:1;K=DOSSIER;H={DOSSIER};TT=1.001612.000.00.00.H56;N=4",
            CoverSheet(
                "DOSSIER",
                dossier_code=DOSSIER,
                tthc_code="1.001612.000.00.00.H56",
                documents=4,
            ),
        ),
        (
            f"SOHOA:1;K=DOSSIER;H={DOSSIER};TT=1.001612;",
            CoverSheet("DOSSIER", dossier_code=DOSSIER, tthc_code="1.001612"),
        ),
    ],
)
def test_cover_sheets_of_every_kind(text, expected):
    assert parse_cover_sheet(text) == expected


@pytest.mark.parametrize(
    "text,reason",
    [
        ("SOHOA:2;K=SEP", "version is not 1"),
        ("SOHOA:1;K=BOX", "kind K is not one of"),
        ("SOHOA:1;T=KQ.G15.000031", "kind K is not one of"),
        ("SOHOA:1;K=DOC", "needs T="),
        ("SOHOA:1;K=DOC;T=kq g15", "needs T="),
        ("SOHOA:1;K=DOC;T=KQ.G15.000031;P=0", "page count P"),
        ("SOHOA:1;K=DOC;T=KQ.G15.000031;P=three", "page count P"),
        ("SOHOA:1;K=DOC;T=KQ.G15.000031;Y=19", "issue year"),
        ("SOHOA:1;K=DOC;T=KQ.G15.000031;H=" + DOSSIER, "unknown field H"),
        ("SOHOA:1;K=DOC;T=A;T=B", "repeats field T"),
        ("SOHOA:1;K=DOC;T", "KEY=VALUE"),
        ("SOHOA:1;K=DOSSIER;H=" + DOSSIER, "needs H=.* and TT="),
        ("SOHOA:1;K=DOSSIER;H=000.00.20.H56-231232-0001;TT=1.001612", "not a real date"),
        (f"SOHOA:1;K=DOSSIER;H={DOSSIER};TT=1.1", "procedure code"),
        (f"SOHOA:1;K=DOSSIER;H={DOSSIER};TT=1.001612;N=-1", "document count N"),
        ("SOHOA;K=SEP", "no SOHOA: prefix"),
        ("sohoa:1;K=SEP", "no SOHOA: prefix"),
    ],
)
def test_broken_cover_sheet_is_refused_with_the_reason(text, reason):
    with pytest.raises(CodeError, match=reason):
        parse_cover_sheet(text)


@pytest.mark.parametrize(
    "symbology,value,separator_text,expected",
    [
        ("CODE39", "PATCHT", "PATCHT", Signal("separator", 4)),
        ("QRCODE", "PATCHT", "PATCHT", Signal("separator", 4)),
        ("CODE128", "PATCHT", "CUSTOM BARCODE", Signal("separator", 4)),
        ("CODE128", " CUSTOM BARCODE ", "CUSTOM BARCODE", Signal("separator", 4)),
        ("CODE39", "CUSTOM BARCODE", "PATCHT", Signal("other", 4)),
        ("CODE39", "", "", Signal("other", 4)),
        ("QRCODE", "SOHOA:1;K=SEP", "PATCHT", Signal("separator", 4, cover=CoverSheet("SEP"))),
        (
            "QRCODE",
            "SOHOA:1;K=DOC;T=KQ.G15.000031;P=2",
            "PATCHT",
            Signal("cover", 4, cover=CoverSheet("DOC", doc_type="KQ.G15.000031", pages=2)),
        ),
        (
            "QRCODE",
            f"SOHOA:1;K=DOSSIER;H={DOSSIER};TT=1.001612",
            "PATCHT",
            Signal(
                "cover",
                4,
                dossier_code=DOSSIER,
                cover=CoverSheet("DOSSIER", dossier_code=DOSSIER, tthc_code="1.001612"),
            ),
        ),
        ("CODE128", DOSSIER, "PATCHT", Signal("dossier", 4, dossier_code=DOSSIER)),
        (
            "QRCODE",
            f"https://dvc.gov.vn/?MHS={DOSSIER}&SGT={ID}",
            "PATCHT",
            Signal("dossier", 4, dossier_code=DOSSIER, owner_id=ID),
        ),
        ("QRCODE", f"https://dvc.gov.vn/?SGT={ID}", "PATCHT", Signal("owner", 4, owner_id=ID)),
        (
            "QRCODE",
            f"{ID}||Nguyễn Văn An|15011990|Nam|Hà Nội|01072021",
            "PATCHT",
            Signal("owner", 4, owner_id=ID),
        ),
        (
            "CODE128",
            "000.00.20.H56-230230-0003",
            "PATCHT",
            Signal("invalid", 4, reason="dossier code's date part is not a real date"),
        ),
        (
            "QRCODE",
            "SOHOA:1;K=DOC",
            "PATCHT",
            Signal("invalid", 4, reason="cover sheet DOC needs T=<document type code>"),
        ),
        (
            "QRCODE",
            "003090012345||Nguyễn Văn An|15011990|Nam|Hà Nội|01072021",
            "PATCHT",
            Signal(
                "invalid", 4, reason="ID card QR: personal ID number's province code does not exist"
            ),
        ),
        ("CODE39", "ASN00123", "PATCHT", Signal("other", 4)),
        ("QRCODE", "https://example.com/?page=1", "PATCHT", Signal("other", 4)),
        ("QRCODE", "A|B|C", "PATCHT", Signal("other", 4)),
    ],
)
def test_barcode_meaning_for_capture(symbology, value, separator_text, expected):
    assert interpret(Barcode(4, symbology, value), separator_text) == expected
