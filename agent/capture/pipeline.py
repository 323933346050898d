"""One batch through the pipeline, as named steps:

read page -> barcodes -> checks -> encode (``pagework.py``, on ``[capture] workers``
threads, ``workers.py``, each decoding into its own ``pagememory.py``) -> scratch, in
page order -> split -> seal -> commit. Pages stream through a few at a time; only small
facts about each page stay in memory until the batch is split. What happened to the
scanner (present, last error, jams) is recorded in the spool for the health report.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from agent.capture.certifier import Certifier
from agent.capture.codes import Signal
from agent.capture.events import NO_EVENTS, CaptureEvents, page_badges
from agent.capture.pagememory import WorkerMemories
from agent.capture.pagework import PageWork, work_page
from agent.capture.pdf import EncodedPage
from agent.capture.results import CaptureResult, DocumentResult, signing_warnings
from agent.capture.review import EditError, reviewed
from agent.capture.scratch import Scratch
from agent.capture.sealing import PageRecord, SealSettings, pack_page, seal_document
from agent.capture.split import BatchPlan, DocumentPlan, PageFacts, split_batch
from agent.capture.workers import auto_workers, in_order
from agent.config import CaptureConfig
from agent.errors import FAILURES, PageWorkError
from device.barcodes import BarcodeReader
from device.errors import InputError, PaperJamError, ScannerError
from device.scanner import PageSource, ScannedPage
from sync.durable import is_disk_full
from sync.errors import SohoaError, SpoolError, SpoolFullError
from sync.spool.status import scanner_failed, scanner_seen
from sync.spool.store import Spool

__all__ = ["CaptureResult", "DocumentResult", "SealSettings", "capture_batch"]

log = logging.getLogger("sohoa.capture")


def new_id(prefix: str, clock: Callable[[], float]) -> str:
    """Sortable random id with no personal data: <prefix><utc time><random>."""
    return prefix + time.strftime("%Y%m%dT%H%M%S", time.gmtime(clock())) + secrets.token_hex(6)


def _now(clock: Callable[[], float]) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(clock()))


def record_scanner_failure(
    spool: Spool, exc: ScannerError, clock: Callable[[], float] = time.time
) -> None:
    """Keep the scanner's last error (one line, no personal data) for the health report."""
    line = exc.line().removeprefix("error: ")
    jam = isinstance(exc, PaperJamError)
    spool.record_scanner(
        scanner_failed(spool.scanner_status(), error=line, at=_now(clock), jam=jam)
    )


@dataclass
class _Batch:
    """What one batch has gathered so far; only small facts per page."""

    batch_id: str
    warnings: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    status: str = "complete"
    facts: list[PageFacts] = field(default_factory=list)
    records: list[PageRecord] = field(default_factory=list)
    barcode_pages: int = 0

    def stop(self, status: str, flag: str, warning: str) -> None:
        """The batch ends early with ``status``; what was captured so far is kept."""
        self.status = status
        self.flags.append(flag)
        self.warnings.append(warning)


def _read_pages(
    source: PageSource, batch: _Batch, spool: Spool, clock: Callable[[], float]
) -> Iterator[ScannedPage]:
    """The source's pages; a jam or a bad file ends the batch, keeping what came before."""
    pages = source.pages()
    scanner = getattr(source, "device_name", None)
    while True:
        try:
            page = next(pages)
        except StopIteration:
            return
        except (ScannerError, InputError) as exc:
            if isinstance(exc, ScannerError):
                record_scanner_failure(spool, exc, clock)
            batch.stop("interrupted", "interrupted", exc.line().removeprefix("error: "))
            return
        if scanner and page.index == 0:
            seen = scanner_seen(spool.scanner_status(), model=str(scanner), at=_now(clock))
            spool.record_scanner(seen)
        yield page


def _stash(scratch: Scratch, encoded: EncodedPage) -> tuple[int, int]:
    try:
        return scratch.append(pack_page(encoded))
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        raise SpoolFullError(
            "Bộ nhớ đầy khi đang quét, lô này chưa được lưu / "
            "disk full while scanning, this batch was not saved",
            "chờ đồng bộ giải phóng bộ nhớ rồi quét lại / "
            "wait for sync to free space, then scan the batch again",
        ) from exc


def _tell_page(
    events: CaptureEvents,
    batch: _Batch,
    thumb: bytes | None,
    flags: tuple[str, ...] = (),
    at: int | None = None,
) -> None:
    """The page just taken, to whoever watches (the counter page): thumbnail and badges.
    With ``at``, the page replaces page ``at`` (a re-scan in review)."""
    if at is not None:  # the page just appended takes the place of the one re-scanned
        batch.records[at] = batch.records.pop()
        batch.facts[at] = replace(batch.facts.pop(), index=at)
        flags = (*flags, "rescanned")
    pos = len(batch.records) - 1 if at is None else at
    facts, record = batch.facts[pos], batch.records[pos]
    badges = page_badges(
        facts.signals, blank=facts.blank, flags=flags, refused=record.handle is None
    )
    events.page_taken(batch.batch_id, facts.index, thumb, badges)


