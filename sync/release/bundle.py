"""The release bundle file: one uncompressed POSIX tar a technician can carry on a stick.

Members, in this order: ``manifest.json`` (``sync.release.manifest``),
``manifest.sig``, then every ``wheels/*.whl`` the manifest lists. Wheels are
already compressed, so the tar adds nothing to compress; its fixed order lets
a device read the manifest and refuse a bad signature from the first kilobytes.

``open_bundle`` checks the signature before anything else is read;
``extract_wheels`` copies each wheel out while hashing it and refuses a file
whose SHA-256 or size is not the manifest's, a file the manifest does not
list, or one it lists that is missing.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sync.durable import fsync_dir
from sync.release.manifest import (
    FileEntry,
    Manifest,
    ReleaseRefused,
    parse_manifest,
    sign_manifest,
    verify_manifest,
)

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
MAX_HEAD = 256 * 1024
_CHUNK = 1 << 20


def file_entry(path: Path) -> FileEntry:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return FileEntry(f"wheels/{path.name}", h.hexdigest(), path.stat().st_size)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    tar.addfile(info, io.BytesIO(data))


def write_bundle(
    out: Path,
    version: str,
    spool_schema: int,
    platforms: tuple[str, ...],
    wheels: list[Path],
    key: Ed25519PrivateKey,
) -> Manifest:
    """Write the signed bundle of ``wheels`` to ``out``; its manifest."""
    manifest = Manifest(
        version, spool_schema, platforms, tuple(file_entry(w) for w in sorted(wheels))
    )
    data = manifest.to_bytes()
    tmp = out.with_name(f".{out.name}.tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, MANIFEST, data)
        _add_bytes(tar, SIGNATURE, sign_manifest(data, key))
        for w in sorted(wheels):
            info = tar.gettarinfo(str(w), arcname=f"wheels/{w.name}")
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            with w.open("rb") as f:
                tar.addfile(info, f)
    tmp.replace(out)
    fsync_dir(out.parent)
    return manifest


@dataclass(frozen=True)
class Bundle:
    path: Path
    manifest: Manifest


def _head(tar: tarfile.TarFile, name: str, path: Path) -> bytes:
    member = tar.next()
    if member is None or member.name != name or not member.isfile() or member.size > MAX_HEAD:
        raise ReleaseRefused(
            f"{path} is not a sohoa release bundle (no {name} where it belongs)",
            "build it with 'sohoa release build' or get it again from the province",
        )
    f = tar.extractfile(member)
    assert f is not None  # a regular file always has one
    return f.read()


def _open_tar(path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(path, "r:")
    except FileNotFoundError:
        raise ReleaseRefused(f"release bundle {path} does not exist", "check the path") from None
    except (tarfile.TarError, OSError) as exc:
        raise ReleaseRefused(
            f"{path} is not a readable release bundle ({exc})",
            "copy it again; the file may be cut short",
        ) from None


def open_bundle(path: Path, pinned: Ed25519PublicKey) -> Bundle:
    """The bundle at ``path`` with its manifest, once its signature verifies."""
    with _open_tar(path) as tar:
        data = _head(tar, MANIFEST, path)
        signature = _head(tar, SIGNATURE, path)
    verify_manifest(data, signature, pinned)
    return Bundle(path, parse_manifest(data))


def _copy_hashed(src: io.BufferedReader, dest: Path) -> tuple[str, int]:
    h, size = hashlib.sha256(), 0
    with dest.open("wb") as out:
        while chunk := src.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
            out.write(chunk)
    return h.hexdigest(), size


def extract_wheels(bundle: Bundle, dest: Path) -> list[Path]:
    """Every wheel of ``bundle`` in ``dest``, each checked against the manifest."""
    expected = {f.name: f for f in bundle.manifest.files}
    dest.mkdir(parents=True, exist_ok=True)
    out: list[Path] = []
    hint = "the bundle was changed after it was signed: get it again from the province"
    with _open_tar(bundle.path) as tar:
        for member in tar:
            if member.name in (MANIFEST, SIGNATURE):
                continue
            entry = expected.pop(member.name, None)
            if entry is None or not member.isfile():
                raise ReleaseRefused(
                    f"the bundle holds {member.name[:80]}, not in its manifest", hint
                )
            target = dest / Path(entry.name).name
            src = tar.extractfile(member)
            assert src is not None
            digest, size = _copy_hashed(src, target)  # type: ignore[arg-type]
            if (digest, size) != (entry.sha256, entry.size):
                target.unlink()
                raise ReleaseRefused(f"tampered wheel: {entry.name} does not match its hash", hint)
            out.append(target)
    if expected:
        raise ReleaseRefused(f"the bundle lacks {sorted(expected)[0]}", hint)
    return out
