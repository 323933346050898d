"""The certified copy's signature written straight onto sohoa's own PDF: what two
independent validators, a text extractor and the PDF/A checks see of it, and which
PDFs are left to pyHanko."""

from __future__ import annotations

import datetime as dt
import io
import subprocess
import zlib
from collections.abc import Callable
from pathlib import Path

import pikepdf
import pytest
from asn1crypto import algos, x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from fontTools import ttLib
from PIL import Image, ImageDraw
from pyhanko.keys import load_cert_from_pemder
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation import validate_pdf_signature
from pyhanko.sign.validation.status import SignatureCoverageLevel
from pyhanko_certvalidator import ValidationContext

from agent.capture.blockfont import cut_font
from agent.capture.cms_template import build_template
from agent.capture.pdf import PdfMetadata, encode_page, write_pdf
from agent.capture.signing import FONTS, REASON, block_box
from agent.capture.sigupdate import BlockFont, SignatureText, read_layout, signed_update
from tests.support.pdfa import signed_pdfa_findings
from tests.support.softhsm import common_name, self_signed

NAME = "Nguyễn Thị Thu Hường"
LINES = [
    "CHỨNG THỰC BẢN SAO ĐÚNG VỚI BẢN CHÍNH",
    "Số chứng thực: 17    Quyển số: 2026-SCT/BS",
    "Ngày 02 tháng 12 năm 2026, xã Tân Lập",
    "Mã tài liệu: 9f3a5c21",
    f"Người chứng thực: {NAME}",
    "Chức vụ: Phó Chủ tịch Ủy ban nhân dân xã",
    "(Đã ký số)",
]


def _signer(tmp: Path) -> tuple[Callable[[bytes], bytes], Path]:
    key, cert = self_signed(common_name(NAME), 1)
    pem = tmp / "signer.pem"
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    asn1 = x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))
    template = build_template(
        asn1, [], algos.SignedDigestAlgorithm({"algorithm": "sha256_rsa"}), 256
    )

    def sign(digest: bytes) -> bytes:
        attrs = template.signed_attributes(digest)
        return template.container(digest, key.sign(attrs, padding.PKCS1v15(), hashes.SHA256()))

    return sign, pem


def _font(texts: list[str]) -> BlockFont:
    path = next(p for p in FONTS if p.is_file())
    cut = cut_font(path.read_bytes(), texts)
    return BlockFont(ttLib.TTFont(io.BytesIO(cut)), zlib.compress(cut, 6), len(cut), "SOHOAB")


def _pdf(pages: int = 2) -> bytes:
    encoded = []
    for n in range(pages):
        image = Image.new("L", (2480, 3508), 255)
        ImageDraw.Draw(image).rectangle((300, 300 + 200 * n, 2000, 420 + 200 * n), fill=0)
        encoded.append(encode_page(image, 300, "text"))
    out = io.BytesIO()
    write_pdf(encoded, PdfMetadata(), out)
    return out.getvalue()


def _sign(pdf: bytes, lines: list[str], tmp: Path) -> tuple[bytes, Path]:
    sign, pem = _signer(tmp)
    layout = read_layout(pdf)
    assert layout is not None
    when = dt.datetime(2026, 12, 2, 9, 30, tzinfo=dt.timezone(dt.timedelta(hours=7)))
    text = SignatureText(NAME, REASON, "xã Tân Lập", when)
    block = (lines, block_box(layout.width), 8.0)
    signed = signed_update(pdf, layout, _font(lines), block, text, 12 * 1024, sign)
    return signed, pem


