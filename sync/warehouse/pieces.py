"""Segments that arrive in pieces: a slow link sends one envelope segment as several
MQTT messages (``…/doc/{doc}/p/{n}/{offset}``), each small enough not to hold the
office's link for long.

Pieces wait in the document's staging folder (``s0000012.00040960``: segment 12
from byte 40960) until they cover the whole segment; then the segment is put
together and goes the way a whole segment goes (AEAD check, staged as
``s0000012``), and its pieces are removed. Workers sharing the subscription may
handle pieces of one segment at the same time: every step tolerates another
worker having done it first. What the staging holds from a segment's start is
what a query's answer reports, so that a device resumes inside a segment instead
of resending it whole.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from pathlib import Path

from sync.durable import atomic_write
from sync.warehouse.staging import segment_name


def piece_name(n: int, offset: int) -> str:
    return f"{segment_name(n)}.{offset:08d}"


def _pieces(d: Path, n: int) -> list[tuple[int, Path]]:
    """(offset, file) of every piece of segment n, by offset."""
    stem = segment_name(n) + "."
    found: list[tuple[int, Path]] = []
    for p in d.glob(f"{stem}*"):
        tail = p.name[len(stem) :]
        if tail.isdigit() and len(tail) == 8:
            found.append((int(tail), p))
    return sorted(found)


def store_piece(d: Path, n: int, offset: int, data: bytes) -> None:
    atomic_write(d / piece_name(n, offset), data, durable=False)


def covered(spans: Iterable[tuple[int, int]]) -> int:
    """How many bytes from 0 the (offset, length) spans cover without a gap."""
    end = 0
    for offset, length in sorted(spans):
        if offset > end:
            break
        end = max(end, offset + length)
    return end


def held_from_start(d: Path, n: int) -> int:
    """Bytes of segment n staged in pieces from its start (0 when none)."""
    spans: list[tuple[int, int]] = []
    for offset, p in _pieces(d, n):
        with contextlib.suppress(FileNotFoundError):
            spans.append((offset, p.stat().st_size))
    return covered(spans)


def assemble(d: Path, n: int, length: int) -> bytes | None:
    """Segment n put together from its pieces, once they cover ``length`` bytes; None
    while a piece is missing (or another worker took them first)."""
    out = bytearray(length)
    end = 0
    try:
        for offset, p in _pieces(d, n):
            if offset > end:
                return None
            data = p.read_bytes()
            stop = min(offset + len(data), length)
            if stop > end:
                out[end:stop] = data[end - offset : stop - offset]
                end = stop
    except FileNotFoundError:
        return None
    return bytes(out) if end >= length else None


def drop_pieces(d: Path, n: int) -> None:
    for _offset, p in _pieces(d, n):
        p.unlink(missing_ok=True)


def partial_progress(d: Path, missing: Iterable[int]) -> tuple[tuple[int, int], ...]:
    """(segment, bytes held from its start) for the missing segments partly staged."""
    if not any(p.name.count(".") for p in _listing(d)):
        return ()
    held = ((n, held_from_start(d, n)) for n in missing)
    return tuple((n, b) for n, b in held if b > 0)


def _listing(d: Path) -> list[Path]:
    try:
        return list(d.iterdir())
    except FileNotFoundError:
        return []
