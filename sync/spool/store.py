"""The device's durable spool: envelope files indexed in SQLite.

Envelope files are written temp file -> fsync -> rename -> fsync(dir); the
index runs in WAL mode with ``synchronous=FULL``. Document states:
captured -> sealed -> queued -> sent -> stored -> purged. ``recover()`` resolves
every crash point at start-up. Nothing that is not ``stored`` is ever deleted.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sync.durable import enable_wal, fsync_dir, fsync_file, iso
from sync.errors import SpoolError, SpoolFullError
from sync.spool.audit import AuditEntry, chain_entry
from sync.spool.dberrors import connect
from sync.spool.recovery import recover_spool
from sync.spool.report import batch_stats, spool_status
from sync.spool.schema import (
    RecoveryReport,
    SpoolDoc,
    SpoolStatus,
    check_version,
    migrate,
)
from sync.spool.status import ScannerStatus, load_scanner_status

log = logging.getLogger("sohoa.spool")

ENVELOPE_SUFFIX = ".env"
SCANNER_STATUS_KEY = "scanner"


class Spool:
    """Envelope files under ``root/env`` indexed by ``root/spool.db``."""

    def __init__(
        self, root: Path, *, reserve_bytes: int = 0, clock: Callable[[], float] = time.time
    ) -> None:
        self.root = root
        self.env_dir = root / "env"
        self.tmp_dir = root / "tmp"
        self.reserve_bytes = reserve_bytes
        self.clock = clock
        try:
            for d in (root, self.env_dir, self.tmp_dir):
                d.mkdir(parents=True, exist_ok=True, mode=0o700)
        except PermissionError:
            raise SpoolError(
                f"cannot create the spool in {root} (permission denied)",
                "set $SOHOA_HOME to a writable directory or run as the sohoa user",
            ) from None
        self._conn = connect(root / "spool.db")
        try:
            check_version(self._conn, root / "spool.db")  # before anything writes to it
            enable_wal(self._conn)
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA busy_timeout=30000")
            self.schema_found = migrate(self._conn, root / "spool.db")
        except BaseException:
            self._conn.close()
            raise
        self._capture_lock: int | None = None

    def close(self) -> None:
        self._release_capture()
        self._conn.close()

    # A batch in flight owns files in tmp/ and may hold a 'captured' row for an
    # instant; recovery in another process (the sync service starting) must not
    # take them. Batches hold a shared flock, recovery asks for an exclusive one.

    def _lock_fd(self) -> int:
        return os.open(self.root / "capture.lock", os.O_RDWR | os.O_CREAT, 0o600)

    def _release_capture(self) -> None:
        if self._capture_lock is not None:
            os.close(self._capture_lock)
            self._capture_lock = None

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transactions and audit ------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One durable transaction; a full disk surfaces as ENOSPC like a file write."""
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            if "full" in str(exc):
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise OSError(errno.ENOSPC, "the spool index cannot grow: disk full") from exc
            raise

    def audit(self, conn: sqlite3.Connection, kind: str, body: dict[str, Any]) -> None:
        row = conn.execute(
            "SELECT seq, ts, kind, body, prev, hash FROM audit ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        prev = (
            None
            if row is None
            else AuditEntry(row[0], row[1], row[2], json.loads(row[3]), row[4], row[5])
        )
        e = chain_entry(prev, iso(self.clock()), kind, body)
        conn.execute(
            "INSERT INTO audit (seq, ts, kind, body, prev, hash) VALUES (?,?,?,?,?,?)",
            (e.seq, e.ts, e.kind, json.dumps(e.body, sort_keys=True), e.prev, e.hash),
        )

    def document_states(self) -> dict[str, str]:
        """Every document's state, by id."""
        return dict(self._conn.execute("SELECT doc_id, state FROM documents").fetchall())

    def audit_entries(self) -> list[AuditEntry]:
        rows = self._conn.execute("SELECT seq, ts, kind, body, prev, hash FROM audit ORDER BY seq")
        return [AuditEntry(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5]) for r in rows]

    def set_meta(self, key: str, value: str) -> None:
        self._conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def get_meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def scanner_status(self) -> ScannerStatus:
        """What capture last recorded about the scanner (see ``sync.spool.status``)."""
        row = self._conn.execute(
            "SELECT value FROM status WHERE key = ?", (SCANNER_STATUS_KEY,)
        ).fetchone()
        return load_scanner_status(None if row is None else str(row[0]))

    def record_scanner(self, status: ScannerStatus) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO status (key, value, updated_at) VALUES (?, ?, ?)",
                (SCANNER_STATUS_KEY, status.dumps(), self.clock()),
            )

    # -- capture side ----------------------------------------------------------

    def disk_free(self) -> int:
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize

    def check_space(self) -> None:
        """Refuse to start a batch when free space is below the reserve."""
        free = self.disk_free()
        if free < self.reserve_bytes:
            raise SpoolFullError.low_disk(free, self.reserve_bytes)

    def begin_batch(self, batch_id: str) -> None:
        if self._capture_lock is None:
            fd = self._lock_fd()
            fcntl.flock(fd, fcntl.LOCK_SH)
            self._capture_lock = fd
        with self.transaction() as c:
            c.execute(
                "INSERT INTO batches (batch_id, started_at) VALUES (?, ?)", (batch_id, self.clock())
            )

    def end_batch(
        self,
        batch_id: str,
        *,
        page_sha256: list[str],
        separators: list[int],
        documents: list[str],
        warnings: list[str],
        blank: int,
        barcode_pages: int,
        status: str,
    ) -> None:
        with self.transaction() as c:
            c.execute(
                "UPDATE batches SET ended_at=?, pages_in=?, documents=?, blank=?, barcode_pages=?,"
                " status=?, warnings=? WHERE batch_id=?",
                (
                    self.clock(),
                    len(page_sha256),
                    len(documents),
                    blank,
                    barcode_pages,
                    status,
                    json.dumps(warnings, ensure_ascii=False),
                    batch_id,
                ),
            )
        self._release_capture()

    def record_batch_pages(
        self, batch_id: str, page_sha256: list[str], separators: list[int]
    ) -> None:
        """Audit the batch's page hashes before its documents are committed."""
        with self.transaction() as c:
            self.audit(
                c,
                "batch",
                {
                    "batch_id": batch_id,
                    "page_sha256": page_sha256,
                    "separator_sha256": [
                        page_sha256[i] for i in separators if i < len(page_sha256)
                    ],
                },
            )

    def temp_envelope(self, doc_id: str) -> Path:
        return self.tmp_dir / f"{doc_id}{ENVELOPE_SUFFIX}.tmp"

    def envelope_path(self, doc_id: str) -> Path:
        return self.env_dir / f"{doc_id}{ENVELOPE_SUFFIX}"

    def commit_document(
        self,
        tmp: Path,
        *,
        doc_id: str,
        batch_id: str,
        pages: int,
        page_sha256: list[str],
        pdf_sha256: str,
        ciphertext_sha256: str,
        doc_class: str = "normal",
    ) -> SpoolDoc:
        """Make a sealed envelope durable and queue it for sync.

        The row is written (state ``captured``) before the rename so that a crash
        at any point leaves either a row recovery can finish or nothing at all.
        """
        fsync_file(tmp)
        size = tmp.stat().st_size
        now = self.clock()
        with self.transaction() as c:
            c.execute(
                "INSERT INTO documents (doc_id, batch_id, state, bytes, pages, doc_class,"
                " pdf_sha256, ciphertext_sha256, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    doc_id,
                    batch_id,
                    "captured",
                    size,
                    pages,
                    doc_class,
                    pdf_sha256,
                    ciphertext_sha256,
                    now,
                ),
            )
        final = self.envelope_path(doc_id)
        tmp.replace(final)
        # tmp/ is not synced: a stale old name after a crash is a second link to a
        # complete file, and recovery removes it.
        fsync_dir(self.env_dir)
        with self.transaction() as c:
            c.execute(
                "UPDATE documents SET state='queued', queued_at=? WHERE doc_id=?", (now, doc_id)
            )
            self.audit(
                c,
                "document",
                {
                    "doc_id": doc_id,
                    "batch_id": batch_id,
                    "page_sha256": page_sha256,
                    "pdf_sha256": pdf_sha256,
                    "ciphertext_sha256": ciphertext_sha256,
                },
            )
        return SpoolDoc(doc_id, batch_id, "queued", size, pages, doc_class, now, final, pdf_sha256)

    # -- sync side -------------------------------------------------------------

    def _doc(self, row: sqlite3.Row | tuple[Any, ...]) -> SpoolDoc:
        return SpoolDoc(
            doc_id=row[0],
            batch_id=row[1],
            state=row[2],
            bytes=row[3],
            pages=row[4],
            doc_class=row[5],
            created_at=row[6],
            envelope=self.envelope_path(row[0]),
            pdf_sha256=row[7],
        )

    _COLS = "doc_id, batch_id, state, bytes, pages, doc_class, created_at, pdf_sha256"

    def pending(self) -> list[SpoolDoc]:
        """Documents to upload, cover-sheet class first, then smaller first."""
        rows = self._conn.execute(
            f"SELECT {self._COLS} FROM documents WHERE state IN ('queued', 'sent')"  # noqa: S608
            " ORDER BY doc_class = 'cover' DESC, bytes ASC, created_at ASC"
        ).fetchall()
        return [self._doc(r) for r in rows]

    def get(self, doc_id: str) -> SpoolDoc | None:
        row = self._conn.execute(
            f"SELECT {self._COLS} FROM documents WHERE doc_id = ?",  # noqa: S608
            (doc_id,),
        ).fetchone()
        return None if row is None else self._doc(row)

    def documents(self) -> list[SpoolDoc]:
        rows = self._conn.execute(f"SELECT {self._COLS} FROM documents ORDER BY created_at")  # noqa: S608
        return [self._doc(r) for r in rows]

    def mark_sent(self, doc_id: str) -> None:
        with self.transaction() as c:
            cur = c.execute(
                "UPDATE documents SET state='sent', sent_at=? WHERE doc_id=? AND state='queued'",
                (self.clock(), doc_id),
            )
            if cur.rowcount:
                self.audit(c, "sent", {"doc_id": doc_id})

    def mark_stored(self, doc_id: str, receipt: str) -> bool:
        """Record a verified warehouse receipt; False if the document was not pending."""
        now = self.clock()
        with self.transaction() as c:
            cur = c.execute(
                "UPDATE documents SET state='stored', stored_at=?, receipt=? WHERE doc_id=?"
                " AND state IN ('queued', 'sent')",
                (now, receipt, doc_id),
            )
            if not cur.rowcount:
                return False
            self.audit(c, "receipt", {"doc_id": doc_id, "receipt_sha256": _sha(receipt)})
        self.set_meta("last_sync", iso(now))
        return True

    def purge_expired(self, retention_s: float) -> int:
        """Delete envelope files of documents stored longer than the retention."""
        cutoff = self.clock() - retention_s
        rows = self._conn.execute(
            "SELECT doc_id FROM documents WHERE state='stored' AND stored_at <= ?", (cutoff,)
        ).fetchall()
        for (doc_id,) in rows:
            with contextlib.suppress(FileNotFoundError):
                self.envelope_path(doc_id).unlink()
            with self.transaction() as c:
                c.execute(
                    "UPDATE documents SET state='purged', purged_at=? WHERE doc_id=? AND state='stored'",
                    (self.clock(), doc_id),
                )
                self.audit(c, "purge", {"doc_id": doc_id})
        if rows:
            fsync_dir(self.env_dir)
        return len(rows)

    def status(self) -> SpoolStatus:
        return spool_status(self._conn, self.clock(), self.disk_free(), self.get_meta("last_sync"))

    def batch_stats(self, since: float) -> dict[str, Any]:
        """Pages, blank and barcode rates of the batches started since ``since``."""
        return batch_stats(self._conn, since)

    # -- recovery --------------------------------------------------------------

    def recover(self) -> RecoveryReport:
        """Resolve every crash point at start-up (see ``sync.spool.recovery``)."""
        fd = self._lock_fd()
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                idle = True
            except BlockingIOError:  # a batch is in flight: leave its files alone
                idle = False
            return recover_spool(self, idle=idle)
        finally:
            os.close(fd)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
