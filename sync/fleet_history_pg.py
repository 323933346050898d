"""The fleet's history on PostgreSQL: the same table and answers as ``FleetHistory``,
in the database the warehouse index uses (``[warehouse] index = "postgresql://…"``)."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterable
from typing import Any

import psycopg

from sync.errors import WarehouseIndexError
from sync.fleet_history import daily_rows, day_of
from sync.fleet_model import DeviceView
from sync.warehouse.index import redacted_dsn

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS fleet_daily (device TEXT NOT NULL, day TEXT NOT NULL,"
    " pending_docs BIGINT NOT NULL DEFAULT 0, pending_bytes BIGINT NOT NULL DEFAULT 0,"
    " pages BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (device, day))"
)
_UPSERT = (
    "INSERT INTO fleet_daily VALUES (%s, %s, %s, %s, %s) ON CONFLICT (device, day) DO UPDATE SET"
    " pending_docs = GREATEST(fleet_daily.pending_docs, excluded.pending_docs),"
    " pending_bytes = GREATEST(fleet_daily.pending_bytes, excluded.pending_bytes),"
    " pages = GREATEST(fleet_daily.pages, excluded.pages)"
)


class PostgresFleetHistory:
    def __init__(self, dsn: str) -> None:
        self._lock = threading.Lock()
        self._where = redacted_dsn(dsn)
        try:
            self._c: psycopg.Connection[tuple[Any, ...]] = psycopg.connect(dsn, autocommit=True)
            self._c.execute(_SCHEMA)
        except psycopg.Error as exc:
            raise WarehouseIndexError(
                f"the fleet history at {self._where} is unreachable ({type(exc).__name__})",
                "check [warehouse] index and that PostgreSQL runs",
            ) from None

    def record(self, views: Iterable[DeviceView], now: float) -> None:
        rows = daily_rows(views, now)
        with self._lock, self._c.transaction():
            self._c.cursor().executemany(_UPSERT, rows)

    def days(self, device: str, now: float, count: int = 30) -> list[tuple[str, int, int]]:
        first = dt.date.fromisoformat(day_of(now)) - dt.timedelta(days=count - 1)
        with self._lock:
            got = {
                r[0]: (int(r[1]), int(r[2]))
                for r in self._c.execute(
                    "SELECT day, pending_docs, pages FROM fleet_daily WHERE device = %s AND day >= %s",
                    (device, first.isoformat()),
                )
            }
        days = [(first + dt.timedelta(days=i)).isoformat() for i in range(count)]
        return [(d, *got.get(d, (0, 0))) for d in days]

    def close(self) -> None:
        self._c.close()
