"""The long-running loops: the device's sync service and warehouse workers.

Reconnection is the outer loop here, with exponential back-off and jitter;
everything inside works on one connection at a time.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from agent import __version__
from agent.config import BrokerConfig, Config
from agent.errors import BrokerError, IncompleteError, SohoaError
from agent.keys import load_warehouse_private, load_warehouse_public
from agent.spool import Spool, open_spool
from device.host import read_host_health
from sync.index import SqliteIndex
from sync.link import Link, LinkSettings, Message, shared_subscription
from sync.protocol import INGEST_FILTER, Birth, health_topic, state_topic
from sync.telemetry import LinkState, ScannerState, build_health
from sync.uploader import Uploader, UploadSettings, backoff_delays
from sync.warehouse import Ingest, IngestSettings

log = logging.getLogger("sohoa.sync")


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _birth(device: str, online: bool) -> bytes:
    return Birth(device=device, online=online, version=__version__, ts=now_iso()).to_bytes()


RECONNECT_BASE_S = 0.5
RECONNECT_CAP_S = 2.0  # a restored link is used within seconds; refused connects are cheap


def broker_config(cfg: Config) -> BrokerConfig:
    """``cfg.broker`` with its TLS file paths resolved against the home."""
    b = cfg.broker
    return replace(
        b,
        ca=cfg.path(b.ca) if b.ca else None,
        cert=cfg.path(b.cert) if b.cert else None,
        key=cfg.path(b.key) if b.key else None,
    )


def reconnect_delays() -> Iterator[float]:
    return iter(backoff_delays(RECONNECT_BASE_S, RECONNECT_CAP_S))


def device_link(cfg: Config) -> Link:
    will = Message(state_topic(cfg.device.id), _birth(cfg.device.id, False), qos=1, retain=True)
    settings = LinkSettings.from_config(
        broker_config(cfg),
        cfg.device.id,
        will=will,
        clean_start=False,
        username=cfg.device.id,
    )
    return Link(settings)


def health_payload(
    cfg: Config, spool: Spool, started: float, rtt_ms: float | None, errors: deque[str]
) -> bytes:
    host = read_host_health(cfg.home)
    day_start = time.time() - (time.time() % 86400)
    health = build_health(
        device=cfg.device.id,
        time_iso=now_iso(),
        version=__version__,
        uptime_s=time.monotonic() - started,
        scanner=ScannerState(),
        spool=spool.status(),
        capture=spool.batch_stats(day_start),
        disk_free_bytes=host.disk_free_bytes,
        cpu_temp_c=host.cpu_temp_c,
        link=LinkState(rtt_ms=rtt_ms),
        clock_synced=host.clock_synced,
        cert_expiry=None,
        recent_errors=list(errors),
    )
    return json.dumps(health, ensure_ascii=False).encode()


def _say_offline(link: Link, device: str) -> None:
    """A clean stop does not fire the Last Will, so say it ourselves."""
    if link.connected:
        with contextlib.suppress(BrokerError):
            link.publish(state_topic(device), _birth(device, False), retain=True, timeout_s=5)


@dataclass(frozen=True)
class SyncOutcome:
    stored: int
    pending: int
    rejected: int
    rejections: dict[str, str]
    last_error: str | None = None


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
    warehouse = load_warehouse_public(cfg.path(cfg.warehouse.public_key))
    spool = open_spool(cfg)
    spool.recover()
    started = time.monotonic()
    deadline = started + timeout_s if timeout_s else float("inf")
    errors: deque[str] = deque(maxlen=10)
    delays = reconnect_delays()
    stored = rejected = 0
    rejections: dict[str, str] = {}
    try:
        while not stop.is_set() and time.monotonic() < deadline:
            link = device_link(cfg)
            try:
                t0 = time.monotonic()
                link.connect()
                rtt = (time.monotonic() - t0) * 1000
                delays = reconnect_delays()
                # no need to wait for these acknowledgements before the documents
                link.publish_nowait(
                    state_topic(cfg.device.id), _birth(cfg.device.id, True), retain=True
                )
                link.publish_nowait(
                    health_topic(cfg.device.id),
                    health_payload(cfg, spool, started, rtt, errors),
                    retain=True,
                )
                up = Uploader(
                    link,
                    spool,
                    UploadSettings(
                        cfg.device.id,
                        cfg.sync.window,
                        cfg.sync.receipt_timeout_s,
                        cfg.sync.bandwidth_kbps,
                    ),
                    warehouse.signing,
                )
                up.start()
                last_health = time.monotonic()
                while not stop.is_set() and time.monotonic() < deadline:
                    left, rej = up.drain(
                        min(deadline, time.monotonic() + cfg.sync.health_interval_s)
                    )
                    stored, rejected = stored + up.stats.stored, rej
                    up.stats.stored = 0
                    rejections.update(up.stats.rejections)
                    if time.monotonic() - last_health >= cfg.sync.health_interval_s or (
                        once and left == 0
                    ):
                        link.publish(
                            health_topic(cfg.device.id),
                            health_payload(cfg, spool, started, rtt, errors),
                            retain=True,
                        )
                        last_health = time.monotonic()
                    if once and left == 0:
                        return SyncOutcome(stored, 0, rejected, rejections)
                    if notify:
                        notify("WATCHDOG=1")
                    if left == 0:
                        stop.wait(2.0)
                        spool.purge_expired(cfg.spool.retention_days * 86400)
            except BrokerError as exc:
                errors.append(exc.message)
                log.warning("link down reason=%s", exc.message)
                stop.wait(min(next(delays), max(0.0, deadline - time.monotonic())))
            finally:
                _say_offline(link, cfg.device.id)
                link.close()
        pending = spool.status().pending_docs
        return SyncOutcome(stored, pending, rejected, rejections, errors[-1] if errors else None)
    finally:
        spool.close()


def sync_once(cfg: Config, timeout_s: float) -> SyncOutcome:
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


def serve_warehouse(
    cfg: Config,
    *,
    worker: str = "w1",
    stop: threading.Event | None = None,
    ready: threading.Event | None = None,
) -> None:
    """One ingest worker; several share the load through a shared subscription."""
    stop = stop or threading.Event()
    keys = load_warehouse_private(cfg.path(cfg.warehouse.private_key))
    index = SqliteIndex(cfg.path(cfg.warehouse.archive) / "index.db")
    ingest = Ingest(
        IngestSettings(
            cfg.path(cfg.warehouse.archive),
            cfg.path(cfg.warehouse.devices),
            cfg.warehouse.max_segments,
        ),
        keys,
        index,
    )
    delays = reconnect_delays()
    try:
        while not stop.is_set():
            link = Link(
                LinkSettings.from_config(
                    broker_config(cfg), f"sohoa-warehouse-{worker}", clean_start=False
                )
            )
            try:
                link.connect()
                link.subscribe(shared_subscription("ingest", INGEST_FILTER), qos=1)
                delays = reconnect_delays()
                if ready:
                    ready.set()
                while not stop.is_set():
                    msg = link.get(0.5)
                    if msg is None:
                        if not link.connected:
                            raise BrokerError("connection to the broker lost", "reconnecting")
                        continue
                    try:
                        answers = ingest.handle(msg.topic, msg.payload)
                    except SohoaError as exc:
                        log.error("message failed topic=%s reason=%s", msg.topic, exc.message)
                        continue
                    for a in answers:
                        link.publish(a.topic, a.payload, qos=a.qos, retain=a.retain)
            except BrokerError as exc:
                log.warning("warehouse link down reason=%s", exc.message)
                stop.wait(next(delays))
            finally:
                link.close()
    finally:
        index.close()
