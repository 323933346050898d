"""What is left to send of one document, how it is cut into messages, and the
uploader's settings and counters.

Pure values: a document in flight keeps the segments it still has to send, each
from a byte offset (a query's answer may say the warehouse holds the start of a
segment already); ``next_piece`` cuts the next message at the size the link
suits, in equal parts of a segment, so that a segment that fits goes whole, on
the segment topic, as it always did.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from sync.envelope.header import Header
from sync.spool.schema import SpoolDoc


@dataclass(frozen=True)
class Piece:
    n: int
    offset: int
    length: int
    whole: bool  # the whole segment: the segment topic, not a piece
    last: bool  # ends its segment


@dataclass
class InFlightDoc:
    """One document being uploaded on this connection."""

    spool: SpoolDoc
    header: Header
    prefix: bytes
    todo: deque[tuple[int, int]] = field(default_factory=deque)  # (segment, from byte)
    outstanding: int = 0  # its messages the broker has not acknowledged yet
    quiet_since: float | None = None  # all sent and acknowledged; waiting for a receipt
    asked: str | None = None  # the nonce of the last query
    asked_at: float = -math.inf
    asks: int = 0  # queries since the last answer
    cached: tuple[int, bytes] | None = None  # the segment last read from the envelope

    @property
    def doc_id(self) -> str:
        return self.spool.doc_id

    def queue(self, segments: Iterable[int], held: Mapping[int, int] | None = None) -> None:
        """Send ``segments`` (again), each from what the warehouse holds of it."""
        held = held or {}
        queued = {n for n, _ in self.todo}
        for n in segments:
            if 0 <= n < self.header.segments and n not in queued:
                start = held.get(n, 0)
                self.todo.append((n, start if start < self.header.segment_length(n) else 0))
                queued.add(n)
        if self.todo:
            self.quiet_since = None


def next_piece(doc: InFlightDoc, size: int) -> Piece | None:
    """Take the next message of at most about ``size`` bytes off ``doc.todo``."""
    if not doc.todo:
        return None
    n, offset = doc.todo.popleft()
    seglen = doc.header.segment_length(n)
    rest = seglen - offset
    parts = max(1, math.ceil(rest / max(size, 1)))
    length = math.ceil(rest / parts)
    if offset + length < seglen:
        doc.todo.appendleft((n, offset + length))
    return Piece(n, offset, length, whole=(offset == 0 and length == seglen), last=(parts == 1))


@dataclass
class UploadStats:
    stored: int = 0
    rejected: int = 0
    segments_sent: int = 0  # segments sent out in full (whole, or their last piece)
    messages_sent: int = 0  # segment and piece messages
    bytes_sent: int = 0  # envelope bytes in them
    bad_messages: int = 0  # malformed or failing messages dropped
    stalls: int = 0
    rejections: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class UploadSettings:
    device_id: str
    window: int = 64  # messages in flight, at most (the controller decides the bytes)
    receipt_timeout_s: float = 30.0
    bandwidth_kbps: int = 0  # an upper cap; 0 = as fast as the link allows
