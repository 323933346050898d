"""The envelope's clear part: the signed header and the manifest that carries it.

The header is the envelope's trailer (see ``agent.envelope`` for the file
layout): canonical JSON (sorted keys, no spaces, ASCII) of ``v``, ``device_id``,
``doc_id``, ``key_id``, ``suite``, ``segment_size``, ``segments``,
``ciphertext_size``, ``segment_tags`` (lowercase hex of each ciphertext
segment's 16-byte Poly1305 tag, i.e. its last 16 bytes), ``ciphertext_sha256``
(the envelope's identity, derived from the tags: see ``ciphertext_digest``),
``prefix_sha256``, ``enc``, ``created``, ``class`` (``cover`` | ``normal``, a
priority hint) and ``sig``, the device's Ed25519 signature over the same JSON
without ``sig``. It carries only what routing needs: never a citizen's id, name
or dossier code, and no plaintext hash. The manifest the uploader publishes is
the header plus the envelope's prefix (base64), which the warehouse needs to
open the envelope.

A tag identifies its segment only against senders who do not hold the data
key: ``segment_matches`` is a cheap check of what arrives, and the AEAD at
decryption is what authenticates every byte.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from sync.errors import EnvelopeError

VERSION = 1
SUITES = ("x25519", "mlkem768-x25519")  # configuration validates against this list too
CLASSES = ("cover", "normal")
TAG_SIZE = 16
MIN_SEGMENT_SIZE = 64
MAX_SEGMENT_SIZE = 1 << 24
MAX_PREFIX = 1 << 14
MANIFEST_FORMAT = "sohoa-manifest/1"
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX16 = re.compile(r"[0-9a-f]{16}")
_HEX_TAG = re.compile(r"[0-9a-f]{32}")
_SIZE = struct.Struct(">Q")
_NO_TAMPER_HINT = "the envelope was altered or damaged; send it again from the device spool"


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def tamper_error(reason: str) -> EnvelopeError:
    return EnvelopeError(reason, _NO_TAMPER_HINT)


def b64decode(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise tamper_error(f"malformed envelope header: {what} is not base64") from None


def check_created(value: str) -> str:
    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise tamper_error("malformed envelope header: created is not an ISO 8601 time") from None
    return value


def ciphertext_digest(prefix_sha256: bytes, ciphertext_size: int, tags: Iterable[bytes]) -> str:
    """``ciphertext_sha256``: SHA-256 of prefix_sha256 (32 raw bytes) ‖ u64be
    ciphertext_size ‖ every segment's 16-byte tag in segment order, as hex.

    The tags are the last bytes STREAM computes over each segment, so this
    commits to the ciphertext without another pass over it.
    """
    digest = hashlib.sha256(prefix_sha256)
    digest.update(_SIZE.pack(ciphertext_size))
    for tag in tags:
        digest.update(tag)
    return digest.hexdigest()


# -- header -------------------------------------------------------------------


@dataclass(frozen=True)
class Header:
    device_id: str
    doc_id: str
    key_id: str
    suite: str
    segment_size: int
    segments: int
    ciphertext_size: int
    segment_tags: tuple[str, ...]
    ciphertext_sha256: str
    prefix_sha256: str
    enc: str
    created: str
    doc_class: str
    sig: str

    def _fields(self) -> dict[str, Any]:
        obj: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        obj["class"] = obj.pop("doc_class")
        obj["segment_tags"] = list(self.segment_tags)
        obj["v"] = VERSION
        return obj

    def signed_bytes(self) -> bytes:
        """What the device signs: the canonical header JSON without ``sig``."""
        obj = self._fields()
        del obj["sig"]
        return canonical(obj)

    def to_json(self) -> bytes:
        return canonical(self._fields())

    @classmethod
    def from_json(cls, data: bytes) -> Header:
        try:
            obj = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise tamper_error("malformed envelope header: not JSON") from None
        return cls.from_obj(obj)

    @classmethod
    def from_obj(cls, obj: Any) -> Header:
        """Validate a parsed header object; every fact a reader relies on is checked."""
        want = {f.name for f in fields(cls)} - {"doc_class"} | {"class", "v"}
        if not isinstance(obj, dict) or set(obj) != want:
            got = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
            raise tamper_error(f"malformed envelope header: fields {got} are not {sorted(want)}")
        if obj["v"] != VERSION:
            raise tamper_error(f"unsupported envelope version {obj['v']!r}")
        ints = ("segment_size", "segments", "ciphertext_size")
        for name in ints:
            if type(obj[name]) is not int or obj[name] < 0:
                raise tamper_error(f"malformed envelope header: {name} is not a size")
        for name in set(want) - set(ints) - {"v", "segment_tags"}:
            if not isinstance(obj[name], str):
                raise tamper_error(f"malformed envelope header: {name} is not a string")
        tags = obj["segment_tags"]
        if not isinstance(tags, list) or not all(
            isinstance(t, str) and _HEX_TAG.fullmatch(t) for t in tags
        ):
            raise tamper_error("malformed envelope header: segment_tags is not a list of tags")
        header = cls(
            **{k: v for k, v in obj.items() if k not in ("v", "class", "segment_tags")},
            doc_class=obj["class"],
            segment_tags=tuple(tags),
        )
        header._check()
        return header

    def _check(self) -> None:
        for name in ("device_id", "doc_id"):
            if not ID_PATTERN.fullmatch(getattr(self, name)):
                raise tamper_error(f"malformed envelope header: {name} is not a valid id")
        for name in ("ciphertext_sha256", "prefix_sha256"):
            if not _HEX64.fullmatch(getattr(self, name)):
                raise tamper_error(f"malformed envelope header: {name} is not a SHA-256 hash")
        if not _HEX16.fullmatch(self.key_id):
            raise tamper_error("malformed envelope header: key_id is not 16 hex digits")
        if self.suite not in SUITES:
            raise tamper_error(f"malformed envelope header: unknown suite {self.suite!r}")
        if self.doc_class not in CLASSES:
            raise tamper_error(
                f"malformed envelope header: class is not one of {', '.join(CLASSES)}"
            )
        if not MIN_SEGMENT_SIZE <= self.segment_size <= MAX_SEGMENT_SIZE:
            raise tamper_error("malformed envelope header: segment_size is out of range")
        full = self.segment_size + TAG_SIZE
        n = self.segments
        if n < 1 or len(self.segment_tags) != n:
            raise tamper_error("malformed envelope header: segment count does not match its tags")
        # only a one-segment envelope (an empty stream) may end in an empty segment
        least = (n - 1) * full + TAG_SIZE + (1 if n > 1 else 0)
        if not least <= self.ciphertext_size <= n * full:
            raise tamper_error(
                "malformed envelope header: ciphertext_size does not fit the segments"
            )
        self.check_digest()
        if len(b64decode(self.sig, "sig")) != 64:
            raise tamper_error("malformed envelope header: sig is not an Ed25519 signature")
        if not 0 < len(b64decode(self.enc, "enc")) <= 4096:
            raise tamper_error("malformed envelope header: enc has the wrong size")
        check_created(self.created)

    def check_digest(self) -> None:
        """Raise unless ``ciphertext_sha256`` is the digest of this header's tags."""
        try:
            prefix = bytes.fromhex(self.prefix_sha256)
            tags = [bytes.fromhex(t) for t in self.segment_tags]
        except ValueError:
            raise tamper_error("malformed envelope header: a hash or tag is not hex") from None
        if ciphertext_digest(prefix, self.ciphertext_size, tags) != self.ciphertext_sha256:
            raise tamper_error("ciphertext_sha256 does not match the segment tags")

    def segment_length(self, n: int) -> int:
        """The ciphertext length of segment ``n`` (tag included)."""
        if not 0 <= n < self.segments:
            raise EnvelopeError(
                f"segment {n} does not exist (the envelope has {self.segments})",
                "ask only for segments 0 to segments-1",
            )
        full = self.segment_size + TAG_SIZE
        return full if n < self.segments - 1 else self.ciphertext_size - n * full