def _keep_page(
    work: PageWork,
    batch: _Batch,
    scratch: Scratch,
    events: CaptureEvents = NO_EVENTS,
    at: int | None = None,
) -> None:
    """A worked page into the batch: its encoded image to scratch, its facts in memory.
    With ``at`` the page replaces page ``at`` of the batch (a re-scan)."""
    index = work.index
    batch.barcode_pages += bool(work.barcodes)
    if work.check is None or work.encoded is None:
        batch.warnings.append(f"trang {index + 1} / page {index + 1}: {work.refusal}")
        batch.flags.append("rejected_pages")
        batch.records.append(PageRecord(None, "", {"rejected": True}))
        # not blank: it is no page of any document (see below), and no "blank kept" warning
        batch.facts.append(PageFacts(index=index, signals=work.signals, blank=False))
        _tell_page(events, batch, work.thumbnail, at=at)
        return
    check = work.check
    checks = {
        "blank": check.blank,
        "skew_deg": round(check.skew_deg, 2),
        "flags": list(check.flags),
    }
    batch.records.append(PageRecord(_stash(scratch, work.encoded), work.sha256, checks))
    batch.facts.append(PageFacts(index=index, signals=work.signals, blank=check.blank))
    _tell_page(events, batch, work.thumbnail, tuple(check.flags), at)


def _page_worker(
    reader: BarcodeReader, capture: CaptureConfig, events: CaptureEvents
) -> Callable[[tuple[int, ScannedPage]], PageWork]:
    memories = WorkerMemories()  # for this batch

    def work(numbered: tuple[int, ScannedPage]) -> PageWork:
        index, page = numbered
        thumbnail, memory = events.wants_thumbnails, memories.mine()
        try:
            return work_page(page, index, reader, capture, thumbnail=thumbnail, memory=memory)
        except FAILURES:
            raise
        except Exception as exc:  # a bug or a native library's failure: the batch stops
            raise PageWorkError(
                f"Trang {index + 1} không xử lý được, lô này chưa được lưu / page"
                f" {index + 1} could not be processed ({type(exc).__name__}), this batch"
                " was not saved",
                "quét lại lô này; nếu lặp lại, chạy sohoa doctor / scan the batch again;"
                " if it happens again, run sohoa doctor",
            ) from exc

    return work


def _rescanner(
    source: PageSource,
    batch: _Batch,
    reader: BarcodeReader,
    capture: CaptureConfig,
    scratch: Scratch,
    events: CaptureEvents,
) -> Callable[[int], None]:
    """The re-scan of one page: the next sheet from the scanner replaces it."""

    def rescan(index: int) -> None:
        if not getattr(source, "device_name", None):
            raise EditError("re-scanning a page needs the scanner; this batch came from files")
        if not 0 <= index < len(batch.records):
            raise EditError(f"there is no page {index + 1}")
        pages = source.pages()
        try:
            page = next(pages)
        except StopIteration:
            raise EditError("no sheet in the feeder to re-scan") from None
        finally:
            close = getattr(pages, "close", None)
            if close is not None:
                close()
        work = work_page(page, index, reader, capture, thumbnail=events.wants_thumbnails)
        _keep_page(work, batch, scratch, events, at=index)

    return rescan


def with_preset_dossier(facts: list[PageFacts], dossier: str | None) -> list[PageFacts]:
    """A dossier code set before the batch (typed, handheld reader) is the first page's."""
    if not dossier or not facts:
        return facts
    first = facts[0]
    signal = Signal("dossier", first.index, dossier_code=dossier)
    return [PageFacts(first.index, (signal, *first.signals), first.blank), *facts[1:]]


def kept_documents(plan: BatchPlan, records: list[PageRecord]) -> list[DocumentPlan]:
    """A refused page stays in the batch record but never in a document."""
    return [
        replace(doc, pages=kept)
        for doc in plan.documents
        if (kept := tuple(i for i in doc.pages if records[i].handle is not None))
    ]


