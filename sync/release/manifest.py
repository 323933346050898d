"""A release's manifest: what a bundle holds, signed by the province's release key.

The manifest is canonical JSON::

    {"format": "sohoa-release/1", "version": "0.2.0", "spool_schema": 2,
     "platforms": ["manylinux_2_36_x86_64", ...],
     "files": [{"name": "wheels/sohoa-0.2.0-py3-none-any.whl", "sha256", "size"}, ...]}

``spool_schema`` is the spool schema version the release migrates to. Spool
migrations are additive (tables and columns with defaults), and a release opens
a spool one schema version ahead of its own, so a device may always go back one
release; an offer whose schema is more than one ahead of the device's is
refused (install the release between first).

The signature is a separate small JSON document, ``{"kid", "sig"}``, base64
Ed25519 over the manifest's exact bytes. Everything here is pure: values in,
values out, ``ReleaseRefused`` with one line of reason.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sync.errors import CryptoError
from sync.keyfiles import ed25519_kid
from sync.protocol import ProtocolError, canonical, load_json

FORMAT = "sohoa-release/1"
MAX_FILES = 512
_VERSION = re.compile(r"^(0|[1-9][0-9]{0,5})(\.(0|[1-9][0-9]{0,5})){0,3}$")
_NAME = re.compile(r"^wheels/[A-Za-z0-9_.+-]{1,200}\.whl$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ReleaseRefused(CryptoError):
    """A bundle or an offer this device does not install; the message is the reason."""


def parse_version(text: str) -> tuple[int, ...]:
    """``"0.2.10"`` → ``(0, 2, 10)``; a release version is one to four numbers."""
    if not isinstance(text, str) or not _VERSION.match(text):
        raise ReleaseRefused(
            f"release version {str(text)[:32]!r} is not one to four dotted numbers",
            "give a version like 0.2.0 (--version)",
        )
    parts = tuple(int(p) for p in text.split("."))
    return parts + (0,) * (4 - len(parts))


def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as ``a`` is older than, the same as, or newer than ``b``."""
    pa, pb = parse_version(a), parse_version(b)
    return (pa > pb) - (pa < pb)


@dataclass(frozen=True)
class FileEntry:
    name: str  # path inside the bundle, wheels/<wheel file name>
    sha256: str
    size: int


@dataclass(frozen=True)
class Manifest:
    version: str
    spool_schema: int
    platforms: tuple[str, ...]
    files: tuple[FileEntry, ...]

    def to_bytes(self) -> bytes:
        return canonical(
            {
                "format": FORMAT,
                "version": self.version,
                "spool_schema": self.spool_schema,
                "platforms": list(self.platforms),
                "files": [{"name": f.name, "sha256": f.sha256, "size": f.size} for f in self.files],
            }
        )

    def project_wheel(self) -> FileEntry:
        """The sohoa wheel itself (the others are its dependencies)."""
        prefix = f"wheels/sohoa-{self.version}-"
        for f in self.files:
            if f.name.startswith(prefix):
                return f
        raise ReleaseRefused(
            f"release {self.version} holds no sohoa-{self.version} wheel",
            "build the bundle again with 'sohoa release build'",
        )


def _int(obj: dict[str, Any], name: str, low: int, high: int) -> int:
    value = obj.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ReleaseRefused(f"manifest field {name!r} is not a number from {low} to {high}")
    return value


def _entry(obj: object) -> FileEntry:
    if not isinstance(obj, dict) or set(obj) != {"name", "sha256", "size"}:
        raise ReleaseRefused("a manifest file entry is not an object of name, sha256 and size")
    name, digest = obj["name"], obj["sha256"]
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise ReleaseRefused(f"manifest names a file {str(name)[:64]!r} outside wheels/")
    if not isinstance(digest, str) or not _SHA256.match(digest):
        raise ReleaseRefused(f"manifest entry {name} has no SHA-256")
    return FileEntry(name, digest, _int(obj, "size", 0, 2**34))


