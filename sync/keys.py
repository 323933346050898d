"""Key files: the device's Ed25519 key and the warehouse's key generations.

Files (all written atomically: temp file in the same directory, fsync, rename,
fsync of the directory; private keys mode 0600):

- ``device.key``: Ed25519 private key, PEM PKCS#8, unencrypted; ``device.pub``
  beside it: PEM SubjectPublicKeyInfo.
- ``warehouse.key``: JSON ``{"format": "sohoa-warehouse-key/1", "generations":
  [...], "signing": b64}``; each generation (newest last) is ``{"key_id",
  "created", "x25519", "mlkem768", "x25519_hybrid"}`` with raw private keys in
  base64 (``mlkem768`` is the 64-byte ML-KEM seed). Old generations are kept so
  that envelopes sealed before a rotation still open.
- ``warehouse.pub``: JSON with the current generation's public parts only
  (``sohoa-warehouse-pub/1``); devices pin it to seal envelopes and to verify
  receipts and commands (``signing``).

A generation's ``key_id`` is the first 16 hex digits of SHA-256 over its public
key material: x25519 ‖ mlkem768 ‖ x25519 of the hybrid (raw bytes).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import stat
from dataclasses import dataclass
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

PRIVATE_FORMAT = "sohoa-warehouse-key/1"
PUBLIC_FORMAT = "sohoa-warehouse-pub/1"
_MAX_KEY_FILE = 1 << 20


# -- files --------------------------------------------------------------------


def _read(path: Path, what: str, *, private: bool) -> bytes:
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
    if st.st_size > _MAX_KEY_FILE:
        raise CryptoError(f"{what} {path} is too large to be a key file", "check the path")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CryptoError(
            f"{what} {path} cannot be read ({exc.strerror})",
            "run the command as the sohoa user or fix the file's owner",
        ) from None


def _refuse_overwrite(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise CryptoError(
            f"key file {path} already exists",
            "refusing to replace a key (documents sealed or signed with it would be lost); "
            "pass --force only if you are sure",
        )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: Any, what: str, path: Path, length: int) -> bytes:
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
    _refuse_overwrite(key_path, force)
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
    signing: Ed25519PublicKey


@dataclass(frozen=True)
class WarehouseGeneration:
    key_id: str
    x25519: X25519PrivateKey
    hybrid: MLKEM768X25519PrivateKey


@dataclass(frozen=True)
class WarehousePrivate:
    generations: tuple[WarehouseGeneration, ...]
    signing: Ed25519PrivateKey

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
        )


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


def _new_generation(path: Path) -> dict[str, str]:
    gen = {
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "x25519": _b64(X25519PrivateKey.generate().private_bytes_raw()),
        "mlkem768": _b64(mlkem.MLKEM768PrivateKey.generate().private_bytes_raw()),
        "x25519_hybrid": _b64(X25519PrivateKey.generate().private_bytes_raw()),
    }
    gen["key_id"] = _parse_generation(gen, path)[0].key_id
    return gen


def _dumps(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, indent=1).encode() + b"\n"


def _write_warehouse(private_path: Path, public_path: Path, doc: dict[str, Any]) -> None:
    public = _parse_generation(doc["generations"][-1], private_path)[1]
    signing = Ed25519PrivateKey.from_private_bytes(
        _unb64(doc["signing"], "signing", private_path, 32)
    )
    public["signing"] = _b64(signing.public_key().public_bytes_raw())
    atomic_write(private_path, _dumps(doc), mode=0o600, what="a key file")
    atomic_write(public_path, _dumps(public), mode=0o644, what="a key file")


def init_warehouse_keys(
    private_path: Path, public_path: Path, *, force: bool = False
) -> WarehousePublic:
    _refuse_overwrite(private_path, force)
    signing = Ed25519PrivateKey.generate().private_bytes_raw()
    generations = [_new_generation(private_path)]
    doc = {"format": PRIVATE_FORMAT, "generations": generations, "signing": _b64(signing)}
    _write_warehouse(private_path, public_path, doc)
    return load_warehouse_public(public_path)


def rotate_warehouse_keys(private_path: Path, public_path: Path) -> WarehousePublic:
    """Add a key generation; older ones stay so that older envelopes still open."""
    load_warehouse_private(private_path)  # refuse to extend a damaged file
    doc = _json_doc(
        _read(private_path, "warehouse key", private=True), private_path, PRIVATE_FORMAT
    )
    doc["generations"].append(_new_generation(private_path))
    _write_warehouse(private_path, public_path, doc)
    return load_warehouse_public(public_path)


def _json_doc(data: bytes, path: Path, fmt: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        doc = None
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        raise CryptoError(f"{path} is not a {fmt} file", "restore it from its backup")
    return doc


def _field(doc: dict[str, Any], name: str, path: Path) -> Any:
    if name not in doc:
        raise CryptoError(f"{path} lacks the field {name!r}", "restore it from its backup")
    return doc[name]


def load_warehouse_public(path: Path) -> WarehousePublic:
    doc = _json_doc(_read(path, "warehouse public key", private=False), path, PUBLIC_FORMAT)
    hybrid = _field(doc, "mlkem768x25519", path)
    if not isinstance(hybrid, dict):
        hybrid = {}
    x_raw = _unb64(_field(doc, "x25519", path), "x25519", path, 32)
    m_raw = _unb64(hybrid.get("mlkem768"), "mlkem768x25519.mlkem768", path, 1184)
    hx_raw = _unb64(hybrid.get("x25519"), "mlkem768x25519.x25519", path, 32)
    s_raw = _unb64(_field(doc, "signing", path), "signing", path, 32)
    key_id = _field(doc, "key_id", path)
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
    )


def load_warehouse_private(path: Path) -> WarehousePrivate:
    doc = _json_doc(_read(path, "warehouse key", private=True), path, PRIVATE_FORMAT)
    generations = _field(doc, "generations", path)
    if not isinstance(generations, list) or not generations:
        raise CryptoError(f"{path} holds no key generation", "restore it from its backup")
    signing = _unb64(_field(doc, "signing", path), "signing", path, 32)
    return WarehousePrivate(
        generations=tuple(_parse_generation(g, path)[0] for g in generations),
        signing=Ed25519PrivateKey.from_private_bytes(signing),
    )
