"""What every key file shares: reading it with its mode checked, refusing to replace
one, base64 fields and JSON documents, and the key id of an Ed25519 public key.

Error texts name the file and say what to do; ``sync.keys``, ``sync.command_key``
and ``sync.receipt_keys`` build their files from these pieces.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import stat
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from sync.errors import CryptoError

MAX_KEY_FILE = 1 << 20


def read_key_file(path: Path, what: str, *, private: bool) -> bytes:
    """The bytes of a key file; a private one must not be readable by other users."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise CryptoError(
            f"{what} {path} does not exist",
            (
                "on a device, copy the warehouse's keys/warehouse.pub here (install.sh"
                " --warehouse-pub FILE); on the warehouse run 'sohoa keys init --warehouse'"
                if "warehouse public" in what
                else "create it with 'sohoa keys init' (add --warehouse on the warehouse)"
            ),
        ) from None
    except OSError as exc:
        raise CryptoError(
            f"{what} {path} cannot be read ({exc.strerror})", "check the path"
        ) from None
    if not stat.S_ISREG(st.st_mode):
        raise CryptoError(
            f"{what} {path} is not a regular file", "point the configuration at the key file"
        )
    if private and st.st_mode & 0o077:
        raise CryptoError(
            f"{what} {path} is readable by other users (mode {stat.S_IMODE(st.st_mode):04o})",
            f"run: chmod 600 {path}",
        )
    if st.st_size > MAX_KEY_FILE:
        raise CryptoError(f"{what} {path} is too large to be a key file", "check the path")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CryptoError(
            f"{what} {path} cannot be read ({exc.strerror})",
            "run the command as the sohoa user or fix the file's owner",
        ) from None


def refuse_overwrite(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise CryptoError(
            f"key file {path} already exists",
            "refusing to replace a key (documents sealed or signed with it would be lost); "
            "pass --force only if you are sure",
        )


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(value: Any, what: str, path: Path, length: int) -> bytes:
    """``length`` raw bytes from a base64 field, or a ``CryptoError`` naming the field."""
    try:
        raw = base64.b64decode(value, validate=True) if isinstance(value, str) else b""
    except binascii.Error:
        raw = b""
    if len(raw) != length:
        raise CryptoError(
            f"{what} in {path} is not a valid key ({length} bytes of base64 expected)",
            "restore the file from its backup",
        )
    return raw


def dumps(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, indent=1).encode() + b"\n"


def json_doc(data: bytes, path: Path, fmt: str) -> dict[str, Any]:
    """The JSON object of a key file whose ``format`` is ``fmt``."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        doc = None
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        raise CryptoError(f"{path} is not a {fmt} file", "restore it from its backup")
    return doc


def required(doc: dict[str, Any], name: str, path: Path) -> Any:
    if name not in doc:
        raise CryptoError(f"{path} lacks the field {name!r}", "restore it from its backup")
    return doc[name]


def ed25519_kid(pub: Ed25519PublicKey) -> str:
    """The key id receipts and commands name: 16 hex digits of SHA-256 over the raw key."""
    return hashlib.sha256(pub.public_bytes_raw()).hexdigest()[:16]
