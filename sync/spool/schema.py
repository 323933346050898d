"""The spool database's schema, its versioned migrations, and the values read from it.

The schema version is SQLite's ``user_version``. ``migrate`` brings a spool of
any earlier version up to ``SCHEMA_VERSION`` one step at a time, each step in
one transaction with its version bump, so a power cut during an upgrade in the
field leaves either the old schema or the new one, and never loses a row.
Tables are declared with sqlite-utils; the state changes themselves stay raw
SQL in ``store.py``, where each statement's durability is chosen by hand.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlite_utils

from sync.errors import SpoolError

STATES = ("captured", "sealed", "queued", "sent", "stored", "purged")
PENDING = ("captured", "sealed", "queued", "sent")


@dataclass(frozen=True)
class SpoolDoc:
    doc_id: str
    batch_id: str
    state: str
    bytes: int
    pages: int
    doc_class: str
    created_at: float
    envelope: Path
    pdf_sha256: str | None = None


@dataclass(frozen=True)
class SpoolStatus:
    by_state: dict[str, int]
    pending_docs: int
    pending_bytes: int
    oldest_pending_age_s: float | None
    disk_free_bytes: int
    last_sync: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "by_state": self.by_state,
            "pending_docs": self.pending_docs,
            "pending_bytes": self.pending_bytes,
            "oldest_pending_age_s": self.oldest_pending_age_s,
            "disk_free_bytes": self.disk_free_bytes,
            "last_sync": self.last_sync,
        }


@dataclass(frozen=True)
class RecoveryReport:
    temp_removed: int = 0
    finished: int = 0
    adopted: int = 0
    lost: int = 0
    missing: tuple[str, ...] = field(default_factory=tuple)

    @property
    def clean(self) -> bool:
        return not (self.temp_removed or self.finished or self.adopted or self.lost or self.missing)


def _v1_baseline(db: sqlite_utils.Database) -> None:
    """The schema of the first release (spools written before versioning have it)."""
    db.table("documents").create(
        {
            "doc_id": str,
            "batch_id": str,
            "state": str,
            "bytes": int,
            "pages": int,
            "doc_class": str,
            "pdf_sha256": str,
            "ciphertext_sha256": str,
            "created_at": float,
            "queued_at": float,
            "sent_at": float,
            "stored_at": float,
            "purged_at": float,
            "receipt": str,
        },
        pk="doc_id",
        not_null={"batch_id", "state", "bytes", "pages", "doc_class", "created_at"},
        defaults={"doc_class": "normal"},
        if_not_exists=True,
    )
    db.table("documents").create_index(["state"], index_name="documents_state", if_not_exists=True)
    db.table("batches").create(
        {
            "batch_id": str,
            "started_at": float,
            "ended_at": float,
            "pages_in": int,
            "documents": int,
            "blank": int,
            "barcode_pages": int,
            "status": str,
            "warnings": str,
        },
        pk="batch_id",
        not_null={"started_at", "pages_in", "documents", "blank", "barcode_pages", "status"},
        defaults={
            "pages_in": 0,
            "documents": 0,
            "blank": 0,
            "barcode_pages": 0,
            "status": "open",
            "warnings": "[]",
        },
        if_not_exists=True,
    )
    db.table("audit").create(
        {"seq": int, "ts": str, "kind": str, "body": str, "prev": str, "hash": str},
        pk="seq",
        not_null={"ts", "kind", "body", "prev", "hash"},
        if_not_exists=True,
    )
    db.table("meta").create(
        {"key": str, "value": str}, pk="key", not_null={"value"}, if_not_exists=True
    )


def _v2_status_channel(db: sqlite_utils.Database) -> None:
    """The capture -> sync status channel (scanner state for the health report)."""
    db.table("status").create(
        {"key": str, "value": str, "updated_at": float},
        pk="key",
        not_null={"value", "updated_at"},
        if_not_exists=True,
    )


MIGRATIONS: tuple[Callable[[sqlite_utils.Database], None], ...] = (
    _v1_baseline,
    _v2_status_channel,
)
SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


# A release opens a spool one schema version ahead of its own, so that a device whose new
# release was rolled back keeps working on the spool that release migrated. That holds
# because every migration is additive: new tables, and new columns with defaults that
# the older release's statements never name. A migration that is not must wait a
# release, and the release bundle's spool_schema (sync.release.manifest) refuses a
# jump of two.
FORWARD_COMPATIBLE = 1


def check_version(conn: sqlite3.Connection, path: Path) -> int:
    """The spool's schema version; refused when a release two or more ahead wrote it."""
    found = schema_version(conn)
    if found > SCHEMA_VERSION + FORWARD_COMPATIBLE:
        raise SpoolError(
            f"the spool {path} has schema version {found}, newer than this sohoa knows"
            f" ({SCHEMA_VERSION})",
            "install the newer sohoa release again; nothing in the spool was changed",
        )
    return found


def migrate(conn: sqlite3.Connection, path: Path) -> int:
    """Bring the database at ``conn`` to ``SCHEMA_VERSION``; the version it had before.

    ``conn`` must be in autocommit mode (``isolation_level=None``)."""
    found = check_version(conn, path)
    db = sqlite_utils.Database(conn)
    for version in range(found + 1, SCHEMA_VERSION + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            MIGRATIONS[version - 1](db)
            conn.execute(f"PRAGMA user_version = {version}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    return found
