"""``sohoa warehouse serve``: ingest workers on a shared subscription.

Each worker is one MQTT connection in ``$share/ingest``; several workers in
several processes, on one broker or a cluster, split the load. A message that
fails is logged and dropped (its device asks again); no message ends a worker.
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType

from agent.config import Config
from agent.wiring import broker_config, reconnect_delays
from sync.errors import BrokerError, SohoaError
from sync.keys import load_warehouse_private
from sync.mqtt.link import Link
from sync.mqtt.settings import LinkSettings, shared_subscription
from sync.protocol import INGEST_FILTER
from sync.warehouse.index import SqliteIndex
from sync.warehouse.ingest import Ingest, IngestSettings

log = logging.getLogger("sohoa.warehouse")


def ingest_from_config(cfg: Config) -> tuple[Ingest, SqliteIndex]:
    """The ingest logic and the index it writes, from the ``[warehouse]`` section."""
    keys = load_warehouse_private(cfg.path(cfg.warehouse.private_key))
    index = SqliteIndex(cfg.path(cfg.warehouse.archive) / "index.db")
    settings = IngestSettings(
        cfg.path(cfg.warehouse.archive),
        cfg.path(cfg.warehouse.devices),
        cfg.warehouse.max_segments,
    )
    return Ingest(settings, keys, index), index


def _serve_link(link: Link, ingest: Ingest, stop: threading.Event) -> None:
    """Handle messages on one connection until it drops or ``stop`` is set."""
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


def serve_warehouse(
    cfg: Config,
    *,
    worker: str = "w1",
    stop: threading.Event | None = None,
    ready: threading.Event | None = None,
) -> None:
    """One ingest worker; reconnects with back-off until ``stop`` is set."""
    stop = stop or threading.Event()
    ingest, index = ingest_from_config(cfg)
    broker = broker_config(cfg)
    delays = reconnect_delays()
    try:
        while not stop.is_set():
            link = Link(
                LinkSettings.from_config(broker, f"sohoa-warehouse-{worker}", clean_start=False)
            )
            try:
                link.connect()
                link.subscribe(shared_subscription("ingest", INGEST_FILTER), qos=1)
                delays = reconnect_delays()
                if ready:
                    ready.set()
                _serve_link(link, ingest, stop)
            except BrokerError as exc:
                log.warning("warehouse link down reason=%s", exc.message)
                stop.wait(next(delays))
            finally:
                link.close()
    finally:
        index.close()


class WarehouseWorkers:
    """``count`` ingest workers in threads of this process, as a context manager.

    ``wait_ready`` returns once every worker has subscribed, so that callers
    wait on a condition instead of sleeping.
    """

    def __init__(self, cfg: Config, count: int = 1, *, name: str = "w") -> None:
        self._stop = threading.Event()
        self._ready = [threading.Event() for _ in range(count)]
        self._threads = [
            threading.Thread(
                target=serve_warehouse,
                args=(cfg,),
                kwargs={"worker": f"{name}{i + 1}", "stop": self._stop, "ready": ready},
                name=f"warehouse-{name}{i + 1}",
                daemon=True,
            )
            for i, ready in enumerate(self._ready)
        ]

    @classmethod
    def from_config(cls, cfg: Config, count: int = 1, *, name: str = "w") -> WarehouseWorkers:
        return cls(cfg, count, name=name)

    def start(self) -> WarehouseWorkers:
        for t in self._threads:
            t.start()
        return self

    def wait_ready(self, timeout_s: float) -> bool:
        """True once every worker is subscribed (within ``timeout_s`` in all)."""
        return all(r.wait(timeout_s) for r in self._ready)

    def alive(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def join(self, timeout_s: float) -> None:
        for t in self._threads:
            t.join(timeout_s)

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self.join(timeout_s)

    def __enter__(self) -> WarehouseWorkers:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
