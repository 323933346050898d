"""The sealed plaintext of one document: metadata JSON and the PDF, signed by the device.

Format 2 (written since 2026-12-02)::

    b"SOHOAPT2" ‖ u32be length of the metadata JSON ‖ metadata JSON ‖ PDF
    ‖ digest (32) ‖ signature (64)

where digest = SHA-256 of everything before it, and signature is the device's
Ed25519 signature over ``b"sohoa payload/2\\0" ‖ device id ‖ 0 ‖ doc id ‖ 0 ‖
digest``. The metadata carries the tags (dossier code, owner id, ...), so it
only ever exists inside an envelope or in the warehouse archive; the
signature, inside the encryption, binds it and the PDF to the device without
putting a plaintext hash in public view. Whoever holds a data key (an old
warehouse key generation) can forge a segment whose Poly1305 tag matches, but
not this signature.

Format 1 (``b"SOHOAPT1"`` ‖ u32be ‖ metadata ‖ PDF ‖ SHA-256 of the PDF) had no
signature; the warehouse accepts it only for envelopes the device created
before format 2 existed (``created`` is in the signed header).
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

MAGIC = b"SOHOAPT2"
MAGIC_V1 = b"SOHOAPT1"
V1_BEFORE = "2026-12-02T00:00:00Z"  # envelopes created later must carry format 2
MAX_META = 1 << 20
HASH_LEN = 32
SIG_LEN = 64
_LEAD = len(MAGIC) + 4


class PayloadError(ValueError):
    pass


def payload_head(meta: Mapping[str, Any], magic: bytes = MAGIC) -> bytes:
    body = json.dumps(meta, ensure_ascii=False, sort_keys=True).encode()
    if len(body) > MAX_META:
        raise PayloadError("document metadata larger than 1 MiB")
    return magic + struct.pack(">I", len(body)) + body


def signed_message(device_id: str, doc_id: str, digest: bytes) -> bytes:
    return b"sohoa payload/2\0" + device_id.encode() + b"\0" + doc_id.encode() + b"\0" + digest


class PayloadWriter:
    """Writes a format 2 payload into ``sink`` (the envelope writer): the head at once,
    the PDF through ``write``, the signed trailer at ``close``."""

    def __init__(
        self,
        sink: Callable[[bytes], object],
        meta: Mapping[str, Any],
        *,
        device_id: str,
        doc_id: str,
        device_key: Ed25519PrivateKey,
    ) -> None:
        self._sink, self._key = sink, device_key
        self._ids = (device_id, doc_id)
        head = payload_head(meta)
        self._sha = hashlib.sha256(head)
        sink(head)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._sha.update(data)
        self._sink(bytes(data))
        return len(data)

    def close(self) -> None:
        digest = self._sha.digest()
        self._sink(digest + self._key.sign(signed_message(*self._ids, digest)))


@dataclass(frozen=True)
class Unpacked:
    meta: dict[str, Any]
    pdf_sha256: str
    signed: bool  # format 2: the device's signature covers metadata and PDF


def _head(it: Iterable[bytes]) -> tuple[bytes, bytes, int]:
    """(magic, buffered bytes, end of the metadata in them)."""
    chunks = iter(it)
    buf = b""
    need = _LEAD
    while len(buf) < need:
        try:
            buf += next(chunks)
        except StopIteration:
            raise PayloadError("document payload is truncated before its metadata") from None
        if need == _LEAD and len(buf) >= _LEAD:
            if buf[: len(MAGIC)] not in (MAGIC, MAGIC_V1):
                raise PayloadError("document payload has an unknown format")
            (n,) = struct.unpack(">I", buf[len(MAGIC) : _LEAD])
            if n > MAX_META:
                raise PayloadError("document metadata length is out of range")
            need = _LEAD + n
    return buf[: len(MAGIC)], buf, need


def unpack_payload(
    chunks: Iterable[bytes],
    sink: Callable[[bytes], object],
    *,
    device: tuple[str, str, Ed25519PublicKey] | None = None,
    created: str = "",
) -> Unpacked:
    """Stream a plaintext: write the PDF to ``sink``; its metadata and hashes. With
    ``device`` (id, doc id, enrolled key) a format 2 signature is checked and a format 1
    payload is refused unless ``created`` is older than format 2. PayloadError if the
    layout, a hash or the signature is wrong."""
    it = iter(chunks)
    magic, buf, need = _head(it)
    try:
        meta = json.loads(buf[_LEAD:need])
    except ValueError:
        raise PayloadError("document metadata is not valid JSON") from None
    if not isinstance(meta, dict):
        raise PayloadError("document metadata is not a JSON object")
    tail_len = HASH_LEN + (SIG_LEN if magic == MAGIC else 0)
    whole, pdf = hashlib.sha256(buf[:need]), hashlib.sha256()

    def emit(body: bytes) -> None:
        whole.update(body)
        pdf.update(body)
        sink(body)

    tail = buf[need:]
    for chunk in it:  # the last tail_len bytes are the trailer: hold them back
        tail += chunk
        if len(tail) > 2 * tail_len:
            emit(tail[:-tail_len])
            tail = tail[-tail_len:]
    if len(tail) < tail_len:
        raise PayloadError("document payload is truncated before its hash")
    emit(tail[:-tail_len])
    tail = tail[-tail_len:]
    if magic == MAGIC_V1:
        if pdf.digest() != tail:
            raise PayloadError("PDF hash does not match the hash the device computed")
        if device is not None and created >= V1_BEFORE:
            raise PayloadError("document payload is unsigned (format 1) but recent")
        return Unpacked(meta, pdf.hexdigest(), signed=False)
    if whole.digest() != tail[:HASH_LEN]:
        raise PayloadError("document payload hash does not match its content")
    if device is not None:
        device_id, doc_id, pub = device
        try:
            pub.verify(tail[HASH_LEN:], signed_message(device_id, doc_id, tail[:HASH_LEN]))
        except InvalidSignature:
            raise PayloadError("document payload is not signed by its device") from None
    return Unpacked(meta, pdf.hexdigest(), signed=device is not None)
