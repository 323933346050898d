"""The warehouse archive: owner-only files, and a full archive disk that loses nothing."""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.services.sync import run_sync
from agent.services.warehouse import WarehouseWorkers
from tests.support.site import Site
from tests.support.sync import spool_documents, stored_documents

MB = 2**20


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def small_archive(site: Site) -> Iterator[Path]:
    """The warehouse's document archive on a 4 MB tmpfs; staging stays elsewhere."""
    docs = site.warehouse.path(site.warehouse.warehouse.archive) / "docs"
    docs.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(docs)],
        capture_output=True,
        text=True,
    )
    assert mounted.returncode == 0, f"cannot mount a small filesystem: {mounted.stderr.strip()}"
    try:
        yield docs
    finally:
        subprocess.run(["umount", "-l", str(docs)], check=False)


def test_archived_documents_are_readable_by_the_service_user_only(
    site: Site, warehouse_worker: WarehouseWorkers
) -> None:
    [sealed] = spool_documents(site.device, 1)
    assert run_sync(site.device, once=True, timeout_s=60).stored == 1

    out = site.warehouse.path(site.warehouse.warehouse.archive) / "docs" / site.device.device.id
    folder = out / sealed.doc_id
    assert (mode(out), mode(folder)) == (0o700, 0o700)
    assert {p.name: mode(p) for p in folder.iterdir()} == {
        "document.pdf": 0o600,
        "metadata.json": 0o600,
        "envelope.sohoa": 0o600,
    }


def test_a_full_archive_disk_keeps_the_document_pending_and_no_clear_copy(
    site: Site, small_archive: Path, warehouse_worker: WarehouseWorkers
) -> None:
    st = os.statvfs(small_archive)
    filler = small_archive / "filler"
    filler.write_bytes(b"\0" * (st.f_bavail * st.f_frsize - 64 * 1024))
    [sealed] = spool_documents(site.device, 1, size=400_000)

    first = run_sync(site.device, once=True, timeout_s=8)

    leftovers = [p.name for p in (small_archive / site.device.device.id).iterdir()]
    assert (first.stored, first.pending, first.rejected) == (0, 1, 0)
    assert leftovers == []  # no half-written, decrypted folder
    assert warehouse_worker.alive()

    filler.unlink()
    second = run_sync(site.device, once=True, timeout_s=60)

    assert (second.stored, second.pending) == (1, 0)
    assert [d.doc_id for d in stored_documents(site.warehouse)] == [sealed.doc_id]
