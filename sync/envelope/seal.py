"""The sealed envelope: one document's encrypted, signed, streamable file (format 1).

Layout, written in one pass without seeking::

    b"SOHOAENV" | u8 version=1 | u32be prefix_len | prefix JSON
    segment 0 | segment 1 | ... | segment n-1        (ChaCha20-Poly1305, 16-byte tag each)
    header JSON | u32be header_len | b"SOHOAEND"

- The prefix (canonical JSON) binds what is known before the payload: ``v``,
  ``suite``, ``key_id``, ``device_id``, ``doc_id``, ``segment_size``,
  ``created`` and ``enc``, the 256-bit data key sealed with HPKE (RFC 9180) to
  the warehouse key; HPKE ``info`` = ``b"sohoa/v1 envelope"`` + canonical JSON
  of the prefix without ``enc``.
- STREAM: segment i is sealed with nonce = i as 11 bytes big-endian ‖ last flag
  (0x01 on the last segment) and AAD = SHA-256(prefix bytes), so reordering,
  truncation, extension and moving segments between envelopes all fail. The
  AEAD authenticates every byte, their order and the end, so the stream is
  exactly the caller's bytes, with no hash of its own.
- Every segment holds ``segment_size`` plaintext bytes except the last, which
  holds 1 to ``segment_size``; an empty stream is one segment of 0 bytes (a
  lone tag). So a stream of ``size`` bytes has max(1, ceil(size /
  segment_size)) segments and ``ciphertext_size`` = size + 16 × segments.
- The header (trailer, ``sync.envelope.header``) carries only routing facts
  and the device's Ed25519 signature; no personal data. It lists each
  segment's tag (``segment_tags``: hex of the segment's last 16 bytes) and
  ``ciphertext_sha256``, the envelope's identity::

      SHA-256( prefix_sha256 (32 raw bytes)
             ‖ ciphertext_size (u64 big-endian)
             ‖ tag 0 ‖ tag 1 ‖ ... ‖ tag n-1 (16 raw bytes each) )

  as lowercase hex, where prefix_sha256 = SHA-256(prefix JSON bytes). It is
  computed from the tags, not from a pass over the ciphertext; a reader
  rejects a header whose ``ciphertext_sha256`` disagrees with its tags.
- A tag pins its segment only for those who lack the data key (Poly1305 is
  not collision resistant to a key holder): ``segment_matches`` screens
  staged segments; decryption is what authenticates them.

The device cannot read what it sealed: the data key lives only in the writer,
is wiped (best effort: Python and the AEAD object may hold copies until freed)
when it closes, and is on disk only inside ``enc``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, BinaryIO

from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from sync.envelope.header import (
    CLASSES,
    ID_PATTERN,
    MAX_SEGMENT_SIZE,
    MIN_SEGMENT_SIZE,
    SUITES,
    TAG_SIZE,
    VERSION,
    Header,
    canonical,
    check_created,
    ciphertext_digest,
)
from sync.errors import EnvelopeError
from sync.keys import WarehousePublic

MAGIC = b"SOHOAENV"
TRAILER_MAGIC = b"SOHOAEND"
MAX_HEADER = 1 << 24
INFO_LABEL = b"sohoa/v1 envelope"
LEAD = struct.Struct(">8sBI")
TAIL = struct.Struct(">I8s")
LEAD_SIZE = LEAD.size
_KEMS = {"x25519": hpke.KEM.X25519, "mlkem768-x25519": hpke.KEM.MLKEM768_X25519}


def hpke_suite(suite: str) -> hpke.Suite:
    """The HPKE suite that seals data keys for ``suite``."""
    return hpke.Suite(_KEMS[suite], hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)


def hpke_info(prefix_fields: dict[str, Any]) -> bytes:
    """HPKE info: the label and the canonical prefix without the sealed key."""
    return INFO_LABEL + canonical({k: v for k, v in prefix_fields.items() if k != "enc"})


def segment_nonce(n: int, last: bool) -> bytes:
    """STREAM nonce: the segment number, 11 bytes big-endian, and the last-segment flag."""
    return n.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def _check_params(
    device_id: str, doc_id: str, suite: str, doc_class: str, segment_size: int
) -> None:
    for name, value in (("device_id", device_id), ("doc_id", doc_id)):
        if not ID_PATTERN.fullmatch(value):
            raise EnvelopeError(
                f"{name} {value!r} is not valid in an envelope",
                "use 1-64 letters, digits, '.', '_' or '-'",
            )
    if suite not in SUITES:
        raise EnvelopeError(f"unknown suite {suite!r}", f"use one of {', '.join(SUITES)}")
    if doc_class not in CLASSES:
        raise EnvelopeError(f"unknown class {doc_class!r}", f"use one of {', '.join(CLASSES)}")
    if not MIN_SEGMENT_SIZE <= segment_size <= MAX_SEGMENT_SIZE:
        raise EnvelopeError(
            f"segment size {segment_size} is out of range",
            f"use {MIN_SEGMENT_SIZE} to {MAX_SEGMENT_SIZE} bytes",
        )


class EnvelopeWriter:
    """Seal a stream of bytes into ``out``, holding at most one segment in memory.

    The caller owns ``out`` (a temp file it fsyncs and renames once ``close``
    returns); on any error it discards the file. ``out.write`` must take the
    bytes before it returns, as file objects do: the writer hands it a view of
    an output buffer that it reuses for the next segment.
    """

    def __init__(
        self,
        out: BinaryIO,
        *,
        device_id: str,
        doc_id: str,
        warehouse: WarehousePublic,
        device_key: Ed25519PrivateKey,
        suite: str = "x25519",
        segment_size: int = 65536,
        doc_class: str = "normal",
        created: str | None = None,
    ) -> None:
        _check_params(device_id, doc_id, suite, doc_class, segment_size)
        created = created or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        check_created(created)
        self._out = out
        self._device_id, self._doc_id, self._suite = device_id, doc_id, suite
        self._segment_size, self._doc_class, self._created = segment_size, doc_class, created
        self._key_id, self._device_key = warehouse.key_id, device_key
        self._key = bytearray(os.urandom(32))
        self._aead: ChaCha20Poly1305 | None = ChaCha20Poly1305(self._key)
        binding: dict[str, Any] = {
            "v": VERSION,
            "suite": suite,
            "key_id": warehouse.key_id,
            "device_id": device_id,
            "doc_id": doc_id,
            "segment_size": segment_size,
            "created": created,
        }
        recipient = warehouse.x25519 if suite == "x25519" else warehouse.hybrid
        enc = hpke_suite(suite).encrypt(self._key, recipient, info=hpke_info(binding))
        self._enc = base64.b64encode(enc).decode("ascii")
        self.prefix = canonical({**binding, "enc": self._enc})
        self._aad = hashlib.sha256(self.prefix).digest()
        out.write(LEAD.pack(MAGIC, VERSION, len(self.prefix)))
        out.write(self.prefix)
        # Two buffers reused for every segment: the pending plaintext (a full
        # segment waits here until more data shows it is not the last) and
        # the AEAD output, which goes to ``out`` without another copy.
        self._buf = bytearray(segment_size)
        self._pending = memoryview(self._buf)
        self._fill = 0
        self._sealed = memoryview(bytearray(segment_size + TAG_SIZE))
        self._tags: list[bytes] = []
        self._size = 0

    def _seal(self, chunk: bytes | bytearray | memoryview, last: bool) -> None:
        if self._aead is None:
            raise EnvelopeError("envelope is already closed", "start a new EnvelopeWriter")
        length = len(chunk) + TAG_SIZE
        ct = self._sealed[:length]
        self._aead.encrypt_into(segment_nonce(len(self._tags), last), chunk, self._aad, ct)
        self._out.write(ct)
        self._tags.append(bytes(ct[-TAG_SIZE:]))
        self._size += length

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Seal ``data``; every full segment is written out once more data follows it."""
        if self._aead is None:
            raise EnvelopeError("envelope is already closed", "start a new EnvelopeWriter")
        view = memoryview(data)
        size, fill, step = view.nbytes, self._fill, self._segment_size
        if fill + size <= step:  # the common small write: copy, seal later
            self._buf[fill : fill + size] = view
            self._fill += size
            return size
        view, pos = view.cast("B"), 0
        if fill:
            pos = step - fill
            self._buf[fill:] = view[:pos]
            self._seal(self._pending, last=False)
        # seal straight from the caller's buffer: only the tail is copied
        while size - pos > step:
            self._seal(view[pos : pos + step], last=False)
            pos += step
        self._fill = size - pos
        self._buf[: self._fill] = view[pos:]
        return size

    def close(self) -> Header:
        """Seal the last segment, write the signed header, forget the data key."""
        try:
            self._seal(self._pending[: self._fill], last=True)
        finally:
            self._wipe()
        unsigned = Header(
            device_id=self._device_id,
            doc_id=self._doc_id,
            key_id=self._key_id,
            suite=self._suite,
            segment_size=self._segment_size,
            segments=len(self._tags),
            ciphertext_size=self._size,
            segment_tags=tuple(t.hex() for t in self._tags),
            ciphertext_sha256=ciphertext_digest(self._aad, self._size, self._tags),
            prefix_sha256=self._aad.hex(),
            enc=self._enc,
            created=self._created,
            doc_class=self._doc_class,
            sig="",
        )
        sig = self._device_key.sign(unsigned.signed_bytes())
        header = replace(unsigned, sig=base64.b64encode(sig).decode("ascii"))
        body = header.to_json()
        self._out.write(body)
        self._out.write(TAIL.pack(len(body), TRAILER_MAGIC))
        return header

    def _wipe(self) -> None:
        self._key[:] = bytes(len(self._key))
        self._aead = None
        self._pending[:] = bytes(len(self._buf))
        self._fill = 0
