"""The sohoa/v1 MQTT protocol: topics and the messages that travel on them.

Pure functions over values; nothing here touches the network. Topics carry
device ids and random document ids only, never personal data.
"""

from __future__ import annotations

import base64
import json
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sync.errors import ConfigError
from sync.keyfiles import ed25519_kid

ROOT = "sohoa/v1"
PROTOCOL_VERSION = 1
MAX_JSON = 256 * 1024
MAX_JSON_DEPTH = 16  # our messages nest 3 deep; json.loads recurses per level
_ID = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
DOC_TOPIC = re.compile(
    rf"^{ROOT}/d/(?P<device>{_ID})/doc/(?P<doc>{_ID})/"
    r"(?P<kind>m|q|p|s/(?P<n>\d{1,7})|p/(?P<pn>\d{1,7})/(?P<off>\d{1,8}))$"
)
MAX_PARTIAL = 1024  # entries of a receipt's partial list
DEVICE_TOPIC = re.compile(rf"^{ROOT}/d/(?P<device>{_ID})/(?P<kind>state|health|rcpt|cmd|rel/r)$")


class ProtocolError(ValueError):
    """A message that does not follow the protocol; the text is the reason."""


def state_topic(device: str) -> str:
    return f"{ROOT}/d/{device}/state"


def health_topic(device: str) -> str:
    return f"{ROOT}/d/{device}/health"


def receipt_topic(device: str) -> str:
    return f"{ROOT}/d/{device}/rcpt"


def command_topic(device: str) -> str:
    return f"{ROOT}/d/{device}/cmd"


def manifest_topic(device: str, doc: str) -> str:
    return f"{ROOT}/d/{device}/doc/{doc}/m"


def segment_topic(device: str, doc: str, n: int) -> str:
    return f"{ROOT}/d/{device}/doc/{doc}/s/{n}"


def piece_topic(device: str, doc: str, n: int, offset: int) -> str:
    """Bytes ``offset``… of segment n: a slow link sends a segment in pieces."""
    return f"{ROOT}/d/{device}/doc/{doc}/p/{n}/{offset}"


def pieces_topic(device: str, doc: str) -> str:
    """Every piece of a document, each naming its segment and offset in its first bytes
    (``piece_message``): one topic per document, so the device sends it as an MQTT v5
    topic alias after the first piece (3 bytes instead of some 70 per message, a thirtieth
    of a 2 KiB piece on a slow link)."""
    return f"{ROOT}/d/{device}/doc/{doc}/p"


PIECE_HEADER = struct.Struct(">II")  # segment, offset within it


def piece_message(n: int, offset: int, data: bytes) -> bytes:
    return PIECE_HEADER.pack(n, offset) + data


def split_piece(payload: bytes) -> tuple[int, int, bytes]:
    """(segment, offset, bytes) of a message on ``pieces_topic``."""
    if len(payload) < PIECE_HEADER.size:
        raise ProtocolError("a piece shorter than its 8-byte header")
    n, offset = PIECE_HEADER.unpack_from(payload)
    if n >= 10**7 or offset >= 10**8:
        raise ProtocolError("a piece header names a segment or offset out of range")
    return n, offset, payload[PIECE_HEADER.size :]


def query_topic(device: str, doc: str) -> str:
    return f"{ROOT}/d/{device}/doc/{doc}/q"


def enrol_request_topic(device: str) -> str:
    """Enrolment and renewal requests, on the broker's enrolment listener."""
    return f"{ROOT}/enroll/{device}/req"


def enrol_response_topic(device: str) -> str:
    return f"{ROOT}/enroll/{device}/resp"


INGEST_FILTER = f"{ROOT}/d/+/doc/#"
FLEET_FILTERS = (f"{ROOT}/d/+/state", f"{ROOT}/d/+/health", f"{ROOT}/d/+/rel/r")
ENROL_FILTER = f"{ROOT}/enroll/+/req"
FLEET_ALERTS_TOPIC = f"{ROOT}/fleet/alerts"  # retained: the firing alerts, for any MQTT client
ENROL_TOPIC = re.compile(rf"^{ROOT}/enroll/(?P<device>{_ID})/req$")


