"""The durable spool: recovery from every crash point, the state machine, status
figures, the SQLite settings and the fsync failure path, on a real spool."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sync import keys
from sync.durable import fsync_or_stop
from sync.envelope.seal import EnvelopeWriter
from sync.errors import SpoolError
from sync.spool.schema import RecoveryReport
from sync.spool.store import Spool


class Clock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def sealed_envelope(path: Path, doc_id: str, tmp: Path) -> str:
    """A real sealed envelope at ``path``; returns its ciphertext hash."""
    pub = keys.init_warehouse_keys(tmp / "wh.key", tmp / "wh.pub", force=True)
    with path.open("wb") as fh:
        w = EnvelopeWriter(
            fh,
            device_id="dev-1",
            doc_id=doc_id,
            warehouse=pub,
            device_key=Ed25519PrivateKey.generate(),
        )
        w.write(b"payload " * 100)
        header = w.close()
    return header.ciphertext_sha256


def commit(spool: Spool, doc_id: str, data: bytes = b"sealed", batch: str = "b1") -> None:
    tmp = spool.temp_envelope(doc_id)
    tmp.write_bytes(data)
    spool.commit_document(
        tmp,
        doc_id=doc_id,
        batch_id=batch,
        pages=1,
        page_sha256=[hashlib.sha256(doc_id.encode()).hexdigest()],
        pdf_sha256="p" * 64,
        ciphertext_sha256="c" * 64,
    )


def captured_row(spool: Spool, doc_id: str) -> None:
    """The row exactly as commit_document writes it before the rename."""
    spool._conn.execute(
        "INSERT INTO documents (doc_id, batch_id, state, bytes, pages, created_at)"
        " VALUES (?, 'b1', 'captured', 6, 1, 1)",
        (doc_id,),
    )


def states(spool: Spool) -> dict[str, str]:
    return dict(spool._conn.execute("SELECT doc_id, state FROM documents").fetchall())


def recovery_actions(spool: Spool) -> list[tuple[str, str]]:
    return [
        (e.body["doc_id"], e.body["action"]) for e in spool.audit_entries() if e.kind == "recovery"
    ]


def crash_captured_final(spool: Spool) -> None:
    captured_row(spool, "d1")
    spool.envelope_path("d1").write_bytes(b"sealed")


def crash_captured_tmp(spool: Spool) -> None:
    captured_row(spool, "d1")
    spool.temp_envelope("d1").write_bytes(b"sealed")


def crash_captured_nothing(spool: Spool) -> None:
    captured_row(spool, "d1")


def crash_scratch_left(spool: Spool) -> None:
    (spool.tmp_dir / "batch-b9.scratch").write_bytes(b"noise")
    spool.temp_envelope("d9").write_bytes(b"half an envelo")


def crash_stale_tmp_name(spool: Spool) -> None:
    """tmp/ is not fsynced after the rename: the old name may come back as a second link."""
    commit(spool, "d1")
    os.link(spool.envelope_path("d1"), spool.temp_envelope("d1"))


def crash_queued_file_gone(spool: Spool) -> None:
    commit(spool, "d1")
    spool.envelope_path("d1").unlink()


@pytest.mark.parametrize(
    "crash, report, after, actions, files",
    [
        (
            crash_captured_final,
            RecoveryReport(finished=1),
            {"d1": "queued"},
            [("d1", "finished")],
            ["env/d1.env"],
        ),
        (
            crash_captured_tmp,
            RecoveryReport(finished=1),
            {"d1": "queued"},
            [("d1", "finished")],
            ["env/d1.env"],
        ),
        (
            crash_captured_nothing,
            RecoveryReport(lost=1),
            {},
            [("d1", "lost_before_seal")],
            [],
        ),
        (crash_scratch_left, RecoveryReport(temp_removed=2), {}, [], []),
        (
            crash_stale_tmp_name,
            RecoveryReport(temp_removed=1),
            {"d1": "queued"},
            [],
            ["env/d1.env"],
        ),
        (
            crash_queued_file_gone,
            RecoveryReport(missing=("d1",)),
            {"d1": "queued"},
            [],
            [],
        ),
    ],
    ids=[
        "captured+final",
        "captured+tmp",
        "captured+nothing",
        "scratch",
        "stale tmp name",
        "queued+vanished",
    ],
)
def test_restart_after_crash_resolves_every_crash_point(
    tmp_path: Path, crash, report, after, actions, files
) -> None:
    with Spool(tmp_path / "spool") as spool:
        crash(spool)
    with Spool(tmp_path / "spool") as spool:  # the restart
        assert spool.recover() == report
        assert states(spool) == after
        assert recovery_actions(spool) == actions
        assert (
            sorted(
                str(p.relative_to(spool.root))
                for d in (spool.env_dir, spool.tmp_dir)
                for p in d.iterdir()
            )
            == files
        )
        assert spool.recover() == RecoveryReport(missing=report.missing)  # idempotent


def test_envelope_without_row_is_adopted_and_queued(tmp_path: Path) -> None:
    with Spool(tmp_path / "spool") as spool:
        cipher = sealed_envelope(spool.envelope_path("d7"), "d7", tmp_path)
        assert spool.recover() == RecoveryReport(adopted=1)
        row = spool._conn.execute(
            "SELECT state, batch_id, ciphertext_sha256 FROM documents WHERE doc_id='d7'"
        ).fetchone()
        assert row == ("queued", "recovered", cipher)
        assert [d.doc_id for d in spool.pending()] == ["d7"]
        assert recovery_actions(spool) == [("d7", "adopted")]


def test_unreadable_orphan_envelope_is_kept_not_deleted(tmp_path: Path) -> None:
    with Spool(tmp_path / "spool") as spool:
        spool.envelope_path("d8").write_bytes(b"not an envelope")
        assert spool.recover() == RecoveryReport()
        assert spool.envelope_path("d8").read_bytes() == b"not an envelope"


def test_recovery_leaves_a_batch_in_flight_alone(tmp_path: Path) -> None:
    with Spool(tmp_path / "spool") as capture, Spool(tmp_path / "spool") as sync:
        capture.begin_batch("b1")
        capture.temp_envelope("d1").write_bytes(b"being written")
        captured_row(capture, "d1")
        assert sync.recover() == RecoveryReport()
        assert capture.temp_envelope("d1").exists() and states(sync) == {"d1": "captured"}
        capture.end_batch(
            "b1",
            page_sha256=[],
            separators=[],
            documents=[],
            warnings=[],
            blank=0,
            barcode_pages=0,
            status="complete",
        )
        assert sync.recover() == RecoveryReport(finished=1)


def test_batch_cut_off_by_a_crash_is_marked_interrupted(tmp_path: Path) -> None:
    with Spool(tmp_path / "spool") as spool:
        spool.begin_batch("b1")
        commit(spool, "d1")
    with Spool(tmp_path / "spool") as spool:
        spool.recover()
        batches = spool._conn.execute("SELECT batch_id, status FROM batches").fetchall()
        assert batches == [("b1", "interrupted")]
        assert states(spool) == {"d1": "queued"}  # what was sealed before the cut stays


@pytest.mark.parametrize(
    "start, stored",
    [("queued", True), ("sent", True), ("stored", False), ("purged", False), (None, False)],
)
def test_receipt_marks_stored_only_a_pending_document(
    tmp_path: Path, start: str | None, stored: bool
) -> None:
    with Spool(tmp_path / "spool") as spool:
        if start is not None:
            commit(spool, "d1")
            spool._conn.execute("UPDATE documents SET state=? WHERE doc_id='d1'", (start,))
        assert spool.mark_stored("d1", '{"status":"stored"}') is stored
        assert states(spool).get("d1") == ("stored" if stored else start)


def test_purge_deletes_only_stored_documents_past_retention(tmp_path: Path) -> None:
    clock = Clock()
    day = 86400.0
    with Spool(tmp_path / "spool", clock=clock) as spool:
        for d in ("old", "young", "queued", "sent"):
            commit(spool, d)
        spool.mark_stored("old", "r1")
        spool.mark_sent("sent")
        clock.t += 20 * day
        spool.mark_stored("young", "r2")
        clock.t += 15 * day  # old stored 35 days ago, young 15 days ago
        assert spool.purge_expired(30 * day) == 1
        assert states(spool) == {
            "old": "purged",
            "young": "stored",
            "queued": "queued",
            "sent": "sent",
        }
        assert sorted(p.name for p in spool.env_dir.iterdir()) == [
            "queued.env",
            "sent.env",
            "young.env",
        ]
        clock.t += 1000 * day  # pending documents never expire
        assert spool.purge_expired(30 * day) == 1
        assert sorted(p.name for p in spool.env_dir.iterdir()) == ["queued.env", "sent.env"]


def test_status_counts_pending_documents_bytes_and_age(tmp_path: Path) -> None:
    clock = Clock()
    with Spool(tmp_path / "spool", clock=clock) as spool:
        commit(spool, "a", b"x" * 100)
        clock.t += 60
        commit(spool, "b", b"x" * 30)
        commit(spool, "c", b"x" * 7)
        spool.mark_sent("b")
        clock.t += 10
        spool.mark_stored("c", "r")
        clock.t += 5
        st = spool.status().to_json()
    assert st.pop("disk_free_bytes") > 0
    assert st == {
        "by_state": {
            "captured": 0,
            "sealed": 0,
            "queued": 1,
            "sent": 1,
            "stored": 1,
            "purged": 0,
        },
        "pending_docs": 2,
        "pending_bytes": 130,
        "oldest_pending_age_s": 75.0,
        "last_sync": "2023-11-14T22:14:30Z",
    }


def test_index_runs_in_wal_mode_with_full_sync(tmp_path: Path) -> None:
    with Spool(tmp_path / "spool") as spool:
        assert spool._conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert spool._conn.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
    conn = sqlite3.connect(tmp_path / "spool" / "spool.db")
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)  # persistent
    conn.close()


def test_failed_fsync_stops_with_a_spool_error(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "f", os.O_CREAT | os.O_WRONLY)
    os.close(fd)
    with pytest.raises(SpoolError, match="the disk refused to save a test file"):
        fsync_or_stop(fd, "a test file")


def test_commit_makes_file_and_its_folder_durable_through_fsync_or_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Observe (not replace) every fsync the commit issues: the file, then its new folder.
    synced: list[str] = []
    real = os.fsync

    def watch(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", watch)
    with Spool(tmp_path / "spool") as spool:
        commit(spool, "d1")
    root = str(tmp_path / "spool")
    assert synced == [f"{root}/tmp/d1.env.tmp", f"{root}/env"]

    def refuse(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", refuse)
    with Spool(tmp_path / "spool") as spool:
        with pytest.raises(SpoolError, match="Input/output error"):
            commit(spool, "d2")
        assert "d2" not in states(spool)  # nothing recorded as safe that is not on disk
