"""One batch through the pipeline: pages -> barcodes & checks -> split -> PDF ->
sealed envelope -> spool. Pages stream one at a time; only small facts about
each page stay in memory until the batch is split.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.codes import interpret
from agent.config import CaptureConfig
from agent.envelope import EnvelopeWriter
from agent.errors import InputError, ScannerError, SohoaError, SpoolError, SpoolFullError
from agent.keys import WarehousePublic
from agent.pages import prepare_page
from agent.payload import payload_head
from agent.pdf import EncodedPage, PdfMetadata, PdfWriter, encode_page, wrap_jpeg
from agent.scratch import Scratch
from agent.split import BatchPlan, DocumentPlan, PageFacts, split_batch
from agent.spool import Spool, is_disk_full
from device.barcodes import BarcodeReader
from device.scanner import PageSource

log = logging.getLogger("sohoa.capture")

PAYLOAD_VERSION = 1


@dataclass(frozen=True)
class SealSettings:
    device_id: str
    device_key: Ed25519PrivateKey
    warehouse: WarehousePublic
    segment_size: int = 64 * 1024
    permanent_types: tuple[str, ...] = ()

    def suite_for(self, doc_type: str | None) -> str:
        return "mlkem768-x25519" if doc_type and doc_type in self.permanent_types else "x25519"


@dataclass(frozen=True)
class DocumentResult:
    doc_id: str
    dossier_code: str | None
    owner_id: str | None
    doc_type: str | None
    tthc_code: str | None
    doc_code: str | None
    pages: int
    bytes: int
    flags: tuple[str, ...]
    pdf_sha256: str

    def to_json(self) -> dict[str, Any]:
        return {
            "doc_id": self.doc_id,
            "dossier_code": self.dossier_code,
            "owner_id": self.owner_id,
            "doc_type": self.doc_type,
            "tthc_code": self.tthc_code,
            "doc_code": self.doc_code,
            "pages": self.pages,
            "bytes": self.bytes,
            "flags": list(self.flags),
            "pdf_sha256": self.pdf_sha256,
        }


@dataclass(frozen=True)
class CaptureResult:
    batch_id: str
    pages_in: int
    separators: tuple[int, ...]
    warnings: tuple[str, ...]
    documents: tuple[DocumentResult, ...]
    flags: tuple[str, ...] = ()
    status: str = "complete"

    def to_json(self) -> dict[str, Any]:
        return {
            "batch_id": self.batch_id,
            "pages_in": self.pages_in,
            "separators": list(self.separators),
            "warnings": list(self.warnings),
            "flags": list(self.flags),
            "status": self.status,
            "documents": [d.to_json() for d in self.documents],
        }


@dataclass
class _PageRecord:
    handle: tuple[int, int] | None
    sha256: str
    checks: dict[str, Any] = field(default_factory=dict)


def new_id(prefix: str, clock: Callable[[], float]) -> str:
    """Sortable random id with no personal data: <prefix><utc time><random>."""
    return prefix + time.strftime("%Y%m%dT%H%M%S", time.gmtime(clock())) + secrets.token_hex(6)


def _pack_page(page: EncodedPage) -> bytes:
    head = {k: v for k, v in asdict(page).items() if k != "data"}
    head["decode_parms"] = dict(page.decode_parms)
    raw = json.dumps(head).encode()
    return len(raw).to_bytes(4, "big") + raw + page.data


def _unpack_page(blob: bytes) -> EncodedPage:
    n = int.from_bytes(blob[:4], "big")
    head = json.loads(blob[4 : 4 + n])
    return EncodedPage(data=blob[4 + n :], **head)


def document_metadata(
    plan: DocumentPlan,
    *,
    doc_id: str,
    batch_id: str,
    device_id: str,
    profile: str,
    captured_at: str,
    page_checks: list[dict[str, Any]],
) -> dict[str, Any]:
    """The tags sealed with the PDF (Decree 30/2020 names where they exist)."""
    return {
        "payload_version": PAYLOAD_VERSION,
        "doc_id": doc_id,
        "batch_id": batch_id,
        "device_id": device_id,
        "captured_at": captured_at,
        "profile": profile,
        "dossier_code": plan.dossier_code,
        "owner_id": plan.owner_id,
        "doc_type": plan.doc_type,
        "doc_code": plan.doc_code,
        "tthc_code": plan.tthc_code,
        "issue_year": plan.issue_year,
        "flags": list(plan.flags),
        "page_checks": page_checks,
        "decree30": {
            "FileCode": plan.dossier_code,
            "TypeName": plan.doc_type,
            "Language": "vi",
            "PageAmount": len(plan.pages),
        },
    }


def _seal_document(
    plan: DocumentPlan,
    pages: list[_PageRecord],
    scratch: Scratch,
    *,
    doc_id: str,
    batch_id: str,
    spool: Spool,
    seal: SealSettings,
    profile: str,
    clock: Callable[[], float],
) -> DocumentResult:
    tmp = spool.temp_envelope(doc_id)
    captured_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(clock()))
    meta = document_metadata(
        plan,
        doc_id=doc_id,
        batch_id=batch_id,
        device_id=seal.device_id,
        profile=profile,
        captured_at=captured_at,
        page_checks=[pages[i].checks for i in plan.pages],
    )
    doc_class = "cover" if "cover_sheet" in plan.flags else "normal"
    fh: BinaryIO
    with tmp.open("wb") as fh:
        writer = EnvelopeWriter(
            fh,
            device_id=seal.device_id,
            doc_id=doc_id,
            warehouse=seal.warehouse,
            device_key=seal.device_key,
            suite=seal.suite_for(plan.doc_type),
            segment_size=seal.segment_size,
            doc_class=doc_class,
        )
        writer.write(payload_head(meta))
        pdf = PdfWriter(
            writer,
            PdfMetadata(
                file_code=plan.dossier_code,
                type_name=plan.doc_type,
                page_amount=len(plan.pages),
                description=plan.doc_code,
            ),
        )
        for i in plan.pages:
            handle = pages[i].handle
            if handle is None:
                continue
            pdf.add_page(_unpack_page(scratch.read(handle)))
        pdf.close()
        pdf_sha256 = pdf.sha256  # PdfWriter hashes what it writes: no second pass
        writer.write(bytes.fromhex(pdf_sha256))
        header = writer.close()
        fh.flush()
        os.fsync(fh.fileno())
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
        flags=plan.flags,
        pdf_sha256=pdf_sha256,
    )


def capture_batch(
    source: PageSource,
    *,
    spool: Spool,
    reader: BarcodeReader,
    capture: CaptureConfig,
    seal: SealSettings,
    preset_dossier: str | None = None,
    clock: Callable[[], float] = time.time,
) -> CaptureResult:
    """Run one feeder batch to sealed, queued envelopes and say what happened."""
    spool.check_space()
    batch_id = new_id("b", clock)
    spool.begin_batch(batch_id)
    warnings: list[str] = []
    flags: list[str] = []
    status = "complete"
    facts: list[PageFacts] = []
    records: list[_PageRecord] = []
    barcode_pages = 0
    scratch = Scratch(spool.tmp_dir / f"batch-{batch_id}.scratch")
    try:
        pages_iter: Iterator[Any] = source.pages()
        while True:
            try:
                page = next(pages_iter)
            except StopIteration:
                break
            except (ScannerError, InputError) as exc:
                warnings.append(exc.line().removeprefix("error: "))
                flags.append("interrupted")
                status = "interrupted"
                break
            index = len(records)
            barcodes = reader.read(page.image, index)
            signals = tuple(interpret(b, capture.separator_text) for b in barcodes)
            if barcodes:
                barcode_pages += 1
            try:
                image, check = prepare_page(
                    page.image,
                    page.dpi,
                    min_dpi=capture.min_dpi,
                    blank_threshold=capture.blank_threshold,
                    do_deskew=capture.deskew,
                )
            except InputError as exc:
                warnings.append(
                    f"trang {index + 1} / page {index + 1}: " + exc.line().removeprefix("error: ")
                )
                flags.append("rejected_pages")
                records.append(_PageRecord(None, "", {"rejected": True}))
                # not blank: it is no page of any document (see below), and no "blank kept" warning
                facts.append(PageFacts(index=index, signals=signals, blank=False))
                continue
            if (
                page.jpeg is not None
                and capture.profile == "color"
                and "deskewed" not in check.flags
            ):
                encoded = wrap_jpeg(page.jpeg, page.dpi)
            else:
                encoded = encode_page(image, page.dpi, capture.profile)
            try:
                handle = scratch.append(_pack_page(encoded))
            except OSError as exc:
                if not is_disk_full(exc):
                    raise
                raise SpoolFullError(
                    "Bộ nhớ đầy khi đang quét, lô này chưa được lưu / "
                    "disk full while scanning, this batch was not saved",
                    "chờ đồng bộ giải phóng bộ nhớ rồi quét lại / "
                    "wait for sync to free space, then scan the batch again",
                ) from exc
            records.append(
                _PageRecord(
                    handle,
                    hashlib.sha256(encoded.data).hexdigest(),
                    {
                        "blank": check.blank,
                        "skew_deg": round(check.skew_deg, 2),
                        "flags": list(check.flags),
                    },
                )
            )
            facts.append(PageFacts(index=index, signals=signals, blank=check.blank))
            del image, page
        if preset_dossier and facts:
            from agent.codes import Signal

            first = facts[0]
            facts[0] = PageFacts(
                first.index,
                (Signal("dossier", first.index, dossier_code=preset_dossier), *first.signals),
                first.blank,
            )
        plan: BatchPlan = split_batch(facts, drop_blank=capture.drop_blank)
        warnings.extend(plan.warnings)
        flags.extend(plan.flags)
        spool.record_batch_pages(batch_id, [r.sha256 for r in records], list(plan.separators))
        results: list[DocumentResult] = []
        # a refused page stays in the batch record but never in a document
        documents = [
            replace(doc, pages=kept)
            for doc in plan.documents
            if (kept := tuple(i for i in doc.pages if records[i].handle is not None))
        ]
        for n, doc in enumerate(documents):
            doc_id = new_id("d", clock)
            try:
                results.append(
                    _seal_document(
                        doc,
                        records,
                        scratch,
                        doc_id=doc_id,
                        batch_id=batch_id,
                        spool=spool,
                        seal=seal,
                        profile=capture.profile,
                        clock=clock,
                    )
                )
            except OSError as exc:
                if not is_disk_full(exc):
                    raise SpoolError(
                        f"cannot write the spool ({exc.strerror})", "check the storage card"
                    ) from exc
                _discard(spool.temp_envelope(doc_id))
                left = len(documents) - n
                warnings.append(
                    f"Bộ nhớ đầy: {left} tài liệu chưa được lưu, hãy quét lại sau khi đồng bộ / "
                    f"disk full: {left} document(s) not saved — rescan them after sync frees space"
                )
                flags.append("disk_full")
                status = "disk_full"
                break
        spool.end_batch(
            batch_id,
            page_sha256=[r.sha256 for r in records],
            separators=list(plan.separators),
            documents=[d.doc_id for d in results],
            warnings=warnings,
            blank=sum(1 for f in facts if f.blank),
            barcode_pages=barcode_pages,
            status=status,
        )
    finally:
        scratch.close()
    if not records and status == "complete":
        raise SohoaError(
            "the batch had no pages", "put paper in the feeder or check the input path"
        )
    log.info(
        "batch done batch=%s pages=%d documents=%d status=%s",
        batch_id,
        len(records),
        len(results),
        status,
    )
    result = CaptureResult(
        batch_id=batch_id,
        pages_in=len(records),
        separators=plan.separators,
        warnings=tuple(warnings),
        documents=tuple(results),
        flags=tuple(dict.fromkeys(flags)),
        status=status,
    )
    if status == "disk_full" and not results:
        raise SpoolFullError(warnings[-1], "free space, then scan again")
    return result


def _discard(path: os.PathLike[str]) -> None:
    with contextlib.suppress(FileNotFoundError):
        Path(path).unlink()
