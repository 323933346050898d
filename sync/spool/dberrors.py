"""The spool database's failures, as one line each with what to do.

Every statement the spool runs goes through ``SpoolConnection.execute``, so a
locked, read-only or damaged ``spool.db`` reaches the officer or the technician
as a ``SpoolError`` naming the cause, never as an internal error. A full disk
is left as SQLite reports it: ``Spool.transaction`` turns it into ENOSPC.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sync.errors import SpoolError

NOTHING_LOST = "nothing was lost"


def spool_db_error(exc: sqlite3.Error, path: Path) -> SpoolError:
    """The one line for ``exc`` raised by the spool database at ``path``."""
    text = str(exc)
    if "locked" in text or "busy" in text:
        return SpoolError(
            f"the spool database {path} is locked by another process (waited 30 s)",
            "stop other sohoa commands (systemctl status sohoa-agent sohoa-sync) and try"
            f" again; {NOTHING_LOST}",
        )
    if "readonly" in text or "read-only" in text:
        return SpoolError(
            f"the spool database {path} is read-only ({text})",
            "the storage may have been remounted read-only after errors: check dmesg and the"
            f" card, and that {path.parent.parent} belongs to the sohoa user; {NOTHING_LOST}",
        )
    if "unable to open" in text:
        return SpoolError(
            f"cannot open the spool database {path} ({text})",
            f"check that {path.parent} exists and belongs to the sohoa user",
        )
    return SpoolError(
        f"the spool database {path} is damaged ({text})",
        f"move it aside (mv {path} {path}.damaged) and restart sohoa-sync: every sealed"
        " envelope in spool/env is adopted again; nothing was deleted",
    )


def _passes(exc: sqlite3.Error) -> bool:
    """Errors the spool handles itself: a full disk (ENOSPC) and programming errors."""
    return "full" in str(exc) or isinstance(exc, sqlite3.ProgrammingError | sqlite3.IntegrityError)


class SpoolConnection(sqlite3.Connection):
    """A connection whose failures name the database and the fix (``spool_db_error``)."""

    db_path = Path("spool.db")

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        try:
            return super().execute(sql, parameters)
        except sqlite3.Error as exc:
            if _passes(exc):
                raise
            raise spool_db_error(exc, self.db_path) from exc

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> sqlite3.Cursor:
        try:
            return super().executemany(sql, parameters)
        except sqlite3.Error as exc:
            if _passes(exc):
                raise
            raise spool_db_error(exc, self.db_path) from exc


def connect(path: Path) -> SpoolConnection:
    try:
        conn = sqlite3.connect(path, timeout=30, isolation_level=None, factory=SpoolConnection)
    except sqlite3.Error as exc:
        raise spool_db_error(exc, path) from exc
    conn.db_path = path
    return conn
