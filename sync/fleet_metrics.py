"""``/metrics``: the fleet in the Prometheus text format (version 0.0.4).

Names and labels as DESIGN.md (Fleet) lists them: base units, ``_total`` for
counters, ``_timestamp_seconds`` for times, one ``device`` label plus
``commune`` and ``district`` from the register. A device that went offline
stays, with ``sohoa_device_online 0`` and its last-seen time; a value the
device has not reported is left out rather than invented.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sync.fleet_model import SCANNER_TROUBLE, DeviceView, RegisterEntry

# name, type, help, the fact it comes from (None: computed below)
METRICS: tuple[tuple[str, str, str, str], ...] = (
    (
        "sohoa_device_online",
        "gauge",
        "1 while the device's state is online, 0 after its Last Will",
        "online",
    ),
    (
        "sohoa_device_last_seen_timestamp_seconds",
        "gauge",
        "time of the last state or health message",
        "last_seen",
    ),
    ("sohoa_spool_pending_documents", "gauge", "documents waiting for a receipt", "pending_docs"),
    ("sohoa_spool_pending_bytes", "gauge", "their envelope bytes", "pending_bytes"),
    (
        "sohoa_spool_oldest_pending_age_seconds",
        "gauge",
        "age of the oldest one",
        "oldest_pending_age_s",
    ),
    ("sohoa_disk_free_bytes", "gauge", "free space in the device home", "disk_free_bytes"),
    (
        "sohoa_disk_size_bytes",
        "gauge",
        "size of the file system of the device home",
        "disk_total_bytes",
    ),
    ("sohoa_scanner_present", "gauge", "1 when the scanner answers", "scanner_present"),
    (
        "sohoa_scanner_error",
        "gauge",
        "1 while the scanner reports a jam, no paper, an open cover or an error",
        "scanner_trouble",
    ),
    ("sohoa_capture_pages_total", "counter", "pages captured since install", "pages_total"),
    (
        "sohoa_certificate_expiry_timestamp_seconds",
        "gauge",
        "broker certificate's notAfter",
        "cert_expiry",
    ),
    (
        "sohoa_link_rate_bits_per_second",
        "gauge",
        "the uploader's current rate estimate",
        "link_rate_bps",
    ),
    ("sohoa_clock_synced", "gauge", "1 when the device's clock is synchronised", "clock_synced"),
)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(device: str, register: Mapping[str, RegisterEntry] | None) -> str:
    entry = (register or {}).get(device) or RegisterEntry(device)
    pairs = (("device", device), ("commune", entry.commune), ("district", entry.district))
    return ",".join(f'{k}="{_escape(v)}"' for k, v in pairs)


def _value(facts: Mapping[str, Any], key: str) -> float | None:
    if key == "scanner_trouble":
        state = facts.get("scanner_state")
        return None if state is None else float(state in SCANNER_TROUBLE)
    value = facts.get(key)
    if isinstance(value, bool):
        return float(value)
    return float(value) if isinstance(value, int | float) else None


def _number(value: float) -> str:
    v = float(value)
    return str(int(v)) if v.is_integer() and abs(v) < 1e15 else repr(v)


def render_metrics(
    views: Iterable[DeviceView],
    register: Mapping[str, RegisterEntry] | None,
    extra: Iterable[tuple[str, str, str, float]] = (),
) -> str:
    """The exposition text; ``extra`` adds (name, type, help, value) series of the
    service itself (messages handled, messages ignored, ...)."""
    rows = [(_labels(v.device, register), v.facts()) for v in views]  # labels once each
    lines: list[str] = []
    for name, kind, help_text, key in METRICS:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        for labels, facts in rows:
            value = _value(facts, key)
            if value is not None:
                lines.append(f"{name}{{{labels}}} {_number(value)}")
    lines += ["# HELP sohoa_fleet_devices devices known", "# TYPE sohoa_fleet_devices gauge"]
    lines.append(f"sohoa_fleet_devices {len(rows)}")
    for name, kind, help_text, value in extra:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {_number(value)}"]
    return "\n".join(lines) + "\n"