def segment_matches(header: Header, n: int, data: bytes) -> bool:
    """Whether ``data`` has the length and the tag the signed header gives segment ``n``.

    A cheap check of a staged segment; a segment that matches can still fail
    authentication when it is decrypted (only the AEAD checks the body).
    """
    return (
        0 <= n < header.segments
        and len(data) == header.segment_length(n)
        and data[-TAG_SIZE:].hex() == header.segment_tags[n]
    )


def verify_header(header: Header, device_public: Ed25519PublicKey) -> None:
    try:
        device_public.verify(b64decode(header.sig, "sig"), header.signed_bytes())
    except InvalidSignature:
        raise EnvelopeError(
            "device signature does not verify",
            "the header was altered or signed by another key; check the device's enrolment",
        ) from None


# -- manifest -----------------------------------------------------------------


def manifest_bytes(header: Header, prefix: bytes) -> bytes:
    """The public manifest the uploader publishes: the signed header and the prefix."""
    obj = {
        "format": MANIFEST_FORMAT,
        "header": json.loads(header.to_json()),
        "prefix": base64.b64encode(prefix).decode("ascii"),
    }
    return canonical(obj)


def parse_manifest(data: bytes) -> tuple[Header, bytes]:
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise tamper_error("malformed manifest: not JSON") from None
    if (
        not isinstance(obj, dict)
        or set(obj) != {"format", "header", "prefix"}
        or obj["format"] != MANIFEST_FORMAT
        or not isinstance(obj["prefix"], str)
    ):
        raise tamper_error(f"malformed manifest: not a {MANIFEST_FORMAT} document")
    header = Header.from_obj(obj["header"])
    prefix = b64decode(obj["prefix"], "prefix")
    if len(prefix) > MAX_PREFIX or hashlib.sha256(prefix).hexdigest() != header.prefix_sha256:
        raise tamper_error("manifest prefix does not match its header")
    return header, prefix
