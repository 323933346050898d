"""The device's side of release delivery: take the signed offer, fetch the bundle by
offset from spare link capacity, hand the whole file to the installer, report.

``ReleaseFetcher.step`` runs in the sync service's idle time (the spool has
nothing pending: the document upload always goes first) on a connection of
its own (client id ``<device>-rel``, clean start), so the uploader's session
and topic aliases are never touched. What it holds lives under
``<home>/release/``: ``offer.json`` (the offer acted on, and the last offer
counter, so a replayed offer is refused), ``sohoa-<version>.bundle.part``
(bytes so far; a cut or a restart resumes at its size), then
``sohoa-<version>.bundle`` once its SHA-256 is the offer's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from sync.commands import CommandRefused
from sync.durable import atomic_write, iso
from sync.errors import BrokerError, SohoaError
from sync.mqtt.link import Link
from sync.mqtt.settings import LinkSettings
from sync.protocol import ProtocolError
from sync.release.manifest import ReleaseRefused
from sync.release.wire import (
    Offer,
    check_offer,
    next_request,
    offer_topic,
    parse_offer,
    parse_release_topic,
    report,
    report_topic,
    request,
    request_topic,
    segment_filter,
)

log = logging.getLogger("sohoa.release")

WINDOW = 16  # requests in flight


@dataclass(frozen=True)
class FetchSettings:
    device: str
    work: Path  # <home>/release
    command_key: Ed25519PublicKey | None


class ReleaseFetcher:
    """One device's release download; ``check`` refuses an offer it must not install
    (older, same, spool schema too far), ``install`` is given the verified bundle file."""

    def __init__(
        self,
        settings: FetchSettings,
        link_settings: LinkSettings,
        *,
        check: Callable[[Offer], None],
        install: Callable[[Path, Offer], None],
        reports: Callable[[str], dict[str, str] | None],
    ) -> None:
        self.s = settings
        self.link_settings = link_settings
        self.check, self.install, self.reports = check, install, reports
        self.link: Link | None = None
        self.offer: Offer | None = self._load_offer()
        self.last_counter = self.offer.counter if self.offer else 0
        self.asked: dict[int, tuple[float, int]] = {}  # offset -> (asked at, length)
        self.published: dict[str, str] = {}
        self._refused: tuple[str, str] | None = None
        self._install_started = False

    # -- state on disk ------------------------------------------------------------------

    def _load_offer(self) -> Offer | None:
        try:
            return parse_offer((self.s.work / "offer.json").read_bytes())
        except (OSError, CommandRefused):
            return None

    def _part(self, offer: Offer) -> Path:
        return self.s.work / f"sohoa-{offer.version}.bundle.part"

    def bundle_path(self, offer: Offer) -> Path:
        return self.s.work / f"sohoa-{offer.version}.bundle"

    def held(self) -> int:
        if self.offer is None:
            return 0
        try:
            return self._part(self.offer).stat().st_size
        except FileNotFoundError:
            return 0

    # -- the link ---------------------------------------------------------------------

    def _connect(self) -> Link:
        if self.link is not None and self.link.connected:
            return self.link
        self.close()
        link = Link(self.link_settings)
        link.connect()
        link.subscribe_all([offer_topic(self.s.device), segment_filter(self.s.device)], qos=1)
        self.link, self.asked = link, {}
        return link

    def close(self) -> None:
        if self.link is not None:
            self.link.close()
            self.link = None

    def step(self, pending_docs: int, budget_s: float) -> None:
        """Work for at most ``budget_s``: take messages, ask for segments, report."""
        try:
            link = self._connect()
            end = time.monotonic() + budget_s
            while time.monotonic() < end:
                self._ask(link, pending_docs)
                msg = link.get(min(0.5, max(0.0, end - time.monotonic())))
                if msg is not None:
                    self._on_message(msg.topic, msg.payload)
            self._publish_report(link)
        except BrokerError as exc:
            log.info("release link down reason=%s", exc.message)
            self.close()

    def _ask(self, link: Link, pending_docs: int) -> None:
        offer = self.offer
        if offer is None:
            return
        if self.bundle_path(offer).exists():
            # downloaded before a restart, and the installer never reported: start it again
            if self.reports(offer.version) is None and not self._install_started:
                self._start_install(offer)
            return
        now = time.monotonic()
        self.asked = {o: a for o, a in self.asked.items() if now - a[0] < 10}  # lost: again
        at = max([self.held(), *(o + n for o, (_, n) in self.asked.items())])
        while len(self.asked) < WINDOW:
            length = next_request(at, offer.size, pending_docs)
            if length is None:
                return
            link.publish_nowait(request_topic(self.s.device), request(offer.version, at, length))
            self.asked[at] = (now, length)
            at += length

    # -- messages -----------------------------------------------------------------------

    def _on_message(self, topic: str, payload: bytes) -> None:
        if topic == offer_topic(self.s.device):
            self._on_offer(payload)
            return
        try:
            _, kind, offset = parse_release_topic(topic)
        except ProtocolError:
            return
        if kind == "s" and offset is not None:
            self._on_segment(offset, payload)

    def _on_offer(self, payload: bytes) -> None:
        if not payload:  # the province withdrew its offer (a rollout stopped itself)
            return
        try:
            offer = parse_offer(payload)
            if self.offer is not None and offer.to_bytes() == self.offer.to_bytes():
                return  # the retained copy of the offer acted on
            if self.s.command_key is None:
                raise CommandRefused("this device pins no command key")
            check_offer(
                offer,
                device=self.s.device,
                key=self.s.command_key,
                last_counter=self.last_counter,
                now=datetime.now(UTC),
            )
            self.check(offer)
        except (CommandRefused, ReleaseRefused) as exc:
            log.warning("release offer refused reason=%s", exc)
            version = self._offered_version(payload)
            self._refused = (version, str(exc))
            return
        atomic_write(self.s.work / "offer.json", offer.to_bytes(), mode=0o600)
        for old in self.s.work.glob("sohoa-*.bundle*"):  # what an earlier offer left
            if old.name not in (self._part(offer).name, self.bundle_path(offer).name):
                old.unlink(missing_ok=True)
        self.offer, self.last_counter, self.asked = offer, offer.counter, {}
        self._install_started, self._refused = False, None
        log.info("release offered version=%s bytes=%d", offer.version, offer.size)

    @staticmethod
    def _offered_version(payload: bytes) -> str:
        try:
            version = json.loads(payload).get("version")
        except (ValueError, AttributeError):
            return "unknown"
        return version if isinstance(version, str) and len(version) <= 32 else "unknown"

    def _on_segment(self, offset: int, data: bytes) -> None:
        offer = self.offer
        self.asked.pop(offset, None)
        if offer is None or offset != self.held() or offset + len(data) > offer.size:
            return  # a duplicate or out of order after a cut: asked for again
        part = self._part(offer)
        part.parent.mkdir(parents=True, exist_ok=True)
        with part.open("ab") as f:
            f.write(data)
        if offset + len(data) == offer.size:
            self._complete(offer)

    def _complete(self, offer: Offer) -> None:
        part = self._part(offer)
        h = hashlib.sha256()
        with part.open("rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        if h.hexdigest() != offer.sha256:
            log.warning("release download does not match the offer's hash, fetched again")
            part.unlink()
            return
        part.replace(self.bundle_path(offer))
        log.info("release downloaded version=%s", offer.version)
        self._start_install(offer)

    def _start_install(self, offer: Offer) -> None:
        self._install_started = True
        try:
            self.install(self.bundle_path(offer), offer)
        except (SohoaError, OSError) as exc:
            self._refused = (offer.version, str(exc))

    # -- reports ------------------------------------------------------------------------

    def _current_report(self) -> tuple[str, bytes] | None:
        if self._refused is not None:
            version, reason = self._refused
            return version, report(version, "refused", reason, iso(time.time()))
        offer = self.offer
        if offer is None:
            return None
        doc = self.reports(offer.version)
        if doc is not None and doc.get("status") in ("installed", "healthy", "rolled_back"):
            status, reason = doc["status"], doc.get("reason", "")
            return offer.version, report(offer.version, status, reason, doc.get("at", ""))
        if doc is not None and doc.get("status") == "refused":
            return offer.version, report(
                offer.version, "refused", doc.get("reason", ""), doc.get("at", "")
            )
        held = self.held() if not self.bundle_path(offer).exists() else offer.size
        return offer.version, report(offer.version, "downloading", f"{held}/{offer.size}", "")

    def _publish_report(self, link: Link) -> None:
        current = self._current_report()
        if current is None:
            return
        version, payload = current
        status = json.loads(payload)["status"]
        key = f"{status}:{json.loads(payload)['reason'] if status != 'downloading' else ''}"
        if self.published.get(version) == key:
            return
        link.publish(report_topic(self.s.device), payload, retain=True, timeout_s=10)
        self.published[version] = key
