"""PDF output read back by PDFium and pikepdf: pages, sizes, images, XMP metadata, barcodes,
file structure, and PDF/A-2b by pikepdf's allowlist validator."""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pikepdf
import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
import pytest
import zbar
from PIL import Image

from agent.capture.ink import ink_mask
from agent.capture.pages import prepare_page
from agent.capture.pdf import (
    PROFILES,
    EncodedPage,
    PdfMetadata,
    PdfWriter,
    encode_page,
    wrap_jpeg,
    write_pdf,
)
from device.errors import InputError
from tests.support.pages import color_page, receipt_page, short_lines_page, text_page, turned
from tests.support.pdfa import info_xmp_mismatches, pdfa_findings

A4_POINTS = (595.28, 841.89)
DOSSIER = "000.00.20.H56-230512-0003"
LOOKUP_URL = f"https://dichvucong.gov.vn/p/home/dvc-tra-cuu-ho-so.html?MHS={DOSSIER}&SGT=0"
NS = {
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "dc": "http://purl.org/dc/elements/1.1/",
    "pdfaid": "http://www.aiim.org/pdfa/ns/id/",
    "xmp": "http://ns.adobe.com/xap/1.0/",
    "pdf": "http://ns.adobe.com/pdf/1.3/",
}
META = PdfMetadata(
    file_code=DOSSIER,
    doc_ordinal=2,
    type_name="KQ.G15.000031",
    code_number="123",
    code_notation="123/GKS-UBND",
    issued_date="2023-05-12",
    organ_name="Ủy ban nhân dân xã Tân Lập",
    subject="Giấy khai sinh <bản chính> & bản sao",
    description="Số hóa từ bản gốc",
    created=datetime(2023, 5, 12, 10, 30, tzinfo=timezone(timedelta(hours=7))),
)
# the most metadata the device can write: every field, a Vietnamese title of its own
FULL_META = replace(META, title="Giấy chứng nhận đăng ký kết hôn — bản sao (Đồng Tháp, Hưng Yên)")


class WriteOnly:
    """An output with nothing but write(), like the envelope sealer."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.chunks.append(bytes(data))

    def getvalue(self) -> bytes:
        return b"".join(self.chunks)


@pytest.fixture(scope="module")
def pages() -> dict[str, Image.Image]:
    return {
        "letter": text_page(),
        "receipt": receipt_page(code=DOSSIER, qr=LOOKUP_URL),
        "note": short_lines_page(),
        "colour": color_page(),
    }


def build(pages: list[EncodedPage], meta: PdfMetadata = META) -> bytes:
    out = WriteOnly()
    written = write_pdf(pages, meta, out)
    data = out.getvalue()
    assert written == len(data)
    return data


def embedded_image(document: pdfium.PdfDocument, index: int) -> Image.Image:
    (image,) = [o for o in document[index].get_objects() if o.type == pdfium_c.FPDF_PAGEOBJ_IMAGE]
    pil: Image.Image = image.get_bitmap(render=False).to_pil()
    return pil


def rendered(document: pdfium.PdfDocument, index: int, dpi: int = 300) -> Image.Image:
    page = document[index]
    bitmap: Image.Image = page.render(scale=dpi / 72, grayscale=True).to_pil()
    width, height = (round(side * dpi / 72) for side in page.get_size())
    return bitmap.crop((0, 0, width, height))


def xmp_properties(pdf: bytes) -> dict[str, Any]:
    """The XMP packet's properties as pikepdf reads them, named ``prefix:name``."""
    prefixes = {uri: prefix for prefix, uri in NS.items()}
    out = {}
    with pikepdf.open(io.BytesIO(pdf)) as document:
        for key, value in document.open_metadata().items():  # keys read "{uri}name"
            uri, name = key[1:].split("}")
            out[f"{prefixes[uri]}:{name}"] = value
    return out


def assert_pdfa(pdf: bytes) -> None:
    findings = pdfa_findings(pdf) + info_xmp_mismatches(pdf)
    assert findings == [], "PDF/A-2b findings:\n" + "\n".join(findings)


def xmp_of(pdf: bytes) -> ET.Element:
    match = re.search(rb"<\?xpacket begin=.*?<\?xpacket end=\"w\"\?>", pdf, re.DOTALL)
    assert match is not None
    return ET.fromstring(match.group(0))


