"""Certified copies (chứng thực bản sao điện tử từ bản chính): a PAdES signature on the
officer's PKCS#11 token with a visible Vietnamese certification block.

The PDF is signed in memory, before sealing, as an incremental update: the bytes
the pipeline wrote stay the file's first revision, so its PDF/A-2b conformance is
kept, and the device never holds the PDF in clear afterwards. PAdES-B-B offline;
PAdES-B-T when ``[sign] tsa_url`` is set and answers. A document that cannot be
signed is sealed unsigned and flagged by the pipeline, never half-signed: a
signature is only used after it verified against the document.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from asn1crypto import cms
from asn1crypto import x509 as asn1_x509
from pyhanko import stamp
from pyhanko.keys import load_cert_from_pemder, load_certs_from_pemder
from pyhanko.pdf_utils import text
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign import fields, signers
from pyhanko.sign.timestamps import HTTPTimeStamper
from pyhanko.sign.timestamps.common_utils import TimestampRequestError
from pyhanko.sign.validation.generic_cms import validate_sig_integrity

from agent.capture.blockfont import SessionFont, cut_font
from agent.capture.certifier import CertifiedPdf, SignerInfo, SigningError
from agent.capture.register import Certification, CertificationRegister
from agent.capture.sigupdate import (
    BlockFont,
    PdfLayout,
    SignatureText,
    read_layout,
    signed_update,
)
from agent.capture.tokensigner import NOT_THE_CERTIFICATES_KEY, TemplateSigner
from agent.config import SignConfig
from device.token import TokenError, on_token, open_session

log = logging.getLogger("sohoa.sign")

FIELD = "ChungThuc"
REASON = "Chứng thực bản sao đúng với bản chính"
FONTS = (
    Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),
    Path("/usr/share/fonts/dejavu/DejaVuSans.ttf"),
)
BLOCK_PT = (270, 118)  # width, height of the certification block
MARGIN_PT = 18
# room for the CMS signature (hex doubles it in the file): an RSA-4096 or EC signature
# with the signer's certificate and a chain of three; a timestamp token adds its own
RESERVED, RESERVED_TSA = 12 * 1024, 24 * 1024


def signer_info(cert: asn1_x509.Certificate) -> SignerInfo:
    subject = cert.subject.native
    validity = cert["tbs_certificate"]["validity"]
    return SignerInfo(
        name=str(subject.get("common_name", "")),
        title=str(subject.get("title", "")),
        organisation=str(subject.get("organization_name", "")),
        not_before=validity["not_before"].native,
        not_after=validity["not_after"].native,
    )


def check_validity(info: SignerInfo, now: datetime) -> None:
    """``SigningError`` when the signer's certificate is not valid at ``now``."""
    if now > info.not_after:
        raise SigningError(
            f"chứng thư số của người ký đã hết hạn ngày {info.not_after:%d/%m/%Y} / the"
            f" signer's certificate expired on {info.not_after:%Y-%m-%d}",
            "xin cấp lại chứng thư số rồi ký lại / ask the signing service for a renewed"
            " certificate and put it on the token",
        )
    if now < info.not_before:
        raise SigningError(
            f"chứng thư số chưa có hiệu lực / the signer's certificate is valid only from"
            f" {info.not_before:%Y-%m-%d}",
            "check the device clock (sohoa doctor) or wait for the certificate's start",
        )


def block_text(c: Certification) -> str:
    """The certification block as printed on the copy (Vietnamese)."""
    day = datetime.strptime(c.date, "%Y-%m-%d")
    lines = [
        "CHỨNG THỰC BẢN SAO ĐÚNG VỚI BẢN CHÍNH",
        f"Số chứng thực: {c.number}    Quyển số: {c.book}",
        f"Ngày {day:%d} tháng {day:%m} năm {day:%Y}" + (f", {c.location}" if c.location else ""),
        f"Mã tài liệu: {c.doc_id}",
        f"Người chứng thực: {c.signer}",
    ]
    if c.title:
        lines.append(f"Chức vụ: {c.title}")
    lines.append("(Đã ký số)")
    return "\n".join(lines)


def block_box(width_pt: float) -> tuple[int, int, int, int]:
    """The block's place: the bottom right corner of the page."""
    right = int(width_pt) - MARGIN_PT
    return (right - BLOCK_PT[0], MARGIN_PT, right, MARGIN_PT + BLOCK_PT[1])


def _font_path() -> Path:
    for path in FONTS:
        if path.is_file():
            return path
    raise SigningError(
        "không có phông chữ cho khối chứng thực / no font for the certification block"
        " (DejaVu Sans)",
        "install Debian's fonts-dejavu-core (install.sh does)",
    )


