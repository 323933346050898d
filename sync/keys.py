"""Key files: the device's Ed25519 key and the warehouse's key generations.

Files (all written atomically: temp file in the same directory, fsync, rename,
fsync of the directory; private keys mode 0600):

- ``device.key``: Ed25519 private key, PEM PKCS#8, unencrypted; ``device.pub``
  beside it: PEM SubjectPublicKeyInfo.
- ``warehouse.key``: JSON ``{"format": "sohoa-warehouse-key/1", "generations":
  [...], "signing": b64, "command": b64}``; each generation (newest last) is
  ``{"key_id", "created", "x25519", "mlkem768", "x25519_hybrid"}`` with raw
  private keys in base64 (``mlkem768`` is the 64-byte ML-KEM seed). Old
  generations are kept so that envelopes sealed before a rotation still open.
  ``signing`` is the current generation of the receipt key (Ed25519, raw
  private key); ``command`` the *public* half of the command key, whose private
  half lives in its own file (``sync.command_key``) so that a copy of this file
  can never sign commands.
- ``warehouse.pub``: JSON with the current public parts only
  (``sohoa-warehouse-pub/1``): the current encryption generation, ``signing``
  (the current receipt key) and ``command`` (the command key). Devices pin it to
  seal envelopes, to verify receipts and to verify commands. A file without
  ``command`` (made before commands existed) still loads; such a device accepts
  receipts from ``signing`` and refuses every command.

A generation's ``key_id`` is the first 16 hex digits of SHA-256 over its public
key material: x25519 ‖ mlkem768 ‖ x25519 of the hybrid (raw bytes). A receipt
key's id (``kid``, carried in every receipt) is the same over its raw public key.

Receipt keys rotate on their own (``rotate_receipt_key``): the new generation
replaces ``signing`` and the old private key is gone from the file, so an old
copy of ``warehouse.key`` is worth nothing once devices applied the signed
rotation command (``sync.command_key``, ``sync.receipt_keys``). Running
warehouse workers pick the new key up at their next receipt
(``WarehousePrivate.receipt_key``).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import mlkem
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.hpke import MLKEM768X25519PrivateKey, MLKEM768X25519PublicKey

from sync.durable import atomic_write
from sync.errors import CryptoError
from sync.keyfiles import b64 as _b64
from sync.keyfiles import dumps as _dumps
from sync.keyfiles import json_doc, refuse_overwrite, required
from sync.keyfiles import read_key_file as _read
from sync.keyfiles import unb64 as _unb64

log = logging.getLogger("sohoa.keys")

PRIVATE_FORMAT = "sohoa-warehouse-key/1"
PUBLIC_FORMAT = "sohoa-warehouse-pub/1"


# -- device -------------------------------------------------------------------


def device_public_path(key_path: Path) -> Path:
    """Where the public key of ``key_path`` lives: ``device.key`` -> ``device.pub``."""
    return key_path.with_suffix(".pub")


def public_pem(pub: Ed25519PublicKey) -> bytes:
    return pub.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def init_device_keys(key_path: Path, *, force: bool = False) -> Ed25519PublicKey:
    """Create the device's signing key and its public key beside it."""
    pub_path = device_public_path(key_path)
    refuse_overwrite(key_path, force)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    atomic_write(key_path, pem, mode=0o600, what="a key file")
    atomic_write(pub_path, public_pem(key.public_key()), mode=0o644, what="a key file")
    return key.public_key()


