"""A locked, read-only or damaged spool database says so in one line, and loses nothing."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from sync.errors import SpoolError
from sync.spool.dberrors import SpoolConnection
from tests.support.mqtt import Broker
from tests.support.pages import text_page
from tests.support.site import Site, make_site


@pytest.fixture
def site(tmp_path: Path, mosquitto: Broker) -> Site:
    return make_site(tmp_path, mosquitto)


def scan_one(site: Site, tmp: Path, name: str) -> None:
    pages = tmp / name
    pages.mkdir()
    text_page().save(pages / "p0.png", dpi=(300, 300))
    site.run("scan", "--from", str(pages), check=True)


def guarded(path: Path, *, uri: str = "", timeout: float = 0.2) -> SpoolConnection:
    target = uri or str(path)
    conn = sqlite3.connect(
        target, timeout=timeout, isolation_level=None, factory=SpoolConnection, uri=bool(uri)
    )
    conn.db_path = path
    return conn


def test_a_damaged_database_names_the_fix_and_following_it_loses_no_document(
    site: Site, tmp_path: Path
) -> None:
    scan_one(site, tmp_path, "first")
    db = site.device.home / "spool" / "spool.db"
    for extra in (db.with_name("spool.db-wal"), db.with_name("spool.db-shm")):
        extra.unlink(missing_ok=True)
    db.write_bytes(b"\x00garbage" * 512)

    status = site.run("status")

    lines = status.stderr.strip().splitlines()
    assert status.returncode != 0 and len(lines) == 1, status.stderr
    assert lines[0].startswith(f"error: the spool database {db} is damaged")
    assert f"mv {db} {db}.damaged" in lines[0]
    db.rename(db.with_name("spool.db.damaged"))  # what the line says
    scan_one(site, tmp_path, "second")  # starts with recovery, as the services do
    summary = json.loads(site.run("status", "--json", check=True).stdout)
    assert summary["pending_docs"] == 2  # the first document was adopted again


def test_a_locked_database_is_named_with_the_other_process(tmp_path: Path) -> None:
    db = tmp_path / "spool.db"
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO t VALUES (1)")

    with pytest.raises(SpoolError) as caught:
        guarded(db).execute("INSERT INTO t VALUES (2)")

    assert (
        caught.value.message
        == f"the spool database {db} is locked by another process (waited 30 s)"
    )
    assert "systemctl status sohoa-agent sohoa-sync" in caught.value.hint
    holder.execute("COMMIT")
    assert holder.execute("SELECT x FROM t").fetchall() == [(1,)]


def test_a_read_only_database_points_at_the_storage(tmp_path: Path) -> None:
    db = tmp_path / "spool" / "spool.db"
    db.parent.mkdir()
    sqlite3.connect(db).execute("CREATE TABLE t (x)")

    conn = guarded(db, uri=f"file:{db}?mode=ro")
    with pytest.raises(SpoolError) as caught:
        conn.execute("INSERT INTO t VALUES (1)")

    assert caught.value.message.startswith(f"the spool database {db} is read-only")
    assert "dmesg" in caught.value.hint and "nothing was lost" in caught.value.hint


def test_a_full_disk_is_left_to_the_spool_as_enospc(tmp_path: Path) -> None:
    conn = guarded(tmp_path / "x.db")
    conn.execute("CREATE TABLE t (x)")
    conn.execute("PRAGMA max_page_count=2")  # SQLite's own 'database or disk is full'

    with pytest.raises(sqlite3.OperationalError, match="full"):
        conn.execute("INSERT INTO t VALUES (?)", (b"x" * 100_000,))