def last_page_width(reader: PdfFileReader) -> tuple[int, float]:
    pages = reader.root["/Pages"]
    last = int(pages["/Count"]) - 1
    page, _ = reader.find_page_for_modification(last)  # type: ignore[no-untyped-call]
    box = page.get_object()["/MediaBox"]
    return last, float(box[2]) - float(box[0])


_BYTE_RANGE = re.compile(rb"/ByteRange\s*\[\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*\]")


def signed_ranges(signed: bytes) -> tuple[list[tuple[int, int]], bytes]:
    """The last signature's byte ranges (offset, length) and its CMS (DER), read from
    the bytes: the gap between the ranges is the hex /Contents string."""
    found = list(_BYTE_RANGE.finditer(signed))
    if not found:
        raise ValueError("no /ByteRange")
    a, n, b, m = (int(x) for x in found[-1].groups())
    if a != 0 or b + m != len(signed) or b <= a + n + 2:
        raise ValueError("a /ByteRange that does not cover the file")
    hex_contents = signed[a + n + 1 : b - 1]  # inside the angle brackets
    # the zero padding after the DER is ignored by asn1crypto's (non-strict) load
    return [(a, n), (b, m)], bytes.fromhex(hex_contents.decode("ascii"))


def _check_signature(signed: bytes, cert: asn1_x509.Certificate) -> None:
    """The signature just made must verify against the document, or it is not used
    (e.g. the key label names a key that is not the certificate's). Only integrity is
    asked (digest of the signed bytes, signature value under ``cert``): trust is the
    warehouse's judgement, against its configured roots, and costs ten times more."""
    try:
        ranges, contents = signed_ranges(signed)
        digest = hashlib.sha256(b"".join(signed[a : a + n] for a, n in ranges)).digest()
        signer_info = cms.ContentInfo.load(contents)["content"]["signer_infos"][0]
        intact, valid = validate_sig_integrity(signer_info, cert, "data", digest)
    except (ValueError, KeyError, IndexError):
        intact = valid = False
    if not (intact and valid):
        raise NOT_THE_CERTIFICATES_KEY


