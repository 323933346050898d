"""Store-and-forward upload of sealed envelopes from the spool.

A document moves to ``stored`` only on a warehouse receipt that verifies
against a receipt key the device accepts (``sync.receipt_keys``: the key of the
pinned warehouse.pub, or the set a signed rotation command put in its place); a
broker PUBACK is not a delivery. Commands arrive on the same link and go to the
``on_command`` handler in the order they came, so a rotation applies before the
receipts that follow it.

After any reconnect the uploader asks the warehouse what it holds (``q``) and
sends only the missing segments; each query carries a nonce that the answer
echoes, so a "missing" list queued in the broker from before the reconnect is
ignored. A new document goes out without a query: the warehouse answers once it
has it all.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from sync.envelope.header import Header, manifest_bytes
from sync.envelope.reader import read_header, read_prefix, read_segment
from sync.errors import BrokerError
from sync.mqtt.acks import PendingPublish
from sync.mqtt.link import Link
from sync.protocol import (
    ProtocolError,
    Query,
    Receipt,
    command_topic,
    manifest_topic,
    parse_receipt,
    query_topic,
    receipt_topic,
    segment_topic,
)
from sync.receipt_keys import ReceiptKeys, ReceiptVerifier
from sync.spool.schema import SpoolDoc
from sync.spool.store import Spool

log = logging.getLogger("sohoa.uploader")


class TokenBucket:
    """Caps the upload rate so that the office's link stays usable (0 = no cap)."""

    def __init__(
        self,
        kbps: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        burst_s: float = 0.25,
    ) -> None:
        self.rate = kbps * 1000 / 8
        self.capacity = max(self.rate * burst_s, 4096.0)
        self.tokens = self.capacity
        self.clock = clock
        self.sleep = sleep
        self.last = clock()

    def take(self, n: int) -> None:
        if self.rate <= 0:
            return
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
        self.last = now
        self.tokens -= n
        if self.tokens < 0:
            self.sleep(-self.tokens / self.rate)


