"""The sealed plaintext of one document: metadata JSON, the PDF, the PDF's hash.

Layout: ``b"SOHOAPT1"`` ‖ u32be length of the metadata JSON ‖ metadata JSON ‖
PDF ‖ SHA-256 of the PDF (32 bytes). The capture pipeline hashes the PDF as it
writes it (the audit log needs that hash anyway); the warehouse recomputes it,
so the check runs end to end, from the device's PDF writer to the archive.
The metadata carries the tags (dossier code, owner id, ...) and therefore only
ever exists inside an envelope or in the warehouse archive.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Callable, Iterable, Mapping
from typing import Any

MAGIC = b"SOHOAPT1"
MAX_META = 1 << 20
HASH_LEN = 32


class PayloadError(ValueError):
    pass


def payload_head(meta: Mapping[str, Any]) -> bytes:
    body = json.dumps(meta, ensure_ascii=False, sort_keys=True).encode()
    if len(body) > MAX_META:
        raise PayloadError("document metadata larger than 1 MiB")
    return MAGIC + struct.pack(">I", len(body)) + body


def unpack_payload(
    chunks: Iterable[bytes], sink: Callable[[bytes], object]
) -> tuple[dict[str, Any], str]:
    """Stream a plaintext: return its metadata and the PDF's SHA-256 after
    writing the PDF to ``sink``. PayloadError if the layout or hash is wrong."""
    it = iter(chunks)
    buf = b""
    lead = len(MAGIC) + 4
    need = lead
    while len(buf) < need:
        try:
            buf += next(it)
        except StopIteration:
            raise PayloadError("document payload is truncated before its metadata") from None
        if need == lead and len(buf) >= lead:
            if buf[: len(MAGIC)] != MAGIC:
                raise PayloadError("document payload has an unknown format")
            (n,) = struct.unpack(">I", buf[len(MAGIC) : lead])
            if n > MAX_META:
                raise PayloadError("document metadata length is out of range")
            need = lead + n
    try:
        meta = json.loads(buf[lead:need])
    except ValueError:
        raise PayloadError("document metadata is not valid JSON") from None
    if not isinstance(meta, dict):
        raise PayloadError("document metadata is not a JSON object")
    sha = hashlib.sha256()
    tail = buf[need:]
    for chunk in it:
        if len(tail) > HASH_LEN:
            sha.update(tail[:-HASH_LEN])
            sink(tail[:-HASH_LEN])
            tail = tail[-HASH_LEN:]
        tail += chunk
    if len(tail) > HASH_LEN:
        sha.update(tail[:-HASH_LEN])
        sink(tail[:-HASH_LEN])
        tail = tail[-HASH_LEN:]
    if len(tail) != HASH_LEN:
        raise PayloadError("document payload is truncated before its hash")
    if sha.digest() != tail:
        raise PayloadError("PDF hash does not match the hash the device computed")
    return meta, sha.hexdigest()
