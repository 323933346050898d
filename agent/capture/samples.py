"""Generated sample pages: text lines and barcodes on a grey A4 sheet, as a scanner sees it.

Used by the tests and by ``sohoa demo``. Every page is deterministic for its
arguments and ``seed``; the damage a real scan suffers (skew, a sheet fed upside
down, low contrast, noise, JPEG artefacts, small codes, low resolution) is
applied on request.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import barcode
import numpy as np
import qrcode
from PIL import Image, ImageChops, ImageDraw

from agent.capture.sheets import load_font
from device.errors import BarcodeError

SYMBOLOGIES = ("QRCODE", "CODE128", "CODE39")
MM_PER_INCH = 25.4
# Nominal sizes at code_scale 1.0: a QR module of 0.5 mm, a 1-D bar module of
# 0.33 mm and 12 mm bars, as on receipts printed by office laser printers.
QR_MODULE_MM = 0.5
BAR_MODULE_MM = 0.33
BAR_HEIGHT_MM = 12.0
TEXT_MM = 3.5
MARGIN_MM = 20.0
WORDS = (
    "ủy ban nhân dân xã phường thị trấn căn cứ luật hộ tịch nghị định thông tư "
    "đề nghị cấp bản sao trích lục giấy khai sinh kết hôn chứng thực điều khoản "
    "hồ sơ thủ tục hành chính bộ phận một cửa ngày tháng năm người yêu cầu"
)


def _px(mm: float, dpi: int) -> int:
    return max(1, round(mm * dpi / MM_PER_INCH))


def code_modules(symbology: str, text: str) -> np.ndarray:
    """The code as a 2-D array of modules (True = dark), without quiet zone."""
    if symbology == "QRCODE":
        qr = qrcode.QRCode(border=0, error_correction=qrcode.constants.ERROR_CORRECT_M)
        qr.add_data(text.encode("utf-8"))
        qr.make(fit=True)
        return np.array(qr.get_matrix(), dtype=bool)
    if symbology == "CODE128":
        row = barcode.codex.Code128(text).build()[0]
    elif symbology == "CODE39":
        row = barcode.codex.Code39(text, add_checksum=False).build()[0]
    else:
        raise BarcodeError(
            f"cannot draw symbology {symbology!r}", f"use one of {', '.join(SYMBOLOGIES)}"
        )
    return np.array([[c == "1" for c in row]], dtype=bool)


def code_image(symbology: str, text: str, *, dpi: int = 300, scale: float = 1.0) -> Image.Image:
    """One code rendered at its physical size (fractional modules are area-averaged)."""
    modules = code_modules(symbology, text)
    rows, cols = modules.shape
    if symbology == "QRCODE":
        module_px = QR_MODULE_MM * scale * dpi / MM_PER_INCH
        size = (round(cols * module_px), round(rows * module_px))
    else:
        module_px = BAR_MODULE_MM * scale * dpi / MM_PER_INCH
        size = (round(cols * module_px), _px(BAR_HEIGHT_MM * max(scale, 0.5), dpi))
    small = Image.fromarray(np.where(modules, 0, 255).astype(np.uint8))
    # Render at 8x then box-filter down so module edges fall between pixels as on paper.
    big = small.resize((size[0] * 8, size[1] * 8), Image.Resampling.NEAREST)
    return big.resize(size, Image.Resampling.BOX)


def _draw_codes(
    page: Image.Image, top: int, codes: Sequence[tuple[str, str]], dpi: int, scale: float
) -> None:
    draw = ImageDraw.Draw(page)
    font = load_font(_px(TEXT_MM * 0.8, dpi))
    margin = _px(MARGIN_MM, dpi)
    x, y, column_width = margin, top, 0
    gap = _px(8, dpi)
    for symbology, text in codes:
        img = code_image(symbology, text, dpi=dpi, scale=scale)
        label = symbology != "QRCODE"
        height = img.height + (_px(TEXT_MM * 1.4, dpi) if label else 0)
        if y + height > page.height - margin and y > top:
            x, y, column_width = x + column_width + gap, top, 0
        page.paste(img, (x, y))
        if label:
            draw.text((x, y + img.height + _px(1, dpi)), text, fill=0, font=font)
        column_width = max(column_width, img.width)
        y += height + gap


def _noise_image(size: tuple[int, int], sigma: float, seed: int) -> Image.Image:
    """Gaussian noise about 128, tiled from a prime-sized patch: as good as per-pixel noise
    for a decoder, and many times faster to make."""
    rng = np.random.default_rng(seed)
    patch = np.clip(128.0 + rng.standard_normal((509, 503)) * sigma, 0, 255).astype(np.uint8)
    width, height = size
    reps = (-(-height // 509), -(-width // 503))
    return Image.fromarray(np.tile(patch, reps)[:height, :width])


def _degrade(
    page: Image.Image,
    *,
    skew_deg: float,
    rotate: int,
    contrast: float,
    noise: float,
    jpeg_quality: int | None,
    seed: int,
) -> Image.Image:
    if skew_deg:
        page = page.rotate(skew_deg, resample=Image.Resampling.BILINEAR, fillcolor=255)
    if contrast != 1.0:
        # Squeeze the range about mid-grey: paper goes grey, ink goes grey.
        page = page.point([round(127.5 + (v - 127.5) * contrast) for v in range(256)])
    if noise:
        page = ImageChops.add(page, _noise_image(page.size, noise * 255.0, seed), offset=-128)
    if rotate % 360:
        transposes = {
            90: Image.Transpose.ROTATE_90,
            180: Image.Transpose.ROTATE_180,
            270: Image.Transpose.ROTATE_270,
        }
        if rotate % 360 not in transposes:
            raise BarcodeError(f"cannot turn a page by {rotate} degrees", "use 0, 90, 180 or 270")
        page = page.transpose(transposes[rotate % 360])
    if jpeg_quality is not None:
        buf = io.BytesIO()
        page.save(buf, format="JPEG", quality=jpeg_quality)
        buf.seek(0)
        page = Image.open(buf).convert("L")
    return page


def make_page(
    lines: Sequence[str] = (),
    *,
    codes: Sequence[tuple[str, str]] = (),
    dpi: int = 300,
    size_mm: tuple[float, float] = (210, 297),
    skew_deg: float = 0.0,
    rotate: int = 0,
    contrast: float = 1.0,
    noise: float = 0.0,
    jpeg_quality: int | None = None,
    code_scale: float = 1.0,
    marker: str | None = None,
    seed: int = 0,
) -> Image.Image:
    """A grey ("L") page with ``lines`` of text, then ``codes`` (symbology, text) below them.

    ``marker`` is a small label in the bottom corner that makes otherwise equal pages
    differ (tests use it to follow a page through the pipeline). ``rotate`` turns the
    sheet by 90/180/270 degrees counter-clockwise; ``skew_deg`` tilts it slightly.
    """
    page = Image.new("L", (_px(size_mm[0], dpi), _px(size_mm[1], dpi)), 255)
    draw = ImageDraw.Draw(page)
    font = load_font(_px(TEXT_MM, dpi))
    margin = _px(MARGIN_MM, dpi)
    y = margin
    for line in lines:
        draw.text((margin, y), line, fill=0, font=font)
        y += _px(TEXT_MM * 1.6, dpi)
    if codes:
        _draw_codes(page, y + _px(6, dpi), codes, dpi, code_scale)
    if marker:
        small = load_font(_px(TEXT_MM * 0.7, dpi))
        draw.text((margin, page.height - margin), marker, fill=0, font=small)
    return _degrade(
        page,
        skew_deg=skew_deg,
        rotate=rotate,
        contrast=contrast,
        noise=noise,
        jpeg_quality=jpeg_quality,
        seed=seed,
    )


def content_lines(seed: int, count: int = 18) -> tuple[str, ...]:
    """Plausible body text for a content page (no personal data; deterministic for a seed)."""
    words = WORDS.split()
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        n = int(rng.integers(6, 14))
        out.append(" ".join(words[int(i)] for i in rng.integers(0, len(words), n)).capitalize())
    return tuple(out)


def receipt_page(dossier_code: str, **kw: Any) -> Image.Image:
    """A "Giấy tiếp nhận hồ sơ và hẹn trả kết quả" carrying the dossier code as Code 128."""
    lines = (
        "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM",
        "Độc lập - Tự do - Hạnh phúc",
        "",
        "GIẤY TIẾP NHẬN HỒ SƠ VÀ HẸN TRẢ KẾT QUẢ",
        f"Mã hồ sơ: {dossier_code}",
        "Bộ phận tiếp nhận và trả kết quả đã nhận hồ sơ của ông/bà:",
        "Thủ tục: Đăng ký khai sinh",
    )
    codes = (("CODE128", dossier_code), *kw.pop("codes", ()))
    return make_page(lines, codes=codes, **kw)


def blank_page(**kw: Any) -> Image.Image:
    """An empty sheet (a blank back side): white, or grey with noise when asked."""
    return make_page((), **kw)


__all__ = [
    "SYMBOLOGIES",
    "blank_page",
    "code_image",
    "code_modules",
    "content_lines",
    "load_font",
    "make_page",
    "receipt_page",
]
