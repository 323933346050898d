"""The sealed plaintext of one document: metadata JSON followed by the PDF.

Layout: ``b"SOHOAPT1"`` ‖ u32be length of the metadata JSON ‖ metadata JSON ‖ PDF.
The metadata carries the tags (dossier code, owner id, ...) and therefore only
ever exists inside an envelope or in the warehouse archive.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

MAGIC = b"SOHOAPT1"
MAX_META = 1 << 20


class PayloadError(ValueError):
    pass


def payload_head(meta: Mapping[str, Any]) -> bytes:
    body = json.dumps(meta, ensure_ascii=False, sort_keys=True).encode()
    if len(body) > MAX_META:
        raise PayloadError("document metadata larger than 1 MiB")
    return MAGIC + struct.pack(">I", len(body)) + body


def split_payload(chunks: Iterable[bytes]) -> tuple[dict[str, Any], Iterator[bytes]]:
    """Read the metadata from a plaintext stream; return it and the PDF chunks."""
    it = iter(chunks)
    buf = b""
    need = len(MAGIC) + 4
    while len(buf) < need:
        try:
            buf += next(it)
        except StopIteration:
            raise PayloadError("document payload is truncated before its metadata") from None
        if len(buf) >= len(MAGIC) + 4:
            if buf[: len(MAGIC)] != MAGIC:
                raise PayloadError("document payload has an unknown format")
            (n,) = struct.unpack(">I", buf[len(MAGIC) : len(MAGIC) + 4])
            if n > MAX_META:
                raise PayloadError("document metadata length is out of range")
            need = len(MAGIC) + 4 + n
    try:
        meta = json.loads(buf[len(MAGIC) + 4 : need])
    except ValueError:
        raise PayloadError("document metadata is not valid JSON") from None
    if not isinstance(meta, dict):
        raise PayloadError("document metadata is not a JSON object")
    rest = buf[need:]

    def pdf() -> Iterator[bytes]:
        if rest:
            yield rest
        yield from it

    return meta, pdf()