@dataclass(frozen=True)
class DocTopic:
    device: str
    doc: str
    kind: str  # "m" | "q" | "s" | "p"
    segment: int | None = None
    offset: int | None = None  # of a piece ("p") within its segment


def parse_doc_topic(topic: str) -> DocTopic:
    m = DOC_TOPIC.match(topic)
    if m is None:
        raise ProtocolError(
            "topic does not have the shape sohoa/v1/d/{device}/doc/{doc}/{m|q|p|s/n|p/n/offset}"
        )
    kind = m["kind"]
    if kind.startswith("s/"):
        return DocTopic(m["device"], m["doc"], "s", int(m["n"]))
    if kind == "p":  # segment and offset in the payload (split_piece)
        return DocTopic(m["device"], m["doc"], "p")
    if kind.startswith("p/"):
        return DocTopic(m["device"], m["doc"], "p", int(m["pn"]), int(m["off"]))
    return DocTopic(m["device"], m["doc"], kind)


def parse_enrol_topic(topic: str) -> str | None:
    """The device id of an enrolment request topic; None for any other topic."""
    m = ENROL_TOPIC.match(topic)
    return None if m is None else m["device"]


def parse_device_topic(topic: str) -> tuple[str, str]:
    m = DEVICE_TOPIC.match(topic)
    if m is None:
        raise ProtocolError("not a device topic")
    return m["device"], m["kind"]


def canonical(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_depth(payload: bytes) -> int:
    """How deeply arrays and objects nest in ``payload``, counted before parsing."""
    brackets = _JSON_STRING.sub(b"", payload).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for b in brackets:
        depth += 1 if b in b"[{" else -1
        deepest = max(deepest, depth)
    return deepest


def load_json(payload: bytes) -> dict[str, Any]:
    """A JSON object from the wire, bounded in size and nesting before it is parsed."""
    if len(payload) > MAX_JSON:
        raise ProtocolError("JSON payload larger than 256 KiB")
    if json_depth(payload) > MAX_JSON_DEPTH:
        raise ProtocolError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        obj = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ProtocolError("payload is not valid JSON") from None
    if not isinstance(obj, dict):
        raise ProtocolError("payload is not a JSON object")
    return obj


# -- receipts ---------------------------------------------------------------

RECEIPT_STATUSES = ("stored", "missing", "rejected")
_KID = re.compile(r"[0-9a-f]{16}")


@dataclass(frozen=True)
class ReceiptKey:
    """The public half of one generation of the warehouse's receipt key; receipts name
    the generation that signed them by its ``kid``."""

    kid: str
    public: Ed25519PublicKey

    @classmethod
    def of(cls, public: Ed25519PublicKey) -> ReceiptKey:
        return cls(ed25519_kid(public), public)


@dataclass(frozen=True)
class Receipt:
    device: str
    doc: str
    status: str
    ciphertext_sha256: str | None = None
    missing: tuple[int, ...] = ()
    reason: str | None = None
    stored_at: str | None = None
    ts: str = ""
    sig: str = ""
    query: str | None = None  # the nonce of the query this answers; None when unasked
    kid: str | None = None  # the receipt key that signed it; None from older warehouses
    # of the missing segments, those partly received in pieces: (segment, bytes held
    # from its start), so that the device resumes inside a segment
    partial: tuple[tuple[int, int], ...] = ()

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "v": PROTOCOL_VERSION,
            "device": self.device,
            "doc": self.doc,
            "status": self.status,
            "ciphertext_sha256": self.ciphertext_sha256,
            "missing": list(self.missing),
            "reason": self.reason,
            "stored_at": self.stored_at,
            "ts": self.ts,
            "query": self.query,
        }
        if self.kid is not None:  # signed with the rest; absent from receipts before kids
            body["kid"] = self.kid
        if self.partial:  # only ever for a device that sends pieces: older ones never see it
            body["partial"] = [list(p) for p in self.partial]
        return body

    def to_bytes(self) -> bytes:
        return canonical({**self.body(), "sig": self.sig})


def sign_receipt(receipt: Receipt, key: Ed25519PrivateKey) -> Receipt:
    """``receipt`` signed by ``key``, naming the key's ``kid``."""
    named = Receipt(**{**_fields(receipt), "kid": ed25519_kid(key.public_key())})
    sig = base64.b64encode(key.sign(canonical(named.body()))).decode()
    return Receipt(**{**_fields(named), "sig": sig})


