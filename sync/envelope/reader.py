"""Reading a finished envelope file: its prefix, its signed header, its segments.

The layout is described in ``sync.envelope.seal``; nothing here needs a key.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from sync.envelope.header import MAX_PREFIX, TAG_SIZE, VERSION, Header, tamper_error
from sync.envelope.seal import LEAD, LEAD_SIZE, MAGIC, MAX_HEADER, TAIL, TRAILER_MAGIC


def _read_exact(f: BinaryIO, n: int, what: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise tamper_error(f"envelope truncated: {what} is cut short")
    return data


def _read_lead(f: BinaryIO) -> int:
    magic, version, prefix_len = LEAD.unpack(_read_exact(f, LEAD_SIZE, "the file start"))
    if magic != MAGIC:
        raise tamper_error("not a sohoa envelope (bad magic)")
    if version != VERSION:
        raise tamper_error(f"unsupported envelope version {version}")
    if not 0 < prefix_len <= MAX_PREFIX:
        raise tamper_error("malformed envelope: prefix length out of range")
    return int(prefix_len)


def read_prefix(path: Path) -> bytes:
    """The prefix JSON bytes; the warehouse needs them to open the envelope."""
    with path.open("rb") as f:
        return _read_exact(f, _read_lead(f), "the prefix")


def _layout(path: Path) -> tuple[Header, int]:
    """The header and where segment 0 starts, after checking the file's size adds up."""
    with path.open("rb") as f:
        total = os.fstat(f.fileno()).st_size
        start = LEAD_SIZE + _read_lead(f)
        if total < start + TAIL.size:
            raise tamper_error("envelope truncated: no header")
        f.seek(total - TAIL.size)
        header_len, end = TAIL.unpack(f.read(TAIL.size))
        if end != TRAILER_MAGIC:
            raise tamper_error("envelope truncated: no end marker")
        if not 0 < header_len <= min(MAX_HEADER, total - start - TAIL.size):
            raise tamper_error("malformed envelope: header length out of range")
        f.seek(total - TAIL.size - header_len)
        header = Header.from_json(f.read(header_len))
    if start + header.ciphertext_size + header_len + TAIL.size != total:
        raise tamper_error("envelope file size does not match its header")
    return header, start


def read_header(path: Path) -> Header:
    """The signed header, read from the end of the file."""
    return _layout(path)[0]


def segment_offsets(header: Header, prefix_len_total: int) -> tuple[tuple[int, int], ...]:
    """(offset, length) of each segment; ``prefix_len_total`` = LEAD_SIZE + len(prefix)."""
    full = header.segment_size + TAG_SIZE
    return tuple(
        (prefix_len_total + n * full, header.segment_length(n)) for n in range(header.segments)
    )


def iter_segments(path: Path) -> Iterator[bytes]:
    """The ciphertext segments of a finished envelope file, in order."""
    header, start = _layout(path)
    with path.open("rb") as f:
        f.seek(start)
        for n in range(header.segments):
            yield _read_exact(f, header.segment_length(n), f"segment {n}")


def read_segment(path: Path, header: Header, n: int) -> bytes:
    """Ciphertext segment ``n`` of a finished envelope file (to resend just that one)."""
    length = header.segment_length(n)
    with path.open("rb") as f:
        start = LEAD_SIZE + _read_lead(f)
        f.seek(start + n * (header.segment_size + TAG_SIZE))
        return _read_exact(f, length, f"segment {n}")


def write_envelope(out: BinaryIO, header: Header, prefix: bytes, segments: Iterable[bytes]) -> None:
    """Reassemble an envelope file from its parts, byte for byte as the device wrote it."""
    out.write(LEAD.pack(MAGIC, VERSION, len(prefix)))
    out.write(prefix)
    for segment in segments:
        out.write(segment)
    body = header.to_json()
    out.write(body)
    out.write(TAIL.pack(len(body), TRAILER_MAGIC))
