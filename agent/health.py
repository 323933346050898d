"""The device's health report: host probes, spool, capture facts, link and certificate.

Each probe degrades on its own (None and a log line), so one bad sensor, an
absent modem or an unreadable certificate never stops the report.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509

from agent.config import Config
from device.host import read_host_health
from device.serial import modem_signal
from sync import __version__
from sync.mqtt.ledbat import LinkEstimate
from sync.spool.store import Spool
from sync.telemetry import LinkState, build_health

log = logging.getLogger("sohoa.health")


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def certificate_expiry(path: Path | None) -> str | None:
    """The notAfter of the PEM certificate at ``path`` (ISO 8601), or None."""
    if path is None:
        return None
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        log.warning("certificate unreadable path=%s error=%s", path, exc)
        return None
    return cert.not_valid_after_utc.isoformat(timespec="seconds").replace("+00:00", "Z")


def health_payload(
    cfg: Config,
    spool: Spool,
    started: float,
    rtt_ms: float | None,
    errors: Sequence[str],
    receipt_keys: Sequence[str] = (),
    rate_bps: float | None = None,
    link: LinkEstimate | None = None,
) -> bytes:
    """The retained health JSON for this device, as bytes."""
    host = read_host_health(cfg.home)
    day_start = time.time() - (time.time() % 86400)
    modem = modem_signal(cfg.sync.modem_port) if cfg.sync.modem_port else None
    health = build_health(
        device=cfg.device.id,
        time_iso=now_iso(),
        version=__version__,
        uptime_s=time.monotonic() - started,
        scanner=spool.scanner_status(),
        spool=spool.status(),
        capture=spool.batch_stats(day_start),
        disk_free_bytes=host.disk_free_bytes,
        cpu_temp_c=host.cpu_temp_c,
        link=LinkState(
            rtt_ms=rtt_ms,
            modem_signal_dbm=modem,
            rate_bps=rate_bps,
            estimate_bps=link.rate_bps if link else None,
            base_rtt_ms=link.base_rtt_ms if link else None,
            queue_delay_ms=link.queue_delay_ms if link else None,
            window_bytes=link.window_bytes if link else None,
        ),
        clock_synced=host.clock_synced,
        cert_expiry=certificate_expiry(cfg.path(cfg.broker.cert) if cfg.broker.cert else None),
        recent_errors=list(errors),
        receipt_keys=receipt_keys,
        disk_total_bytes=host.disk_total_bytes,
    )
    return json.dumps(health, ensure_ascii=False).encode()
