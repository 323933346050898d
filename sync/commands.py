"""Signed commands on ``sohoa/v1/d/{device}/cmd``: the message and the checks on it.

A command is canonical JSON signed by the warehouse's command key (Ed25519)::

    {"format": "sohoa-cmd/1", "device", "counter", "expires", "kind",
     "keys": [{"kid", "public"}, ...], "sig"}

``sig`` is base64 Ed25519 over the canonical JSON of every other field;
``counter`` an integer the warehouse raises with every command it issues, so it
is strictly increasing per device; ``expires`` an ISO 8601 time with its zone.
The one kind so far, ``receipt-keys``, replaces the set of receipt keys a device
accepts (1 to 8 keys, each named by its ``kid``). Later kinds (rebirth,
configuration) share the format and the counter.

A device acts on a command only when it fits the bounds (16 KiB, the bounded
JSON loader), verifies against the pinned command key, names this device, has
not expired and carries a counter above the last one applied. The checks are
pure functions here; the device's state lives in ``sync.receipt_keys``, the
warehouse's command key in ``sync.command_key``.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sync.errors import ConfigError
from sync.protocol import ProtocolError, ReceiptKey, canonical, load_json, valid_device_id

FORMAT = "sohoa-cmd/1"
RECEIPT_KEYS = "receipt-keys"
KINDS = (RECEIPT_KEYS,)
MAX_COMMAND = 16 * 1024
MAX_KEYS = 8
MAX_COUNTER = 2**63 - 1
_FIELDS = frozenset({"format", "device", "counter", "expires", "kind", "keys", "sig"})


class CommandRefused(ProtocolError):
    """A command this device does not act on; the text is the reason."""


@dataclass(frozen=True)
class Command:
    device: str
    counter: int
    expires: str  # ISO 8601 with its zone, e.g. 2025-07-01T00:00:00Z
    keys: tuple[ReceiptKey, ...]
    kind: str = RECEIPT_KEYS
    sig: str = ""

    def body(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "device": self.device,
            "counter": self.counter,
            "expires": self.expires,
            "kind": self.kind,
            "keys": [
                {"kid": k.kid, "public": base64.b64encode(k.public.public_bytes_raw()).decode()}
                for k in self.keys
            ],
        }

    def to_bytes(self) -> bytes:
        return canonical({**self.body(), "sig": self.sig})


def sign_command(cmd: Command, key: Ed25519PrivateKey) -> Command:
    return replace(cmd, sig=base64.b64encode(key.sign(canonical(cmd.body()))).decode())


def _receipt_key(entry: object) -> ReceiptKey:
    if not isinstance(entry, dict) or set(entry) != {"kid", "public"}:
        raise CommandRefused("a receipt key is not an object of 'kid' and 'public'")
    try:
        raw = base64.b64decode(entry["public"], validate=True)
    except (binascii.Error, TypeError, ValueError):
        raw = b""
    try:
        key = ReceiptKey.of(Ed25519PublicKey.from_public_bytes(raw))
    except ValueError:
        raise CommandRefused("a receipt key is not 32 bytes of base64") from None
    if entry["kid"] != key.kid:
        raise CommandRefused(f"receipt key kid {str(entry['kid'])[:16]!r} does not match its key")
    return key


def _receipt_keys(value: object) -> tuple[ReceiptKey, ...]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_KEYS:
        raise CommandRefused(f"'keys' is not a list of 1 to {MAX_KEYS} receipt keys")
    keys = tuple(_receipt_key(entry) for entry in value)
    if len({k.kid for k in keys}) != len(keys):
        raise CommandRefused("'keys' names one receipt key twice")
    return keys


def expiry(value: object) -> datetime:
    """The time a command stops being valid; ``CommandRefused`` when it is not one."""
    try:
        when = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise CommandRefused("'expires' is not an ISO 8601 time with its zone")
    return when


def command_json(payload: bytes, what: str = "command") -> dict[str, Any]:
    """A signed command's JSON object (a command, a release offer), bounded to
    ``MAX_COMMAND`` before it is parsed; ``CommandRefused`` says why not."""
    if len(payload) > MAX_COMMAND:
        raise CommandRefused(f"{what} larger than {MAX_COMMAND // 1024} KiB")
    try:
        return load_json(payload)
    except ProtocolError as exc:
        raise CommandRefused(str(exc)) from None


def parse_command(payload: bytes) -> Command:
    """A command from the wire, bounded before it is parsed; ``CommandRefused`` says why not."""
    obj = command_json(payload)
    if obj.get("format") != FORMAT:
        raise CommandRefused(f"not a {FORMAT} command")
    if set(obj) != _FIELDS:
        names = sorted(set(obj) ^ _FIELDS)[:4]
        raise CommandRefused(f"command fields do not match {FORMAT} ({', '.join(names)})")
    if obj["kind"] not in KINDS:
        raise CommandRefused(f"unknown command kind {str(obj['kind'])[:32]!r}")
    device, counter, sig = obj["device"], obj["counter"], obj["sig"]
    try:
        valid_device_id(device if isinstance(device, str) else "")
    except ConfigError:
        raise CommandRefused("'device' is not a device id") from None
    if not isinstance(counter, int) or isinstance(counter, bool) or not 0 < counter <= MAX_COUNTER:
        raise CommandRefused("'counter' is not a positive integer")
    if not isinstance(sig, str):
        raise CommandRefused("'sig' is not a string")
    expiry(obj["expires"])
    return Command(device, counter, obj["expires"], _receipt_keys(obj["keys"]), obj["kind"], sig)


def check_command(
    cmd: Command, *, device: str, key: Ed25519PublicKey, last_counter: int, now: datetime
) -> None:
    """Raise ``CommandRefused`` unless this device may act on ``cmd`` now."""
    try:
        key.verify(base64.b64decode(cmd.sig, validate=True), canonical(cmd.body()))
    except (InvalidSignature, ValueError):
        raise CommandRefused("signature does not verify against the pinned command key") from None
    if cmd.device != device:
        raise CommandRefused(f"addressed to device {cmd.device!r}, not this one")
    if expiry(cmd.expires) <= now:
        raise CommandRefused(f"expired at {cmd.expires}")
    if cmd.counter <= last_counter:
        raise CommandRefused(
            f"counter {cmd.counter} is not above the last applied {last_counter} (replay)"
        )
