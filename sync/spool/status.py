"""The capture process's facts for the sync process's health report.

Capture and sync run as two services; this record is how the scanner's state
reaches the retained health message. It holds no personal data (no codes, no
names, no page images) and lives in the spool database, so a restart of
either service keeps it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class ScannerStatus:
    present: bool | None = None
    model: str | None = None
    last_error: str | None = None
    last_error_at: str | None = None
    jams: int = 0
    last_ok_at: str | None = None  # the last time a batch's first page came through

    @property
    def state(self) -> str:
        """ready | jam | no_paper | cover_open | absent | error | unknown, for the counter."""
        if self.present is False:
            return "absent"
        failing = self.last_error_at is not None and (
            self.last_ok_at is None or self.last_error_at > self.last_ok_at
        )
        if failing:
            text = (self.last_error or "").lower()
            for needle, state in (
                ("jam", "jam"),
                ("no paper", "no_paper"),
                ("cover", "cover_open"),
            ):
                if needle in text:
                    return state
            return "error"
        return "ready" if self.present else "unknown"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "state": self.state}

    def dumps(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def load_scanner_status(text: str | None) -> ScannerStatus:
    """The stored record, or an empty one when none was written or it is unreadable."""
    if not text:
        return ScannerStatus()
    try:
        raw = json.loads(text)
    except ValueError:
        return ScannerStatus()
    if not isinstance(raw, dict):
        return ScannerStatus()
    known = {k: v for k, v in raw.items() if k in ScannerStatus.__dataclass_fields__}
    try:
        return ScannerStatus(**known)
    except TypeError:
        return ScannerStatus()


def scanner_seen(
    status: ScannerStatus, *, model: str | None, at: str | None = None
) -> ScannerStatus:
    """The scanner answered (at ``at``): present, with its model if known; the last error
    stays on record, older than ``last_ok_at``."""
    return replace(status, present=True, model=model or status.model, last_ok_at=at)


def scanner_failed(status: ScannerStatus, *, error: str, at: str, jam: bool) -> ScannerStatus:
    """The scanner failed with ``error`` (one line, no personal data) at time ``at``."""
    return replace(
        status,
        present=status.present if jam else False,
        last_error=error,
        last_error_at=at,
        jams=status.jams + (1 if jam else 0),
    )
