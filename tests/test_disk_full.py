"""A small real filesystem (tmpfs) that fills: capture refuses below the
reserve, and a disk that fills mid-batch keeps every document sealed before it.

The device home sits on its own tmpfs mount; a filler file takes the space, so
the kernel itself answers ENOSPC — no patched writes.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from agent.capture.samples import make_page
from tests.support.site import Site, write_toml

MB = 2**20
FS_MB = 24


def free_bytes(path: Path) -> int:
    import os

    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill_to(site: Site, free: int) -> Path:
    """Leave ``free`` bytes on the spool's filesystem."""
    filler = site.device.home / "spool" / "filler"
    filler.write_bytes(b"\0" * (free_bytes(filler.parent) - free))
    return filler


@pytest.fixture
def small_fs_site(site: Site) -> Iterator[Site]:
    """The site with its device spool on a tmpfs of FS_MB megabytes."""
    spool = site.device.home / "spool"
    spool.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={FS_MB}m,mode=0700", "tmpfs", str(spool)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small filesystem here: {mounted.stderr.strip()}")
    try:
        yield site
    finally:
        subprocess.run(["umount", "-l", str(spool)], check=False)


def with_reserve(site: Site, reserve_mb: int) -> Site:
    toml = write_toml(
        site.device_toml.with_name("device-reserve.toml"),
        site.device.home,
        site.device.device.id,
        site.broker.url(),
        sync={"receipt_timeout_s": 5.0},
        spool={"reserve_mb": reserve_mb},
    )
    return replace(site, device_toml=toml)


def noisy_batch(folder: Path, documents: int) -> Path:
    """``documents`` documents of about 1.9 MB each, split by PATCHT sheets."""
    folder.mkdir()
    pages = []
    for i in range(documents):
        if i:
            pages.append(make_page([], codes=[("CODE128", "PATCHT")], seed=100 + i))
        pages.append(make_page([f"TRANG {i}"], noise=0.3, seed=i))
    for i, p in enumerate(pages):
        p.save(folder / f"p{i:02d}.png", dpi=(300, 300))
    return folder


def spool_files(site: Site) -> dict[str, list[str]]:
    spool = site.device.home / "spool"
    return {d: sorted(p.name for p in (spool / d).iterdir()) for d in ("env", "tmp")}


def spool_db(site: Site, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(site.device.home / "spool" / "spool.db")
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_scan_refuses_below_the_reserve_and_writes_nothing(
    small_fs_site: Site, tmp_path: Path
) -> None:
    site = with_reserve(small_fs_site, reserve_mb=8)
    pages = tmp_path / "pages"
    pages.mkdir()
    make_page(["TRANG 1"], seed=1).save(pages / "p1.png", dpi=(300, 300))
    fill_to(site, 5 * MB)
    proc = site.run("scan", "--from", str(pages), "--json")
    assert proc.returncode == 6
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("error: Bộ nhớ gần đầy: còn 4 MB, cần dự trữ 8 MB / ")
    assert "disk nearly full (4 MB free, 8 MB reserve) — chờ đồng bộ" in proc.stderr
    assert "wait for sync to free space or call a technician" in proc.stderr
    assert spool_files(site) == {"env": [], "tmp": []}
    assert spool_db(site, "SELECT count(*) FROM documents") == [(0,)]
    assert spool_db(site, "SELECT count(*) FROM batches") == [(0,)]
    assert spool_db(site, "SELECT count(*) FROM audit") == [(0,)]


def test_disk_filling_mid_batch_keeps_sealed_documents_which_later_sync(
    small_fs_site: Site, tmp_path: Path, warehouse_worker: threading.Event
) -> None:
    site = with_reserve(small_fs_site, reserve_mb=1)
    pages = noisy_batch(tmp_path / "pages", documents=4)
    # room for the batch's scratch pages (about 4 x 1.9 MB) and two and a half envelopes
    filler = fill_to(site, 12 * MB + MB // 2)
    proc = site.run("scan", "--from", str(pages), "--json", "--hashes")
    assert proc.returncode == 9, proc.stderr
    result = json.loads(proc.stdout)
    assert (result["status"], result["flags"]) == ("disk_full", ["disk_full"])
    assert result["warnings"][-1] == (
        "Bộ nhớ đầy: 2 tài liệu chưa được lưu, hãy quét lại sau khi đồng bộ / "
        "disk full: 2 document(s) not saved — rescan them after sync frees space"
    )
    saved = {d["doc_id"]: d["pdf_sha256"] for d in result["documents"]}
    assert len(saved) == 2
    assert spool_files(site) == {"env": sorted(f"{d}.env" for d in saved), "tmp": []}
    assert spool_db(site, "PRAGMA integrity_check") == [("ok",)]
    assert spool_db(site, "SELECT doc_id, state FROM documents ORDER BY doc_id") == sorted(
        (d, "queued") for d in saved
    )
    assert spool_db(site, "SELECT status FROM batches") == [("disk_full",)]
    assert site.run("audit", "verify").returncode == 0

    filler.unlink()
    sync = site.run("sync", "--once", "--timeout", "60")
    assert sync.returncode == 0, sync.stderr
    listing = json.loads(site.run("warehouse", "ls", "--json", side="warehouse", check=True).stdout)
    assert {d["doc_id"]: d["pdf_sha256"] for d in listing["documents"]} == saved


def test_disk_filling_while_pages_come_in_stops_the_batch_with_a_clear_message(
    small_fs_site: Site, tmp_path: Path
) -> None:
    site = with_reserve(small_fs_site, reserve_mb=1)
    pages = noisy_batch(tmp_path / "pages", documents=4)
    fill_to(site, 3 * MB)  # above the reserve, below what the batch's pages need
    proc = site.run("scan", "--from", str(pages), "--json")
    assert (proc.returncode, proc.stdout) == (6, "")
    assert proc.stderr == (
        "error: Bộ nhớ đầy khi đang quét, lô này chưa được lưu / disk full while scanning,"
        " this batch was not saved — chờ đồng bộ giải phóng bộ nhớ rồi quét lại / wait for"
        " sync to free space, then scan the batch again\n"
    )
    assert spool_files(site) == {"env": [], "tmp": []}
    assert spool_db(site, "PRAGMA integrity_check") == [("ok",)]
    assert spool_db(site, "SELECT count(*) FROM documents") == [(0,)]
