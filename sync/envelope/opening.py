"""Opening an envelope at the warehouse: check the prefix against the signed header,
unseal the data key with the warehouse's key generation, decrypt segment by segment."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from sync.envelope.header import VERSION, Header, b64decode, segment_matches, tamper_error
from sync.envelope.seal import hpke_info, hpke_suite, segment_nonce
from sync.errors import CryptoError, EnvelopeError
from sync.keys import WarehousePrivate


def _prefix_fields(header: Header, prefix: bytes) -> dict[str, Any]:
    if hashlib.sha256(prefix).hexdigest() != header.prefix_sha256:
        raise tamper_error("prefix does not match the header")
    try:
        obj = json.loads(prefix)
    except (ValueError, UnicodeDecodeError):
        raise tamper_error("malformed envelope prefix: not JSON") from None
    expect = {
        "v": VERSION,
        "suite": header.suite,
        "key_id": header.key_id,
        "device_id": header.device_id,
        "doc_id": header.doc_id,
        "segment_size": header.segment_size,
        "created": header.created,
        "enc": header.enc,
    }
    if obj != expect:
        raise tamper_error("prefix does not match the header")
    return expect


def open_data_key(
    header: Header, prefix: bytes, warehouse: WarehousePrivate
) -> tuple[ChaCha20Poly1305, bytes]:
    """The envelope's AEAD and its associated data, once the prefix matches the signed
    header and the data key opens with the warehouse's key generation."""
    binding = _prefix_fields(header, prefix)
    header.check_digest()
    try:
        generation = warehouse.find(header.key_id)
    except CryptoError as exc:
        raise EnvelopeError(exc.message, exc.hint) from None
    recipient = generation.x25519 if header.suite == "x25519" else generation.hybrid
    try:
        key = bytearray(
            hpke_suite(header.suite).decrypt(
                b64decode(header.enc, "enc"), recipient, info=hpke_info(binding)
            )
        )
    except (InvalidTag, ValueError):
        raise EnvelopeError(
            f"data key does not open with warehouse key {header.key_id}",
            "the envelope was sealed to another warehouse key or altered",
        ) from None
    if len(key) != 32:
        raise tamper_error("sealed data key has the wrong size")
    aead = ChaCha20Poly1305(key)
    key[:] = bytes(32)
    return aead, hashlib.sha256(prefix).digest()


def segment_authentic(
    header: Header, aead: ChaCha20Poly1305, aad: bytes, n: int, segment: bytes
) -> bool:
    """Whether ``segment`` is segment ``n`` as the device sealed it: its length, its
    signed tag and its AEAD (which garbage from anyone without the data key fails)."""
    if n >= header.segments or len(segment) != header.segment_length(n):
        return False
    if not segment_matches(header, n, segment):
        return False
    try:
        aead.decrypt(segment_nonce(n, n == header.segments - 1), segment, aad)
    except InvalidTag:
        return False
    return True


def open_envelope(
    header: Header, prefix: bytes, segments: Iterable[bytes], warehouse: WarehousePrivate
) -> Iterator[bytes]:
    """Decrypt in order, yielding exactly the sealed bytes (one chunk per non-empty
    segment); raise EnvelopeError on any fault.

    Key, prefix and header problems raise at once; segment problems raise while
    iterating, possibly after earlier chunks were yielded: discard all output
    on error. The caller verifies the device signature (``verify_header``).
    """
    aead, aad = open_data_key(header, prefix, warehouse)
    return _decrypt(header, aead, aad, segments)


def _decrypt(
    header: Header, aead: ChaCha20Poly1305, aad: bytes, segments: Iterable[bytes]
) -> Iterator[bytes]:
    n, count = header.segments, 0
    for i, segment in enumerate(segments):
        if i >= n:
            raise tamper_error(f"envelope has more segments than its header ({n})")
        if len(segment) != header.segment_length(i):
            raise tamper_error(f"segment {i} has the wrong length")
        if not segment_matches(header, i, segment):
            raise tamper_error(f"segment {i} does not match its signed tag")
        try:
            plain = aead.decrypt(segment_nonce(i, i == n - 1), segment, aad)
        except InvalidTag:
            raise tamper_error(f"segment {i} fails authentication") from None
        count += 1
        if plain:
            yield plain
    if count < n:
        raise tamper_error(f"envelope truncated: {count} of {n} segments")
