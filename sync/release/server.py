"""The province's side of release delivery: rollouts on disk, signed offers, bundle
segments served by offset, and devices' reports folded into the rollout.

Under the releases folder (``<home>/releases``): ``sohoa-<version>.bundle``
(what ``sohoa release build`` wrote, copied in) and ``rollout-<version>.json``
(``sync.release.rollout.Rollout`` as JSON). ``ReleaseServer`` runs as the
warehouse identity (``sohoa release serve``): it answers each ``rel/q`` with the
bytes asked for, records each ``rel/r`` report, and when a rollout stops itself
withdraws the retained offer of every target that has not begun.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sync.durable import atomic_write
from sync.errors import ConfigError, SohoaError
from sync.mqtt.link import Link
from sync.mqtt.settings import Message
from sync.protocol import ROOT, ProtocolError
from sync.release.manifest import parse_version
from sync.release.rollout import DeviceReport, Rollout, may_offer, record
from sync.release.wire import (
    Offer,
    offer_topic,
    parse_release_topic,
    parse_report,
    parse_request,
    segment_topic,
    sign_offer,
)

log = logging.getLogger("sohoa.release")

REQUESTS = f"{ROOT}/d/+/rel/q"
REPORTS = f"{ROOT}/d/+/rel/r"


def bundle_file(folder: Path, version: str) -> Path:
    parse_version(version)
    return folder / f"sohoa-{version}.bundle"


def rollout_file(folder: Path, version: str) -> Path:
    parse_version(version)
    return folder / f"rollout-{version}.json"


def save_rollout(folder: Path, rollout: Rollout) -> None:
    doc: dict[str, Any] = {
        "version": rollout.version,
        "targets": list(rollout.targets),
        "max_rollback_fraction": rollout.max_rollback_fraction,
        "allow_downgrade": rollout.allow_downgrade,
        "reports": {
            d: {"status": r.status, "reason": r.reason} for d, r in rollout.reports.items()
        },
        "stopped": rollout.stopped,
    }
    atomic_write(rollout_file(folder, rollout.version), json.dumps(doc, indent=1).encode())


def load_rollout(folder: Path, version: str) -> Rollout:
    path = rollout_file(folder, version)
    try:
        doc = json.loads(path.read_text())
        reports = {d: DeviceReport(r["status"], r["reason"]) for d, r in doc["reports"].items()}
        return Rollout(
            doc["version"],
            tuple(doc["targets"]),
            float(doc["max_rollback_fraction"]),
            bool(doc["allow_downgrade"]),
            reports,
            str(doc["stopped"]),
        )
    except FileNotFoundError:
        raise ConfigError(
            f"no rollout of release {version} in {folder}",
            f"start one with 'sohoa release offer {version} --to …'",
        ) from None
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ConfigError(f"{path} is damaged", "offer the release again") from None


def bundle_digest(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return path.stat().st_size, h.hexdigest()


def offers(
    rollout: Rollout, bundle: Path, key: Ed25519PrivateKey, counter: int, expires: str
) -> list[Message]:
    """The retained, signed offer for every target that may still get it."""
    size, digest = bundle_digest(bundle)
    out = []
    for device in rollout.targets:
        if may_offer(rollout, device):
            offer = Offer(
                device, counter, expires, rollout.version, size, digest, rollout.allow_downgrade
            )
            out.append(Message(offer_topic(device), sign_offer(offer, key).to_bytes(), 1, True))
    return out


def withdrawals(rollout: Rollout) -> list[Message]:
    """Empty retained offers for the targets that have not begun: the rollout stopped."""
    return [
        Message(offer_topic(d), b"", 1, True)
        for d in rollout.targets
        if d not in rollout.reports or rollout.reports[d].status == "offered"
    ]


class ReleaseServer:
    """Serves bundle segments and folds reports into rollouts, on one warehouse link."""

    def __init__(self, link: Link, folder: Path) -> None:
        self.link, self.folder = link, folder
        self._lock = threading.Lock()

    def start(self) -> None:
        self.link.subscribe_all([REQUESTS, REPORTS], qos=1)

    def serve(self, stop: threading.Event, until: Callable[[], bool] = lambda: False) -> None:
        """Handle messages until ``stop`` is set or ``until()`` says so (the link dropped)."""
        while not stop.is_set() and not until():
            msg = self.link.get(0.5)
            if msg is None:
                continue
            try:
                self.handle(msg.topic, msg.payload)
            except (ProtocolError, SohoaError, OSError) as exc:
                log.warning("release message ignored topic=%s reason=%s", msg.topic, exc)

    def handle(self, topic: str, payload: bytes) -> None:
        device, kind, _ = parse_release_topic(topic)
        if kind == "q":
            version, offset, length = parse_request(payload)
            with bundle_file(self.folder, version).open("rb") as f:
                f.seek(offset)
                data = f.read(length)
            if data:
                self.link.publish_nowait(segment_topic(device, offset), data)
        elif kind == "r" and payload:
            version, status, reason = parse_report(payload)
            with self._lock:
                self._record(device, version, DeviceReport(status, reason))

    def _record(self, device: str, version: str, report: DeviceReport) -> None:
        try:
            before = load_rollout(self.folder, version)
        except ConfigError:
            return  # a report of a release offered by hand or long ago
        after = record(before, device, report)
        if after == before:
            return
        save_rollout(self.folder, after)
        log.info("release report device=%s version=%s status=%s", device, version, report.status)
        if after.stopped and not before.stopped:
            log.warning("rollout stopped version=%s reason=%s", version, after.stopped)
            for m in withdrawals(after):
                self.link.publish(m.topic, m.payload, qos=1, retain=True)
