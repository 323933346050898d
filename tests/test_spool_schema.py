"""A device upgraded in the field migrates its spool without losing a document."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from sync.errors import SpoolError
from sync.spool.schema import SCHEMA_VERSION, schema_version
from sync.spool.status import ScannerStatus
from sync.spool.store import Spool

FIRST_RELEASE = Path(__file__).parent / "data" / "spool-first-release.sql"


def first_release_spool(root: Path) -> Path:
    """A spool directory as the first release left it: the index and its envelope files."""
    (root / "env").mkdir(parents=True)
    with sqlite3.connect(root / "spool.db") as conn:
        conn.executescript(FIRST_RELEASE.read_text())
    (root / "env" / "d20261101T080001aa.env").write_bytes(b"\0" * 2048)
    (root / "env" / "d20261101T080002aa.env").write_bytes(b"\0" * 1024)
    return root


def test_spool_of_the_first_release_migrates_and_keeps_every_document(tmp_path: Path) -> None:
    root = first_release_spool(tmp_path / "spool")

    with Spool(root) as spool:
        found = spool.schema_found
        docs = [(d.doc_id, d.state, d.bytes, d.doc_class) for d in spool.documents()]
        pending = [d.doc_id for d in spool.pending()]
        status = spool.status()
        report = spool.recover()
        spool.record_scanner(ScannerStatus(present=True, model="test:0"))

    assert found == 0
    assert docs == [
        ("d20261101T080001aa", "queued", 2048, "normal"),
        ("d20261101T080002aa", "stored", 1024, "cover"),
    ]
    assert pending == ["d20261101T080001aa"]
    assert (status.pending_docs, status.pending_bytes, status.last_sync) == (
        1,
        2048,
        "2026-11-01T08:00:20Z",
    )
    assert report.clean
    with Spool(root) as again:  # reopening a migrated spool changes nothing
        assert again.schema_found == SCHEMA_VERSION
        assert again.scanner_status() == ScannerStatus(present=True, model="test:0")
    with sqlite3.connect(root / "spool.db") as conn:
        assert schema_version(conn) == SCHEMA_VERSION


def test_new_spool_starts_at_the_current_schema(tmp_path: Path) -> None:
    with Spool(tmp_path / "spool") as spool:
        assert spool.schema_found == 0
    with sqlite3.connect(tmp_path / "spool" / "spool.db") as conn:
        assert schema_version(conn) == SCHEMA_VERSION
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"documents", "batches", "audit", "meta", "status"}


def test_spool_one_schema_ahead_opens_for_the_release_before(tmp_path: Path) -> None:
    """A rolled-back device runs the previous release on the spool the new one migrated."""
    root = first_release_spool(tmp_path / "spool")
    with Spool(root):
        pass
    with sqlite3.connect(root / "spool.db") as conn:
        conn.execute("ALTER TABLE documents ADD COLUMN next_release_field TEXT DEFAULT ''")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with Spool(root) as spool:
        assert spool.schema_found == SCHEMA_VERSION + 1
        assert spool.status().pending_docs == len(spool.pending())
    with sqlite3.connect(root / "spool.db") as conn:
        assert schema_version(conn) == SCHEMA_VERSION + 1  # never taken back


def test_spool_from_two_releases_ahead_is_refused_untouched(tmp_path: Path) -> None:
    root = first_release_spool(tmp_path / "spool")
    with sqlite3.connect(root / "spool.db") as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 2}")
    before = (root / "spool.db").read_bytes()

    with pytest.raises(SpoolError, match="newer than this sohoa knows") as caught:
        Spool(root)

    assert "install the newer sohoa release again" in caught.value.hint
    assert (root / "spool.db").read_bytes() == before
