"""Start-up recovery of the spool from any crash point.

Half-written files, rows without files, files without rows: each is resolved
so that nothing complete is ever deleted. One directory listing and one query,
so start-up stays fast with a large backlog; only orphan files have their
headers read.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sync.durable import fsync_dir
from sync.envelope.reader import read_header
from sync.spool.schema import RecoveryReport

if TYPE_CHECKING:
    from sync.spool.store import Spool

log = logging.getLogger("sohoa.spool")


@dataclass
class _Counts:
    temp_removed: int = 0
    finished: int = 0
    adopted: int = 0
    lost: int = 0
    missing: list[str] = field(default_factory=list)

    def report(self) -> RecoveryReport:
        return RecoveryReport(
            self.temp_removed, self.finished, self.adopted, self.lost, tuple(self.missing)
        )


def _envelopes_on_disk(spool: Spool) -> set[str]:
    suffix = spool.envelope_path("").name
    return {e.name[: -len(suffix)] for e in os.scandir(spool.env_dir) if e.name.endswith(suffix)}


def _finish_captured(spool: Spool, doc_id: str, on_disk: set[str], counts: _Counts) -> None:
    """A row left ``captured``: finish the rename if the sealed file is there, else drop
    the row (the batch is reported interrupted and rescanned)."""
    if doc_id not in on_disk and spool.temp_envelope(doc_id).exists():
        spool.temp_envelope(doc_id).replace(spool.envelope_path(doc_id))
        fsync_dir(spool.env_dir)
        on_disk.add(doc_id)
    action = "finished" if doc_id in on_disk else "lost_before_seal"
    with spool.transaction() as c:
        if action == "finished":
            c.execute(
                "UPDATE documents SET state='queued', queued_at=? WHERE doc_id=?",
                (spool.clock(), doc_id),
            )
            counts.finished += 1
        else:
            c.execute("DELETE FROM documents WHERE doc_id=?", (doc_id,))
            counts.lost += 1
        spool.audit(c, "recovery", {"doc_id": doc_id, "action": action})


def _clear_interrupted(spool: Spool, counts: _Counts) -> None:
    """Batches cut off by the crash are marked, and their scratch files removed."""
    with spool.transaction() as c:
        c.execute(
            "UPDATE batches SET status='interrupted', ended_at=? WHERE status='open'",
            (spool.clock(),),
        )
    for tmp in list(spool.tmp_dir.iterdir()):
        tmp.unlink()
        counts.temp_removed += 1
    if counts.temp_removed:
        fsync_dir(spool.tmp_dir)


def adopt(spool: Spool, doc_id: str) -> int:
    """Index an envelope that has no row (e.g. a restored index); 1 if adopted."""
    f = spool.envelope_path(doc_id)
    try:
        header = read_header(f)
    except Exception as exc:  # a file we cannot read is kept, never deleted
        log.error("unreadable envelope kept for inspection file=%s reason=%s", f.name, exc)
        return 0
    now = spool.clock()
    with spool.transaction() as c:
        cur = c.execute(
            "INSERT OR IGNORE INTO documents (doc_id, batch_id, state, bytes, pages, doc_class,"
            " ciphertext_sha256, created_at, queued_at) VALUES (?,?,?,?,?,?,?,?,?)",
            (
                doc_id,
                "recovered",
                "queued",
                f.stat().st_size,
                0,
                header.doc_class,
                header.ciphertext_sha256,
                now,
                now,
            ),
        )
        if not cur.rowcount:  # a live capture indexed it meanwhile
            return 0
        spool.audit(c, "recovery", {"doc_id": doc_id, "action": "adopted"})
    return 1


def recover_spool(spool: Spool, *, idle: bool) -> RecoveryReport:
    """Resolve every crash point; ``idle`` is False while a batch is in flight in another
    process, whose files are then left alone."""
    counts = _Counts()
    rows = spool.document_states()
    on_disk = _envelopes_on_disk(spool)
    for doc_id, state in rows.items():
        if state == "captured" and idle:
            _finish_captured(spool, doc_id, on_disk, counts)
        elif state in ("sealed", "queued", "sent", "stored") and doc_id not in on_disk:
            counts.missing.append(doc_id)
    if idle:
        _clear_interrupted(spool, counts)
    for doc_id in sorted(on_disk - rows.keys()):
        counts.adopted += adopt(spool, doc_id)
    report = counts.report()
    if not report.clean:
        log.warning(
            "spool recovered temp_removed=%d finished=%d adopted=%d lost=%d missing=%d",
            report.temp_removed,
            report.finished,
            report.adopted,
            report.lost,
            len(report.missing),
        )
    return report