def parse_manifest(data: bytes) -> Manifest:
    """A manifest from a bundle, bounded and checked field by field."""
    try:
        obj = load_json(data)
    except ProtocolError as exc:
        raise ReleaseRefused(f"release manifest: {exc}") from None
    if obj.get("format") != FORMAT:
        raise ReleaseRefused(f"the bundle's manifest is not a {FORMAT} manifest")
    version = obj.get("version")
    parse_version(version if isinstance(version, str) else "")
    platforms, files = obj.get("platforms"), obj.get("files")
    if not isinstance(platforms, list) or not all(isinstance(p, str) for p in platforms):
        raise ReleaseRefused("manifest field 'platforms' is not a list of names")
    if not isinstance(files, list) or not 1 <= len(files) <= MAX_FILES:
        raise ReleaseRefused(f"manifest field 'files' is not a list of 1 to {MAX_FILES} files")
    entries = tuple(_entry(f) for f in files)
    if len({e.name for e in entries}) != len(entries):
        raise ReleaseRefused("manifest names one file twice")
    assert isinstance(version, str)
    return Manifest(version, _int(obj, "spool_schema", 1, 10_000), tuple(platforms), entries)


def sign_manifest(manifest_bytes: bytes, key: Ed25519PrivateKey) -> bytes:
    """The signature document for ``manifest_bytes``."""
    sig = base64.b64encode(key.sign(manifest_bytes)).decode()
    return canonical({"kid": ed25519_kid(key.public_key()), "sig": sig})


def verify_manifest(manifest_bytes: bytes, signature: bytes, pinned: Ed25519PublicKey) -> None:
    """Nothing when the pinned release key signed these exact bytes, else ``ReleaseRefused``."""
    hint = "get the bundle again from the province; never install an unsigned release"
    try:
        obj = load_json(signature)
        raw = base64.b64decode(obj.get("sig", ""), validate=True)
    except (ProtocolError, binascii.Error, TypeError, ValueError):
        raise ReleaseRefused("the bundle's signature is not a signature document", hint) from None
    kid = ed25519_kid(pinned)
    if obj.get("kid") != kid:
        raise ReleaseRefused(
            f"bad signature: the bundle is signed by release key {str(obj.get('kid'))[:16]},"
            f" this device pins {kid}",
            hint,
        )
    try:
        pinned.verify(raw, manifest_bytes)
    except InvalidSignature:
        raise ReleaseRefused(
            "bad signature: the bundle's manifest does not verify against the pinned release key",
            hint,
        ) from None


def check_order(installed: str | None, version: str, *, allow_downgrade: bool) -> None:
    """Refuse the installed release again, or an older one unless going back is meant."""
    if installed is None:
        return
    order = compare_versions(version, installed)
    if order == 0:
        raise ReleaseRefused(f"release {version} is already installed", "nothing to do")
    if order < 0 and not allow_downgrade:
        raise ReleaseRefused(
            f"release {version} is older than the installed {installed}",
            "offer it with --allow-downgrade if going back is meant",
        )


def check_install(
    installed: str | None, spool_schema: int, manifest: Manifest, *, allow_downgrade: bool
) -> None:
    """Refuse a release this device must not switch to: older (unless allowed), the same,
    or a spool schema more than one step away from the installed release's."""
    check_order(installed, manifest.version, allow_downgrade=allow_downgrade)
    if manifest.spool_schema > spool_schema + 1:
        raise ReleaseRefused(
            f"release {manifest.version} migrates the spool to schema {manifest.spool_schema},"
            f" more than one step past this device's {spool_schema}",
            "install the release in between first, so that going back stays possible",
        )
    if manifest.spool_schema < spool_schema - 1:
        raise ReleaseRefused(
            f"release {manifest.version} knows spool schema {manifest.spool_schema}, more than"
            f" one step behind this device's {spool_schema}: it could not open the spool",
            "offer a newer release",
        )
