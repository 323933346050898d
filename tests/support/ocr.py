"""OCR test material: Vietnamese pages whose text is known, rendered at 300 dpi with a font
that has every Vietnamese glyph (Debian's fonts-dejavu-core), clean or degraded as a
worn original scans (blur, sensor noise, JPEG, a slight skew); put through the
device's ``text`` profile; the character error rate of what OCR read; and stored
documents placed in a warehouse archive and index as ingest leaves them.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pypdfium2
import pytest
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from agent.capture.pdf import PdfMetadata, encode_page, write_pdf
from sync.warehouse.index import DocumentIndex, StoredDocument
from tests.support.pages import a4_size

FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf")
# a receipt for a dossier, as a commune's one-stop desk prints it: every tone mark, đ/Đ,
# ơ/ư and capitals with marks
LINES = (
    "Ủy ban nhân dân xã Tân Phước, huyện Đồng Xuân",
    "Cộng hòa xã hội chủ nghĩa Việt Nam",
    "Độc lập – Tự do – Hạnh phúc",
    "Giấy tiếp nhận hồ sơ và hẹn trả kết quả",
    "Thủ tục đăng ký khai sinh cho người nộp hồ sơ",
    "Thành phần hồ sơ gồm bản chính tờ khai và giấy chứng sinh",
    "Hộ kinh doanh cá thể được cấp giấy chứng nhận đăng ký",
    "Người tiếp nhận kiểm tra đầy đủ, hợp lệ của hồ sơ",
    "Ngày hẹn trả kết quả: thứ năm, ngày mười lăm tháng tám",
    "Trường hợp hồ sơ chưa đủ, cán bộ hướng dẫn bổ sung",
    "Quyết định có hiệu lực kể từ ngày ký ban hành",
    "Nơi nhận: như trên, lưu văn thư, phòng tư pháp",
)
TEXT = "\n".join(LINES)


def vietnamese_page(*, degraded: bool = False, dpi: int = 300, seed: int = 5) -> Image.Image:
    """An A4 page of ``LINES`` in 11-pt serif; ``degraded``: turned 0.8°, blurred
    (σ 1.5 px), grey noise (σ 40) and saved as JPEG at quality 20 before the profile."""
    if not FONT.exists():
        pytest.fail("the DejaVu fonts are missing: apt-get install fonts-dejavu-core")
    page = Image.new("L", a4_size(dpi), 250)
    draw = ImageDraw.Draw(page)
    face = ImageFont.truetype(str(FONT), round(11 / 72 * dpi))
    margin, pitch = round(25 / 25.4 * dpi), round(11 / 72 * dpi * 1.8)
    for n, line in enumerate(LINES):
        draw.text((margin, margin + n * pitch), line, fill=20, font=face)
    if not degraded:
        return page
    page = page.rotate(0.8, resample=Image.Resampling.BILINEAR, fillcolor=250)
    page = page.filter(ImageFilter.GaussianBlur(1.5))
    noise = np.random.default_rng(seed).normal(0, 40, (page.height, page.width))
    page = Image.fromarray(np.clip(np.asarray(page) + noise, 0, 255).astype(np.uint8), "L")
    jpeg = io.BytesIO()
    page.save(jpeg, "JPEG", quality=20)
    return Image.open(io.BytesIO(jpeg.getvalue())).convert("L")


def text_profile_pdf(pages: list[Image.Image], dpi: int = 300) -> bytes:
    """The PDF the device writes for these pages in its ``text`` profile (CCITT G4)."""
    out = io.BytesIO()
    meta = PdfMetadata(title="Giấy tiếp nhận hồ sơ", language="vi")
    write_pdf([encode_page(p, dpi, "text") for p in pages], meta, out)
    return out.getvalue()


def _flat(text: str) -> str:
    """NFC, one space for any run of whitespace: line breaks are layout, not text."""
    return re.sub(r"\s+", " ", unicodedata.normalize("NFC", text)).strip()


def edit_distance(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def cer(truth: str, read: str) -> float:
    """Character error rate of ``read`` against ``truth``, diacritics counted: a wrong
    or missing tone mark is a wrong character."""
    t, r = _flat(truth), _flat(read)
    return edit_distance(t, r) / max(1, len(t))


def pdf_text(path: Path) -> str:
    """The text layer as a PDF reader extracts it (pdfium), every page."""
    pdf = pypdfium2.PdfDocument(path)
    try:
        return "\f".join(page.get_textpage().get_text_range() for page in pdf)
    finally:
        pdf.close()


@dataclass(frozen=True)
class Stored:
    doc: StoredDocument
    folder: Path

    def hashes(self) -> dict[str, str]:
        """SHA-256 of each file ingest wrote (the original, its metadata, its envelope)."""
        names = ("document.pdf", "metadata.json", "envelope.sohoa")
        return {n: hashlib.sha256((self.folder / n).read_bytes()).hexdigest() for n in names}


def store_document(
    archive: Path,
    index: DocumentIndex,
    doc_id: str,
    pdf: bytes,
    *,
    pages: int = 1,
    device: str = "dev-ocr-01",
) -> Stored:
    """``pdf`` archived and indexed as ingest leaves a stored document."""
    folder = archive / "docs" / device / doc_id
    folder.mkdir(parents=True, mode=0o700)
    (folder / "document.pdf").write_bytes(pdf)
    (folder / "metadata.json").write_text(json.dumps({"doc_id": doc_id}), encoding="utf-8")
    (folder / "envelope.sohoa").write_bytes(b"SOHOA envelope stand-in " + doc_id.encode())
    doc = StoredDocument(
        doc_id=doc_id,
        device=device,
        ciphertext_sha256=hashlib.sha256(doc_id.encode()).hexdigest(),
        stored_at=f"2025-01-01T00:00:{len(index.all()):02d}Z",
        bytes=len(pdf),
        pages=pages,
        pdf_sha256=hashlib.sha256(pdf).hexdigest(),
        path=str(folder / "document.pdf"),
    )
    assert index.add(doc)
    return Stored(doc, folder)
