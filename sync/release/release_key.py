"""The province's release key: its two files, apart from every other key.

``keys/release.key`` (mode 0600, kept where releases are built, ideally
offline)::

    {"format": "sohoa-release-key/1", "key": b64}

``keys/release.pub``, which every device pins (``install.sh --release-pub``)::

    {"format": "sohoa-release-pub/1", "kid", "public": b64}

The release key signs nothing but bundle manifests: a leaked command or
receipt key cannot push software, and a leaked release key cannot purge a spool.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sync.durable import atomic_write
from sync.errors import CryptoError
from sync.keyfiles import (
    b64,
    dumps,
    ed25519_kid,
    json_doc,
    read_key_file,
    refuse_overwrite,
    required,
    unb64,
)

PRIVATE_FORMAT = "sohoa-release-key/1"
PUBLIC_FORMAT = "sohoa-release-pub/1"


def public_path_of(private: Path) -> Path:
    return private.with_suffix(".pub")


def init_release_key(private: Path, *, force: bool = False) -> Ed25519PublicKey:
    """A new release key pair; ``release.pub`` beside the private file."""
    refuse_overwrite(private, force)
    key = Ed25519PrivateKey.generate()
    pub = key.public_key()
    atomic_write(
        private,
        dumps({"format": PRIVATE_FORMAT, "key": b64(key.private_bytes_raw())}),
        mode=0o600,
        what="a key file",
    )
    atomic_write(
        public_path_of(private),
        dumps(
            {
                "format": PUBLIC_FORMAT,
                "kid": ed25519_kid(pub),
                "public": b64(pub.public_bytes_raw()),
            }
        ),
        mode=0o644,
        what="a key file",
    )
    return pub


def load_release_key(path: Path) -> Ed25519PrivateKey:
    if not path.exists():
        raise CryptoError(
            f"release key {path} does not exist",
            "create it once with 'sohoa release keygen' (or give --key FILE)",
        )
    doc = json_doc(read_key_file(path, "release key", private=True), path, PRIVATE_FORMAT)
    return Ed25519PrivateKey.from_private_bytes(unb64(required(doc, "key", path), "key", path, 32))


def load_release_public(path: Path) -> Ed25519PublicKey:
    if not path.exists():
        raise CryptoError(
            f"release public key {path} does not exist",
            "copy the province's keys/release.pub here (install.sh --release-pub FILE)",
        )
    doc = json_doc(read_key_file(path, "release public key", private=False), path, PUBLIC_FORMAT)
    pub = Ed25519PublicKey.from_public_bytes(
        unb64(required(doc, "public", path), "public", path, 32)
    )
    if doc.get("kid") != ed25519_kid(pub):
        raise CryptoError(f"{path}: the kid does not match the key", "copy release.pub again")
    return pub