def load_device_key(path: Path) -> Ed25519PrivateKey:
    data = _read(path, "device key", private=True)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise CryptoError(
            f"device key {path} is not an unencrypted PEM private key",
            "restore it from backup, or create a new one with 'sohoa keys init --force' "
            "and enrol the device again",
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise CryptoError(
            f"device key {path} is not an Ed25519 key",
            "create one with 'sohoa keys init --force' and enrol the device again",
        )
    return key


def _parsepublic_pem(data: bytes, path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise CryptoError(
            f"{path} is not a PEM public key",
            "copy the device's keys/device.pub (it starts with -----BEGIN PUBLIC KEY-----)",
        ) from None
    if not isinstance(key, Ed25519PublicKey):
        raise CryptoError(
            f"{path} is not an Ed25519 public key",
            "copy the device's keys/device.pub made by 'sohoa keys init'",
        )
    return key


def load_device_public(path: Path) -> Ed25519PublicKey:
    return _parsepublic_pem(_read(path, "device public key", private=False), path)


def device_fingerprint(pub: Ed25519PublicKey) -> str:
    """Short form for comparing a key by eye: ``ab12:cd34:…`` (128 bits of SHA-256)."""
    digest = hashlib.sha256(pub.public_bytes_raw()).hexdigest()[:32]
    return ":".join(digest[i : i + 4] for i in range(0, 32, 4))


# -- warehouse ----------------------------------------------------------------


@dataclass(frozen=True)
class WarehousePublic:
    key_id: str
    x25519: X25519PublicKey
    hybrid: MLKEM768X25519PublicKey
    signing: Ed25519PublicKey  # the current receipt key
    command: Ed25519PublicKey | None = None  # None in a warehouse.pub older than commands


@dataclass(frozen=True)
class WarehouseGeneration:
    key_id: str
    x25519: X25519PrivateKey
    hybrid: MLKEM768X25519PrivateKey


@dataclass
class _ReceiptKeyCache:
    """The receipt key last read from the key file, and the file's identity then."""

    ident: tuple[int, int, int] | None = None
    key: Ed25519PrivateKey | None = None


@dataclass(frozen=True)
class WarehousePrivate:
    generations: tuple[WarehouseGeneration, ...]
    signing: Ed25519PrivateKey  # the receipt key when the file was loaded
    command: Ed25519PublicKey | None = None
    path: Path | None = None  # the file it came from; receipt_key() reads it again
    _latest: _ReceiptKeyCache = field(default_factory=_ReceiptKeyCache, compare=False, repr=False)

    def current(self) -> WarehouseGeneration:
        return self.generations[-1]

    def find(self, key_id: str) -> WarehouseGeneration:
        for generation in self.generations:
            if generation.key_id == key_id:
                return generation
        raise CryptoError(
            f"unknown warehouse key id {key_id!r}",
            "the document was sealed to another warehouse key; check that the device "
            "holds this warehouse's keys/warehouse.pub",
        )

    def public(self) -> WarehousePublic:
        gen = self.current()
        return WarehousePublic(
            key_id=gen.key_id,
            x25519=gen.x25519.public_key(),
            hybrid=gen.hybrid.public_key(),
            signing=self.signing.public_key(),
            command=self.command,
        )

    def receipt_key(self) -> Ed25519PrivateKey:
        """The receipt key to sign with now: read again from ``path`` whenever the file
        changed, so that a rotation reaches running workers without a restart. A file
        that cannot be read keeps the last key (and says so in the log)."""
        if self.path is None:
            return self.signing
        try:
            st = self.path.stat()
            ident = (st.st_ino, st.st_mtime_ns, st.st_size)
            if ident != self._latest.ident:
                doc = json_doc(
                    _read(self.path, "warehouse key", private=True), self.path, PRIVATE_FORMAT
                )
                raw = _unb64(required(doc, "signing", self.path), "signing", self.path, 32)
                self._latest.key = Ed25519PrivateKey.from_private_bytes(raw)
                self._latest.ident = ident
        except (OSError, CryptoError) as exc:
            reason = exc.message if isinstance(exc, CryptoError) else exc.strerror
            log.error("warehouse key unreadable, signing with the last key read reason=%s", reason)
        return self._latest.key or self.signing


def _key_id(x25519_pub: bytes, mlkem_pub: bytes, hybrid_x25519_pub: bytes) -> str:
    return hashlib.sha256(x25519_pub + mlkem_pub + hybrid_x25519_pub).hexdigest()[:16]


def _parse_generation(gen: Any, path: Path) -> tuple[WarehouseGeneration, dict[str, Any]]:
    """A generation's private keys, and the public document that goes with them."""
    if not isinstance(gen, dict):
        raise CryptoError(f"{path} holds a malformed key generation", "restore it from its backup")
    x = X25519PrivateKey.from_private_bytes(_unb64(gen.get("x25519"), "x25519", path, 32))
    m = mlkem.MLKEM768PrivateKey.from_seed_bytes(_unb64(gen.get("mlkem768"), "mlkem768", path, 64))
    hx = X25519PrivateKey.from_private_bytes(
        _unb64(gen.get("x25519_hybrid"), "x25519_hybrid", path, 32)
    )
    x_pub, hx_pub = x.public_key().public_bytes_raw(), hx.public_key().public_bytes_raw()
    m_pub = m.public_key().public_bytes_raw()
    key_id = _key_id(x_pub, m_pub, hx_pub)
    if gen.get("key_id", key_id) != key_id:
        raise CryptoError(
            f"{path}: key generation {gen.get('key_id')!r} does not match its keys",
            "restore the file from its backup",
        )
    public = {
        "format": PUBLIC_FORMAT,
        "key_id": key_id,
        "x25519": _b64(x_pub),
        "mlkem768x25519": {"mlkem768": _b64(m_pub), "x25519": _b64(hx_pub)},
    }
    generation = WarehouseGeneration(key_id, x, MLKEM768X25519PrivateKey(m, hx))
    return generation, public


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _new_generation(path: Path) -> dict[str, str]:
    gen = {
        "created": _now(),
        "x25519": _b64(X25519PrivateKey.generate().private_bytes_raw()),
        "mlkem768": _b64(mlkem.MLKEM768PrivateKey.generate().private_bytes_raw()),
        "x25519_hybrid": _b64(X25519PrivateKey.generate().private_bytes_raw()),
    }
    gen["key_id"] = _parse_generation(gen, path)[0].key_id
    return gen


def _write_warehouse(private_path: Path, public_path: Path, doc: dict[str, Any]) -> None:
    public = _parse_generation(doc["generations"][-1], private_path)[1]
    signing = Ed25519PrivateKey.from_private_bytes(
        _unb64(doc["signing"], "signing", private_path, 32)
    )
    public["signing"] = _b64(signing.public_key().public_bytes_raw())
    if doc.get("command") is not None:
        public["command"] = _b64(_unb64(doc["command"], "command", private_path, 32))
    atomic_write(private_path, _dumps(doc), mode=0o600, what="a key file")
    atomic_write(public_path, _dumps(public), mode=0o644, what="a key file")


def init_warehouse_keys(
    private_path: Path,
    public_path: Path,
    *,
    force: bool = False,
    command: Ed25519PublicKey | None = None,
) -> WarehousePublic:
    """New warehouse keys; ``command`` is the public half of the command key, if any."""
    refuse_overwrite(private_path, force)
    signing = Ed25519PrivateKey.generate().private_bytes_raw()
    generations = [_new_generation(private_path)]
    doc = {"format": PRIVATE_FORMAT, "generations": generations, "signing": _b64(signing)}
    if command is not None:
        doc["command"] = _b64(command.public_bytes_raw())
    _write_warehouse(private_path, public_path, doc)
    return load_warehouse_public(public_path)


def _change_warehouse(
    private_path: Path, public_path: Path, change: Callable[[dict[str, Any]], None]
) -> None:
    """Rewrite both warehouse files after ``change`` edited the private document."""
    load_warehouse_private(private_path)  # refuse to extend a damaged file
    doc = json_doc(_read(private_path, "warehouse key", private=True), private_path, PRIVATE_FORMAT)
    change(doc)
    _write_warehouse(private_path, public_path, doc)


def rotate_warehouse_keys(private_path: Path, public_path: Path) -> WarehousePublic:
    """Add a key generation; older ones stay so that older envelopes still open."""
    new = _new_generation(private_path)
    _change_warehouse(private_path, public_path, lambda doc: doc["generations"].append(new))
    return load_warehouse_public(public_path)


def rotate_receipt_key(private_path: Path, public_path: Path) -> WarehousePublic:
    """A new receipt key generation replaces the current one, whose private key is
    destroyed: from now on receipts are signed with the new key only."""
    fresh = _b64(Ed25519PrivateKey.generate().private_bytes_raw())
    _change_warehouse(private_path, public_path, lambda doc: doc.__setitem__("signing", fresh))
    return load_warehouse_public(public_path)


def pin_command_key(private_path: Path, public_path: Path, command: Ed25519PublicKey) -> None:
    """Record the command key's public half in both warehouse files (devices get it with
    their next copy of warehouse.pub)."""
    raw = _b64(command.public_bytes_raw())
    _change_warehouse(private_path, public_path, lambda doc: doc.__setitem__("command", raw))


def _optional_key(doc: dict[str, Any], name: str, path: Path) -> Ed25519PublicKey | None:
    if doc.get(name) is None:
        return None
    return Ed25519PublicKey.from_public_bytes(_unb64(doc[name], name, path, 32))


def load_warehouse_public(path: Path) -> WarehousePublic:
    doc = json_doc(_read(path, "warehouse public key", private=False), path, PUBLIC_FORMAT)
    hybrid = required(doc, "mlkem768x25519", path)
    if not isinstance(hybrid, dict):
        hybrid = {}
    x_raw = _unb64(required(doc, "x25519", path), "x25519", path, 32)
    m_raw = _unb64(hybrid.get("mlkem768"), "mlkem768x25519.mlkem768", path, 1184)
    hx_raw = _unb64(hybrid.get("x25519"), "mlkem768x25519.x25519", path, 32)
    s_raw = _unb64(required(doc, "signing", path), "signing", path, 32)
    key_id = required(doc, "key_id", path)
    if key_id != _key_id(x_raw, m_raw, hx_raw):
        raise CryptoError(
            f"{path}: key_id does not match the keys it carries",
            "copy warehouse.pub again from the warehouse",
        )
    try:
        m_pub = mlkem.MLKEM768PublicKey.from_public_bytes(m_raw)
    except ValueError:
        raise CryptoError(f"{path}: the ML-KEM-768 key is invalid", "copy it again") from None
    return WarehousePublic(
        key_id=key_id,
        x25519=X25519PublicKey.from_public_bytes(x_raw),
        hybrid=MLKEM768X25519PublicKey(m_pub, X25519PublicKey.from_public_bytes(hx_raw)),
        signing=Ed25519PublicKey.from_public_bytes(s_raw),
        command=_optional_key(doc, "command", path),
    )


def load_warehouse_private(path: Path) -> WarehousePrivate:
    doc = json_doc(_read(path, "warehouse key", private=True), path, PRIVATE_FORMAT)
    generations = required(doc, "generations", path)
    if not isinstance(generations, list) or not generations:
        raise CryptoError(f"{path} holds no key generation", "restore it from its backup")
    signing = _unb64(required(doc, "signing", path), "signing", path, 32)
    return WarehousePrivate(
        generations=tuple(_parse_generation(g, path)[0] for g in generations),
        signing=Ed25519PrivateKey.from_private_bytes(signing),
        command=_optional_key(doc, "command", path),
        path=path,
    )