@pytest.mark.parametrize(
    ("profile", "filter_", "colorspaces", "bits"),
    [
        ("text", "CCITTFaxDecode", ["DeviceGray"] * 3, 1),
        ("color", "DCTDecode", ["DeviceGray", "DeviceGray", "DeviceRGB"], 8),
        ("lossless", "FlateDecode", ["DeviceGray", "DeviceGray", "DeviceRGB"], 8),
    ],
)
def test_three_page_pdf_reads_back_page_for_page(
    pages: dict[str, Image.Image],
    profile: str,
    filter_: str,
    colorspaces: list[str],
    bits: int,
) -> None:
    sources = [pages["letter"], pages["note"], pages["colour"]]
    encoded = [encode_page(page, 300, profile) for page in sources]
    assert [(e.filter, e.colorspace, e.bits) for e in encoded] == [
        (filter_, colorspace, bits) for colorspace in colorspaces
    ]
    document = pdfium.PdfDocument(build(encoded))
    assert len(document) == 3
    for index, source in enumerate(sources):
        assert document[index].get_size() == pytest.approx(A4_POINTS, abs=1)
        grey = np.asarray(source.convert("L"), dtype=np.int16)
        image = np.asarray(embedded_image(document, index).convert("L"), dtype=np.int16)
        assert image.shape == grey.shape
        if profile == "text":
            expected_ink = np.asarray(ink_mask(source.convert("L")))
            assert np.array_equal(image < 128, expected_ink)
        elif profile == "lossless":
            assert np.array_equal(image, grey)
        else:
            assert np.abs(image - grey).mean() < 2
        view = np.asarray(rendered(document, index), dtype=np.int16)
        assert np.abs(view - grey).mean() < (12 if profile == "text" else 4)


def test_colour_survives_the_color_profile(pages: dict[str, Image.Image]) -> None:
    source = pages["colour"]
    document = pdfium.PdfDocument(build([encode_page(source, 300, "color")]))
    image = embedded_image(document, 0).convert("RGB")
    seal_pixel = (round(300 * 5.5) - round(300 * 0.7) + 3, round(300 * 8.5))
    red, green, blue = image.getpixel(seal_pixel)  # type: ignore[misc]
    assert red > 150 and green < 90 and blue < 90
    assert np.abs(np.asarray(image, np.int16) - np.asarray(source, np.int16)).mean() < 2


def test_text_profile_is_a_tenth_of_a_grey_jpeg_or_less(pages: dict[str, Image.Image]) -> None:
    page = pages["letter"]
    jpeg = io.BytesIO()
    page.convert("L").save(jpeg, "JPEG", quality=75)
    assert len(encode_page(page, 300, "text").data) <= 0.10 * len(jpeg.getvalue())


def test_barcodes_stay_readable_through_the_text_profile(pages: dict[str, Image.Image]) -> None:
    document = pdfium.PdfDocument(build([encode_page(pages["receipt"], 300, "text")]))
    found = zbar.Scanner().scan(np.asarray(rendered(document, 0).convert("L")))
    assert sorted((symbol.type, symbol.data.decode()) for symbol in found) == [
        ("CODE-128", DOSSIER),
        ("QR-Code", LOOKUP_URL),
    ]


def test_barcodes_survive_deskew_and_the_text_profile(pages: dict[str, Image.Image]) -> None:
    straight, check = prepare_page(turned(pages["receipt"], -2.5), 300)
    assert "deskewed" in check.flags
    document = pdfium.PdfDocument(build([encode_page(straight, 300, "text")]))
    found = zbar.Scanner().scan(np.asarray(rendered(document, 0).convert("L")))
    assert sorted((symbol.type, symbol.data.decode()) for symbol in found) == [
        ("CODE-128", DOSSIER),
        ("QR-Code", LOOKUP_URL),
    ]


def test_xmp_carries_decree_30_fields_in_standard_properties(
    pages: dict[str, Image.Image],
) -> None:
    page = encode_page(pages["note"], 300, "text")
    when = "2023-05-12T10:30:00+07:00"
    assert xmp_properties(build([page, page])) == {
        "pdfaid:part": "2",
        "pdfaid:conformance": "B",
        "dc:format": "application/pdf",
        "dc:identifier": f"{DOSSIER}.2",
        "dc:title": "Giấy khai sinh <bản chính> & bản sao",
        "dc:subject": {"Giấy khai sinh <bản chính> & bản sao"},
        "dc:description": "Số hóa từ bản gốc",
        "dc:type": {"KQ.G15.000031"},
        "dc:source": "123/GKS-UBND",
        "dc:creator": ["Ủy ban nhân dân xã Tân Lập"],
        "dc:date": ["2023-05-12"],
        "dc:language": {"vi"},
        "xmp:CreateDate": when,
        "xmp:ModifyDate": when,
        "xmp:MetadataDate": when,
        "xmp:CreatorTool": "sohoa",
        "pdf:Producer": "sohoa",
    }


