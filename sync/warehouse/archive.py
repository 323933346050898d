"""The warehouse archive: each stored document as PDF, metadata JSON and the original
envelope in ``archive/docs/<device>/<doc>/``, owner-only, written whole or not at all."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from sync.durable import atomic_write, fsync_dir, is_disk_full, iso
from sync.envelope.header import Header, segment_matches
from sync.envelope.opening import open_envelope
from sync.envelope.payload import unpack_payload
from sync.envelope.reader import write_envelope
from sync.errors import ArchiveError, EnvelopeError
from sync.keys import WarehousePrivate
from sync.warehouse.catalogue import catalogue_pdf
from sync.warehouse.index import StoredDocument
from sync.warehouse.signatures import SignatureCheck


def _write_archive(
    tmp_dir: Path,
    header: Header,
    prefix: bytes,
    paths: list[Path],
    keys: WarehousePrivate,
    clock: Callable[[], float],
    device_key: Ed25519PublicKey,
) -> tuple[dict[str, Any], str, int]:
    """The three archive files in ``tmp_dir``: PDF, metadata JSON, original envelope."""

    def segments() -> Iterator[bytes]:
        for i, p in enumerate(paths):
            data = p.read_bytes()
            if not segment_matches(header, i, data):
                raise EnvelopeError(f"segment {i} does not match the signed manifest")
            yield data

    fd = os.open(tmp_dir / "document.pdf", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        plain = open_envelope(header, prefix, segments(), keys)
        ids = (header.device_id, header.doc_id, device_key)
        payload = unpack_payload(plain, fh.write, device=ids, created=header.created)
        meta, pdf_sha256 = payload.meta, payload.pdf_sha256
        size = fh.tell()
        fh.flush()
        os.fsync(fh.fileno())
    meta = {
        **meta,
        "pdf_sha256": pdf_sha256,
        "stored_at": iso(clock()),
        "ciphertext_sha256": header.ciphertext_sha256,
        "key_id": header.key_id,
        "suite": header.suite,
        "metadata_signed": payload.signed,
    }
    body = json.dumps(meta, ensure_ascii=False, indent=1).encode()
    atomic_write(tmp_dir / "metadata.json", body, mode=0o600, what="the archive")
    fd = os.open(tmp_dir / "envelope.sohoa", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        write_envelope(fh, header, prefix, (p.read_bytes() for p in paths))
        fh.flush()
        os.fsync(fh.fileno())
    fsync_dir(tmp_dir)
    return meta, pdf_sha256, size


def archive_document(
    archive: Path,
    header: Header,
    prefix: bytes,
    paths: list[Path],
    keys: WarehousePrivate,
    clock: Callable[[], float],
    device_key: Ed25519PublicKey,
    check_signatures: Callable[[Path], SignatureCheck] | None = None,
) -> StoredDocument:
    """Decrypt and archive: PDF, metadata and the original envelope, owner-only
    (0600 files, 0700 folders), moved into place whole or not at all; with
    ``check_signatures``, the PDF's signatures validated (the PDF only read)."""
    device, doc = header.device_id, header.doc_id
    parent = archive / "docs" / device
    out_dir = parent / doc
    # one name per document, not per process: the caller holds the document's lock, and a
    # writer killed mid-way leaves a decrypted copy that the next attempt must remove
    tmp_dir = parent / f".{doc}.tmp"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp_dir.mkdir(mode=0o700)
    try:
        meta, pdf_sha256, size = _write_archive(
            tmp_dir, header, prefix, paths, keys, clock, device_key
        )
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp_dir.replace(out_dir)
        fsync_dir(parent)
    except OSError as exc:
        shutil.rmtree(tmp_dir, ignore_errors=True)  # no decrypted copy is left behind
        full = is_disk_full(exc)
        raise ArchiveError(
            f"cannot write the archive ({'disk full' if full else exc.strerror})",
            "free space in [warehouse] archive; the document stays staged and is stored"
            " when its device asks again",
        ) from exc
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    signed = check_signatures(out_dir / "document.pdf") if check_signatures else SignatureCheck()
    return _record(header, meta, pdf_sha256, size, out_dir / "document.pdf", signed)


def _record(
    header: Header,
    meta: dict[str, Any],
    pdf_sha256: str,
    size: int,
    pdf: Path,
    signed: SignatureCheck,
) -> StoredDocument:
    """The index's record: where it is, the catalogue (owner, procedure, dates from the
    metadata; A4 pages from the PDF) and the signatures' validation."""
    doc = catalogue_pdf(
        StoredDocument(
            doc_id=header.doc_id,
            device=header.device_id,
            ciphertext_sha256=header.ciphertext_sha256,
            stored_at=meta["stored_at"],
            bytes=size,
            pages=int(meta.get("decree30", {}).get("PageAmount") or 0),
            pdf_sha256=pdf_sha256,
            path=str(pdf),
            dossier_code=meta.get("dossier_code"),
            doc_type=meta.get("doc_type"),
        ),
        meta,
    )
    return replace(
        doc,
        signed_by=signed.signed_by,
        signature_valid=signed.valid,
        signature_problem=signed.problem,
    )


def sweep_partial(archive: Path, staging: Path) -> int:
    """Remove decrypted copies that killed writers left (``docs/<device>/.<doc>.tmp``);
    how many. A copy whose document lock another live worker holds is being written:
    it stays. Run at start-up, for documents that are never retried."""
    gone = 0
    for tmp in (archive / "docs").glob("*/.*.tmp"):
        lock = staging / f".{tmp.parent.name}.{tmp.name[1:-4]}.lock"
        try:
            with lock.open("a+b") as fh:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                shutil.rmtree(tmp, ignore_errors=True)
                gone += 1
        except BlockingIOError:
            continue  # a live writer
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)  # no staging folder: nobody writes it
            gone += 1
    return gone
