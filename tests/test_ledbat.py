"""The rate controller, the piece cutter and the warehouse's piece store, as values."""

from __future__ import annotations

import heapq
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sync.envelope.header import Header
from sync.mqtt.ledbat import MAX_PIECE, MIN_PIECE, STALL_MAX_S, STALL_MIN_S, Ledbat, Ticket
from sync.protocol import (
    ProtocolError,
    Receipt,
    parse_doc_topic,
    parse_receipt,
    piece_message,
    piece_topic,
    pieces_topic,
    sign_receipt,
    split_piece,
    verify_receipt,
)
from sync.spool.schema import SpoolDoc
from sync.upload_plan import InFlightDoc, next_piece
from sync.warehouse.pieces import assemble, covered, partial_progress, store_piece


class Link:
    """A modem of ``rate`` bytes/s and ``base`` s round trip, as events: each message
    waits for the modem, crosses it at the rate, and is acknowledged a round trip
    later; ``queue`` s of the office's bytes wait in front of every one."""

    def __init__(self, rate: float, base: float) -> None:
        self.rate, self.base, self.queue = rate, base, 0.0
        self.now = 0.0
        self.free_at = 0.0  # when the modem has sent what it holds
        self.c = Ledbat(lambda: self.now)
        self.acks: list[tuple[float, int, Ticket]] = []
        self.flight = 0

    def run(self, seconds: float) -> float:
        """Send what the window allows for ``seconds``; the bytes acknowledged."""
        acked, end = 0, self.now + seconds
        while self.now < end:
            while not self.flight or self.flight + self.c.piece_size() <= self.c.window():
                size = self.c.piece_size()
                self.flight += size
                t = self.c.ticket(size, self.flight)
                self.free_at = max(self.now, self.free_at) + size / self.rate
                heapq.heappush(self.acks, (self.free_at + self.base + self.queue, id(t), t))
            self.now, _, t = heapq.heappop(self.acks)
            self.flight -= t.size
            self.c.on_ack(t, self.now)
            acked += t.size
        return acked


def test_the_window_grows_to_fill_an_idle_link_and_keeps_the_queue_near_the_target() -> None:
    link = Link(rate=64_000, base=0.06)  # 512 kbit/s
    link.run(20)
    delivered = link.run(10)
    assert delivered / 10 > 0.9 * link.rate
    assert link.c.queue_delay is not None and link.c.queue_delay < 0.2
    est = link.c.estimate()
    assert est.base_rtt_ms is not None and 50 < est.base_rtt_ms < 80


def test_a_link_slower_than_one_message_per_target_stays_busy() -> None:
    """At 64 kbit/s one 2 KiB message takes 0.26 s to cross, longer than the 0.1 s
    target: the queue may hold one message, else the link idles between them."""
    link = Link(rate=8_000, base=0.6)
    link.run(20)
    delivered = link.run(30)
    assert delivered / 30 > 0.97 * link.rate
    assert link.c.queue_delay is not None and link.c.queue_delay < 2 * MIN_PIECE / link.rate
    assert link.c.queue_target() == pytest.approx(MIN_PIECE / link.rate, rel=0.1)


def test_the_window_shrinks_when_the_office_fills_the_modem_and_grows_back() -> None:
    link = Link(rate=32_000, base=0.3)
    link.run(20)
    before = link.c.window()
    link.queue = 2.0  # a download fills the modem: two seconds of queue
    link.run(20)
    during = link.c.window()
    link.queue = 0.0
    link.run(20)
    after = link.c.window()
    assert during <= min(4 * MIN_PIECE, 0.2 * before)  # a few pieces: the office has the link
    assert after >= 0.8 * before


def test_message_size_follows_the_link_and_its_cap() -> None:
    slow, fast = Link(rate=8_000, base=0.6), Link(rate=500_000, base=0.06)
    slow.run(20)
    fast.run(10)
    assert slow.c.piece_size() == MIN_PIECE
    assert fast.c.piece_size() > 8 * MIN_PIECE
    capped = Ledbat(lambda: 0.0, cap_kbps=64)
    assert capped.piece_size() == MIN_PIECE
    assert capped.pacing_rate() == 8_000
    assert Ledbat(lambda: 0.0).piece_size() <= MAX_PIECE


def test_a_dead_link_is_declared_within_bounds() -> None:
    c = Ledbat(lambda: 0.0)
    assert c.stall_after() == STALL_MAX_S
    link = Link(rate=500_000, base=0.02)
    link.run(5)
    assert link.c.stall_after() == STALL_MIN_S
    w = link.c.window()
    link.c.on_stall()
    assert link.c.window() < w


