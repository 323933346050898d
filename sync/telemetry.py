"""Device health telemetry: the retained health JSON central staff watch.

``build_health`` is pure: every probe result is passed in, and a probe that
failed is passed as None, so one bad sensor never breaks the report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sync.spool.schema import SpoolStatus
from sync.spool.status import ScannerStatus


@dataclass(frozen=True)
class LinkState:
    rtt_ms: float | None = None
    modem_signal_dbm: int | None = None
    rate_bps: float | None = None  # the uploader's measured goodput
    # the rate controller's view (sync.mqtt.ledbat): the link's delivery rate, its
    # base round trip and the queueing delay the upload adds, and the window
    estimate_bps: float | None = None
    base_rtt_ms: float | None = None
    queue_delay_ms: float | None = None
    window_bytes: int | None = None


def build_health(
    *,
    device: str,
    time_iso: str,
    version: str,
    uptime_s: float | None,
    scanner: ScannerStatus,
    spool: SpoolStatus,
    capture: Mapping[str, Any],
    disk_free_bytes: int | None,
    cpu_temp_c: float | None,
    link: LinkState,
    clock_synced: bool | None,
    cert_expiry: str | None,
    recent_errors: Sequence[str],
    receipt_keys: Sequence[str] = (),
    disk_total_bytes: int | None = None,
) -> dict[str, Any]:
    return {
        "device": device,
        "time": time_iso,
        "version": version,
        "uptime_s": None if uptime_s is None else round(uptime_s, 1),
        "scanner": scanner.to_json(),
        "spool": {
            "pending_docs": spool.pending_docs,
            "pending_bytes": spool.pending_bytes,
            "oldest_pending_age_s": spool.oldest_pending_age_s,
            "by_state": spool.by_state,
            "last_sync": spool.last_sync,
        },
        "capture": dict(capture),
        "disk_free_bytes": disk_free_bytes,
        "disk_total_bytes": disk_total_bytes,
        "cpu_temp_c": cpu_temp_c,
        "link": {
            "rtt_ms": link.rtt_ms,
            "modem_signal_dbm": link.modem_signal_dbm,
            "rate_bps": None if link.rate_bps is None else round(link.rate_bps),
            "estimate_bps": None if link.estimate_bps is None else round(link.estimate_bps),
            "base_rtt_ms": link.base_rtt_ms,
            "queue_delay_ms": link.queue_delay_ms,
            "window_bytes": link.window_bytes,
        },
        "clock_synced": clock_synced,
        "cert_expiry": cert_expiry,
        "recent_errors": list(recent_errors)[-10:],
        # the kids of the receipt keys the device accepts: shows who applied a rotation
        "receipt_keys": list(receipt_keys),
    }
