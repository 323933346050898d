"""Generated scanned pages for the page-check and PDF tests: text, blanks, barcodes."""

from __future__ import annotations

import random

import barcode
import numpy as np
import qrcode
from PIL import Image, ImageDraw, ImageFont

A4_MM = (210, 297)

PHRASES = (
    # Vietnamese without diacritics: the font bundled with Pillow has no glyphs for them
    "Uy ban nhan dan xa cong hoa xa hoi chu nghia Viet Nam doc lap tu do hanh phuc",
    "giay tiep nhan ho so va hen tra ket qua thu tuc dang ky khai sinh nguoi nop",
    "thanh phan ho so ban chinh to khai giay chung sinh so luong ngay thang nam",
    "quick brown fox jumps over the lazy dog 0123456789",
)
WORDS = tuple(word for phrase in PHRASES for word in phrase.split())


def a4_size(dpi: int) -> tuple[int, int]:
    return round(A4_MM[0] / 25.4 * dpi), round(A4_MM[1] / 25.4 * dpi)


def font(dpi: int, points: float = 11) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=max(6, round(points / 72 * dpi)))


def blank_page(dpi: int = 300, *, paper: int = 250) -> Image.Image:
    return Image.new("L", a4_size(dpi), paper)


def text_page(dpi: int = 300, *, lines: int = 45, seed: int = 1, words: int = 12) -> Image.Image:
    """A typical letter: margins of 25 mm, 11-pt lines of varying length."""
    rng = random.Random(seed)
    page = blank_page(dpi)
    draw = ImageDraw.Draw(page)
    face = font(dpi)
    margin = round(25 / 25.4 * dpi)
    pitch = round(11 / 72 * dpi * 1.5)
    for n in range(lines):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(words // 2, words)))
        draw.text((margin, margin + n * pitch), text, fill=20, font=face)
    return page


def short_lines_page(dpi: int = 300) -> Image.Image:
    """A page with only three short lines: a note, a signature, a date."""
    page = blank_page(dpi)
    draw = ImageDraw.Draw(page)
    face = font(dpi)
    margin = round(25 / 25.4 * dpi)
    for n, text in enumerate(("Da nhan du ho so", "Nguoi nhan: ky ten", "Ngay 12/5/2023")):
        draw.text((margin, margin + n * round(dpi / 4)), text, fill=20, font=face)
    return page


def noisy_blank_page(dpi: int = 300, *, seed: int = 2) -> Image.Image:
    """A blank back: sensor noise, dust specks, shadows down both sides and a dark top strip."""
    rng = np.random.default_rng(seed)
    w, h = a4_size(dpi)
    pixels = rng.normal(245, 6, size=(h, w))
    shadow = round(dpi * 0.3)
    pixels[:, :shadow] -= np.linspace(150, 0, shadow)[None, :]
    pixels[: round(dpi * 0.08), :] = 40
    # a lid shadow reaching past the margin on the right: dark at the edge, fading inwards
    wide = round(dpi * 0.7)
    pixels[:, w - wide :] -= np.linspace(0, 200, wide)[None, :]
    for _ in range(60):
        y, x = int(rng.integers(0, h - 6)), int(rng.integers(0, w - 6))
        size = int(rng.integers(1, 5))
        pixels[y : y + size, x : x + size] = 30
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "L")


def code128_modules(text: str) -> str:
    built: list[str] = barcode.get("code128", text).build()
    return built[0]


def draw_code128(
    page: Image.Image, text: str, xy: tuple[int, int], module: int, height: int
) -> None:
    draw = ImageDraw.Draw(page)
    x, y = xy
    for bit in code128_modules(text):
        if bit == "1":
            draw.rectangle((x, y, x + module - 1, y + height), fill=0)
        x += module


def draw_qr(page: Image.Image, text: str, xy: tuple[int, int], module: int) -> None:
    code = qrcode.QRCode(border=0, error_correction=qrcode.constants.ERROR_CORRECT_M)
    code.add_data(text)
    code.make(fit=True)
    draw = ImageDraw.Draw(page)
    for row, cells in enumerate(code.get_matrix()):
        for col, dark in enumerate(cells):
            if dark:
                x, y = xy[0] + col * module, xy[1] + row * module
                draw.rectangle((x, y, x + module - 1, y + module - 1), fill=0)


def receipt_page(dpi: int = 300, *, code: str, qr: str) -> Image.Image:
    """A receipt: text, a Code 128 dossier code (0.25 mm modules) and a look-up QR."""
    page = text_page(dpi, lines=12)
    draw_code128(
        page, code, (round(dpi * 1.0), round(dpi * 5.5)), module=3, height=round(dpi * 0.5)
    )
    draw_qr(page, qr, (round(dpi * 1.0), round(dpi * 6.5)), module=8)
    return page


def color_page(dpi: int = 300) -> Image.Image:
    """A text page with a red seal and a blue signature: colour that must survive."""
    page = text_page(dpi, lines=20).convert("RGB")
    draw = ImageDraw.Draw(page)
    cx, cy, r = round(dpi * 5.5), round(dpi * 8.5), round(dpi * 0.7)
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=(200, 30, 30), width=round(dpi / 40))
    draw.line((cx - r, cy + r, cx + r, cy - r // 2), fill=(20, 40, 180), width=round(dpi / 60))
    return page


def photo_page(dpi: int = 300, *, seed: int = 3) -> Image.Image:
    """A photograph-like page: smooth blobs of grey, no text lines."""
    rng = np.random.default_rng(seed)
    w, h = a4_size(dpi)
    coarse = Image.fromarray(rng.integers(0, 256, size=(30, 21), dtype=np.uint8), "L")
    return coarse.resize((w, h), Image.Resampling.BICUBIC)


def turned(page: Image.Image, degrees: float) -> Image.Image:
    """The page as a scanner sees it when the sheet lies turned counter-clockwise."""
    fill: int | tuple[int, int, int] = (250, 250, 250) if page.mode == "RGB" else 250
    return page.rotate(degrees, resample=Image.Resampling.BILINEAR, fillcolor=fill)