@dataclass
class UploadStats:
    stored: int = 0
    rejected: int = 0
    segments_sent: int = 0
    bytes_sent: int = 0
    bad_messages: int = 0  # malformed or failing messages dropped
    rejections: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class UploadSettings:
    device_id: str
    window: int = 64
    receipt_timeout_s: float = 30.0
    bandwidth_kbps: int = 0


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
        self.bucket = TokenBucket(settings.bandwidth_kbps)
        self.stats = UploadStats()
        self._receipts: dict[str, Receipt] = {}
        self._started: set[str] = set()
        self._asked: dict[str, str] = {}  # doc -> nonce of the last query

    def start(self) -> None:
        if self.on_command is not None:  # first, so that a retained rotation comes first
            self.link.subscribe(command_topic(self.s.device_id), qos=1)
        self.link.subscribe(receipt_topic(self.s.device_id), qos=1)

    def poll(self, timeout_s: float) -> None:
        """Handle what arrived (commands, receipts) while there is nothing to upload."""
        self._pump(timeout_s)

    # -- receipts --------------------------------------------------------------

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
        if r.status == "missing" and r.query is not None and r.query != self._asked.get(r.doc):
            return  # the answer to an older query, queued while this device was away
        self._receipts[r.doc] = r

    def _await_receipt(self, doc_id: str, timeout_s: float) -> Receipt | None:
        deadline = self.clock() + timeout_s
        while True:
            r = self._receipts.pop(doc_id, None)
            if r is not None:
                return r
            left = deadline - self.clock()
            if left <= 0:
                return None
            if not self.link.connected:
                raise BrokerError(
                    "connection to the broker lost while waiting for a receipt", "will retry"
                )
            self._pump(min(left, 0.5))

    # -- sending ---------------------------------------------------------------

    def _send_segments(self, doc: SpoolDoc, header: Header, which: Iterable[int]) -> None:
        window: deque[PendingPublish] = deque()
        for n in which:
            if n >= header.segments:
                continue
            data = read_segment(doc.envelope, header, n)
            self.bucket.take(len(data))
            window.append(
                self.link.publish_nowait(
                    segment_topic(self.s.device_id, doc.doc_id, n), data, qos=1
                )
            )
            self.stats.segments_sent += 1
            self.stats.bytes_sent += len(data)
            while len(window) >= self.s.window or (window and window[0].done()):
                self._settle(window.popleft())
            if self._receipts:
                self._pump(0)
        while window:
            self._settle(window.popleft())

    def _settle(self, p: PendingPublish) -> None:
        if not p.wait(self.s.receipt_timeout_s) or p.failed:
            raise BrokerError(
                "the broker did not acknowledge a segment", "the link dropped; will resume"
            )

    def _ask(self, doc_id: str, header: Header) -> None:
        nonce = secrets.token_hex(8)
        self._asked[doc_id] = nonce
        earlier = self._receipts.get(doc_id)
        if earlier is not None and earlier.status == "missing":
            del self._receipts[doc_id]  # a list from before this question is stale
        q = Query(header.ciphertext_sha256, header.segments, nonce)
        self.link.publish(query_topic(self.s.device_id, doc_id), q.to_bytes(), qos=1)

    def upload(self, doc: SpoolDoc, deadline: float = float("inf")) -> str:
        """Deliver one document by ``deadline``; return "stored", "rejected" or "pending"."""
        header = read_header(doc.envelope)
        prefix = read_prefix(doc.envelope)
        manifest = self.link.publish_nowait(
            manifest_topic(self.s.device_id, doc.doc_id), manifest_bytes(header, prefix), qos=1
        )
        # 'sent' means the upload has begun: after a reconnect or a restart the
        # uploader asks the warehouse first and sends only what it lacks
        ask = doc.state == "sent" or doc.doc_id in self._started
        self._started.add(doc.doc_id)
        if not ask:
            self.spool.mark_sent(doc.doc_id)
            self._send_segments(doc, header, range(header.segments))
        self._settle(manifest)
        for _attempt in range(1000):
            self.heartbeat()
            if self.clock() >= deadline:
                return "pending"
            if ask:
                self._ask(doc.doc_id, header)
            # once every segment is out, the warehouse answers by itself: ask only
            # when it stays quiet (a segment was lost or dropped on the way)
            wait = self.s.receipt_timeout_s if ask else self.s.receipt_timeout_s / 2
            r = self._await_receipt(doc.doc_id, wait)
            if r is None:
                if ask:
                    return "pending"
                ask = True
                continue
            if r.status == "stored":
                if r.ciphertext_sha256 != header.ciphertext_sha256:
                    log.error("receipt for a different ciphertext ignored doc=%s", doc.doc_id)
                    return "pending"
                self.spool.mark_stored(doc.doc_id, r.to_bytes().decode())
                self._started.discard(doc.doc_id)
                self.stats.stored += 1
                return "stored"
            if r.status == "rejected" and r.ciphertext_sha256 != header.ciphertext_sha256:
                # earned by a message that was not this envelope (garbage on our topic)
                log.warning("rejection that does not name this envelope ignored doc=%s", doc.doc_id)
                ask = True
                continue
            if r.status == "rejected":
                self.stats.rejected += 1
                self.stats.rejections[doc.doc_id] = r.reason or "no reason given"
                log.error("warehouse rejected document doc=%s reason=%s", doc.doc_id, r.reason)
                return "rejected"
            if not r.missing:  # the warehouse holds every segment but not the manifest
                self.link.publish(
                    manifest_topic(self.s.device_id, doc.doc_id),
                    manifest_bytes(header, prefix),
                    qos=1,
                )
            self._send_segments(doc, header, r.missing)
            ask = not r.missing
        return "pending"

    def drain(self, deadline: float) -> tuple[int, int]:
        """Upload every pending document until done or ``deadline``.

        Returns (pending left, rejected)."""
        rejected: set[str] = set()
        while self.clock() < deadline:
            self.heartbeat()
            todo = [d for d in self.spool.pending() if d.doc_id not in rejected]
            if not todo:
                break
            progressed = False
            for doc in todo:
                if self.clock() >= deadline:
                    break
                status = self.upload(doc, deadline)
                if status == "rejected":
                    rejected.add(doc.doc_id)
                progressed = progressed or status != "pending"
            if not progressed:
                self._pump(0.5)
        left = [d for d in self.spool.pending() if d.doc_id not in rejected]
        return len(left), len(rejected)