def _words(path: Path, page: int) -> list[tuple[str, float, float]]:
    """(word, xMin, xMax) of one page, from poppler's bounding boxes (points)."""
    html = subprocess.run(
        ["pdftotext", "-bbox", "-f", str(page), "-l", str(page), str(path), "-"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    out = []
    for line in html.splitlines():
        if "<word " in line:
            attrs = dict(part.split("=", 1) for part in line.split(">")[0].split()[1:])
            word = line.split(">", 1)[1].split("<", 1)[0]
            out.append((word, float(attrs["xMin"].strip('"')), float(attrs["xMax"].strip('"'))))
    return out


def test_the_signed_copy_is_valid_for_pyhanko_and_poppler_and_stays_pdfa(tmp_path: Path) -> None:
    pdf = _pdf()
    signed, pem = _sign(pdf, LINES, tmp_path)
    assert signed.startswith(pdf)  # the pipeline's bytes stay the first revision
    path = tmp_path / "signed.pdf"
    path.write_bytes(signed)

    sig = PdfFileReader(io.BytesIO(signed)).embedded_signatures[0]
    root = load_cert_from_pemder(str(pem))  # type: ignore[no-untyped-call]
    status = validate_pdf_signature(sig, ValidationContext(trust_roots=[root]))
    assert (status.intact, status.valid) == (True, True)
    assert status.coverage == SignatureCoverageLevel.ENTIRE_FILE
    report = subprocess.run(["pdfsig", str(path)], capture_output=True, text=True).stdout
    assert "Signature is Valid." in report and "Total document signed" in report, report
    assert NAME in report and "ETSI.CAdES.detached" in report
    assert signed_pdfa_findings(signed) == []

    block = subprocess.run(
        ["pdftotext", "-f", "2", "-l", "2", str(path), "-"], capture_output=True, text=True
    ).stdout
    for line in LINES:  # poppler prints a run of spaces as one
        assert " ".join(line.split()) in " ".join(block.split()), block
    with pikepdf.open(path) as doc:  # the widget sits on the last page, where the block is
        assert "/Annots" not in doc.pages[0] and len(doc.pages[1].Annots) == 1


def test_a_changed_byte_fails_both_validators(tmp_path: Path) -> None:
    signed, pem = _sign(_pdf(1), LINES, tmp_path)
    at = signed.index(b"stream\n") + 100
    tampered = tmp_path / "tampered.pdf"
    tampered.write_bytes(signed[:at] + bytes([signed[at] ^ 1]) + signed[at + 1 :])
    sig = PdfFileReader(io.BytesIO(tampered.read_bytes())).embedded_signatures[0]
    status = validate_pdf_signature(
        sig,
        ValidationContext(trust_roots=[load_cert_from_pemder(str(pem))]),  # type: ignore[no-untyped-call]
    )
    assert not status.intact
    report = subprocess.run(["pdfsig", str(tampered)], capture_output=True, text=True).stdout
    assert "Digest Mismatch" in report, report


def test_a_long_name_is_shrunk_to_stay_inside_the_block(tmp_path: Path) -> None:
    long = LINES[:4] + [f"Người chứng thực: {NAME} {NAME} {NAME}"] + LINES[5:]
    signed, _ = _sign(_pdf(1), long, tmp_path)
    path = tmp_path / "long.pdf"
    path.write_bytes(signed)
    left, _, right, _ = block_box(595.28)
    words = _words(path, 1)
    assert sum(w == "Hường" for w, _, _ in words) == 3
    assert all(left <= x0 and x1 <= right for _, x0, x1 in words), words


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda pdf: pdf + b"% appended\n", id="bytes after the end"),
        pytest.param(lambda pdf: _resaved(pdf), id="rewritten by another tool"),
    ],
)
def test_a_pdf_sohoa_did_not_write_as_it_is_goes_pyhankos_way(
    change: Callable[[bytes], bytes],
) -> None:
    assert read_layout(_pdf(1)) is not None
    assert read_layout(change(_pdf(1))) is None


def test_a_signed_pdf_is_not_signed_over_by_the_quick_path(tmp_path: Path) -> None:
    signed, _ = _sign(_pdf(1), LINES, tmp_path)
    assert read_layout(signed) is None  # its trailer has /Prev: a second revision


def _resaved(pdf: bytes) -> bytes:
    out = io.BytesIO()
    with pikepdf.open(io.BytesIO(pdf)) as doc:
        doc.save(out)
    return out.getvalue()


def test_the_session_font_maps_every_letter_of_the_block() -> None:
    font = _font(LINES)
    for line in LINES:
        hexed, width = font.line(line)
        assert "0000" not in [hexed[i : i + 4] for i in range(0, len(hexed), 4)], line
        assert width > 0