def _seal_all(
    documents: list[DocumentPlan],
    batch: _Batch,
    scratch: Scratch,
    spool: Spool,
    seal: SealSettings,
    profile: str,
    clock: Callable[[], float],
    certifier: Certifier | None = None,
) -> list[DocumentResult]:
    """Seal each document; a full disk stops here and says how many must be rescanned.
    A document to certify that could not be signed is sealed unsigned and flagged."""
    results: list[DocumentResult] = []
    for n, doc in enumerate(documents):
        doc_id = new_id("d", clock)
        try:
            result = seal_document(
                doc,
                batch.records,
                scratch,
                doc_id=doc_id,
                batch_id=batch.batch_id,
                spool=spool,
                seal=seal,
                profile=profile,
                clock=clock,
                certifier=certifier,
            )
            results.append(result)
            _note_signing(batch, result)
        except OSError as exc:
            if not is_disk_full(exc):
                raise SpoolError(
                    f"cannot write the spool ({exc.strerror})", "check the storage card"
                ) from exc
            _discard(spool.temp_envelope(doc_id))
            left = len(documents) - n
            batch.stop(
                "disk_full",
                "disk_full",
                f"Bộ nhớ đầy: {left} tài liệu chưa được lưu, hãy quét lại sau khi đồng bộ / "
                f"disk full: {left} document(s) not saved — rescan them after sync frees space",
            )
            break
    return results


def _note_signing(batch: _Batch, result: DocumentResult) -> None:
    """An unsigned certified copy flags the batch; one warning per distinct reason."""
    batch.warnings.extend(w for w in signing_warnings(result) if w not in batch.warnings)
    batch.flags.extend(["unsigned"] if result.problem else [])


def _result(batch: _Batch, plan: BatchPlan, results: list[DocumentResult]) -> CaptureResult:
    if not batch.records and batch.status == "complete":
        raise SohoaError(
            "the batch had no pages", "put paper in the feeder or check the input path"
        )
    log.info(
        "batch done batch=%s pages=%d documents=%d status=%s",
        batch.batch_id,
        len(batch.records),
        len(results),
        batch.status,
    )
    if batch.status == "disk_full" and not results:
        raise SpoolFullError(batch.warnings[-1], "free space, then scan again")
    return CaptureResult(
        batch_id=batch.batch_id,
        pages_in=len(batch.records),
        separators=plan.separators,
        warnings=tuple(batch.warnings),
        documents=tuple(results),
        flags=tuple(dict.fromkeys(batch.flags)),
        status=batch.status,
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
    events: CaptureEvents = NO_EVENTS,
    certifier: Certifier | None = None,
) -> CaptureResult:
    """Run one feeder batch to sealed, queued envelopes and say what happened; with a
    ``certifier`` every document is signed as a certified copy before it is sealed."""
    spool.check_space()
    batch = _Batch(new_id("b", clock))
    try:
        result = _capture(
            source, batch, spool, reader, capture, seal, preset_dossier, clock, events, certifier
        )
    except FAILURES as exc:
        events.batch_failed(batch.batch_id, exc.line().removeprefix("error: "))
        raise
    events.batch_ended(batch.batch_id, result)
    return result


def _capture(
    source: PageSource,
    batch: _Batch,
    spool: Spool,
    reader: BarcodeReader,
    capture: CaptureConfig,
    seal: SealSettings,
    preset_dossier: str | None,
    clock: Callable[[], float],
    events: CaptureEvents,
    certifier: Certifier | None,
) -> CaptureResult:
    spool.begin_batch(batch.batch_id)
    events.batch_started(batch.batch_id, str(getattr(source, "device_name", "") or "folder"))
    scratch = Scratch(spool.tmp_dir / f"batch-{batch.batch_id}.scratch")
    try:
        pages = enumerate(_read_pages(source, batch, spool, clock))
        workers = capture.workers or auto_workers()
        for work in in_order(_page_worker(reader, capture, events), pages, workers):
            _keep_page(work, batch, scratch, events)
        facts = with_preset_dossier(batch.facts, preset_dossier)
        plan = split_batch(facts, drop_blank=capture.drop_blank)
        batch.warnings.extend(plan.warnings)
        batch.flags.extend(plan.flags)
        kept = replace(plan, documents=tuple(kept_documents(plan, batch.records)))
        rescan = _rescanner(source, batch, reader, capture, scratch, events)
        final = reviewed(kept, batch.batch_id, events, rescan) if batch.records else kept
        documents = list(final.documents) if batch.records else []
        page_sha256 = [r.sha256 for r in batch.records]  # after any re-scan
        spool.record_batch_pages(batch.batch_id, page_sha256, list(plan.separators))
        results = _seal_all(
            documents, batch, scratch, spool, seal, capture.profile, clock, certifier
        )
        spool.end_batch(
            batch.batch_id,
            page_sha256=page_sha256,
            separators=list(plan.separators),
            documents=[d.doc_id for d in results],
            warnings=batch.warnings,
            blank=sum(1 for f in batch.facts if f.blank),
            barcode_pages=batch.barcode_pages,
            status=batch.status,
        )
    finally:
        scratch.close()
    return _result(batch, plan, results)


def _discard(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
