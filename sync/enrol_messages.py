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

REQUEST_FORMAT = "sohoa-enrol-request/1"
BUNDLE_FORMAT = "sohoa-enrol-bundle/1"
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


def parse(data: bytes, fmt: str, what: str) -> dict[str, Any]:
    """The message's body (without its MAC), checked for form only."""
    if len(data) > MAX_MESSAGE:
        raise CryptoError(f"the {what} is too large", f"use the {what} file sohoa wrote")
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise CryptoError(
            f"the {what} is not a sohoa {what}", f"use the {what} file sohoa wrote"
        ) from None
    if not isinstance(obj, dict) or obj.get("format") != fmt or not isinstance(obj.get("mac"), str):
        raise CryptoError(f"the {what} is not a sohoa {what}", f"use the {what} file sohoa wrote")
    for name, value in obj.items():
        if not isinstance(value, str):
            raise CryptoError(
                f"the {what} field {name!r} is malformed", f"use the {what} file sohoa wrote"
            )
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
