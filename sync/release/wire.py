"""Release delivery over MQTT: the topics, the signed offer, segment requests and reports.

| topic | direction | QoS / retain | payload |
|---|---|---|---|
| ``sohoa/v1/d/{device}/cmd/rel`` | province → device | 1, retained | signed offer (below); empty clears it |
| ``sohoa/v1/d/{device}/rel/q`` | device → province | 1 | ``{"version", "offset", "length"}`` |
| ``sohoa/v1/d/{device}/rel/s/{offset}`` | province → device | 1 | bytes ``offset…`` of the bundle |
| ``sohoa/v1/d/{device}/rel/r`` | device → province | 1, retained | ``{"version", "status", "reason", "at"}`` |

The offer is a signed command (``sohoa-cmd/1`` framing, kind ``release``)
under the warehouse's command key, with an expiry and a counter the device
records apart from the receipt-key commands' (each kind keeps its own
retained message and its own last counter, so neither replaces the other)::

    {"format": "sohoa-cmd/1", "kind": "release", "device", "counter", "expires",
     "version", "size", "sha256", "allow_downgrade", "sig"}

``size`` and ``sha256`` name the bundle file: a device fetches it by offset
(resumable: what it holds survives a cut or a restart) and installs it only
when the whole file hashes to ``sha256``; the bundle's own signature under the
release key is checked again before anything is unpacked, so a stolen command
key alone cannot install software.

Segments are asked for only when the link has spare capacity: while the spool
has documents waiting, the device asks for none (``next_request``).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sync.commands import FORMAT, CommandRefused, command_json, expiry
from sync.errors import ConfigError
from sync.protocol import ROOT, ProtocolError, canonical, load_json, valid_device_id
from sync.release.manifest import ReleaseRefused, parse_version

KIND = "release"
SEGMENT = 64 * 1024
MAX_BUNDLE = 2**32
REPORT_STATUSES = ("downloading", "installed", "healthy", "rolled_back", "refused")
_FIELDS = frozenset(
    {"format", "kind", "device", "counter", "expires", "version", "size", "sha256"}
    | {"allow_downgrade", "sig"}
)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def offer_topic(device: str) -> str:
    return f"{ROOT}/d/{device}/cmd/rel"


def request_topic(device: str) -> str:
    return f"{ROOT}/d/{device}/rel/q"


def segment_topic(device: str, offset: int) -> str:
    return f"{ROOT}/d/{device}/rel/s/{offset}"


def segment_filter(device: str) -> str:
    return f"{ROOT}/d/{device}/rel/s/#"


def report_topic(device: str) -> str:
    return f"{ROOT}/d/{device}/rel/r"


def parse_release_topic(topic: str) -> tuple[str, str, int | None]:
    """``(device, "q" | "s" | "r", offset)`` of a release topic; ``ProtocolError`` else."""
    parts = topic.split("/")
    if len(parts) < 5 or "/".join(parts[:3]) != f"{ROOT}/d" or parts[4] != "rel":
        raise ProtocolError(f"not a release topic: {topic[:80]}")
    device, rest = parts[3], parts[5:]
    if rest in (["q"], ["r"]):
        return device, rest[0], None
    if len(rest) == 2 and rest[0] == "s" and rest[1].isdigit():
        return device, "s", int(rest[1])
    raise ProtocolError(f"not a release topic: {topic[:80]}")


@dataclass(frozen=True)
class Offer:
    device: str
    counter: int
    expires: str
    version: str
    size: int
    sha256: str
    allow_downgrade: bool = False
    sig: str = ""

    def body(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "kind": KIND,
            "device": self.device,
            "counter": self.counter,
            "expires": self.expires,
            "version": self.version,
            "size": self.size,
            "sha256": self.sha256,
            "allow_downgrade": self.allow_downgrade,
        }

    def to_bytes(self) -> bytes:
        return canonical({**self.body(), "sig": self.sig})


def sign_offer(offer: Offer, key: Ed25519PrivateKey) -> Offer:
    return replace(offer, sig=base64.b64encode(key.sign(canonical(offer.body()))).decode())


def parse_offer(payload: bytes) -> Offer:
    """An offer from the wire, bounded and checked field by field."""
    obj = command_json(payload, "offer")
    if obj.get("format") != FORMAT or obj.get("kind") != KIND or set(obj) != _FIELDS:
        raise CommandRefused(f"not a {FORMAT} release offer")
    device, counter, size, digest = obj["device"], obj["counter"], obj["size"], obj["sha256"]
    try:
        valid_device_id(device if isinstance(device, str) else "")
        parse_version(obj["version"])
    except (ConfigError, ReleaseRefused) as exc:
        raise CommandRefused(f"offer: {exc}") from None
    for name, value, high in (("counter", counter, 2**63 - 1), ("size", size, MAX_BUNDLE)):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= high:
            raise CommandRefused(f"offer field {name!r} is not a positive integer")
    if not isinstance(digest, str) or not _SHA256.match(digest):
        raise CommandRefused("offer field 'sha256' is not a SHA-256")
    if not isinstance(obj["allow_downgrade"], bool) or not isinstance(obj["sig"], str):
        raise CommandRefused("offer fields 'allow_downgrade' or 'sig' have the wrong type")
    expiry(obj["expires"])
    return Offer(
        device,
        counter,
        obj["expires"],
        obj["version"],
        size,
        digest,
        obj["allow_downgrade"],
        obj["sig"],
    )


def check_offer(
    offer: Offer, *, device: str, key: Ed25519PublicKey, last_counter: int, now: datetime
) -> None:
    """``CommandRefused`` unless this device may act on ``offer`` now."""
    try:
        key.verify(base64.b64decode(offer.sig, validate=True), canonical(offer.body()))
    except (InvalidSignature, ValueError, binascii.Error):
        raise CommandRefused(
            "offer signature does not verify against the pinned command key"
        ) from None
    if offer.device != device:
        raise CommandRefused(f"offer addressed to device {offer.device!r}, not this one")
    if expiry(offer.expires) <= now:
        raise CommandRefused(f"offer expired at {offer.expires}")
    if offer.counter <= last_counter:
        raise CommandRefused(f"offer counter {offer.counter} is not above {last_counter} (replay)")


def request(version: str, offset: int, length: int = SEGMENT) -> bytes:
    return canonical({"version": version, "offset": offset, "length": length})


def parse_request(payload: bytes) -> tuple[str, int, int]:
    """``(version, offset, length)``; ``ProtocolError`` when it is not a request."""
    obj = load_json(payload)
    version, offset, length = obj.get("version"), obj.get("offset"), obj.get("length")
    if not isinstance(version, str) or not isinstance(offset, int) or not isinstance(length, int):
        raise ProtocolError("not a release segment request")
    if not 0 <= offset <= MAX_BUNDLE or not 0 < length <= 4 * SEGMENT:
        raise ProtocolError("release segment request out of range")
    try:
        parse_version(version)
    except ReleaseRefused as exc:
        raise ProtocolError(str(exc)) from None
    return version, offset, length


def report(version: str, status: str, reason: str, at: str) -> bytes:
    assert status in REPORT_STATUSES
    return json.dumps(
        {"version": version, "status": status, "reason": reason[:300], "at": at},
        ensure_ascii=False,
    ).encode()


def parse_report(payload: bytes) -> tuple[str, str, str]:
    """``(version, status, reason)`` of a device's release report."""
    obj = load_json(payload)
    version, status, reason = obj.get("version"), obj.get("status"), obj.get("reason", "")
    if not isinstance(version, str) or status not in REPORT_STATUSES or not isinstance(reason, str):
        raise ProtocolError("not a release report")
    return version, str(status), reason[:300]


def next_request(held: int, size: int, pending_docs: int) -> int | None:
    """How many bytes to ask for next, or None: the document upload always goes first,
    so nothing while documents wait, and nothing once the bundle is whole."""
    if held >= size or pending_docs > 0:
        return None
    return min(size - held, SEGMENT)