def test_xmp_without_metadata_holds_only_what_the_writer_knows(
    pages: dict[str, Image.Image],
) -> None:
    meta = PdfMetadata(created=META.created)
    properties = xmp_properties(build([encode_page(pages["note"], 300, "text")], meta))
    assert {k: v for k, v in properties.items() if not k.startswith("xmp:")} == {
        "pdfaid:part": "2",
        "pdfaid:conformance": "B",
        "dc:format": "application/pdf",
        "dc:title": "Document",
        "dc:language": {"vi"},
        "pdf:Producer": "sohoa",
    }


def test_the_seal_step_metadata_keeps_to_what_the_xmp_held(pages: dict[str, Image.Image]) -> None:
    """What sealing passes (agent/capture/sealing.py): the dossier code, the type, and the
    digitized document code as the description; no other personal data appears."""
    meta = PdfMetadata(
        file_code=DOSSIER, type_name="KQ.G15.000031", page_amount=1,
        description="001090012345.KQ.G15.000031",
    )  # fmt: skip
    pdf = build([encode_page(pages["note"], 300, "text")], meta)
    assert_pdfa(pdf)
    properties = xmp_properties(pdf)
    assert {k: v for k, v in properties.items() if k.startswith("dc:")} == {
        "dc:format": "application/pdf",
        "dc:identifier": DOSSIER,
        "dc:title": "KQ.G15.000031",
        "dc:description": "001090012345.KQ.G15.000031",
        "dc:type": {"KQ.G15.000031"},
        "dc:language": {"vi"},
    }
    with pikepdf.open(io.BytesIO(pdf)) as document:  # the owner id stays out of /Info
        assert not [v for v in document.docinfo.values() if "001090012345" in str(v)]


@pytest.mark.parametrize(
    ("number", "notation", "source"),
    [
        ("123", "123/GKS-UBND", "123/GKS-UBND"),
        ("45", "QĐ-UBND", "45/QĐ-UBND"),
        (None, "QĐ-UBND", "QĐ-UBND"),
        ("45", None, "45"),
        (None, None, None),
    ],
)
def test_number_and_notation_read_as_the_paper_prints_them(
    pages: dict[str, Image.Image], number: str | None, notation: str | None, source: str | None
) -> None:
    meta = PdfMetadata(code_number=number, code_notation=notation)
    pdf = build([encode_page(pages["note"], 300, "text")], meta)
    assert xmp_properties(pdf).get("dc:source") == source
    assert_pdfa(pdf)


@pytest.mark.parametrize(
    ("issued", "dc_date"),
    [
        ("2023-05-12", ["2023-05-12"]),
        ("2023-05", ["2023-05"]),
        ("1994", ["1994"]),
        ("2023-02-30", None),  # no such day
        ("2023-13", None),
        ("12/05/2023", None),  # as officers write it: kept in the JSON only
        ("", None),
    ],
)
def test_only_a_real_xmp_date_goes_into_dc_date(
    pages: dict[str, Image.Image], issued: str, dc_date: list[str] | None
) -> None:
    pdf = build([encode_page(pages["note"], 300, "text")], PdfMetadata(issued_date=issued))
    assert xmp_properties(pdf).get("dc:date") == dc_date
    assert_pdfa(pdf)


def test_info_dictionary_holds_vietnamese_title_and_dates(pages: dict[str, Image.Image]) -> None:
    meta = PdfMetadata(
        title="Giấy chứng nhận (bản sao) \\ số 5", organ_name=META.organ_name, created=META.created
    )
    document = pdfium.PdfDocument(build([encode_page(pages["note"], 300, "text")], meta))
    info = document.get_metadata_dict()
    assert {key: value for key, value in info.items() if value} == {
        "Title": "Giấy chứng nhận (bản sao) \\ số 5",
        "Author": "Ủy ban nhân dân xã Tân Lập",
        "Creator": "sohoa",
        "Producer": "sohoa",
        "CreationDate": "D:20230512103000+07'00'",
        "ModDate": "D:20230512103000+07'00'",
    }


