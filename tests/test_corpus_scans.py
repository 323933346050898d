"""Page checks and PDF profiles on real scans: the OCRmyPDF test pages in ../shared/corpus/scans."""

from __future__ import annotations

import io
import json
from functools import cache
from pathlib import Path

import numpy as np
import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
import pytest
from PIL import Image

from agent.capture.orientation import estimate_orientation
from agent.capture.pages import check_page, deskew, estimate_skew, prepare_page
from agent.capture.pdf import PdfMetadata, encode_page, wrap_jpeg, write_pdf

SCANS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "scans"
if not (SCANS / "EXPECTED.json").is_file():
    pytest.skip(f"no scan corpus at {SCANS}", allow_module_level=True)

CASES = {case["file"]: case for case in json.loads((SCANS / "EXPECTED.json").read_text())["cases"]}
# PNGs carry no resolution: linn.png is Letter at 300 dpi, the others are treated alike
PNG_DPI = 300


def image_objects(page: pdfium.PdfPage) -> list[pdfium.PdfImage]:
    return [o for o in page.get_objects() if o.type == pdfium_c.FPDF_PAGEOBJ_IMAGE]


def native_dpi(page: pdfium.PdfPage) -> int:
    """Resolution of the page's scan: its image's pixels over the page's points (300 if none)."""
    images = image_objects(page)
    if not images:
        return 300
    return round(max(images[0].get_px_size()) / max(page.get_size()) * 72)


@cache
def scan(name: str) -> tuple[tuple[Image.Image, int], ...]:
    """Every page of a corpus file as a grey image with its resolution."""
    path = SCANS / name
    if path.suffix != ".pdf":
        return ((Image.open(path).convert("L"), PNG_DPI),)
    pages = []
    for page in pdfium.PdfDocument(path):
        dpi = native_dpi(page)
        width, height = (round(side * dpi / 72) for side in page.get_size())
        image = page.render(scale=dpi / 72, grayscale=True).to_pil().convert("L")
        pages.append((image.crop((0, 0, width, height)), dpi))
    return tuple(pages)


@pytest.mark.parametrize("name", sorted(CASES))
def test_blank_verdict_matches_the_corpus(name: str) -> None:
    verdicts = [check_page(image, dpi).blank for image, dpi in scan(name)]
    assert verdicts == [CASES[name]["blank"]] * len(verdicts)


def test_only_the_blank_scan_is_blank() -> None:
    blank = {name for name in CASES for image, dpi in scan(name) if check_page(image, dpi).blank}
    assert blank == {"blank.pdf"}


def test_skewed_scan_is_flagged_and_deskewed_to_half_a_degree() -> None:
    assert CASES["skew.pdf"]["skewed"] is True
    ((image, dpi),) = scan("skew.pdf")
    straight, check = prepare_page(image, dpi)
    assert check.flags == ("skewed", "deskewed")
    assert abs(check.skew_deg) >= 1
    assert abs(estimate_skew(straight, dpi)) <= 0.5


def test_skew_estimate_agrees_with_the_unskewed_original() -> None:
    ((image, dpi),) = scan("skew.pdf")
    ((original, _),) = scan("linn.png")
    estimate = check_page(image, dpi).skew_deg
    # compared at 75 dpi: a tenth of a degree still moves the page's edges by a pixel
    original_ink = np.asarray(original.reduce(4)) < 128
    page = image.reduce(2)

    def overlap(angle: float) -> float:
        ink = np.asarray(deskew(page, angle).reduce(2)) < 128
        shifts = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
        return max(
            (np.roll(ink, shift, (0, 1)) & original_ink).sum()
            / (np.roll(ink, shift, (0, 1)) | original_ink).sum()
            for shift in shifts
        )

    angles = np.round(np.arange(estimate - 1.0, estimate + 1.05, 0.1), 2)
    truth = float(angles[int(np.argmax([overlap(a) for a in angles]))])
    assert estimate == pytest.approx(truth, abs=0.3)
    assert abs(check_page(original, PNG_DPI).skew_deg) < 0.3


def test_turned_pages_are_found_by_their_quarter_turn() -> None:
    turns = [estimate_orientation(image, dpi) for image, dpi in scan("cardinal.pdf")]
    assert turns == CASES["cardinal.pdf"]["orientation_cw_degrees"]


@pytest.mark.parametrize("name", ["linn.png", "typewriter.png"])
def test_text_profile_of_a_real_scan_is_a_tenth_of_a_grey_jpeg_or_less(name: str) -> None:
    ((image, dpi),) = scan(name)
    jpeg = io.BytesIO()
    image.save(jpeg, "JPEG", quality=75)
    text = encode_page(image, dpi, "text")
    assert len(text.data) <= 0.10 * len(jpeg.getvalue())


@pytest.mark.parametrize("name", ["linn.png", "typewriter.png"])
def test_text_profile_keeps_a_bilevel_scan_exactly(name: str) -> None:
    ((image, dpi),) = scan(name)
    out = io.BytesIO()
    write_pdf([encode_page(image, dpi, "text")], PdfMetadata(), out)
    document = pdfium.PdfDocument(out.getvalue())
    (embedded,) = image_objects(document[0])
    read_back = np.asarray(embedded.get_bitmap(render=False).to_pil().convert("L"))
    assert np.array_equal(read_back < 128, np.asarray(image) < 128)


def test_scanned_jpeg_passes_into_the_pdf_untouched() -> None:
    (page,) = pdfium.PdfDocument(SCANS / "c02-22.pdf")
    (embedded,) = image_objects(page)
    jpeg = bytes(embedded.get_data(decode_simple=False))
    wrapped = wrap_jpeg(jpeg, native_dpi(page))
    assert (wrapped.width, wrapped.height, wrapped.dpi) == (*embedded.get_px_size(), 150)
    out = io.BytesIO()
    write_pdf([wrapped], PdfMetadata(), out)
    assert jpeg in out.getvalue()
    (copy,) = pdfium.PdfDocument(out.getvalue())
    assert copy.get_size() == pytest.approx(page.get_size(), abs=0.5)


@pytest.mark.parametrize("name", ["baiona.png", "c02-22.pdf"])
def test_photographic_pages_keep_their_tones_in_the_color_profile(name: str) -> None:
    ((image, dpi),) = scan(name)
    colour = Image.open(SCANS / name).convert("RGB") if name.endswith(".png") else image
    encoded = encode_page(colour, dpi, "color")
    decoded = np.asarray(Image.open(io.BytesIO(encoded.data)).convert(colour.mode), np.int16)
    assert np.abs(decoded - np.asarray(colour, np.int16)).mean() < 3