def _header(segments: int, segment_size: int = 1000, last: int = 500) -> Header:
    tag = 16
    size = (segments - 1) * (segment_size + tag) + last
    return Header(
        device_id="d",
        doc_id="x",
        key_id="k",
        suite="s",
        segment_size=segment_size,
        segments=segments,
        ciphertext_size=size,
        segment_tags=tuple("00" * 16 for _ in range(segments)),
        ciphertext_sha256="ab" * 32,
        **_header_rest(),
    )


def _header_rest() -> dict[str, str]:
    fields = set(Header.__dataclass_fields__) - {
        "device_id",
        "doc_id",
        "key_id",
        "suite",
        "segment_size",
        "segments",
        "ciphertext_size",
        "segment_tags",
        "ciphertext_sha256",
    }
    return dict.fromkeys(fields, "")


def _doc(header: Header) -> InFlightDoc:
    spool = SpoolDoc("x", "b", "queued", 0, 1, "other", 0.0, Path("/nonexistent"))
    return InFlightDoc(spool, header, b"")


def test_segments_are_cut_in_equal_pieces_or_sent_whole() -> None:
    d = _doc(_header(3))
    d.queue(range(3))
    pieces = []
    while (p := next_piece(d, 400)) is not None:
        pieces.append(p)
    # 1016 bytes in 3 parts of 339, 339, 338; the last segment (500) in 2 of 250
    assert [(p.n, p.offset, p.length) for p in pieces] == [
        (0, 0, 339),
        (0, 339, 339),
        (0, 678, 338),
        (1, 0, 339),
        (1, 339, 339),
        (1, 678, 338),
        (2, 0, 250),
        (2, 250, 250),
    ]
    assert [p.last for p in pieces] == [False, False, True, False, False, True, False, True]
    d.queue([1, 2])
    whole = [next_piece(d, 4096), next_piece(d, 4096)]
    assert [(p.n, p.whole) for p in whole if p is not None] == [(1, True), (2, True)]


def test_a_segment_resumes_from_what_the_warehouse_holds() -> None:
    d = _doc(_header(2))
    d.queue([0, 1], {0: 600, 1: 10_000})  # a held count beyond the segment starts over
    p0, p1 = next_piece(d, 4096), next_piece(d, 4096)
    assert p0 is not None and p1 is not None
    assert (p0.offset, p0.length, p0.whole, p0.last) == (600, 416, False, True)
    assert (p1.offset, p1.whole) == (0, True)


def test_pieces_are_put_together_whatever_order_and_overlap(tmp_path: Path) -> None:
    seg = bytes(range(256)) * 4  # 1024 bytes
    store_piece(tmp_path, 3, 600, seg[600:])
    assert assemble(tmp_path, 3, 1024) is None
    assert partial_progress(tmp_path, [3]) == ()
    store_piece(tmp_path, 3, 0, seg[:400])
    assert partial_progress(tmp_path, [3, 4]) == ((3, 400),)
    store_piece(tmp_path, 3, 300, seg[300:700])  # overlaps both, as a resend with another size
    assert assemble(tmp_path, 3, 1024) == seg
    assert covered([(0, 10), (5, 10), (16, 4)]) == 15


def test_piece_topics_and_partial_receipts_round_trip() -> None:
    t = parse_doc_topic(piece_topic("dev-1", "doc-1", 12, 40960))  # as first devices sent
    assert (t.kind, t.segment, t.offset) == ("p", 12, 40960)
    t = parse_doc_topic(pieces_topic("dev-1", "doc-1"))
    assert (t.kind, t.segment, t.offset) == ("p", None, None)
    assert split_piece(piece_message(12, 40960, b"abc")) == (12, 40960, b"abc")
    with pytest.raises(ProtocolError, match="header"):
        split_piece(b"\x00\x00")
    key = Ed25519PrivateKey.generate()
    r = sign_receipt(
        Receipt("dev-1", "doc-1", "missing", missing=(12, 13), partial=((12, 4096),)), key
    )
    back = parse_receipt(r.to_bytes())
    assert back.partial == ((12, 4096),) and verify_receipt(back, key.public_key())
    plain = sign_receipt(Receipt("dev-1", "doc-1", "missing", missing=(1,)), key)
    assert b"partial" not in plain.to_bytes()  # what older devices verify stays the same
    with pytest.raises(ProtocolError, match="partial"):
        parse_receipt(r.to_bytes().replace(b"[[12,4096]]", b'[["x",1]]'))