def test_file_has_pdfa_header_id_output_intent_and_a_true_xref(
    pages: dict[str, Image.Image],
) -> None:
    pdf = build([encode_page(pages["note"], 300, profile) for profile in ("text", "color")])
    assert pdf.startswith(b"%PDF-1.7\n%")
    assert all(byte > 127 for byte in pdf[10:14])
    assert pdf.endswith(b"%%EOF\n")
    assert re.search(rb"/ID \[<[0-9a-f]{32}> <[0-9a-f]{32}>\]", pdf)
    assert re.search(rb"/OutputIntents \[<< /Type /OutputIntent /S /GTS_PDFA1", pdf)
    assert re.search(rb"/Type /Metadata /Subtype /XML /Length", pdf)  # never compressed
    start = int(re.findall(rb"startxref\n(\d+)\n", pdf)[-1])
    assert pdf[start:].startswith(b"xref\n0 ")
    count = int(pdf[start:].split(b"\n")[1].split()[1])
    rows = pdf[start:].split(b"\n", 2)[2].split(b"\r\n")[:count]
    assert rows[0] == b"0000000000 65535 f"
    for number, row in enumerate(rows[1:], start=1):
        offset = int(row.split()[0])
        assert pdf[offset:].startswith(f"{number} 0 obj\n".encode())


def test_same_pages_and_metadata_give_the_same_bytes(pages: dict[str, Image.Image]) -> None:
    page = encode_page(pages["note"], 300, "text")
    # the same metadata includes the creation time (left out, it is "now": two builds
    # on either side of a second's tick differ, as they should)
    meta = replace(META, created=datetime(2026, 12, 2, 8, 30, tzinfo=UTC))
    assert build([page], meta) == build([page], meta)


def test_writer_streams_each_page_before_the_document_ends(pages: dict[str, Image.Image]) -> None:
    out = WriteOnly()
    writer = PdfWriter(out, META)
    page = encode_page(pages["letter"], 300, "text")
    writer.add_page(page)
    assert page.data in out.getvalue()
    writer.add_page(page)
    total = writer.close()
    assert total == len(out.getvalue())
    assert writer.close() == total
    assert len(pdfium.PdfDocument(out.getvalue())) == 2


def test_pages_keep_their_own_resolution(pages: dict[str, Image.Image]) -> None:
    small = pages["note"].resize((1240, 1754))
    document = pdfium.PdfDocument(
        build([encode_page(pages["note"], 300, "text"), encode_page(small, 150, "text")])
    )
    sizes = [document[i].get_size() for i in range(2)]
    assert sizes == [pytest.approx(A4_POINTS, abs=1)] * 2


@pytest.mark.parametrize(
    ("mode", "colorspace", "progressive"),
    [("L", "DeviceGray", False), ("RGB", "DeviceRGB", False), ("RGB", "DeviceRGB", True)],
)
def test_scanner_jpeg_is_wrapped_byte_for_byte(
    pages: dict[str, Image.Image], mode: str, colorspace: str, progressive: bool
) -> None:
    source = pages["colour"].convert(mode)
    jpeg = io.BytesIO()
    source.save(jpeg, "JPEG", quality=80, progressive=progressive)
    page = wrap_jpeg(jpeg.getvalue(), 300)
    assert (page.width, page.height, page.filter, page.colorspace, page.bits) == (
        *source.size,
        "DCTDecode",
        colorspace,
        8,
    )
    pdf = build([page])
    assert jpeg.getvalue() in pdf
    decoded = np.asarray(Image.open(jpeg).convert(mode), np.int16)
    embedded = np.asarray(embedded_image(pdfium.PdfDocument(pdf), 0).convert(mode), np.int16)
    assert np.abs(decoded - embedded).max() <= 2


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\x89PNG\r\n\x1a\n", "not a JPEG"),
        (b"\xff\xd8\xff\xd9", "no readable frame"),
    ],
)
def test_wrap_jpeg_refuses_what_is_not_a_jpeg(data: bytes, match: str) -> None:
    with pytest.raises(InputError, match=match):
        wrap_jpeg(data, 300)


def test_wrap_jpeg_refuses_cmyk() -> None:
    jpeg = io.BytesIO()
    Image.new("CMYK", (64, 64), (0, 0, 0, 0)).save(jpeg, "JPEG")
    with pytest.raises(InputError, match="4 components"):
        wrap_jpeg(jpeg.getvalue(), 300)


