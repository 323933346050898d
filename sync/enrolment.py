"""Enrolled devices at the warehouse: ``devices/<device id>.pub``, one PEM public key each.

A device id comes from MQTT topics, so it is validated before it names a file:
an id that could never be enrolled is simply not enrolled.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from sync.durable import atomic_write
from sync.errors import ConfigError, CryptoError
from sync.keys import device_fingerprint, load_device_public, public_pem
from sync.protocol import valid_device_id


def enrolled_path(devices_dir: Path, device_id: str) -> Path:
    return devices_dir / f"{device_id}.pub"


def enroll_device(
    device_pub: Path, device_id: str, devices_dir: Path, *, force: bool = False
) -> Path:
    """Accept a device's public key under ``device_id``; re-enrolling the same key is a no-op."""
    try:
        valid_device_id(device_id)
    except ConfigError as exc:
        raise CryptoError(f"device id {device_id!r} is not valid", exc.hint) from None
    return enroll_public(load_device_public(device_pub), device_id, devices_dir, force=force)


def enroll_public(
    key: Ed25519PublicKey, device_id: str, devices_dir: Path, *, force: bool = False
) -> Path:
    """``enroll_device`` for a key already loaded (from an enrolment request)."""
    valid_device_id(device_id)
    target = enrolled_path(devices_dir, device_id)
    if target.exists() and not force:
        existing = load_device_public(target)
        if existing.public_bytes_raw() == key.public_bytes_raw():
            return target
        raise CryptoError(
            f"device {device_id} is already enrolled with a different key "
            f"({device_fingerprint(existing)})",
            "if the device was re-installed, enrol it again with --force",
        )
    atomic_write(target, public_pem(key), mode=0o644, what="a key file")
    return target


def load_enrolled(devices_dir: Path, device_id: str) -> Ed25519PublicKey | None:
    """The enrolled key of ``device_id``, or None when the device is not enrolled.

    An id that could never be enrolled (``../x``, ``a/b``) is simply not enrolled:
    ids arrive from topics, and must never name a path outside ``devices_dir``.
    """
    try:
        valid_device_id(device_id)
    except ConfigError:
        return None
    path = enrolled_path(devices_dir, device_id)
    if not path.exists():
        return None
    return load_device_public(path)


def enrolled_ids(devices_dir: Path) -> list[str]:
    """Every device enrolled at this warehouse, by id (sorted)."""
    if not devices_dir.is_dir():
        return []
    ids = []
    for path in sorted(devices_dir.glob("*.pub")):
        try:
            ids.append(valid_device_id(path.stem))
        except ConfigError:
            continue  # not a name enrolment writes
    return ids