class TokenCertifier:
    """Signs certified copies through one logged-in token session (the officer's)."""

    def __init__(
        self,
        session: Any,
        sign: SignConfig,
        register: CertificationRegister,
        certificate: Path | None = None,
        chain: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._session, self._sign, self._register, self._clock = session, sign, register, clock
        self._tsa_problem: str | None = None
        cert = load_cert_from_pemder(str(certificate)) if certificate else None  # type: ignore[no-untyped-call]
        others = list(load_certs_from_pemder([str(chain)])) if chain else None  # type: ignore[no-untyped-call]
        self._signer = TemplateSigner(
            session, key_label=sign.key, signing_cert=cert, ca_chain=others
        )
        self.info = signer_info(on_token(sign.token, lambda: self._signer.signing_cert))
        self._signer.template(self._signer.expected_signature_len())
        wording = block_text(Certification(0, "", "2000-01-01", "", "", "-", sign.location))
        texts = wording + self.info.name + self.info.title
        # cut once for the session, in memory (the cut tells which letters the signer's
        # name holds), and embedded as it is in every block
        self._font = SessionFont(cut_font(_font_path().read_bytes(), [texts]), size=8)
        tag = "".join(chr(65 + b % 26) for b in hashlib.sha256(self._font.font).digest()[:6])
        self._block_font = BlockFont(self._font.tt, self._font.program, len(self._font.font), tag)

    def _pdf_signer(
        self, page: int, width: float, tsa: HTTPTimeStamper | None
    ) -> signers.PdfSigner:
        meta = signers.PdfSignatureMetadata(
            field_name=FIELD,
            subfilter=fields.SigSeedSubFilter.PADES,
            md_algorithm="sha256",
            reason=REASON,
            location=self._sign.location or None,
            name=self.info.name,
        )
        style = stamp.TextStampStyle(
            stamp_text="%(block)s",
            text_box_style=text.TextBoxStyle(font=self._font, leading=10),
            border_width=1,
        )
        spec = fields.SigFieldSpec(FIELD, on_page=page, box=block_box(width))
        return signers.PdfSigner(
            meta, self._signer, timestamper=tsa, stamp_style=style, new_field_spec=spec
        )

    def _update(self, pdf: bytes, layout: PdfLayout, c: Certification) -> bytes:
        text = SignatureText(
            self.info.name,
            REASON,
            self._sign.location,
            datetime.fromtimestamp(self._clock()).astimezone(),
        )
        block = (block_text(c).split("\n"), block_box(layout.width), 8.0)
        try:
            return signed_update(
                pdf, layout, self._block_font, block, text, RESERVED, self._signer.cms_now
            )
        except ValueError as exc:  # a chain too long for the room kept for the signature
            raise SigningError(
                f"không tạo được chữ ký / the signature cannot be written ({exc})",
                "give [sign] chain only the intermediate certificates, not a whole bundle",
            ) from None

    def _signed(self, pdf: bytes, c: Certification) -> tuple[bytes, str, str | None, bool]:
        """The signed PDF, its level, why there is no timestamp when one was asked for
        (after one failure the session stops asking: a batch must not wait on a dead
        timestamp authority for every copy), and whether the signature was checked
        already (the update written here checks the token's signature as it makes it)."""
        if not self._sign.tsa_url or self._tsa_problem is not None:
            layout = read_layout(pdf)
            if layout is not None:  # sohoa's own PDF: the update is written here
                signed = on_token(self._sign.token, lambda: self._update(pdf, layout, c))
                return signed, "PAdES-B-B", self._tsa_problem, True
        writers = [IncrementalPdfFileWriter(io.BytesIO(pdf))]  # parsed once, unless retried
        page, width = last_page_width(writers[0].prev)
        params = {"block": block_text(c)}

        def sign(tsa: HTTPTimeStamper | None) -> bytes:
            writer = writers.pop() if writers else IncrementalPdfFileWriter(io.BytesIO(pdf))
            out = self._pdf_signer(page, width, tsa).sign_pdf(
                writer,
                appearance_text_params=params,
                # a fixed room for the CMS: pyHanko would otherwise build it twice
                bytes_reserved=RESERVED_TSA if tsa else RESERVED,
            )
            return bytes(out.getbuffer())

        if self._sign.tsa_url and self._tsa_problem is None:
            try:
                tsa = HTTPTimeStamper(self._sign.tsa_url, timeout=10)
                return on_token(self._sign.token, lambda: sign(tsa)), "PAdES-B-T", None, False
            except (TimestampRequestError, OSError) as exc:
                log.warning("timestamp authority unreachable, signing B-B reason=%s", exc)
                self._tsa_problem = (
                    f"timestamp authority {self._sign.tsa_url} did not answer"
                    f" ({type(exc).__name__}) — check the link; [sign] tsa_url"
                )
        return (
            on_token(self._sign.token, lambda: sign(None)),
            "PAdES-B-B",
            self._tsa_problem,
            False,
        )

    def certify(self, pdf: bytes, doc_id: str) -> CertifiedPdf:
        now = datetime.fromtimestamp(self._clock(), UTC)
        check_validity(self.info, now)
        number, book = self._register.take_number(now.year)
        c = Certification(
            number=number,
            book=book,
            date=now.astimezone().strftime("%Y-%m-%d"),
            doc_id=doc_id,
            signer=self.info.name,
            title=self.info.title,
            location=self._sign.location,
        )
        try:
            signed, level, tsa_problem, checked = self._signed(pdf, c)
            if not checked:
                _check_signature(signed, self._signer.signing_cert)
        except (SigningError, TokenError) as exc:
            self._register.record(c, void=exc.message)
            raise
        self._register.record(c)
        log.info("certified copy signed doc=%s number=%d level=%s", doc_id, number, level)
        tsa = {"tsa_problem": tsa_problem} if tsa_problem else {}
        return CertifiedPdf(signed, c.to_json() | {"level": level} | tsa)

    def close(self) -> None:
        self._session.close()


class RefusedCertifier:
    """The token could not be opened: every document is kept unsigned, with the reason."""

    def __init__(self, error: TokenError | SigningError) -> None:
        self.error = error

    def certify(self, pdf: bytes, doc_id: str) -> CertifiedPdf:
        raise self.error

    def close(self) -> None:
        pass


def open_certifier(
    sign: SignConfig,
    pin: str,
    register: CertificationRegister,
    resolve: Callable[[Path], Path],
) -> TokenCertifier | RefusedCertifier:
    """The officer's signing session, or a certifier that refuses with the reason why
    (the batch is still captured, unsigned and flagged)."""
    try:
        session = open_session(sign.module, sign.token, pin)
    except TokenError as exc:
        return RefusedCertifier(exc)
    try:
        certifier = TokenCertifier(
            session,
            sign,
            register,
            resolve(sign.certificate) if sign.certificate else None,
            resolve(sign.chain) if sign.chain else None,
        )
        check_validity(certifier.info, datetime.now(UTC))  # before any number is taken
        return certifier
    except (TokenError, SigningError) as exc:
        session.close()
        return RefusedCertifier(exc)
    except (OSError, ValueError) as exc:  # [sign] certificate or chain unreadable
        session.close()
        return RefusedCertifier(
            SigningError(
                f"không đọc được chứng thư số / [sign] certificate or chain cannot be read ({exc})",
                "give PEM files the sohoa user can read, or leave them empty to use the"
                " certificate on the token",
            )
        )
