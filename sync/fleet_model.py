"""The fleet service's picture of every device, built from its retained state and health.

Pure and bounded: ``FleetModel.apply`` takes one message from the broker, with
the time it arrived, and either updates the device's view or returns the
reason it ignored the message (counted by reason). A health message must name
the device of its topic; a payload must be a small JSON object. With a device
register (the province's CSV of device id, commune, district, contact), only
registered devices are reported: a device removed from it disappears, one that
never was is counted and ignored.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sync.errors import ConfigError
from sync.protocol import MAX_JSON, ProtocolError, load_json, parse_device_topic

SCANNER_TROUBLE = ("jam", "no_paper", "cover_open", "absent", "error")


@dataclass(frozen=True)
class RegisterEntry:
    device: str
    commune: str = ""
    district: str = ""
    contact: str = ""


def parse_register(text: str, source: str = "the device register") -> dict[str, RegisterEntry]:
    """``device,commune,district,contact`` rows (a header row is allowed)."""
    out: dict[str, RegisterEntry] = {}
    for n, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or row[0].strip().startswith("#") or row[0].strip().lower() == "device":
            continue
        cells = [c.strip() for c in row] + [""] * 3
        if not cells[0]:
            raise ConfigError(f"{source} line {n} has no device id", "put the id in column 1")
        out[cells[0]] = RegisterEntry(*cells[:4])
    return out


def load_register(path: Path | None) -> dict[str, RegisterEntry] | None:
    if path is None:
        return None
    try:
        return parse_register(path.read_text(encoding="utf-8"), str(path))
    except FileNotFoundError:
        raise ConfigError(
            f"the device register {path} does not exist", 'create it, or set [fleet] register = ""'
        ) from None


def _iso_ts(text: Any) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when.timestamp() if when.tzinfo else None


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


@dataclass
class DeviceView:
    device: str
    online: bool | None = None
    online_since: float | None = None  # when ``online`` last changed
    last_seen: float | None = None
    health: dict[str, Any] = field(default_factory=dict)
    release: dict[str, Any] = field(default_factory=dict)  # its last release report (rel/r)

    def _part(self, name: str) -> dict[str, Any]:
        part = self.health.get(name)
        return part if isinstance(part, dict) else {}

    def facts(self) -> dict[str, Any]:
        """The numbers the page, the API, the metrics and the alerts all read."""
        spool, scanner = self._part("spool"), self._part("scanner")
        capture, link = self._part("capture"), self._part("link")
        free, total = (
            _num(self.health.get("disk_free_bytes")),
            _num(self.health.get("disk_total_bytes")),
        )
        return {
            "device": self.device,
            "online": self.online,
            "online_since": self.online_since,
            "last_seen": self.last_seen,
            "version": self.health.get("version"),
            **{
                f"release_{k}": self.release[k] if isinstance(self.release.get(k), str) else None
                for k in ("version", "status", "reason")
            },
            "pending_docs": _num(spool.get("pending_docs")),
            "pending_bytes": _num(spool.get("pending_bytes")),
            "oldest_pending_age_s": _num(spool.get("oldest_pending_age_s")),
            "disk_free_bytes": free,
            "disk_total_bytes": total,
            "disk_free_ratio": free / total if free is not None and total else None,
            "scanner_present": scanner.get("present")
            if isinstance(scanner.get("present"), bool)
            else None,
            "scanner_state": scanner.get("state")
            if isinstance(scanner.get("state"), str)
            else None,
            "scanner_error": scanner.get("last_error")
            if isinstance(scanner.get("last_error"), str)
            else None,
            "pages_today": _num(capture.get("pages_today")),
            "pages_total": _num(capture.get("pages_total")),
            "cert_expiry": _iso_ts(self.health.get("cert_expiry")),
            "link_rate_bps": _num(link.get("rate_bps")),
            "rtt_ms": _num(link.get("rtt_ms")),
            "modem_signal_dbm": _num(link.get("modem_signal_dbm")),
            "clock_synced": self.health.get("clock_synced")
            if isinstance(self.health.get("clock_synced"), bool)
            else None,
        }


class FleetModel:
    def __init__(self, register: dict[str, RegisterEntry] | None = None) -> None:
        self.register = register
        self._lock = threading.Lock()
        self._devices: dict[str, DeviceView] = {}
        self.ignored: Counter[str] = Counter()
        self.messages = 0

    def apply(self, topic: str, payload: bytes, now: float) -> str | None:
        """Take one message; the reason it was ignored, or None."""
        reason = self._apply(topic, payload, now)
        with self._lock:
            self.messages += 1
            if reason is not None:
                self.ignored[reason] += 1
        return reason

    def _apply(self, topic: str, payload: bytes, now: float) -> str | None:
        try:
            device, kind = parse_device_topic(topic)
        except ProtocolError:
            return "not a device topic"
        if kind not in ("state", "health", "rel/r"):
            return "not a state, health or release topic"
        if self.register is not None and device not in self.register:
            return "device not in the register"
        if not payload:
            return "empty payload"
        if len(payload) > MAX_JSON:
            return "payload too large"
        try:
            obj = load_json(payload)
        except ProtocolError:
            return "not a JSON object"
        if kind == "health" and obj.get("device") != device:
            return "health names another device than its topic"
        with self._lock:
            view = self._devices.setdefault(device, DeviceView(device))
            if kind == "rel/r":  # retained, perhaps old: it says nothing of being seen
                view.release = obj
                return None
            view.last_seen = now
            if kind == "health":
                view.health = obj
            elif isinstance(obj.get("online"), bool) and view.online != obj["online"]:
                view.online, view.online_since = obj["online"], now
        return None

    def views(self) -> list[DeviceView]:
        with self._lock:
            views = [v for d, v in sorted(self._devices.items())]
        if self.register is not None:
            known = {v.device for v in views}
            views = [v for v in views if v.device in self.register]
            views += [DeviceView(d) for d in sorted(self.register) if d not in known]
        return views

    def view(self, device: str) -> DeviceView | None:
        return next((v for v in self.views() if v.device == device), None)
