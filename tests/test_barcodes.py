"""Reading barcodes off generated scans: clean, turned, crooked, faded, compressed, small."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from agent.capture.codes import interpret
from agent.capture.samples import blank_page, code_image, content_lines, make_page, receipt_page
from device.barcodes import BARS_COHERENCE, Barcode, ZbarReader, parallel_edges, to_grey
from device.errors import BarcodeError

DOSSIER = "000.00.20.H56-230512-0003"
CCCD = "001090012345||Nguyễn Văn An|15011990|Nam|Số 1 Tràng Tiền, Hoàn Kiếm, Hà Nội|01072021"
QR_TEXTS = (
    "SOHOA:1;K=SEP",
    CCCD,
    f"SOHOA:1;K=DOSSIER;H={DOSSIER};TT=1.001612;N=3",
    f"https://dichvucong.gov.vn/tra-cuu?MHS={DOSSIER}&SGT=001090012345",
)
CODE128_TEXTS = (DOSSIER, "PATCHT", "000.00.20.H56-230512-0004")
CODE39_TEXTS = ("PATCHT", "HS-0003")

# Conditions every scan must survive (each page is checked on its own) ...
REQUIRED = {
    "clean": {},
    "turned 90": {"rotate": 90},
    "upside down": {"rotate": 180},
    "turned 270": {"rotate": 270},
    "skewed +5": {"skew_deg": 5.0},
    "skewed -5": {"skew_deg": -5.0},
    "low contrast 0.35": {"contrast": 0.35},
    "200 dpi": {"dpi": 200},
    "jpeg quality 20": {"jpeg_quality": 20},
    "jpeg quality 30": {"jpeg_quality": 30},
    "small codes 0.6": {"code_scale": 0.6},
    "small codes 0.5": {"code_scale": 0.5},
}
# ... and harder ones that count towards the read rate of the whole set.
HARDER = {
    "skewed +8": {"skew_deg": 8.0},
    "contrast 0.25": {"contrast": 0.25},
    "noisy": {"noise": 0.06},
    "faded noisy jpeg": {"skew_deg": 3.0, "contrast": 0.4, "noise": 0.04, "jpeg_quality": 30},
    "turned faded noisy": {"rotate": 90, "skew_deg": 4.0, "contrast": 0.35, "noise": 0.05},
    "200 dpi jpeg skewed": {"dpi": 200, "jpeg_quality": 25, "skew_deg": -3.0},
    "small upside-down jpeg": {"code_scale": 0.6, "rotate": 180, "jpeg_quality": 30},
    "noisy 200 dpi": {"dpi": 200, "noise": 0.04},
}


def _code_pages(conditions: dict[str, dict[str, object]], offset: int):
    for n, (name, kw) in enumerate(conditions.items()):
        i = n + offset
        for symbology, texts in (
            ("QRCODE", QR_TEXTS),
            ("CODE128", CODE128_TEXTS),
            ("CODE39", CODE39_TEXTS),
        ):
            code = (symbology, texts[i % len(texts)])
            yield f"{name}/{symbology}", code, kw, i


REQUIRED_PAGES = list(_code_pages(REQUIRED, 0))
HARDER_PAGES = list(_code_pages(HARDER, len(REQUIRED)))
NO_CODE_PAGES = {
    "text page": {},
    "text page, jpeg 25": {"jpeg_quality": 25},
    "text page, noisy": {"noise": 0.06},
    "text page, skewed": {"skew_deg": 4.0},
    "noisy blank back": {"blank": True, "noise": 0.08},
    "grey blank back": {"blank": True, "contrast": 0.5},
}


@pytest.fixture(scope="module")
def reader() -> ZbarReader:
    # zbar alone: the read rate must not depend on the optional zxing-cpp
    return ZbarReader(fallback=None)


def _render(kw: dict[str, object], code: tuple[str, str] | None, seed: int) -> Image.Image:
    kw = dict(kw)
    if kw.pop("blank", False):
        return blank_page(seed=seed, **kw)
    return make_page(content_lines(seed), codes=[code] if code else [], seed=seed, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def decoded(reader):
    """Every generated page decoded once: name -> (expected code or None, barcodes)."""
    out = {}
    for name, code, kw, seed in REQUIRED_PAGES + HARDER_PAGES:
        out[name] = (code, reader.read(_render(kw, code, seed), seed))
    for seed, (name, kw) in enumerate(NO_CODE_PAGES.items(), start=100):
        out[name] = (None, reader.read(_render(kw, None, seed), seed))
    return out


@pytest.mark.parametrize("name,code", [(p[0], p[1]) for p in REQUIRED_PAGES])
def test_code_is_read_from_a_typical_scan(decoded, name, code):
    expected, found = decoded[name]
    assert [(b.symbology, b.value) for b in found] == [code]


def test_generated_set_reads_at_least_98_percent_with_no_false_separator(decoded):
    pages = REQUIRED_PAGES + HARDER_PAGES
    assert len(pages) >= 60
    read = [
        name
        for name, code, _, _ in pages
        if code in [(b.symbology, b.value) for b in decoded[name][1]]
    ]
    assert len(read) / len(pages) >= 0.98, sorted(set(p[0] for p in pages) - set(read))
    false_separators = []
    for name, (code, found) in decoded.items():
        separator_page = (
            code is not None and interpret(Barcode(0, *code), "PATCHT").kind == "separator"
        )
        if not separator_page and any(interpret(b, "PATCHT").kind == "separator" for b in found):
            false_separators.append(name)
    assert false_separators == []


def test_pages_without_codes_give_no_barcodes(decoded):
    assert {name: decoded[name][1] for name in NO_CODE_PAGES} == {
        name: () for name in NO_CODE_PAGES
    }


def test_receipt_with_dossier_code_and_lookup_qr_gives_both():
    url = f"https://dichvucong.gov.vn/tra-cuu?MHS={DOSSIER}"
    image = receipt_page(DOSSIER, codes=[("QRCODE", url)])
    found = ZbarReader(fallback=None).read(image, 7)
    assert sorted(found, key=lambda b: b.symbology) == [
        Barcode(7, "CODE128", DOSSIER),
        Barcode(7, "QRCODE", url),
    ]


def test_same_code_twice_on_a_page_is_reported_once():
    image = make_page(codes=[("QRCODE", "SOHOA:1;K=SEP"), ("QRCODE", "SOHOA:1;K=SEP")])
    assert ZbarReader(fallback=None).read(image, 0) == (Barcode(0, "QRCODE", "SOHOA:1;K=SEP"),)


def _modes():
    page = make_page(["Giấy tờ"], codes=[("QRCODE", "SOHOA:1;K=SEP")])
    grey = np.asarray(page)
    ink = (255 - grey).astype(np.uint8)
    transparent_paper = np.dstack([np.zeros_like(grey)] * 3 + [ink])  # black ink, clear paper
    return {
        "1": page.convert("1"),
        "L": page,
        "RGB": page.convert("RGB"),
        "RGBA on clear paper": Image.fromarray(transparent_paper),
        "P": page.convert("RGB").convert("P"),
        "I;16": Image.fromarray(grey.astype("<u2") * 257),
        "LA": page.convert("LA"),
    }


@pytest.mark.parametrize("mode,image", _modes().items(), ids=_modes().keys())
def test_every_image_mode_is_read(mode, image):
    assert ZbarReader(fallback=None).read(image, 2) == (Barcode(2, "QRCODE", "SOHOA:1;K=SEP"),)


def test_clear_paper_becomes_white_not_black():
    (image,) = [im for mode, im in _modes().items() if mode == "RGBA on clear paper"]
    grey = np.asarray(to_grey(image))
    assert grey.shape == (image.height, image.width) and grey[5, 5] == 255


def test_quick_mode_leaves_hard_pages_to_the_thorough_mode():
    image = make_page(codes=[("CODE39", "PATCHT")], noise=0.08, seed=2)
    assert ZbarReader(thorough=False, fallback=None).read(image, 0) == ()
    assert ZbarReader(fallback=None).read(image, 0) == (Barcode(0, "CODE39", "PATCHT"),)


def test_fallback_decoder_is_used_only_when_zbar_finds_nothing():
    calls = []

    def fallback(grey: Image.Image) -> list[tuple[str, str]]:
        calls.append(grey.size)
        return [("CODE128", "FROM-FALLBACK")]

    reader = ZbarReader(fallback=fallback)
    assert reader.read(make_page(codes=[("CODE128", "PATCHT")]), 0) == (
        Barcode(0, "CODE128", "PATCHT"),
    )
    assert calls == []
    assert reader.read(make_page(["không có mã"]), 1) == (Barcode(1, "CODE128", "FROM-FALLBACK"),)
    assert calls == [(2480, 3508)]


def test_zxing_fallback_reads_a_tiny_qr_zbar_cannot():
    # zxing-cpp is a declared dependency: its absence is a failure, not a skip
    assert ZbarReader().has_fallback
    image = make_page(
        content_lines(0),
        codes=[("QRCODE", "SOHOA:1;K=SEP")],
        dpi=200,
        code_scale=0.5,
        skew_deg=-4.0,
        jpeg_quality=25,
    )
    assert ZbarReader(fallback=None).read(image, 0) == ()
    reader = ZbarReader()
    assert reader.has_fallback
    assert reader.read(image, 0) == (Barcode(0, "QRCODE", "SOHOA:1;K=SEP"),)


def test_unknown_symbology_is_refused():
    with pytest.raises(BarcodeError, match="cannot read symbology AZTEC"):
        ZbarReader(symbologies=["QRCODE", "AZTEC"])


@pytest.mark.parametrize(
    "kw,size",
    [({}, (2480, 3508)), ({"dpi": 200}, (1654, 2339)), ({"rotate": 90}, (3508, 2480))],
)
def test_generated_page_is_grey_a4_and_the_same_for_a_seed(kw, size):
    first = make_page(["Trang 1"], codes=[("CODE128", DOSSIER)], noise=0.05, seed=3, **kw)
    again = make_page(["Trang 1"], codes=[("CODE128", DOSSIER)], noise=0.05, seed=3, **kw)
    other = make_page(["Trang 1"], codes=[("CODE128", DOSSIER)], noise=0.05, seed=4, **kw)
    assert (first.mode, first.size) == ("L", size)
    assert first.tobytes() == again.tobytes() != other.tobytes()


def _short_barred_code_on_a_crooked_sheet(value: str, skew_deg: float) -> Image.Image:
    """A long Code 128 with bars ~3 mm tall (a label printer's), on a sheet fed crooked:
    no scan line crosses all of its bars, so only the tilted pass reads it."""
    code = code_image("CODE128", value)
    code = code.resize((code.width, code.height // 4))
    page = Image.new("L", (2480, 3508), 235)
    page.paste(code, (300, 600))
    return page.rotate(skew_deg, resample=Image.Resampling.BILINEAR, fillcolor=235)


@pytest.mark.parametrize("skew_deg", [6.0, 8.0])
def test_a_long_short_barred_code_on_a_crooked_sheet_is_read_by_the_tilted_pass(
    skew_deg: float,
) -> None:
    value = "000.00.15.H40-250123-0001-LONGER-CODE-XYZ"
    page = _short_barred_code_on_a_crooked_sheet(value, skew_deg)
    assert ZbarReader(fallback=None).read(page, 0) == (Barcode(0, "CODE128", value),)


def test_only_places_whose_edges_run_one_way_are_tilted() -> None:
    """The tilted pass (two turned copies, two zbar scans) is for 1-D codes only: a heading
    in bold capitals, a QR code or a photograph is never worth it."""
    bars = _short_barred_code_on_a_crooked_sheet("H40.99-251201-000123456789", 6.0)
    heading = make_page(["CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM"] * 3, seed=4)
    qr = code_image("QRCODE", CCCD)
    # the places as the ladder sees them: at ~150 dpi
    assert parallel_edges(bars.crop((250, 450, 2300, 1000)).reduce(2)) >= BARS_COHERENCE
    assert (
        parallel_edges(heading.convert("L").crop((200, 200, 2200, 700)).reduce(2)) < BARS_COHERENCE
    )
    assert parallel_edges(qr.convert("L").reduce(2)) < BARS_COHERENCE / 4
