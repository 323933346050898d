"""Store-and-forward upload of sealed envelopes from the spool, pipelined and self-tuned.

A document moves to ``stored`` only on a warehouse receipt that verifies against
a receipt key the device accepts (``sync.receipt_keys``); a broker PUBACK is not
a delivery. Commands arrive on the same link and go to ``on_command`` in the
order they came, so a rotation applies before the receipts that follow it.

Several documents are in flight at once, bounded by bytes in flight, in the
spool's order (cover-sheet class first, smaller first); receipts are matched to
their document whatever order they come in. The bytes in flight, the pacing
and the message size come from the delay-based controller (``sync.mqtt.ledbat``),
which lives across connections; ``bandwidth_kbps`` only caps it. Segments go in pieces.

After a reconnect the uploader asks the warehouse what it holds (``q``) of a
document it had begun and sends only what is missing, from inside a segment when
the answer says it holds its start; the answer echoes the query's nonce, so one
queued in the broker from before is ignored. A link that stops acknowledging
without a reset is given up after ``stall_after`` seconds (``LinkStalled``).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from sync.envelope.header import manifest_bytes
from sync.envelope.reader import read_header, read_prefix, read_segment
from sync.errors import BrokerError
from sync.mqtt.acks import PendingPublish
from sync.mqtt.ledbat import Ledbat, Ticket
from sync.mqtt.link import Link
from sync.protocol import (
    ProtocolError,
    Query,
    Receipt,
    command_topic,
    manifest_topic,
    parse_receipt,
    piece_message,
    pieces_topic,
    query_topic,
    receipt_topic,
    segment_topic,
)
from sync.receipt_keys import ReceiptKeys, ReceiptVerifier
from sync.spool.schema import SpoolDoc
from sync.spool.store import Spool
from sync.upload_plan import InFlightDoc, Piece, UploadSettings, UploadStats, next_piece

__all__ = ["LinkStalled", "UploadSettings", "UploadStats", "Uploader"]

log = logging.getLogger("sohoa.uploader")

MAX_ACTIVE_DOCS = 64
MAX_EARLY_RECEIPTS = 1024  # receipts for documents not in flight, kept until they are
PENDING_REFRESH_S = 1.0  # how often the spool is asked for new documents
IDLE_WAIT_S = 0.25
HEARTBEAT_S = 1.0
MQTT_FRAMING = 8  # bytes of a PUBLISH besides its topic and payload (header, id, lengths)
ASK_AFTER_S = 2.0  # the least wait for a receipt before asking; doubles each time


class LinkStalled(BrokerError):
    """The link stopped carrying bytes without a reset: drop it, do not wait on it."""


@dataclass
class _Flight:
    pending: PendingPublish
    ticket: Ticket
    doc: InFlightDoc | None


class Uploader:
    def __init__(
        self,
        link: Link,
        spool: Spool,
        settings: UploadSettings,
        receipt_keys: Ed25519PublicKey | ReceiptVerifier,
        *,
        on_command: Callable[[bytes], object] | None = None,
        clock: Callable[[], float] = time.monotonic,
        heartbeat: Callable[[], object] = lambda: None,
        control: Ledbat | None = None,
    ) -> None:
        self.link = link
        self.spool = spool
        self.s = settings
        self.keys: ReceiptVerifier = (
            ReceiptKeys.single(receipt_keys)
            if isinstance(receipt_keys, Ed25519PublicKey)
            else receipt_keys
        )
        self.on_command = on_command
        self.clock = clock
        self.heartbeat = heartbeat  # called while it works (systemd's watchdog)
        self.control = control or Ledbat(time.monotonic, cap_kbps=settings.bandwidth_kbps)
        self.stats = UploadStats()
        self._receipts: OrderedDict[str, Receipt] = OrderedDict()
        self._active: OrderedDict[str, InFlightDoc] = OrderedDict()
        self._flights: deque[_Flight] = deque()
        self._in_flight = 0  # bytes
        self._paced_debt = 0.0  # bytes on the link not yet paid for at the pacing rate
        self._paced_at = time.monotonic()
        self._last_progress = time.monotonic()
        self._rejected: set[str] = set()
        self._queue: deque[SpoolDoc] = deque()
        self._queue_at = -float("inf")
        self._beat_at = -float("inf")
        self._subscription: PendingPublish | None = None

    def start(self) -> None:
        """Subscribe to commands (first, so that a retained rotation comes first) and
        receipts, in one SUBSCRIBE."""
        topics = [command_topic(self.s.device_id)] if self.on_command is not None else []
        topics.append(receipt_topic(self.s.device_id))
        # not waited for: uploading starts at once, a refusal surfaces in the loop
        self._subscription = self.link.subscribe_all(topics, qos=1, wait=False)

    def poll(self, timeout_s: float) -> None:
        """Handle what arrived (commands, receipts) while there is nothing to upload."""
        if self._subscription is not None:
            self.link.raise_if_failed(self._subscription)
        self._pump(timeout_s)

    # -- the loop ----------------------------------------------------------------

    def drain(self, deadline: float) -> tuple[int, int]:
        """Upload every pending document until done or ``deadline``.

        Returns (pending left, rejected)."""
        while self.clock() < deadline:
            self._beat()
            self._settle_flights()
            self._pump(0)
            self._apply_receipts()
            self._admit()
            if not self._active:
                break
            self._ask_the_quiet()
            wait = self._send()
            self.link.wait_activity(min(wait, max(deadline - self.clock(), 0.0)))
        left = [d for d in self.spool.pending() if d.doc_id not in self._rejected]
        return len(left), len(self._rejected)

    def _beat(self) -> None:
        now = time.monotonic()
        if now - self._beat_at >= HEARTBEAT_S:
            self._beat_at = now
            self.heartbeat()

    # -- documents in and out ------------------------------------------------------

    def _admit(self) -> None:
        """Start the next documents once those in flight have nothing left to send."""
        if any(d.todo for d in self._active.values()) or len(self._active) >= MAX_ACTIVE_DOCS:
            return
        now = time.monotonic()
        # while documents wait for receipts the spool is asked at most once a second;
        # with none in flight, at once (else the caller would spin until it may)
        due = not self._active or now - self._queue_at >= PENDING_REFRESH_S
        if not self._queue and due:
            self._queue_at = now
            self._queue.extend(self.spool.pending())
        while self._queue and len(self._active) < MAX_ACTIVE_DOCS:
            listed = self._queue.popleft()
            if listed.doc_id in self._active or listed.doc_id in self._rejected:
                continue
            doc = self.spool.get(listed.doc_id)  # it may have been stored since it was listed
            if doc is None or doc.state not in ("queued", "sent"):
                continue
            self._begin(doc)
            if self._active[doc.doc_id].todo:
                return  # something to send: the next one when this is out

    def _begin(self, doc: SpoolDoc) -> None:
        log.debug("upload begins doc=%s state=%s", doc.doc_id, doc.state)
        header = read_header(doc.envelope)
        d = InFlightDoc(doc, header, read_prefix(doc.envelope))
        self._active[doc.doc_id] = d
        self._send_manifest(d)
        # 'sent' means the upload has begun before: ask the warehouse what it lacks
        if doc.state == "sent":
            self._ask(d)
        else:
            self.spool.mark_sent(doc.doc_id)
            d.queue(range(header.segments))

    def _send_manifest(self, d: InFlightDoc) -> None:
        manifest = manifest_bytes(d.header, d.prefix)
        self._publish(manifest_topic(self.s.device_id, d.doc_id), manifest, d)

    # -- sending -----------------------------------------------------------------------

    def _send(self) -> float:
        """Send what the window and the pacing allow; seconds until it is worth looking again."""
        c = self.control
        while True:
            doc = next((d for d in self._active.values() if d.todo), None)
            if doc is None:
                return IDLE_WAIT_S
            size = c.piece_size()
            if self._in_flight and self._in_flight + size > c.window():
                return IDLE_WAIT_S  # an acknowledgement wakes the loop
            if len(self._flights) >= self.s.window:
                return IDLE_WAIT_S
            wait = self._pace_wait(time.monotonic())
            if wait > 0:
                return wait
            piece = next_piece(doc, size)
            assert piece is not None
            self._send_piece(doc, piece)

    def _pace_wait(self, now: float) -> float:
        """Seconds until the next message may go: the bytes sent drain at the current
        pacing rate, so a rate that rises (the office's traffic left) applies at once."""
        pace = self.control.pacing_rate()
        drained = (now - self._paced_at) * pace if pace < float("inf") else self._paced_debt
        self._paced_debt = max(0.0, self._paced_debt - drained)
        self._paced_at = now
        return self._paced_debt / pace if self._paced_debt else 0.0

    def _send_piece(self, doc: InFlightDoc, piece: Piece) -> None:
        if doc.cached is None or doc.cached[0] != piece.n:
            doc.cached = (piece.n, read_segment(doc.spool.envelope, doc.header, piece.n))
        data = doc.cached[1][piece.offset : piece.offset + piece.length]
        dev, doc_id = self.s.device_id, doc.doc_id
        if piece.whole:
            self._publish(segment_topic(dev, doc_id, piece.n), data, doc)
        else:  # one topic per document, sent as an alias: the piece says where it goes
            message = piece_message(piece.n, piece.offset, data)
            self._publish(pieces_topic(dev, doc_id), message, doc, alias=True)
        self.stats.messages_sent += 1
        self.stats.bytes_sent += len(data)
        self.stats.segments_sent += piece.last

    def _publish(
        self, topic: str, payload: bytes, doc: InFlightDoc | None, *, alias: bool = False
    ) -> None:
        ticket = self.control.ticket(len(payload), self._in_flight + len(payload))
        pending = self.link.publish_nowait(topic, payload, qos=1, alias=alias)
        # paced by what goes on the link (framing, manifests and queries included), so
        # that an explicit bandwidth_kbps is never exceeded
        self._pace_wait(time.monotonic())
        self._paced_debt += pending.topic_bytes + len(payload) + MQTT_FRAMING
        if not self._flights:
            self._last_progress = time.monotonic()
        self._flights.append(_Flight(pending, ticket, doc))
        self._in_flight += len(payload)
        if doc is not None:
            doc.outstanding += 1
            doc.quiet_since = None

    def _settle_flights(self) -> None:
        """Take the acknowledgements that came; raise if the link failed or stalled."""
        if self._subscription is not None:
            self.link.raise_if_failed(self._subscription)
        if not self._flights:
            return
        still: deque[_Flight] = deque()
        for f in self._flights:
            if not f.pending.done():
                still.append(f)
                continue
            if f.pending.failed:
                raise BrokerError(
                    f"the broker did not acknowledge a message ({f.pending.reason})",
                    "the link dropped; will resume",
                )
            self._in_flight -= f.ticket.size
            self.control.on_ack(f.ticket, f.pending.settled_at)
            self._last_progress = max(self._last_progress, f.pending.settled_at)
            if f.doc is not None:
                f.doc.outstanding -= 1
                if not f.doc.outstanding and not f.doc.todo:
                    f.doc.quiet_since = time.monotonic()
        self._flights = still
        self._check_stall()

    def _check_stall(self) -> None:
        if not self._flights:
            return
        quiet = time.monotonic() - self._last_progress
        limit = self.control.stall_after()
        if quiet > limit:
            self.stats.stalls += 1
            self.control.on_stall()
            raise LinkStalled(
                f"the link carried no acknowledgement for {quiet:.1f} s"
                f" with {len(self._flights)} message(s) outstanding",
                "the link stalled without a reset; reconnecting (the spool keeps the data)",
            )

    # -- queries -------------------------------------------------------------------------

    def _ask(self, d: InFlightDoc) -> None:
        nonce = secrets.token_hex(8)
        d.asked, d.asked_at = nonce, time.monotonic()
        earlier = self._receipts.get(d.doc_id)
        if earlier is not None and earlier.status == "missing":
            del self._receipts[d.doc_id]  # a list from before this question is stale
        log.debug("asking the warehouse doc=%s", d.doc_id)
        q = Query(d.header.ciphertext_sha256, d.header.segments, nonce)
        self._publish(query_topic(self.s.device_id, d.doc_id), q.to_bytes(), None)

    def _ask_the_quiet(self) -> None:
        """Once every message of a document is out, the warehouse answers by itself; ask
        only when it stays quiet (a message was lost on the way, or the warehouse was
        away), and again, less and less often, up to ``receipt_timeout_s`` apart."""
        now = time.monotonic()
        srtt = self.control.srtt or 0.5
        for d in self._active.values():
            if d.todo or d.outstanding:
                continue
            wait = min(self.s.receipt_timeout_s, max(ASK_AFTER_S, 4 * srtt) * 2**d.asks)
            since = d.asked_at if d.asked is not None else d.quiet_since
            if since is not None and now - since >= wait:
                d.asks += 1
                # the manifest again too: it may be what was lost (a worker that went
                # away with its share of the messages), and it is small
                self._send_manifest(d)
                self._ask(d)

    # -- receipts ------------------------------------------------------------------------

    def _pump(self, timeout_s: float) -> None:
        """Take messages off the link; keep the verified receipts."""
        msg = self.link.get(timeout_s)
        while msg is not None:
            try:
                self._on_message(msg.topic, msg.payload)
            except Exception as exc:  # one message never takes the uploader down
                self.stats.bad_messages += 1
                log.error("message dropped topic=%s reason=%s", msg.topic, type(exc).__name__)
            msg = self.link.get(0)

    def _on_message(self, topic: str, payload: bytes) -> None:
        if topic == command_topic(self.s.device_id) and self.on_command is not None:
            self.on_command(payload)
            return
        if topic != receipt_topic(self.s.device_id):
            return
        try:
            r = parse_receipt(payload)
        except ProtocolError as exc:
            self.stats.bad_messages += 1
            log.warning("malformed receipt ignored reason=%s", exc)
            return
        refusal = "names another device" if r.device != self.s.device_id else self.keys.refusal(r)
        if refusal is not None:
            log.error("receipt refused doc=%s status=%s reason=%s", r.doc, r.status, refusal)
            return
        active = self._active.get(r.doc)
        asked = active.asked if active is not None else None
        if r.status == "missing" and r.query is not None and r.query != asked:
            return  # the answer to an older query, queued while this device was away
        self._receipts[r.doc] = r
        self._receipts.move_to_end(r.doc)
        while len(self._receipts) > MAX_EARLY_RECEIPTS:
            self._receipts.popitem(last=False)

    def _apply_receipts(self) -> None:
        for doc_id in [k for k in self._receipts if k in self._active]:
            self._on_receipt(self._active[doc_id], self._receipts.pop(doc_id))

    def _on_receipt(self, d: InFlightDoc, r: Receipt) -> None:
        log.debug("receipt doc=%s status=%s missing=%d", d.doc_id, r.status, len(r.missing))
        ciphertext = d.header.ciphertext_sha256
        if r.status == "stored":
            if r.ciphertext_sha256 != ciphertext:
                log.error("receipt for a different ciphertext ignored doc=%s", d.doc_id)
                return
            self.spool.mark_stored(d.doc_id, r.to_bytes().decode())
            self.stats.stored += 1
            self._active.pop(d.doc_id, None)
        elif r.status == "rejected":
            if r.ciphertext_sha256 != ciphertext:
                # earned by a message that was not this envelope (garbage on our topic)
                log.warning("rejection that does not name this envelope ignored doc=%s", d.doc_id)
                self._ask(d)
                return
            self.stats.rejected += 1
            self.stats.rejections[d.doc_id] = r.reason or "no reason given"
            self._rejected.add(d.doc_id)
            log.error("warehouse rejected document doc=%s reason=%s", d.doc_id, r.reason)
            self._active.pop(d.doc_id, None)
        else:
            d.asked, d.asks = None, 0
            # nothing missing: it holds every segment but not the manifest; everything
            # missing: it may not hold the manifest either (it went while it was away)
            if not r.missing or (len(r.missing) >= d.header.segments and not r.partial):
                self._send_manifest(d)
            d.queue(r.missing, dict(r.partial))
