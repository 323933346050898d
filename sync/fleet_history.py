"""The fleet's history: per device and day, the largest backlog and the pages captured.

``<home>/fleet/history.db`` (SQLite, WAL), or the PostgreSQL database of
``[warehouse] index`` (``sync.fleet_history_pg``). ``record`` folds the current views
in (at most once a minute from the service); ``days`` gives a device's last 30
days for its chart. Days are UTC dates.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from sync.durable import enable_wal
from sync.fleet_model import DeviceView

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS daily (device TEXT NOT NULL, day TEXT NOT NULL,"
    " pending_docs INTEGER NOT NULL DEFAULT 0, pending_bytes INTEGER NOT NULL DEFAULT 0,"
    " pages INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (device, day))"
)


def day_of(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).date().isoformat()


def daily_rows(views: Iterable[DeviceView], now: float) -> list[tuple[str, str, int, int, int]]:
    """(device, day, backlog, backlog bytes, pages today) of every device heard from."""
    day = day_of(now)
    rows = []
    for v in views:
        f = v.facts()
        if f["last_seen"] is not None:
            pending, size, pages = f["pending_docs"], f["pending_bytes"], f["pages_today"]
            rows.append((v.device, day, int(pending or 0), int(size or 0), int(pages or 0)))
    return rows


class History(Protocol):
    def record(self, views: Iterable[DeviceView], now: float) -> None: ...

    def days(self, device: str, now: float, count: int = 30) -> list[tuple[str, int, int]]: ...

    def close(self) -> None: ...


def open_history(index: str, home: Path) -> History:
    """Where the warehouse index is, the history is: SQLite under the home, or the same
    PostgreSQL database."""
    if index.startswith(("postgresql://", "postgres://")):
        from sync.fleet_history_pg import PostgresFleetHistory

        return PostgresFleetHistory(index)
    return FleetHistory(home / "fleet" / "history.db")


class FleetHistory:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock = threading.Lock()
        self._c = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        enable_wal(self._c)
        self._c.execute(SCHEMA)

    def record(self, views: Iterable[DeviceView], now: float) -> None:
        rows = daily_rows(views, now)
        with self._lock:
            self._c.execute("BEGIN")
            self._c.executemany(
                "INSERT INTO daily VALUES (?,?,?,?,?) ON CONFLICT (device, day) DO UPDATE SET"
                " pending_docs = max(pending_docs, excluded.pending_docs),"
                " pending_bytes = max(pending_bytes, excluded.pending_bytes),"
                " pages = max(pages, excluded.pages)",
                rows,
            )
            self._c.execute("COMMIT")

    def days(self, device: str, now: float, count: int = 30) -> list[tuple[str, int, int]]:
        """(day, largest backlog, pages) for each of the last ``count`` days, oldest first;
        a day the device did not report is (day, 0, 0)."""
        first = dt.datetime.fromtimestamp(now, dt.UTC).date() - dt.timedelta(days=count - 1)
        with self._lock:
            got = {
                row[0]: (int(row[1]), int(row[2]))
                for row in self._c.execute(
                    "SELECT day, pending_docs, pages FROM daily WHERE device = ? AND day >= ?",
                    (device, first.isoformat()),
                )
            }
        days = [(first + dt.timedelta(days=i)).isoformat() for i in range(count)]
        return [(d, *got.get(d, (0, 0))) for d in days]

    def close(self) -> None:
        self._c.close()
