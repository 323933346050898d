"""``sohoa sync``: the device's link service.

Reconnection is the outer loop, with exponential back-off and jitter; inside,
one connection at a time: birth, health, then the uploader drains the spool
until the link drops, the deadline passes or (``once``) nothing is pending.
The uploader also takes the warehouse's signed commands off the device's
``cmd`` topic (a receipt-key rotation arrives retained on reconnect) and hands
them to ``DeviceCommands``, also while the spool is empty; health names the
receipt keys the device accepts.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from agent import renewal
from agent.config import Config
from agent.enrol_online import renew_if_due
from agent.health import health_payload, now_iso
from agent.release_device import make_fetcher
from agent.release_install import Layout, mark_healthy
from agent.wiring import broker_config, open_spool, reconnect_delays
from sync import __version__
from sync.errors import BrokerError, IncompleteError, SohoaError
from sync.keys import load_warehouse_public
from sync.mqtt.ledbat import Ledbat
from sync.mqtt.link import Link
from sync.mqtt.settings import LinkSettings, Message
from sync.protocol import Birth, health_topic, state_topic
from sync.receipt_keys import DeviceCommands, command_state_path
from sync.release.fetch import ReleaseFetcher
from sync.spool.store import Spool
from sync.uploader import LinkStalled, Uploader, UploadSettings

log = logging.getLogger("sohoa.sync")

IDLE_POLL_S = 2.0
IDLE_SLICE_S = 60.0  # a long health interval must not starve the watchdog while idle
RENEWAL_CHECK_S = 3600.0  # how often the certificate's age is looked at


def birth(device: str, online: bool) -> bytes:
    return Birth(device=device, online=online, version=__version__, ts=now_iso()).to_bytes()


def device_link(cfg: Config) -> Link:
    """A persistent-session link as this device, whose Last Will says it went offline."""
    will = Message(state_topic(cfg.device.id), birth(cfg.device.id, False), qos=1, retain=True)
    settings = LinkSettings.from_config(
        broker_config(cfg),
        cfg.device.id,
        will=will,
        clean_start=False,
        username=cfg.device.id,
    )
    return Link(settings)


def _say_offline(link: Link, device: str) -> None:
    """A clean stop does not fire the Last Will, so say it ourselves."""
    if link.connected:
        with contextlib.suppress(BrokerError):
            link.publish(state_topic(device), birth(device, False), retain=True, timeout_s=5)


@dataclass(frozen=True)
class SyncOutcome:
    stored: int
    pending: int
    rejected: int
    rejections: dict[str, str]
    last_error: str | None = None


@dataclass
class _Tally:
    stored: int = 0
    rejected: int = 0
    rejections: dict[str, str] = field(default_factory=dict)
    errors: deque[str] = field(default_factory=lambda: deque(maxlen=10))

    def outcome(self, pending: int) -> SyncOutcome:
        last = self.errors[-1] if self.errors else None
        return SyncOutcome(self.stored, pending, self.rejected, dict(self.rejections), last)


@dataclass
class _SyncRun:
    """The state one ``run_sync`` call carries across connections."""

    cfg: Config
    spool: Spool
    commands: DeviceCommands
    once: bool
    deadline: float
    stop: threading.Event
    notify: Callable[[str], None]
    started: float = field(default_factory=time.monotonic)
    tally: _Tally = field(default_factory=_Tally)
    renewal_checked: float = float("-inf")
    last_rate: float | None = None
    control: Ledbat | None = None  # the link's learnt rate and delays, across connections
    release: ReleaseFetcher | None = None  # release downloads, from the link's idle time

    def __post_init__(self) -> None:
        self.control = Ledbat(time.monotonic, cap_kbps=self.cfg.sync.bandwidth_kbps)

    def maybe_renew(self) -> None:
        """Renew the broker certificate at two thirds of its life (also once it expired:
        the enrolment listener takes the device's key as proof)."""
        if not self.cfg.broker.cert or time.monotonic() - self.renewal_checked < RENEWAL_CHECK_S:
            return
        self.renewal_checked = time.monotonic()
        if renew_if_due(self.cfg, dt.datetime.now(dt.UTC)):
            self.renewal_checked = float("-inf")  # look again once the new one is in use

    def _health(self, rtt_ms: float | None) -> bytes:
        kids = self.commands.receipt_keys.kids()
        errors = list(self.tally.errors)
        est = self.control.estimate() if self.control is not None else None
        return health_payload(
            self.cfg,
            self.spool,
            self.started,
            rtt_ms,
            errors,
            kids,
            rate_bps=self.last_rate,
            link=est,
        )

    def _uploader(self, link: Link) -> Uploader:
        s = self.cfg.sync
        settings = UploadSettings(
            self.cfg.device.id, s.window, s.receipt_timeout_s, s.bandwidth_kbps
        )
        return Uploader(
            link,
            self.spool,
            settings,
            self.commands,
            on_command=self.commands.apply,
            clock=self._clock,
            heartbeat=lambda: self.notify("WATCHDOG=1"),
            control=self.control,
        )

    def _clock(self) -> float:
        """The uploader's clock: past every deadline once ``stop`` is set (SIGTERM), so a
        service asked to stop does so within a moment, whatever it was waiting for."""
        return float("inf") if self.stop.is_set() else time.monotonic()

    def note_link(self, *, up: bool, rate_bps: float | None = None) -> None:
        """The link's state for the counter page (another process), in the spool."""
        if up and rate_bps is not None:
            self.last_rate = rate_bps
        link = {"up": up, "at": now_iso(), "rate_bps": self.last_rate if up else None}
        with contextlib.suppress(SohoaError):
            self.spool.set_meta("link", json.dumps(link))

    def connect(self, link: Link) -> float:
        """Connect, announce birth and health without waiting; the connect time in ms."""
        t0 = time.monotonic()
        link.connect()
        self.note_link(up=True)
        rtt = (time.monotonic() - t0) * 1000
        device = self.cfg.device.id
        link.publish_nowait(state_topic(device), birth(device, True), retain=True)
        link.publish_nowait(health_topic(device), self._health(rtt), retain=True)
        self.note_release_health()
        return rtt

    def note_release_health(self) -> None:
        """Spool opened and migrated, broker reached: a release on trial passed it."""
        try:
            layout = Layout.of(self.cfg.home, self.cfg.release.prefix)
            if mark_healthy(layout, __version__):
                log.info("release healthy version=%s", __version__)
        except OSError as exc:
            log.warning("release health not recorded reason=%s", exc.strerror)

    def upload(self, link: Link, rtt: float) -> bool:
        """Drain the spool on this connection; True when ``once`` is satisfied."""
        up = self._uploader(link)
        up.start()
        interval = self.cfg.sync.health_interval_s
        last_health = time.monotonic()
        sent_at, sent = time.monotonic(), up.stats.bytes_sent
        while not self.stop.is_set() and time.monotonic() < self.deadline:
            # the uploader feeds the watchdog while it works; this loop between drains
            left, rej = up.drain(min(self.deadline, time.monotonic() + min(interval, IDLE_SLICE_S)))
            elapsed = time.monotonic() - sent_at
            if elapsed >= 5 and up.stats.bytes_sent > sent:
                self.note_link(up=True, rate_bps=(up.stats.bytes_sent - sent) * 8 / elapsed)
                sent_at, sent = time.monotonic(), up.stats.bytes_sent
            self.tally.stored += up.stats.stored
            self.tally.rejected = rej
            up.stats.stored = 0
            self.tally.rejections.update(up.stats.rejections)
            done = self.once and left == 0
            if done or time.monotonic() - last_health >= interval:
                link.publish(health_topic(self.cfg.device.id), self._health(rtt), retain=True)
                last_health = time.monotonic()
                self.maybe_renew()
            if done:
                return True
            self.notify("WATCHDOG=1")
            if left == 0:
                up.poll(0)  # commands that came while there was nothing to upload
                self.idle(IDLE_POLL_S)
                self.spool.purge_expired(self.cfg.spool.retention_days * 86400)
        return False

    def idle(self, seconds: float) -> None:
        """Nothing to upload: the link's spare capacity may fetch a release meanwhile."""
        if self.release is None or self.once:
            self.stop.wait(seconds)
        else:
            self.release.step(0, seconds)


def run_sync(
    cfg: Config,
    *,
    once: bool,
    timeout_s: float | None,
    stop: threading.Event | None = None,
    notify: Callable[[str], None] | None = None,
) -> SyncOutcome:
    """Upload the spool. ``once``: drain and return; else run until ``stop``."""
    stop = stop or threading.Event()
    pinned = cfg.path(cfg.warehouse.public_key)
    commands = DeviceCommands(
        cfg.device.id, load_warehouse_public(pinned), command_state_path(pinned)
    )
    deadline = time.monotonic() + timeout_s if timeout_s else float("inf")
    renewal.complete(cfg)  # a renewal that a power cut interrupted
    with open_spool(cfg) as spool:
        spool.recover()
        run = _SyncRun(cfg, spool, commands, once, deadline, stop, notify or (lambda _s: None))
        run.release = None if once else make_fetcher(cfg)
        run.notify("READY=1")  # keys and spool are sound; being offline is normal
        delays = reconnect_delays()
        while not stop.is_set() and time.monotonic() < deadline:
            run.notify("WATCHDOG=1")  # also between attempts while the broker is unreachable
            run.maybe_renew()
            link = device_link(cfg)
            try:
                rtt = run.connect(link)
                delays = reconnect_delays()
                if run.upload(link, rtt):
                    return run.tally.outcome(0)
            except LinkStalled as exc:
                run.tally.errors.append(exc.message)
                run.note_link(up=False)
                log.warning("link stalled reason=%s", exc.message)
                link.drop()  # a dead link carries no goodbye: reconnect at once
            except BrokerError as exc:
                run.tally.errors.append(exc.message)
                run.note_link(up=False)
                log.warning("link down reason=%s", exc.message)
                stop.wait(min(next(delays), max(0.0, deadline - time.monotonic())))
            finally:
                if link.connected:
                    _say_offline(link, cfg.device.id)
                link.close()
        if run.release is not None:
            run.release.close()
        return run.tally.outcome(spool.status().pending_docs)


def sync_once(cfg: Config, timeout_s: float) -> SyncOutcome:
    """Drain the spool or raise ``IncompleteError`` naming what is still pending."""
    out = run_sync(cfg, once=True, timeout_s=timeout_s)
    if out.pending or out.rejected:
        reasons = "; ".join(f"{d}: {r}" for d, r in list(out.rejections.items())[:3])
        raise IncompleteError(
            f"{out.pending + out.rejected} document(s) still without a verified warehouse receipt"
            + (f" (rejected: {reasons})" if reasons else "")
            + (f" (last link error: {out.last_error})" if out.last_error else ""),
            "check the broker and the warehouse, then run sohoa sync again; nothing was deleted",
        )
    return out
