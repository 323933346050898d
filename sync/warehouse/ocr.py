"""The OCR stage after storing: each stored document gets a searchable PDF/A-2b copy
beside its original (``docs/<device>/<doc>/document.ocr.pdf``) and its text in the index.

One worker takes one job at a time from the queue (``ocr_jobs``), runs OCRmyPDF into
its own folder ``archive/.ocr/<holder>/``, checks the copy with pikepdf's PDF/A-2b
validator, moves it into place (fsync, rename, fsync of the folder), hands the text to
``DocumentIndex.set_text`` and only then marks the job done. The original PDF, its
metadata and its envelope are only ever read. A worker killed at any point leaves a
job that the next worker takes again and a folder of its own that the next one
removes; a copy is in place whole or not at all.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import subprocess
import threading
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sync.durable import atomic_write, fsync_dir, iso
from sync.errors import MissingDependencyError, SohoaError
from sync.warehouse.index import DocumentIndex
from sync.warehouse.ocr_jobs import (
    LEASE_S,
    MAX_ATTEMPTS,
    RENEW_S,
    RETRY_AFTER_S,
    OcrJob,
    OcrQueue,
    dead_holders,
    next_try,
    parse_holder,
)
from sync.warehouse.ocr_tool import (
    MISSING_DEPENDENCY,
    PERMANENT,
    OcrError,
    OcrTool,
    exit_reason,
    kill_group,
    missing,
    pdf_problem,
    pdfa_findings,
    start_ocrmypdf,
)

log = logging.getLogger("sohoa.warehouse.ocr")

WORK = ".ocr"  # archive/.ocr/<holder>/: one worker's scratch, decrypted page images included
_SKIPPED = re.compile(r"\[OCR skipped on page[^\]\n]*\]")


@dataclass(frozen=True)
class OcrSettings:
    archive: Path
    tool: OcrTool
    max_attempts: int = MAX_ATTEMPTS
    lease_s: float = LEASE_S
    renew_s: float = RENEW_S
    retry_after_s: float = RETRY_AFTER_S
    poll_s: float = 5.0  # how often an idle worker looks for stored documents
    timeout_s: float = 300.0  # per document, plus page_timeout_s per page
    page_timeout_s: float = 120.0
    # an idle worker looks at documents stored in the last scan_margin_s (clocks of
    # several hosts may differ by less than that), and at all of them every full_scan_s
    scan_margin_s: float = 3600.0
    full_scan_s: float = 600.0


@dataclass
class OcrTally:
    """What one worker did."""

    done: int = 0
    retried: int = 0
    failed: int = 0


class _Stopped(Exception):
    """The worker was asked to stop while OCRmyPDF ran."""


class _LeaseLost(Exception):
    """Another worker took the job over (this one seemed gone)."""


def ocr_copy_path(original: Path) -> Path:
    """Where a document's searchable copy goes: beside it, ``document.ocr.pdf``."""
    return original.with_name(f"{original.stem}.ocr.pdf")


def page_text(sidecar: str) -> str:
    """The text to index from OCRmyPDF's sidecar: composed Unicode (NFC, so that "ộ" is
    one character as users type it), without its notes on skipped pages; pages stay
    apart by form feeds."""
    text = _SKIPPED.sub("", unicodedata.normalize("NFC", sidecar))
    return "\f".join(page.strip() for page in text.split("\f")).strip()


def work_dir(archive: Path, holder: str) -> Path:
    """A worker's scratch folder, named by its holder (host:pid:start)."""
    return archive / WORK / holder.replace("/", "_")


def sweep_work_dirs(archive: Path, host: str, started: Callable[[int], int | None]) -> int:
    """Remove the scratch folders of this host's workers that no longer run (and
    anything else in ``archive/.ocr`` that is no worker's); how many."""
    gone = 0
    for folder in sorted((archive / WORK).glob("*")):
        if parse_holder(folder.name) is None or dead_holders([folder.name], host, started):
            shutil.rmtree(folder, ignore_errors=True)
            gone += 1
    return gone


