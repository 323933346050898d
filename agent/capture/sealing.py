"""Sealing one planned document: its pages from scratch, a PDF, an envelope, the spool.

The PDF is written straight into the envelope writer, so the document exists
in clear only in memory, one segment at a time.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, BinaryIO, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.capture.certifier import Certifier, SigningError
from agent.capture.pdf import EncodedPage, PdfMetadata, PdfWriter
from agent.capture.results import DocumentResult, document_metadata
from agent.capture.scratch import Scratch
from agent.capture.split import DocumentPlan
from device.token import TokenError
from sync.envelope.header import Header
from sync.envelope.payload import PayloadWriter
from sync.envelope.seal import EnvelopeWriter
from sync.keys import WarehousePublic
from sync.spool.store import Spool


@dataclass(frozen=True)
class SealSettings:
    device_id: str
    device_key: Ed25519PrivateKey
    warehouse: WarehousePublic
    segment_size: int = 64 * 1024
    permanent_types: tuple[str, ...] = ()

    def suite_for(self, doc_type: str | None) -> str:
        return "mlkem768-x25519" if doc_type and doc_type in self.permanent_types else "x25519"


@dataclass
class PageRecord:
    """What the batch keeps of one page: where its encoded image is, its hash, its checks."""

    handle: tuple[int, int] | None
    sha256: str
    checks: dict[str, Any] = field(default_factory=dict)


def pack_page(page: EncodedPage) -> bytes:
    head = {k: v for k, v in asdict(page).items() if k != "data"}
    head["decode_parms"] = dict(page.decode_parms)
    raw = json.dumps(head).encode()
    return len(raw).to_bytes(4, "big") + raw + page.data


def unpack_page(blob: bytes) -> EncodedPage:
    n = int.from_bytes(blob[:4], "big")
    head = json.loads(blob[4 : 4 + n])
    return EncodedPage(data=blob[4 + n :], **head)


class _Sink(Protocol):
    def write(self, data: bytes | bytearray | memoryview, /) -> int: ...


def _write_pdf(_sink: _Sink, plan: DocumentPlan, pages: list[PageRecord], scratch: Scratch) -> str:
    """The document's PDF into the envelope; its SHA-256 (PdfWriter hashes as it writes)."""
    pdf = PdfWriter(
        _sink,
        PdfMetadata(
            file_code=plan.dossier_code,
            type_name=plan.doc_type,
            page_amount=len(plan.pages),
            description=plan.doc_code,
        ),
    )
    for i in plan.pages:
        handle = pages[i].handle
        if handle is not None:
            pdf.add_page(unpack_page(scratch.read(handle)))
    pdf.close()
    return pdf.sha256


@dataclass(frozen=True)
class Signing:
    """What certifying one document gave: the signed PDF, or why it stayed unsigned."""

    pdf: bytes | None  # None: too large to sign in memory, streamed unsigned as usual
    record: dict[str, Any] | None
    problem: str | None = None


# a certified copy is signed in memory (a signature covers the whole file): a bound on
# the encoded pages keeps a 500-page colour batch from exhausting a 1 GB device
MAX_CERTIFY_BYTES = 96 * 2**20


def certified_pdf(
    plan: DocumentPlan, pages: list[PageRecord], scratch: Scratch, certifier: Certifier, doc_id: str
) -> Signing:
    """The document's PDF built in memory and signed; unsigned, with the one-line reason,
    when signing fails (the caller seals it so and flags it: nothing is lost)."""
    size = sum(handle[1] for i in plan.pages if (handle := pages[i].handle) is not None)
    if size > MAX_CERTIFY_BYTES:
        return Signing(
            None,
            None,
            f"tài liệu quá lớn để ký / document too large to certify ({size // 2**20} MB"
            f" of pages, at most {MAX_CERTIFY_BYTES // 2**20} MB) — split it with a"
            " separator sheet, or scan it with the text profile",
        )
    buf = io.BytesIO()
    _write_pdf(buf, plan, pages, scratch)
    pdf = buf.getvalue()
    try:
        signed = certifier.certify(pdf, doc_id)
    except (SigningError, TokenError) as exc:
        return Signing(pdf, None, exc.line().removeprefix("error: "))
    return Signing(signed.pdf, signed.record)