def test_unknown_profile_is_refused_with_the_known_ones() -> None:
    with pytest.raises(InputError, match="'fax'") as caught:
        encode_page(Image.new("L", (10, 10), 255), 300, "fax")
    assert caught.value.hint == "use one of text, color, lossless"


def test_document_without_pages_is_refused() -> None:
    writer = PdfWriter(WriteOnly(), META)
    with pytest.raises(InputError, match="no pages"):
        writer.close()


def test_adding_after_close_is_refused(pages: dict[str, Image.Image]) -> None:
    writer = PdfWriter(WriteOnly(), META)
    writer.add_page(encode_page(pages["note"], 300, "text"))
    writer.close()
    with pytest.raises(InputError, match="closed"):
        writer.add_page(encode_page(pages["note"], 300, "text"))


@pytest.mark.parametrize(
    ("source", "profile", "expected"),
    [
        (Image.new("1", (64, 64), 1), "text", ("CCITTFaxDecode", "DeviceGray", 1)),
        (Image.new("1", (64, 64), 1), "lossless", ("FlateDecode", "DeviceGray", 1)),
        (Image.new("1", (64, 64), 1), "color", ("DCTDecode", "DeviceGray", 8)),
        (Image.new("RGBA", (64, 64), (0, 0, 255, 128)), "color", ("DCTDecode", "DeviceRGB", 8)),
        (Image.new("P", (64, 64), 7), "lossless", ("FlateDecode", "DeviceGray", 8)),
        (Image.new("I;16", (64, 64), 30000), "lossless", ("FlateDecode", "DeviceGray", 8)),
    ],
)
def test_any_scanner_mode_encodes_and_reads_back(
    source: Image.Image, profile: str, expected: tuple[str, str, int]
) -> None:
    page = encode_page(source, 300, profile)
    assert (page.filter, page.colorspace, page.bits) == expected
    image = embedded_image(pdfium.PdfDocument(build([page])), 0).convert("L")
    flat = np.asarray(
        Image.alpha_composite(
            Image.new("RGBA", source.size, "white"), source.convert("RGBA")
        ).convert("L")
        if source.mode == "RGBA"
        else (
            source.convert("L")
            if source.mode != "I;16"
            else Image.new("L", source.size, 30000 >> 8)
        ),
        np.int16,
    )
    assert np.abs(np.asarray(image, np.int16) - flat).max() <= 3


def test_created_defaults_to_now_in_utc(pages: dict[str, Image.Image]) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    xmp = xmp_of(build([encode_page(pages["note"], 300, "text")], PdfMetadata()))
    created = datetime.fromisoformat(xmp.findtext(".//xmp:CreateDate", namespaces=NS) or "")
    assert before <= created <= datetime.now(UTC)


def every_kind_of_page(pages: dict[str, Image.Image], profile: str) -> list[EncodedPage]:
    """Every page the writer gets in one profile: text, receipt, colour, a bilevel scan,
    and in ``color`` the scanner's own JPEGs (grey, colour, progressive), wrapped as they are."""
    sources = [pages["letter"], pages["receipt"], pages["colour"], pages["note"].convert("1")]
    encoded = [encode_page(source, 300, profile) for source in sources]
    if profile == "color":
        for mode, progressive in (("L", False), ("RGB", False), ("RGB", True)):
            jpeg = io.BytesIO()
            pages["colour"].convert(mode).save(jpeg, "JPEG", quality=80, progressive=progressive)
            encoded.append(wrap_jpeg(jpeg.getvalue(), 300))
    return encoded


@pytest.mark.parametrize("meta", [FULL_META, PdfMetadata()], ids=["most-metadata", "no-metadata"])
@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_passes_the_pdfa_2b_validator(
    pages: dict[str, Image.Image], profile: str, meta: PdfMetadata
) -> None:
    assert_pdfa(build(every_kind_of_page(pages, profile), meta))


@pytest.mark.parametrize(
    "title",
    [
        FULL_META.title,
        "Tờ khai đăng ký khai sinh\r\nỦy ban nhân dân phường Hưng Đạo",
        'Đơn đề nghị <cấp lại> & "xác nhận" \\ số 7\x07',  # a control character: neither XMP nor /Info keeps it
    ],
)
def test_vietnamese_titles_agree_in_info_and_xmp(pages: dict[str, Image.Image], title: str) -> None:
    pdf = build([encode_page(pages["note"], 300, "text")], replace(FULL_META, title=title))
    assert_pdfa(pdf)
    with pikepdf.open(io.BytesIO(pdf)) as document:
        assert str(document.docinfo["/Title"]) == title.replace("\x07", "")


