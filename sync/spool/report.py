"""Read-only summaries of the spool for ``sohoa status`` and the health report."""

from __future__ import annotations

import sqlite3
from typing import Any

from sync.durable import iso
from sync.spool.schema import PENDING, STATES, SpoolStatus


def spool_status(
    conn: sqlite3.Connection, now: float, disk_free: int, last_sync: str | None
) -> SpoolStatus:
    """Counts by state, the pending backlog and the age of its oldest document."""
    by_state = {s: 0 for s in STATES}
    for state, n in conn.execute("SELECT state, count(*) FROM documents GROUP BY state"):
        by_state[state] = n
    placeholders = ",".join("?" * len(PENDING))
    row = conn.execute(
        f"SELECT count(*), coalesce(sum(bytes), 0), min(created_at) FROM documents"  # noqa: S608
        f" WHERE state IN ({placeholders})",
        PENDING,
    ).fetchone()
    oldest = None if row[2] is None else round(max(0.0, now - row[2]), 1)
    return SpoolStatus(by_state, row[0], row[1], oldest, disk_free, last_sync)


def batch_stats(conn: sqlite3.Connection, since: float) -> dict[str, Any]:
    """Pages, blank rate and barcode read rate of batches started since ``since``."""
    row = conn.execute(
        "SELECT coalesce(sum(pages_in),0), coalesce(sum(blank),0), coalesce(sum(barcode_pages),0),"
        " max(ended_at) FROM batches WHERE started_at >= ?",
        (since,),
    ).fetchone()
    last, total = conn.execute(
        "SELECT max(ended_at), coalesce(sum(pages_in),0) FROM batches"
    ).fetchone()
    pages = int(row[0])
    return {
        "pages_today": pages,
        "pages_total": int(total),  # since install (batches are kept)
        "blank_rate": round(row[1] / pages, 3) if pages else None,
        "barcode_read_rate": round(row[2] / pages, 3) if pages else None,
        "last_batch": iso(last) if last else None,
    }
