"""The device's facts for the counter page, read from the spool: scanner, disk, sync.

The sync service runs in another process; it leaves the link's state in the
spool's ``meta`` table under ``link`` (``{"up", "at", "rate_bps"}``), which is
all the page needs to say whether documents are leaving and how soon the
backlog is gone.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

from sync.errors import SohoaError
from sync.spool.store import Spool

LINK_META = "link"
CACHE_S = 1.0


def link_facts(raw: str | None) -> dict[str, Any]:
    try:
        link = json.loads(raw) if raw else {}
    except ValueError:
        link = {}
    return link if isinstance(link, dict) else {}


def device_facts(spool: Spool) -> dict[str, Any]:
    status = spool.status()
    scanner = spool.scanner_status()
    link = link_facts(spool.get_meta(LINK_META))
    rate = float(link.get("rate_bps") or 0)
    eta = status.pending_bytes * 8 / rate if rate > 0 and status.pending_bytes else None
    return {
        "scanner": {**scanner.to_json(), "state": scanner.state},
        "disk": {"free_bytes": status.disk_free_bytes},
        "sync": {
            "pending_docs": status.pending_docs,
            "pending_bytes": status.pending_bytes,
            "oldest_pending_age_s": status.oldest_pending_age_s,
            "last_receipt": status.last_sync,
            "link_up": bool(link.get("up")),
            "link_at": link.get("at"),
            "rate_bps": rate or None,
            "eta_s": round(eta) if eta is not None else None,
        },
    }


class CachedFacts:
    """``device_facts`` at most once a second, however many pages ask. The spool stays
    open between reads (opening one checks its schema and sets WAL: several times the
    cost of the read), in the thread that reads, which is the page's server thread."""

    def __init__(self, open_spool: Callable[[], Spool]) -> None:
        self._open = open_spool
        self._lock = threading.Lock()
        self._at = float("-inf")
        self._facts: dict[str, Any] = {}
        self._spool: Spool | None = None
        self._thread: int | None = None

    def _read(self) -> dict[str, Any]:
        if self._spool is None or self._thread != threading.get_ident():
            self._spool, self._thread = self._open(), threading.get_ident()
        try:
            return device_facts(self._spool)
        except SohoaError:
            self._spool.close()
            self._spool = None
            raise

    def invalidate(self) -> None:
        """Read again at the next call: a batch has just changed the spool or the scanner."""
        with self._lock:
            self._at = float("-inf")

    def __call__(self) -> dict[str, Any]:
        with self._lock:
            if time.monotonic() - self._at > CACHE_S:
                try:
                    self._facts = self._read()
                except SohoaError as exc:
                    self._facts = {"error": exc.line()}
                self._at = time.monotonic()
            return self._facts