def signing_metadata(meta: dict[str, Any], signing: Signing | None) -> dict[str, Any]:
    """What certifying adds to the sealed metadata: the register entry, or the flag
    ``unsigned`` and why."""
    if signing is None:
        return {}
    if signing.record is None:
        return {"flags": [*meta["flags"], "unsigned"], "certification_failed": signing.problem}
    return {"certification": signing.record}


def _write_envelope(
    fh: BinaryIO,
    plan: DocumentPlan,
    pages: list[PageRecord],
    scratch: Scratch,
    meta: dict[str, Any],
    seal: SealSettings,
    doc_class: str,
    body: bytes | None = None,
) -> tuple[Header, str]:
    writer = EnvelopeWriter(
        fh,
        device_id=seal.device_id,
        doc_id=meta["doc_id"],
        warehouse=seal.warehouse,
        device_key=seal.device_key,
        suite=seal.suite_for(plan.doc_type),
        segment_size=seal.segment_size,
        doc_class=doc_class,
    )
    payload = PayloadWriter(
        writer.write,
        meta,
        device_id=seal.device_id,
        doc_id=meta["doc_id"],
        device_key=seal.device_key,
    )
    if body is None:
        pdf_sha256 = _write_pdf(payload, plan, pages, scratch)
    else:  # a certified copy, signed in memory
        payload.write(body)
        pdf_sha256 = hashlib.sha256(body).hexdigest()
    payload.close()  # the device's signature over metadata and PDF, inside the encryption
    header = writer.close()
    fh.flush()
    os.fsync(fh.fileno())
    return header, pdf_sha256


def seal_document(
    plan: DocumentPlan,
    pages: list[PageRecord],
    scratch: Scratch,
    *,
    doc_id: str,
    batch_id: str,
    spool: Spool,
    seal: SealSettings,
    profile: str,
    clock: Callable[[], float],
    certifier: Certifier | None = None,
) -> DocumentResult:
    """Seal ``plan`` into the spool as one envelope and say what was stored; with a
    ``certifier``, as a signed certified copy (or unsigned and flagged ``unsigned``)."""
    tmp = spool.temp_envelope(doc_id)
    meta = document_metadata(
        plan,
        doc_id=doc_id,
        batch_id=batch_id,
        device_id=seal.device_id,
        profile=profile,
        captured_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(clock())),
        page_checks=[pages[i].checks for i in plan.pages],
    )
    doc_class = "cover" if "cover_sheet" in plan.flags else "normal"
    signing = certified_pdf(plan, pages, scratch, certifier, doc_id) if certifier else None
    meta |= signing_metadata(meta, signing)
    body = signing.pdf if signing else None
    with tmp.open("wb") as fh:
        header, pdf_sha256 = _write_envelope(fh, plan, pages, scratch, meta, seal, doc_class, body)
    committed = spool.commit_document(
        tmp,
        doc_id=doc_id,
        batch_id=batch_id,
        pages=len(plan.pages),
        page_sha256=[pages[i].sha256 for i in plan.pages],
        pdf_sha256=pdf_sha256,
        ciphertext_sha256=header.ciphertext_sha256,
        doc_class=doc_class,
    )
    return DocumentResult(
        doc_id=doc_id,
        dossier_code=plan.dossier_code,
        owner_id=plan.owner_id,
        doc_type=plan.doc_type,
        tthc_code=plan.tthc_code,
        doc_code=plan.doc_code,
        pages=len(plan.pages),
        bytes=committed.bytes,
        flags=tuple(meta["flags"]),
        pdf_sha256=pdf_sha256,
        certification=signing.record if signing else None,
        problem=signing.problem if signing else None,
    )
