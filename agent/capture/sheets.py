"""Printable cover and separator sheets: the ``SOHOA:1;…`` text, its A4 page, and the PDF.

An officer prints these (``sohoa sheets``) and puts one in front of a document
or dossier; the scanner reads the big QR and drops the sheet from the output.
``cover_sheet_text`` is the inverse of ``agent.codes.parse_cover_sheet``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import qrcode
from PIL import Image, ImageDraw, ImageFont

from agent.capture.codes import COVER_PREFIX, parse_cover_sheet
from agent.errors import CodeError

FONT_PATHS = (
    Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),
    Path("/usr/share/fonts/dejavu/DejaVuSans.ttf"),
)
BOLD_FONT_PATHS = (
    Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"),
    Path("/usr/share/fonts/dejavu/DejaVuSans-Bold.ttf"),
)
A4_MM = (210.0, 297.0)
QR_MM = 80.0
# Field order on the sheet, and the friendly argument names that map to each key.
FIELD_ORDER = ("T", "P", "Y", "H", "TT", "N")
FIELD_NAMES = {
    "doc_type": "T",
    "pages": "P",
    "issue_year": "Y",
    "dossier_code": "H",
    "tthc_code": "TT",
    "documents": "N",
}
FOOTER = (
    "Đặt tờ này ngay trước tài liệu / hồ sơ khi quét. Tờ này không được lưu.",
    "Put this sheet in front of the document or dossier when scanning; it is not kept.",
)

FontType = ImageFont.FreeTypeFont | ImageFont.ImageFont


def load_font(size_px: int, *, bold: bool = False) -> FontType:
    """DejaVu Sans (Vietnamese diacritics) where installed, else Pillow's built-in font."""
    for path in BOLD_FONT_PATHS if bold else FONT_PATHS:
        if path.exists():
            return ImageFont.truetype(str(path), size_px)
    return ImageFont.load_default(size=size_px)


def cover_sheet_text(kind: str, **fields: object) -> str:
    """``SOHOA:1;K=<kind>;…`` from keys (T, P, Y, H, TT, N) or their long names
    (doc_type, pages, issue_year, dossier_code, tthc_code, documents); None values are
    left out. Raises ``CodeError`` when the result would not parse back."""
    values: dict[str, str] = {}
    for name, value in fields.items():
        key = FIELD_NAMES.get(name, name)
        if key not in FIELD_ORDER:
            raise CodeError(
                f"cover sheet has no field {name}",
                f"use {', '.join(FIELD_ORDER)} (or {', '.join(FIELD_NAMES)})",
            )
        if value is not None:
            values[key] = str(value).strip()
    parts = [f"K={kind.upper()}"] + [f"{k}={values[k]}" for k in FIELD_ORDER if k in values]
    text = f"{COVER_PREFIX}1;" + ";".join(parts)
    parse_cover_sheet(text)  # refuse to print a sheet the scanner would reject
    return text


def _mm(mm: float, dpi: int) -> int:
    return round(mm * dpi / 25.4)


def qr_image(text: str, module_px: int) -> Image.Image:
    qr = qrcode.QRCode(border=4, error_correction=qrcode.constants.ERROR_CORRECT_M)
    qr.add_data(text.encode("utf-8"))
    qr.make(fit=True)
    matrix = qr.get_matrix()
    size = len(matrix)
    img = Image.new("L", (size, size), 255)
    img.putdata([0 if dark else 255 for row in matrix for dark in row])
    return img.resize((size * module_px, size * module_px), Image.Resampling.NEAREST)


def _centered(draw: ImageDraw.ImageDraw, y: int, text: str, font: FontType, width: int) -> int:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    draw.text(((width - round(right - left)) // 2, y), text, fill=0, font=font)
    return y + round(bottom - top)


def render_sheet(
    text: str, title: str, subtitle_lines: Sequence[str], dpi: int = 300
) -> Image.Image:
    """An A4 grey page: big title, a QR of ``text`` about 8 cm wide, the lines below it."""
    width, height = _mm(A4_MM[0], dpi), _mm(A4_MM[1], dpi)
    page = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(page)
    y = _centered(draw, _mm(25, dpi), title, load_font(_mm(14, dpi), bold=True), width)
    y += _mm(12, dpi)
    for line in subtitle_lines:
        y = _centered(draw, y, line, load_font(_mm(6, dpi)), width) + _mm(4, dpi)
    probe = qr_image(text, 1)
    module_px = max(2, _mm(QR_MM, dpi) // probe.width)
    qr = qr_image(text, module_px)
    qr_top = max(y + _mm(8, dpi), (height - qr.height) // 2)
    page.paste(qr, ((width - qr.width) // 2, qr_top))
    y = qr_top + qr.height + _mm(4, dpi)
    y = _centered(draw, y, text, load_font(_mm(3, dpi)), width) + _mm(20, dpi)
    small = load_font(_mm(3.5, dpi))
    for line in FOOTER:
        y = _centered(draw, y, line, small, width) + _mm(2, dpi)
    return page


def write_sheets_pdf(sheets: Sequence[Image.Image], out: BinaryIO, dpi: int = 300) -> None:
    """A PDF with one sheet per page, bilevel (crisp codes, small file)."""
    if not sheets:
        raise CodeError("no sheets to write", "ask for at least one sheet")
    pages = [sheet.convert("1", dither=Image.Dither.NONE) for sheet in sheets]
    pages[0].save(out, format="PDF", save_all=True, append_images=pages[1:], resolution=dpi)


MAX_COPIES = 50


def build_sheet(kind: str, fields: dict[str, object]) -> tuple[str, Image.Image]:
    """The text and the page of one sheet of ``kind`` (SEP, DOC, DOSSIER) with its fields
    (``type``, ``pages``, ``year``; ``dossier``, ``tthc``, ``documents``)."""
    kind = kind.upper()
    if kind == "DOC":
        values = {"T": fields.get("type"), "P": fields.get("pages"), "Y": fields.get("year")}
        title, sub = "TÀI LIỆU TIẾP THEO", [f"Loại: {fields.get('type')}"]
    elif kind == "DOSSIER":
        values = {
            "H": fields.get("dossier"),
            "TT": fields.get("tthc"),
            "N": fields.get("documents"),
        }
        title = "HỒ SƠ"
        sub = [f"Mã hồ sơ: {fields.get('dossier')}", f"Thủ tục: {fields.get('tthc') or '-'}"]
    elif kind == "SEP":
        values, title, sub = {}, "TRANG PHÂN CÁCH", ["Separator sheet"]
    else:
        raise CodeError(f"unknown sheet kind {kind[:10]!r}", "use SEP, DOC or DOSSIER")
    text = cover_sheet_text(kind, **{k: v for k, v in values.items() if v not in (None, "")})
    return text, render_sheet(text, title, sub)


def sheet_pdf(request: dict[str, object]) -> bytes:
    """The PDF the counter page asks for: ``{"kind", "copies", ...fields}``."""
    import io

    try:
        copies = int(str(request.get("copies", 1)))
    except ValueError:
        copies = 0
    if not 1 <= copies <= MAX_COPIES:
        raise CodeError("the number of copies is out of range", f"ask for 1 to {MAX_COPIES}")
    _text, page = build_sheet(str(request.get("kind", "")), request)
    out = io.BytesIO()
    write_sheets_pdf([page] * copies, out)
    return out.getvalue()