def test_the_checks_catch_an_extension_schema_and_a_stale_title(
    pages: dict[str, Image.Image],
) -> None:
    """The two checks above can fail: the old custom namespace, and /Info out of step."""
    pdf = build([encode_page(pages["note"], 300, "text")], FULL_META)
    with pikepdf.open(io.BytesIO(pdf)) as document:
        packet = document.Root.Metadata.read_bytes().replace(
            b"<dc:format>",
            b'<vnarc:FileCode xmlns:vnarc="https://sohoa.vn/ns/decree30/1.0/">'
            + DOSSIER.encode()
            + b"</vnarc:FileCode><dc:format>",
        )
        document.Root.Metadata.write(packet)
        document.docinfo["/Title"] = pikepdf.String("Giấy tờ khác")
        out = io.BytesIO()
        document.save(out)
    findings = pdfa_findings(out.getvalue())
    assert findings and all("6.6.2.3.1-1" in finding for finding in findings), findings
    assert any("vnarc:FileCode" in finding for finding in findings)
    assert info_xmp_mismatches(out.getvalue()) == [
        f"/Title 'Giấy tờ khác' but XMP dc:title {FULL_META.title!r}"
    ]


def test_ink_rows_are_the_ink_mask_packed_and_g4_codes_them_as_pillow_does() -> None:
    from agent.capture.g4 import _libtiff_g4, _pillow_g4
    from agent.capture.ink import grey_pixels, ink_rows
    from tests.support.counter_pages import make

    page = Image.open(io.BytesIO(make("phone", 31).jpeg))
    rows, size = ink_rows(page)
    mask = ink_mask(page)
    assert (rows, size) == (mask.tobytes(), mask.size)
    assert np.array_equal(grey_pixels(page.convert("L")), np.asarray(page.convert("L")))
    assert _libtiff_g4(rows, size) == _pillow_g4(mask)


@pytest.mark.parametrize(("kind", "seed", "skew"), [("crooked", 3, 2.7), ("curled", 5, -3.4)])
def test_a_crooked_page_is_deskewed_band_by_band_as_the_whole_page_would_be(
    kind: str, seed: int, skew: float
) -> None:
    from agent.capture.ink import ink_rows
    from agent.capture.pages import deskew
    from tests.support.counter_pages import make

    page = Image.open(io.BytesIO(make(kind, seed).jpeg)).convert("L")
    banded, size = ink_rows(page, skew)
    whole, whole_size = ink_rows(deskew(page, skew))
    ink = np.unpackbits(np.frombuffer(banded, np.uint8))
    reference = np.unpackbits(np.frombuffer(whole, np.uint8))
    assert size == whole_size == page.size
    # the same turn; only a nearest pixel chosen across a rounding edge differs
    assert int((ink != reference).sum()) < 0.02 * int(reference.sum())


@pytest.mark.parametrize("skew", [0.0, 2.5])
def test_a_bilevel_scan_goes_into_the_archive_with_its_own_bits_straight_or_turned(
    skew: float,
) -> None:
    """A bilevel scan captured with the ``text`` profile: its bits as they came, read
    from the page's grey as every page's ink is, and turned as the whole page would be."""
    from agent.capture.pagework import work_page
    from agent.config import CaptureConfig
    from device.barcodes import ZbarReader
    from device.scanner import ScannedPage

    page = text_page().convert("1")
    if skew:
        page = page.rotate(skew, resample=Image.Resampling.NEAREST, fillcolor=255)
    work = work_page(
        ScannedPage(0, page, 300, "adf"), 0, ZbarReader(fallback=None), CaptureConfig()
    )
    assert work.encoded is not None and work.check is not None
    archived = np.asarray(embedded_image(pdfium.PdfDocument(build([work.encoded])), 0).convert("L"))
    if not skew:
        assert "deskewed" not in work.check.flags
        assert np.array_equal(archived < 128, np.asarray(page.convert("L")) < 128)
        return
    assert "deskewed" in work.check.flags
    whole = np.asarray(prepare_page(page, 300)[0].convert("L")) < 128
    # the same turn; only a nearest pixel chosen across a rounding edge differs
    assert int(((archived < 128) != whole).sum()) < 0.02 * int(whole.sum())
