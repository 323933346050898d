"""The fleet view: every device's retained state and health, as rows."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sync.mqtt.link import Link
from sync.mqtt.settings import BrokerConfig, LinkSettings
from sync.protocol import FLEET_FILTERS, ProtocolError, parse_device_topic


@dataclass(frozen=True)
class FleetRow:
    device: str
    online: bool | None
    pending_docs: int | None
    pending_bytes: int | None
    oldest_pending_age_s: float | None
    disk_free_bytes: int | None
    last_seen: str | None
    scanner_error: str | None

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


def fleet_rows(
    states: Mapping[str, Mapping[str, Any]], healths: Mapping[str, Mapping[str, Any]]
) -> list[FleetRow]:
    rows = []
    for device in sorted(set(states) | set(healths)):
        st, h = states.get(device, {}), healths.get(device, {})
        spool = h.get("spool") or {}
        scanner = h.get("scanner") or {}
        online = st.get("online")
        rows.append(
            FleetRow(
                device=device,
                online=online if isinstance(online, bool) else None,
                pending_docs=spool.get("pending_docs"),
                pending_bytes=spool.get("pending_bytes"),
                oldest_pending_age_s=spool.get("oldest_pending_age_s"),
                disk_free_bytes=h.get("disk_free_bytes"),
                last_seen=h.get("time") or st.get("ts"),
                scanner_error=scanner.get("last_error"),
            )
        )
    return rows


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:.1f}"


def render_fleet(rows: list[FleetRow]) -> str:
    head = f"{'device':<20} {'status':<8} {'backlog':>7} {'MB':>8} {'oldest s':>9} {'disk MB':>9}  last seen"
    lines = [head, "-" * len(head)]
    for r in rows:
        status = {True: "online", False: "OFFLINE", None: "?"}[r.online]
        lines.append(
            f"{r.device:<20} {status:<8} {r.pending_docs if r.pending_docs is not None else '-':>7}"
            f" {_mb(r.pending_bytes):>8} {r.oldest_pending_age_s if r.oldest_pending_age_s is not None else '-':>9}"
            f" {_mb(r.disk_free_bytes):>9}  {r.last_seen or '-'}"
            + (f"  scanner: {r.scanner_error}" if r.scanner_error else "")
        )
    if not rows:
        lines.append("(no device has reported yet)")
    return "\n".join(lines)


def collect(link: Link, *, quiet_s: float = 1.0, max_s: float = 10.0) -> list[FleetRow]:
    """Read the retained state and health topics until the broker goes quiet."""
    for f in FLEET_FILTERS:
        link.subscribe(f, qos=1)
    states: dict[str, dict[str, Any]] = {}
    healths: dict[str, dict[str, Any]] = {}
    end = time.monotonic() + max_s
    while time.monotonic() < end:
        msg = link.get(quiet_s)
        if msg is None:
            break
        try:
            device, kind = parse_device_topic(msg.topic)
            obj = json.loads(msg.payload) if msg.payload else {}
        except (ProtocolError, ValueError):
            continue
        if isinstance(obj, dict) and kind in ("state", "health"):
            (states if kind == "state" else healths)[device] = obj
    return fleet_rows(states, healths)


def fleet_snapshot(broker: BrokerConfig, *, quiet_s: float = 1.0) -> list[FleetRow]:
    """Connect with a throw-away clean session and read the fleet's retained topics."""
    link = Link(
        LinkSettings.from_config(broker, f"sohoa-fleet-{secrets.token_hex(4)}", clean_start=True)
    )
    link.connect()
    try:
        return collect(link, quiet_s=quiet_s)
    finally:
        link.close()
