"""The fleet's alert rules, evaluated by the fleet service itself.

The same rules ship for Prometheus in ``config/prometheus/sohoa-alerts.yml``
(``promtool test rules`` checks them there); here they run on the device views
so that a province without Prometheus still gets them: on the fleet page and
as a retained JSON on ``sohoa/v1/fleet/alerts``. A rule fires for a device once
its condition has held for the rule's ``for`` time, as Prometheus does.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sync.fleet_model import SCANNER_TROUBLE, DeviceView

Facts = Mapping[str, Any]


@dataclass(frozen=True)
class Rule:
    name: str
    for_s: float
    severity: str
    summary: str  # formatted with the device's facts
    when: Callable[[Facts, float], bool]
    # when the condition began, if the facts know it (the offline rule: since the Last Will)
    began: Callable[[Facts], float | None] = lambda _f: None


def _offline(f: Facts, _now: float) -> bool:
    return f["online"] is False


def _backlog(f: Facts, _now: float) -> bool:
    return (f["oldest_pending_age_s"] or 0) > 24 * 3600


def _disk(f: Facts, _now: float) -> bool:
    return f["disk_free_ratio"] is not None and f["disk_free_ratio"] < 0.10


def _scanner(f: Facts, _now: float) -> bool:
    return f["scanner_present"] is False or f["scanner_state"] in SCANNER_TROUBLE


def _cert(f: Facts, now: float) -> bool:
    return f["cert_expiry"] is not None and f["cert_expiry"] - now < 14 * 86400


def _clock(f: Facts, _now: float) -> bool:
    return f["clock_synced"] is False


def rules(offline_for_s: float = 15 * 60) -> tuple[Rule, ...]:
    return (
        Rule(
            "SohoaDeviceOffline",
            offline_for_s,
            "warning",
            "{device} offline",
            _offline,
            lambda f: f["online_since"],
        ),
        Rule(
            "SohoaBacklogStale", 0, "warning", "{device}: a document waits for over 24 h", _backlog
        ),
        Rule("SohoaDiskLow", 0, "warning", "{device}: less than 10 % disk free", _disk),
        Rule(
            "SohoaScannerProblem", 30 * 60, "warning", "{device}: scanner error or absent", _scanner
        ),
        Rule(
            "SohoaCertificateExpiring",
            0,
            "warning",
            "{device}: certificate expires within 14 days",
            _cert,
        ),
        Rule("SohoaClockNotSynced", 10 * 60, "warning", "{device}: clock not synchronised", _clock),
    )


@dataclass(frozen=True)
class Alert:
    name: str
    device: str
    severity: str
    summary: str
    since: float

    def to_json(self) -> dict[str, Any]:
        return {
            "alert": self.name,
            "device": self.device,
            "severity": self.severity,
            "summary": self.summary,
            "since": self.since,
        }


class AlertBook:
    """Remembers since when each (rule, device) condition holds, to honour ``for``."""

    def __init__(self, active_rules: Iterable[Rule]) -> None:
        self.rules = tuple(active_rules)
        self._since: dict[tuple[str, str], float] = {}

    def evaluate(self, views: Iterable[DeviceView], now: float) -> list[Alert]:
        firing: list[Alert] = []
        seen: set[tuple[str, str]] = set()
        for view in views:
            facts = view.facts()
            for rule in self.rules:
                key = (rule.name, view.device)
                if not rule.when(facts, now):
                    continue
                seen.add(key)
                since = self._since.setdefault(key, rule.began(facts) or now)
                if now - since >= rule.for_s:
                    summary = rule.summary.format(device=view.device)
                    firing.append(Alert(rule.name, view.device, rule.severity, summary, since))
        self._since = {k: v for k, v in self._since.items() if k in seen}
        watchdog = Alert("SohoaWatchdog", "", "none", "always firing: the alert path works", 0.0)
        return [watchdog, *firing]


def alerts_json(alerts: Iterable[Alert], now: float) -> bytes:
    return json.dumps({"time": now, "alerts": [a.to_json() for a in alerts]}).encode()
