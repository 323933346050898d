"""Warehouse ingest: segments staged on disk, verified, decrypted, archived.

Several workers share one subscription (``$share/ingest/...``), so the messages
of one document may reach different workers: staging lives on a shared
filesystem, completion is decided under a file lock, and the index's unique
key makes a document stored at most once.

Staging (``sync.warehouse.staging``) is a cache (not fsynced): no receipt is
sent before the archive and the index are durable, and the device resends
whatever a crash lost. Only a manifest whose device signature verifies is
staged, within the staging bounds; the worker opens its data key once and
checks every segment's AEAD as it arrives, so a copy that fails is dropped
(the device is asked again when it queries) and a staged segment is always the
device's own: garbage from someone without the data key can never displace
it, nor get the document rejected. Segments that arrive before their manifest
wait in memory (``tick`` stages them once it is there). Malformed traffic is
logged with a reason and never stored.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sync.durable import atomic_write, file_lock
from sync.enrolment import load_enrolled
from sync.envelope.header import Header, parse_manifest, segment_matches, verify_header
from sync.envelope.opening import segment_authentic
from sync.envelope.payload import PayloadError
from sync.errors import ArchiveError, EnvelopeError
from sync.keys import WarehousePrivate
from sync.mqtt.settings import Message
from sync.protocol import ProtocolError, Query, parse_doc_topic, parse_query, split_piece
from sync.warehouse.answers import Answers
from sync.warehouse.archive import archive_document
from sync.warehouse.datakeys import DataKeys
from sync.warehouse.index import DocumentIndex, StoredDocument
from sync.warehouse.pieces import assemble, drop_pieces, partial_progress, store_piece
from sync.warehouse.signatures import SigningTrust, signature_checker
from sync.warehouse.staging import (
    Parked,
    ParkedSegments,
    Staging,
    StagingLimits,
    damaged_segment,
    segment_name,
)

log = logging.getLogger("sohoa.warehouse")

MAX_SEGMENT = (1 << 22) + 16
MAX_MANIFEST = 2 << 20
REFUSED = "refused"  # marks a staging folder whose signed manifest was refused
MAX_MISSING_PER_RECEIPT = 1024  # keeps a receipt a few KB, whatever a query claims
ARCHIVE_RETRY_S = 10.0  # after a failed archive write, before the next attempt


@dataclass(frozen=True)
class IngestSettings:
    archive: Path
    devices: Path
    max_segments: int = 65536
    max_envelope_bytes: int = 512 * 2**20
    staging: StagingLimits = StagingLimits()
    signing: SigningTrust = SigningTrust()  # what PAdES signatures are validated against


class Ingest:
    """Turns messages on the document topics into archived documents and receipts."""

    def __init__(
        self,
        settings: IngestSettings,
        keys: WarehousePrivate,
        index: DocumentIndex,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.s = settings
        self.keys = keys
        self.index = index
        self.clock = clock
        self.stage = Staging(settings.archive / "staging", settings.staging, clock)
        self.staging = self.stage.root
        self.parked = ParkedSegments()
        self._archive_failed: dict[tuple[str, str], float] = {}
        self._data_keys = DataKeys(keys)
        self._sigs = signature_checker(settings.signing)
        answers = Answers(keys, clock)
        self._receipt, self._reject = answers.receipt, answers.reject

    # -- helpers ----------------------------------------------------------------

    def _refuse(self, device: str, doc: str, reason: str, ciphertext: str) -> list[Message]:
        """Reject a signed manifest for good: what was staged goes, later segments are dropped."""
        d = self.stage.dir(device, doc)
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True, exist_ok=True)
        atomic_write(d / REFUSED, reason.encode(), durable=False)
        return self._reject(device, doc, reason, ciphertext)

    def _stored_receipt(self, rec: StoredDocument) -> Message:
        # a worker killed between the index and its clean-up left staging behind: go
        shutil.rmtree(self.stage.dir(rec.device, rec.doc_id), ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            (self.staging / f".{rec.device}.{rec.doc_id}.lock").unlink()
        return self._receipt(
            rec.device,
            rec.doc_id,
            "stored",
            ciphertext_sha256=rec.ciphertext_sha256,
            stored_at=rec.stored_at,
        )

    # -- message handling ----------------------------------------------------------

    def handle(self, topic: str, payload: bytes) -> list[Message]:
        """Process one message; return the messages to publish in answer."""
        try:
            t = parse_doc_topic(topic)
        except ProtocolError as exc:
            log.warning("message on an unknown topic ignored reason=%s", exc)
            return []
        try:
            if t.kind == "m":
                return self._on_manifest(t.device, t.doc, payload)
            if t.kind == "s":
                assert t.segment is not None
                return self._on_segment(t.device, t.doc, t.segment, payload)
            if t.kind == "p" and t.segment is None:  # segment and offset in the payload
                n, offset, data = split_piece(payload)
                return self._on_piece(t.device, t.doc, n, offset, data)
            if t.kind == "p":  # …/p/{n}/{offset}, as the first devices with pieces sent
                assert t.segment is not None and t.offset is not None
                return self._on_piece(t.device, t.doc, t.segment, t.offset, payload)
            try:
                q = parse_query(payload)
            except ProtocolError as exc:
                log.warning(
                    "malformed query ignored device=%s doc=%s reason=%s", t.device, t.doc, exc
                )
                return []
            return self._on_query(t.device, t.doc, q)
        except (ProtocolError, EnvelopeError) as exc:
            return self._reject(t.device, t.doc, str(exc))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            # a payload shaped so oddly that a parser tripped: a reason, never a crash
            log.warning(
                "malformed message ignored device=%s doc=%s reason=%s",
                t.device,
                t.doc,
                type(exc).__name__,
            )
            return []

    def _on_manifest(self, device: str, doc: str, payload: bytes) -> list[Message]:
        if len(payload) > MAX_MANIFEST:
            return self._reject(device, doc, "manifest larger than 2 MiB")
        header, _prefix = parse_manifest(payload)
        if header.device_id != device or header.doc_id != doc:
            return self._reject(
                device, doc, "manifest names another device or document than its topic"
            )
        pub = load_enrolled(self.s.devices, device)
        if pub is None:
            return self._reject(
                device,
                doc,
                f"device {device} is not enrolled at this warehouse",
                header.ciphertext_sha256,
            )
        verify_header(header, pub)
        ciphertext = header.ciphertext_sha256  # verified: rejections below may name it
        if header.segments > self.s.max_segments:
            return self._refuse(
                device, doc, "envelope has more segments than this warehouse accepts", ciphertext
            )
        if header.ciphertext_size > self.s.max_envelope_bytes:
            return self._refuse(
                device, doc, "envelope larger than this warehouse accepts", ciphertext
            )
        done = self.index.get(device, doc)
        if done is not None:
            if done.ciphertext_sha256 == header.ciphertext_sha256:
                return [self._stored_receipt(done)]
            return self._reject(
                device,
                doc,
                "a different envelope is already stored under this document id",
                ciphertext,
            )
        return self._stage_manifest(header, payload)

    def _stage_manifest(self, header: Header, payload: bytes) -> list[Message]:
        device, doc, ciphertext = header.device_id, header.doc_id, header.ciphertext_sha256
        existing = self.stage.manifest(device, doc)
        if existing is None or existing[0].ciphertext_sha256 != ciphertext:
            try:
                self._data_keys.open(
                    header, parse_manifest(payload)[1]
                )  # opens, or refused for good
            except EnvelopeError as exc:
                return self._refuse(device, doc, exc.message, ciphertext)
            full = self.stage.refusal(device, doc, header.ciphertext_size)
            if full is not None:
                log.warning("manifest not staged device=%s doc=%s reason=%s", device, doc, full)
                return []  # the device asks again later
        d = self.stage.dir(device, doc)
        d.mkdir(parents=True, exist_ok=True)
        if existing is not None and existing[0].ciphertext_sha256 != ciphertext:
            # A new envelope for the same id replaces a stale, unfinished one.
            shutil.rmtree(d)
            d.mkdir(parents=True)
        (d / REFUSED).unlink(missing_ok=True)  # a later, acceptable envelope for this id
        atomic_write(d / "manifest", payload, durable=False)
        out: list[Message] = []
        for p in self.parked.take(lambda dv, dc: (dv, dc) == (device, doc), self.clock()):
            out += self._on_parked(p)
        return out or self._try_finish(device, doc)

    def _on_parked(self, p: Parked) -> list[Message]:
        if p.offset < 0:
            return self._on_segment(p.device, p.doc, p.n, p.payload)
        return self._on_piece(p.device, p.doc, p.n, p.offset, p.payload)

    def _waits_for_manifest(self, device: str, doc: str, parked: Parked) -> None:
        """A segment or piece whose manifest is not staged (yet): kept in memory while
        its manifest may be on its way through another worker."""
        # only here the index is asked: a staged manifest means not stored yet
        if self.index.get(device, doc) is not None:
            return
        if load_enrolled(self.s.devices, device) is None:
            log.warning("segment from a device that is not enrolled ignored device=%s", device)
            return
        self.parked.park(parked)

    def _on_piece(self, device: str, doc: str, n: int, offset: int, data: bytes) -> list[Message]:
        d = self.stage.dir(device, doc)
        if len(data) > MAX_SEGMENT or n >= self.s.max_segments or (d / REFUSED).exists():
            return []
        man = self.stage.manifest(device, doc)
        if man is None:
            self._waits_for_manifest(
                device, doc, Parked(device, doc, n, data, self.clock(), offset)
            )
            return []
        header = man[0]
        if n >= header.segments or offset + len(data) > header.segment_length(n):
            log.warning("piece outside its segment ignored device=%s doc=%s n=%d", device, doc, n)
            return []
        if (d / segment_name(n)).exists():
            return []  # a copy of what is staged already
        store_piece(d, n, offset, data)
        whole = assemble(d, n, header.segment_length(n))
        if whole is None:
            return []
        try:
            return self._on_segment(device, doc, n, whole)
        finally:  # staged, or failed its check: either way the pieces are done with
            drop_pieces(d, n)

    def _on_segment(self, device: str, doc: str, n: int, payload: bytes) -> list[Message]:
        if len(payload) > MAX_SEGMENT or n >= self.s.max_segments:
            log.warning("segment out of range ignored device=%s doc=%s n=%d", device, doc, n)
            return []
        d = self.stage.dir(device, doc)
        if (d / REFUSED).exists():
            return []
        man = self.stage.manifest(device, doc)
        if man is None:
            self._waits_for_manifest(device, doc, Parked(device, doc, n, payload, self.clock()))
            return []
        header, prefix = man
        path = d / segment_name(n)
        if not path.exists():
            aead, aad = self._data_keys.open(header, prefix)
            if not segment_authentic(header, aead, aad, n, payload):
                log.warning(
                    "segment failed authentication, dropped device=%s doc=%s n=%d", device, doc, n
                )
                return []
            atomic_write(path, payload, durable=False)
        if self.stage.missing(d, header.segments):
            # not complete yet; whoever stages the last segment sees it complete
            return []
        return self._try_finish(device, doc)

    def tick(self) -> list[Message]:
        """Between messages: stage parked segments whose manifest has arrived, and drop
        abandoned staging now and then. The receipts to publish."""
        self.stage.sweep()
        out: list[Message] = []
        if len(self.parked):
            ready = self.parked.take(
                lambda device, doc: self.stage.manifest(device, doc) is not None, self.clock()
            )
            for p in ready:
                out += self.handle_parked(p)
        return out

    def handle_parked(self, p: Parked) -> list[Message]:
        """A parked segment or piece, with ``handle``'s guarantee: a reason, never an
        exception."""
        try:
            return self._on_parked(p)
        except (EnvelopeError, ValueError, OSError) as exc:
            log.warning("parked segment dropped device=%s doc=%s reason=%s", p.device, p.doc, exc)
            return []

    def _on_query(self, device: str, doc: str, q: Query) -> list[Message]:
        done = self.index.get(device, doc)
        if done is not None:
            return [self._stored_receipt(done)]
        if load_enrolled(self.s.devices, device) is None:
            reason = f"device {device} is not enrolled at this warehouse"
            return self._reject(device, doc, reason, q.ciphertext_sha256)
        man = self.stage.manifest(device, doc)
        n = man[0].segments if man is not None else q.segments
        if n > self.s.max_segments:
            reason = "envelope has more segments than this warehouse accepts"
            return self._reject(device, doc, reason, q.ciphertext_sha256)
        missing = self.stage.missing(self.stage.dir(device, doc), n)
        if man is not None and not missing:
            # everything is staged: a receipt, or quiet while the archive cannot be
            # written (the device asks again later; "nothing missing" would only make
            # it resend)
            return self._try_finish(device, doc)
        # a bounded answer: the device sends these, then asks again for the rest
        first = tuple(missing[:MAX_MISSING_PER_RECEIPT])
        partial = partial_progress(self.stage.dir(device, doc), first)
        return [
            self._receipt(device, doc, "missing", missing=first, query=q.nonce, partial=partial)
        ]

    # -- completion ------------------------------------------------------------

    def _try_finish(self, device: str, doc: str) -> list[Message]:
        d = self.stage.dir(device, doc)
        with file_lock(self.staging / f".{device}.{doc}.lock"):
            done = self.index.get(device, doc)
            if done is not None:
                return [self._stored_receipt(done)]
            man = self.stage.manifest(device, doc)
            if man is None:
                return []
            header, prefix = man
            paths = [d / f"s{i:07d}" for i in range(header.segments)]
            if self.stage.missing(d, header.segments):
                return []
            bad = [i for i, p in enumerate(paths) if not segment_matches(header, i, p.read_bytes())]
            if bad:  # staged before the manifest arrived: drop them, ask again
                for i in bad:
                    paths[i].unlink(missing_ok=True)
                log.warning(
                    "staged segments did not match the manifest device=%s doc=%s", device, doc
                )
                return [self._receipt(device, doc, "missing", missing=tuple(bad))]
            failed_at = self._archive_failed.get((device, doc))
            if failed_at is not None and self.clock() - failed_at < ARCHIVE_RETRY_S:
                return []  # every resent segment must not cost another full decryption
            try:
                pub = load_enrolled(self.s.devices, device)
                if pub is None:
                    raise EnvelopeError(f"device {device} is no longer enrolled here")
                rec = archive_document(
                    self.s.archive, header, prefix, paths, self.keys, self.clock, pub, self._sigs
                )
            except ArchiveError as exc:
                self._archive_failed[(device, doc)] = self.clock()
                log.error(
                    "archive write failed device=%s doc=%s reason=%s", device, doc, exc.message
                )
                return []
            except (EnvelopeError, PayloadError) as exc:
                again = damaged_segment(d, paths, str(exc))
                if again is not None:
                    log.warning(
                        "staged segment failed authentication, asked again device=%s doc=%s n=%d",
                        device,
                        doc,
                        again,
                    )
                    return [self._receipt(device, doc, "missing", missing=(again,))]
                shutil.rmtree(d, ignore_errors=True)
                return self._reject(device, doc, str(exc), header.ciphertext_sha256)
            self.index.add(rec)
            self._archive_failed.pop((device, doc), None)
            shutil.rmtree(d, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            (self.staging / f".{device}.{doc}.lock").unlink()
        log.info("stored device=%s doc=%s bytes=%d", device, doc, rec.bytes)
        return [self._stored_receipt(rec)]