def _fields(r: Receipt) -> dict[str, Any]:
    return {k: getattr(r, k) for k in Receipt.__dataclass_fields__}


def parse_receipt(payload: bytes) -> Receipt:
    obj = load_json(payload)
    try:
        status = obj["status"]
        if status not in RECEIPT_STATUSES:
            raise ProtocolError(f"unknown receipt status {status!r}")
        missing = obj.get("missing") or []
        if not isinstance(missing, list) or not all(isinstance(n, int) and n >= 0 for n in missing):
            raise ProtocolError("receipt 'missing' is not a list of segment numbers")
        return Receipt(
            device=str(obj["device"]),
            doc=str(obj["doc"]),
            status=status,
            ciphertext_sha256=obj.get("ciphertext_sha256"),
            missing=tuple(missing),
            reason=obj.get("reason"),
            stored_at=obj.get("stored_at"),
            ts=str(obj.get("ts", "")),
            sig=str(obj["sig"]),
            query=_nonce(obj.get("query")),
            kid=_kid(obj.get("kid")),
            partial=_partial(obj.get("partial")),
        )
    except KeyError as exc:
        raise ProtocolError(f"receipt lacks field {exc.args[0]!r}") from None


def _partial(value: object) -> tuple[tuple[int, int], ...]:
    if value is None:
        return ()
    if (
        not isinstance(value, list)
        or len(value) > MAX_PARTIAL
        or not all(
            isinstance(p, list)
            and len(p) == 2
            and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in p)
            for p in value
        )
    ):
        raise ProtocolError("receipt 'partial' is not a list of [segment, bytes] pairs")
    return tuple((p[0], p[1]) for p in value)


def _kid(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _KID.fullmatch(value):
        raise ProtocolError("receipt kid is not 16 lowercase hex digits")
    return value


def verify_receipt(receipt: Receipt, key: Ed25519PublicKey) -> bool:
    """True only if the receipt was signed by ``key``."""
    try:
        key.verify(base64.b64decode(receipt.sig, validate=True), canonical(receipt.body()))
    except (InvalidSignature, ValueError):
        return False
    return True


# -- queries ----------------------------------------------------------------


def _nonce(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-f]{1,32}", value):
        raise ProtocolError("query nonce is not 1-32 lowercase hex digits")
    return value


@dataclass(frozen=True)
class Query:
    """What the device asks after a reconnect; the warehouse echoes ``nonce`` in its
    answer, so that an answer to an older query (queued in the broker while the
    device was away) is not mistaken for the current state."""

    ciphertext_sha256: str
    segments: int
    nonce: str | None = None

    def to_bytes(self) -> bytes:
        return canonical(
            {
                "v": PROTOCOL_VERSION,
                "ciphertext_sha256": self.ciphertext_sha256,
                "segments": self.segments,
                "nonce": self.nonce,
            }
        )


def parse_query(payload: bytes) -> Query:
    obj = load_json(payload)
    sha, n = obj.get("ciphertext_sha256"), obj.get("segments")
    if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise ProtocolError("query lacks a valid ciphertext_sha256")
    if not isinstance(n, int) or n < 0:
        raise ProtocolError("query lacks a valid segment count")
    return Query(sha, n, _nonce(obj.get("nonce")))


def missing_segments(have: Sequence[bool]) -> tuple[int, ...]:
    return tuple(i for i, ok in enumerate(have) if not ok)


# -- device state -----------------------------------------------------------


@dataclass(frozen=True)
class Birth:
    device: str
    online: bool
    version: str = ""
    ts: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        return canonical(
            {
                **self.extra,
                "device": self.device,
                "online": self.online,
                "version": self.version,
                "ts": self.ts,
            }
        )


def valid_device_id(value: str) -> str:
    if not re.fullmatch(_ID, value) or "/" in value or "+" in value or "#" in value:
        raise ConfigError(
            f"[device] id = {value!r} is not a valid device id",
            "use letters, digits, '.', '_' or '-' (it is the broker username and topic id)",
        )
    return value
