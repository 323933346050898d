"""The enrolment exchange's two messages, as plain values with pure checks.

A device asks with a *request* (its Ed25519 public key and a CSR for its broker
certificate, signed by that Ed25519 key); the province answers with a *bundle*
(the device certificate, the CA certificate, the broker URL and the warehouse
public key). Neither carries a private key. Both are authenticated with an HMAC
under a key derived from the one-time code that the province gave the
technician, so a device trusts only the province that issued the code, and the
province only a device whose technician holds it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from typing import Any

from sync.errors import CryptoError
from sync.protocol import json_depth

REQUEST_FORMAT = "sohoa-enrol-request/1"
BUNDLE_FORMAT = "sohoa-enrol-bundle/1"
RENEW_FORMAT = "sohoa-renew-request/1"  # signed by the device's Ed25519 key, no MAC
RENEWED_FORMAT = "sohoa-renew-bundle/1"  # the new certificate; its CA signature is the proof
REFUSAL_FORMAT = "sohoa-enrol-refusal/1"  # why the province said no; changes nothing
CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I
CODE_GROUPS = 3
KDF_ROUNDS = 200_000  # a captured request must not give the code away cheaply
MAX_MESSAGE = 1 << 20


def new_code() -> str:
    """A one-time code to read out or hand over: 12 characters (60 bits) in groups of 4."""
    chars = "".join(secrets.choice(CODE_ALPHABET) for _ in range(4 * CODE_GROUPS))
    return "-".join(chars[i : i + 4] for i in range(0, len(chars), 4))


def normal_code(code: str) -> str:
    text = re.sub(r"[\s-]", "", code.upper())
    if len(text) != 4 * CODE_GROUPS or any(c not in CODE_ALPHABET for c in text):
        raise CryptoError(
            "the one-time code is not in the form XXXX-XXXX-XXXX",
            "type the code exactly as the province gave it",
        )
    return text


def code_key(device_id: str, code: str) -> bytes:
    """The MAC key both sides derive from the device id and the one-time code."""
    salt = f"sohoa enrolment {device_id}".encode()
    return hashlib.pbkdf2_hmac("sha256", normal_code(code).encode(), salt, KDF_ROUNDS)


def canonical(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def seal(body: dict[str, Any], key: bytes) -> bytes:
    """``body`` with its MAC, as the bytes of the file that travels."""
    mac = hmac.new(key, canonical(body), hashlib.sha256).hexdigest()
    return canonical({**body, "mac": mac})


def load_flat(data: bytes, what: str) -> dict[str, Any]:
    """A flat JSON object of strings, bounded in size and depth before it is parsed."""
    hint = f"use the {what} sohoa wrote"
    if len(data) > MAX_MESSAGE:
        raise CryptoError(f"the {what} is too large", hint)
    if json_depth(data) > 1:
        raise CryptoError(f"the {what} is not a sohoa {what}", hint)
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise CryptoError(f"the {what} is not a sohoa {what}", hint) from None
    if not isinstance(obj, dict):
        raise CryptoError(f"the {what} is not a sohoa {what}", hint)
    for name, value in obj.items():
        if not isinstance(value, str):
            raise CryptoError(f"the {what} field {name!r} is malformed", hint)
    return obj


def parse(data: bytes, fmt: str, what: str, *, mac: bool = True) -> dict[str, Any]:
    """The message's body (with its MAC, if it carries one), checked for form only."""
    obj = load_flat(data, what)
    if obj.get("format") != fmt or (mac and not isinstance(obj.get("mac"), str)):
        raise CryptoError(f"the {what} is not a sohoa {what}", f"use the {what} file sohoa wrote")
    return obj


def verify(obj: dict[str, Any], key: bytes, what: str) -> dict[str, str]:
    """The body, if its MAC verifies under ``key``; else the one line that says why."""
    body = {k: v for k, v in obj.items() if k != "mac"}
    good = hmac.new(key, canonical(body), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(good, obj["mac"]):
        raise CryptoError(
            f"the {what} does not match the one-time code (wrong code, or the file was altered)",
            "check the code with the province; nothing was changed",
        )
    return body


@dataclass(frozen=True)
class Request:
    device_id: str
    device_pub: str  # PEM, Ed25519
    csr: str  # PEM, P-256, CN = device id
    nonce: str
    sig: str  # hex Ed25519 signature over the canonical body without sig and mac


@dataclass(frozen=True)
class Bundle:
    device_id: str
    nonce: str  # the request's
    certificate: str
    ca: str
    broker_url: str
    warehouse_pub: str