def _install(copy: Path, dest: Path) -> None:
    """Put the checked copy in place: on disk before its name, its name before done."""
    copy.chmod(0o600)
    fd = os.open(copy, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        copy.replace(dest)
    except OSError as exc:
        if exc.errno != errno.EXDEV:  # [warehouse] archive spans file systems
            raise
        atomic_write(dest, copy.read_bytes(), mode=0o600, what="the OCR copy")
    fsync_dir(dest.parent, "the archive")


def _await(
    proc: subprocess.Popen[bytes],
    job: OcrJob,
    s: OcrSettings,
    queue: OcrQueue,
    stop: threading.Event,
    clock: Callable[[], float],
) -> int:
    """Wait for OCRmyPDF, renewing the lease; stop it on a stop, a lost lease or its
    time limit. Its exit status."""
    limit = s.timeout_s + s.page_timeout_s * max(1, job.pages)
    deadline = time.monotonic() + limit
    renew_at = time.monotonic() + s.renew_s
    try:
        while True:
            try:
                return proc.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                pass
            if stop.is_set():
                raise _Stopped
            if time.monotonic() > deadline:
                raise OcrError(f"OCRmyPDF took longer than {limit:g} s")
            if time.monotonic() > renew_at:
                if not queue.renew(job, clock(), s.lease_s):
                    raise _LeaseLost
                renew_at = time.monotonic() + s.renew_s
    finally:
        if proc.poll() is None:
            kill_group(proc)


def ocr_document(
    job: OcrJob,
    s: OcrSettings,
    queue: OcrQueue,
    index: DocumentIndex,
    stop: threading.Event,
    clock: Callable[[], float] = time.time,
) -> int:
    """OCR one claimed document into its searchable copy and the index; the number of
    characters of text. ``OcrError`` when this attempt failed."""
    original = Path(job.path)
    problem = pdf_problem(original)
    if problem is not None:
        raise OcrError(problem, permanent=True)
    work = work_dir(s.archive, job.holder)
    shutil.rmtree(work, ignore_errors=True)
    (s.archive / WORK).mkdir(mode=0o700, exist_ok=True)  # decrypted page images go in it
    work.mkdir(mode=0o700)
    out, sidecar, err = work / "copy.pdf", work / "text.txt", work / "ocrmypdf.log"
    proc = start_ocrmypdf(s.tool, original, out, sidecar, work / "tmp", err)
    code = _await(proc, job, s, queue, stop, clock)
    if code != 0:
        reason = exit_reason(code, err.read_text(encoding="utf-8", errors="replace"))
        if code == MISSING_DEPENDENCY:
            raise missing(reason)
        raise OcrError(reason, permanent=code in PERMANENT)
    findings = pdfa_findings(out)
    if findings:
        raise OcrError(f"the OCR copy is not PDF/A-2b ({findings[0]})")
    text = page_text(sidecar.read_text(encoding="utf-8", errors="replace"))
    _install(out, ocr_copy_path(original))
    index.set_text(job.device, job.doc_id, text)
    shutil.rmtree(work, ignore_errors=True)
    return len(text)


def _attempt(
    job: OcrJob,
    s: OcrSettings,
    queue: OcrQueue,
    index: DocumentIndex,
    stop: threading.Event,
    clock: Callable[[], float],
) -> str:
    """One attempt and what it recorded: "done", "retry", "failed", "released", "lost"."""
    started = time.monotonic()
    try:
        chars = ocr_document(job, s, queue, index, stop, clock)
    except _Stopped:
        queue.release(job, clock())
        log.info("OCR stopped, job given back device=%s doc=%s", job.device, job.doc_id)
        return "released"
    except _LeaseLost:
        log.warning("OCR lease taken over device=%s doc=%s", job.device, job.doc_id)
        return "lost"
    except MissingDependencyError:
        queue.release(job, clock())  # the tools' fault, not the document's: no attempt lost
        raise
    except (SohoaError, OSError) as exc:
        reason = exc.message if isinstance(exc, SohoaError) else f"{exc.strerror or exc}"
        permanent = isinstance(exc, OcrError) and exc.permanent
        attempts = job.attempt if not permanent else s.max_attempts
        retry_at = next_try(attempts, clock(), s.max_attempts, s.retry_after_s)
        queue.fail(job, clock(), reason, retry_at=retry_at)
        then = "given up: kept as failed" if retry_at is None else "tried again later"
        log.log(  # an error once it needs a person: `sohoa warehouse ocr --retry-failed`
            logging.ERROR if retry_at is None else logging.WARNING,
            "OCR failed device=%s doc=%s attempt=%d/%d reason=%s — %s",
            *(job.device, job.doc_id, job.attempt, s.max_attempts, reason, then),
        )
        return "failed" if retry_at is None else "retry"
    queue.finish(job, clock(), chars)
    log.info(
        "OCR done device=%s doc=%s pages=%d chars=%d seconds=%.1f attempt=%d",
        *(job.device, job.doc_id, job.pages, chars, time.monotonic() - started, job.attempt),
    )
    return "done"


@dataclass
class Scan:
    """How far back the next look for new documents goes: "" (every document) when a
    full scan is due, else from the watermark the last full scan that found none set."""

    since: str = ""
    full_due: float = 0.0  # time.monotonic() of the next full scan

    def since_now(self, mono: float) -> str:
        return "" if mono >= self.full_due else self.since

    def found_none(self, since: str, wall: float, mono: float, s: OcrSettings) -> None:
        if since == "":  # every document has a job: only newer ones can lack one
            self.since, self.full_due = iso(wall - s.scan_margin_s), mono + s.full_scan_s


@dataclass(frozen=True)
class Liveness:
    """Who this worker is and how it tells that a local holder no longer runs."""

    holder: str
    host: str
    started: Callable[[int], int | None]


def run_ocr(
    queue: OcrQueue,
    index: DocumentIndex,
    s: OcrSettings,
    me: Liveness,
    stop: threading.Event,
    *,
    once: bool = False,
    clock: Callable[[], float] = time.time,
) -> OcrTally:
    """Take jobs until ``stop`` is set (or, with ``once``, until none is left now)."""
    tally, scan = OcrTally(), Scan()
    swept = sweep_work_dirs(s.archive, me.host, me.started)
    if swept:
        log.info("removed %d OCR scratch folders of stopped workers", swept)
    while not stop.is_set():
        dead = dead_holders(queue.holders(), me.host, me.started)
        for doc in queue.give_up_stalled(clock(), dead, s.max_attempts):
            tally.failed += 1
            log.error("OCR given up doc=%s reason=%s — kept as failed", doc, "stopped mid-OCR")
        since = scan.since_now(time.monotonic())
        job = queue.claim(me.holder, clock(), dead, s.lease_s, s.max_attempts, since)
        if job is None:
            scan.found_none(since, clock(), time.monotonic(), s)
            if once:
                break
            stop.wait(s.poll_s)
            continue
        outcome = _attempt(job, s, queue, index, stop, clock)
        tally.done += outcome == "done"
        tally.retried += outcome == "retry"
        tally.failed += outcome == "failed"
    return tally
