"""``sohoa fleet serve``: the province's watch over every device, for people and Prometheus.

One read-only MQTT connection (broker role ``fleet``) takes every device's
retained state and health into a ``FleetModel``; every few seconds the alert
rules are evaluated (``sync.fleet_alerts``), the firing set is published
retained on ``sohoa/v1/fleet/alerts`` when it changes, and once a minute the
day's figures go into the history. HTTP on ``[fleet] listen``: the fleet page,
``/api/devices`` and ``/metrics`` (``agent.fleetpage``). A message that fails
is counted and dropped; a lost broker is reconnected with back-off while the
page keeps showing the last picture.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from agent.config import Config
from agent.fleetpage.pages import FleetPicture, build_fleet_app
from agent.validators import listen_address
from agent.web.server import PageServer
from agent.wiring import broker_config, reconnect_delays
from sync.errors import BrokerError, SohoaError
from sync.fleet_alerts import Alert, AlertBook, alerts_json, rules
from sync.fleet_history import open_history
from sync.fleet_model import FleetModel, load_register
from sync.mqtt.link import Link
from sync.mqtt.settings import LinkSettings
from sync.protocol import FLEET_ALERTS_TOPIC, FLEET_FILTERS

log = logging.getLogger("sohoa.fleet")

TICK_S = 5.0
HISTORY_S = 60.0


class FleetService:
    """The model, its alerts and its history; fed one message at a time."""

    def __init__(self, cfg: Config, clock: Callable[[], float] = time.time) -> None:
        f = cfg.fleet
        self.clock = clock
        self.model = FleetModel(load_register(cfg.path(f.register) if f.register else None))
        self.book = AlertBook(rules(offline_for_s=f.offline_alert_s))
        self.history = open_history(cfg.warehouse.index, cfg.home)
        self._alerts: list[Alert] = []
        self._recorded = 0.0
        self.failed = 0

    def on_message(self, topic: str, payload: bytes) -> None:
        try:
            reason = self.model.apply(topic, payload, self.clock())
        except Exception as exc:  # one message never takes the service down
            self.failed += 1
            log.error("message dropped topic=%s reason=%s", topic, type(exc).__name__)
            return
        if reason is not None:
            log.debug("message ignored topic=%s reason=%s", topic, reason)

    def tick(self) -> list[Alert]:
        now = self.clock()
        self._alerts = self.book.evaluate(self.model.views(), now)
        if now - self._recorded >= HISTORY_S:
            self.history.record(self.model.views(), now)
            self._recorded = now
        return self._alerts

    def alerts(self) -> list[Alert]:
        return list(self._alerts)

    def extra_metrics(self) -> list[tuple[str, str, str, float]]:
        ignored = float(sum(self.model.ignored.values()))
        return [
            (
                "sohoa_fleet_messages_total",
                "counter",
                "state and health messages taken",
                self.model.messages,
            ),
            (
                "sohoa_fleet_ignored_messages_total",
                "counter",
                "messages ignored as malformed or foreign",
                ignored + self.failed,
            ),
            (
                "sohoa_fleet_alerts_firing",
                "gauge",
                "alerts firing, the watchdog excluded",
                len(self._alerts) - 1,
            ),
        ]

    def picture(self) -> FleetPicture:
        return FleetPicture(self.model, self.alerts, self.history.days, self.extra_metrics)


def _publish_alerts(link: Link, alerts: list[Alert], last: list[Any]) -> list[Any]:
    body = [a.to_json() for a in alerts]
    if body != last:
        link.publish(FLEET_ALERTS_TOPIC, alerts_json(alerts, time.time()), retain=True)
    return body


def _serve_link(link: Link, service: FleetService, stop: threading.Event) -> None:
    for f in FLEET_FILTERS:
        link.subscribe(f, qos=1)
    published: list[Any] = []
    next_tick = 0.0
    while not stop.is_set():
        msg = link.get(0.5)
        if msg is not None:
            service.on_message(msg.topic, msg.payload)
        elif not link.connected:
            raise BrokerError("connection to the broker lost", "reconnecting")
        if time.monotonic() >= next_tick:
            published = _publish_alerts(link, service.tick(), published)
            next_tick = time.monotonic() + TICK_S


def run_fleet_link(
    cfg: Config, service: FleetService, stop: threading.Event, ready: threading.Event
) -> None:
    broker = broker_config(cfg)
    client_id = f"sohoa-fleet-{socket.gethostname().split('.')[0] or 'fleet'}"
    delays = reconnect_delays()
    while not stop.is_set():
        link = Link(LinkSettings.from_config(broker, client_id, clean_start=True))
        try:
            link.connect()
            delays = reconnect_delays()
            ready.set()
            _serve_link(link, service, stop)
        except BrokerError as exc:
            log.warning("fleet link down reason=%s", exc.message)
            service.tick()  # the page keeps its picture; offline alerts still run
            stop.wait(next(delays))
        finally:
            link.close()


def serve_fleet(cfg: Config, *, stop: threading.Event, notify: Callable[[str], None]) -> None:
    service = FleetService(cfg)
    server = None
    try:
        if cfg.fleet.listen:
            host, port = listen_address(cfg.fleet.listen)
            app = build_fleet_app(cfg.home, service.picture())
            server = PageServer(app, host, port).start()
            log.info("fleet service on http://%s:%d", host, port)
    except OSError as exc:
        raise SohoaError(
            f"the fleet service cannot listen on {cfg.fleet.listen} ({exc.strerror or exc})",
            "set [fleet] listen to a free host:port",
        ) from None
    ready = threading.Event()
    link = threading.Thread(target=run_fleet_link, args=(cfg, service, stop, ready), daemon=True)
    link.start()
    notify("READY=1")
    try:
        while not stop.wait(TICK_S):
            notify("WATCHDOG=1")
    finally:
        if server is not None:
            server.stop()
        link.join(10)
        service.history.close()
