"""``sohoa warehouse serve``: ingest workers on a shared subscription, supervised.

Each worker is one MQTT connection in ``$share/ingest``; several workers in
several processes, on one broker or a cluster, split the load. Client ids are
``sohoa-warehouse-<instance>-w<n>``, the instance defaulting to the host name,
so that processes never kick each other off the broker. A message that fails is
logged, counted and dropped (its device asks again); no message ends a worker,
and a worker that dies anyway is restarted by ``WarehouseWorkers.keep_alive``.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from types import TracebackType

from agent.config import Config
from agent.enrol_online import EnrolDesk
from agent.wiring import broker_config, reconnect_delays
from sync.errors import BrokerError, SohoaError
from sync.keys import load_warehouse_private
from sync.mqtt.link import Link
from sync.mqtt.settings import LinkSettings, Message, shared_subscription
from sync.protocol import ENROL_FILTER, INGEST_FILTER, parse_enrol_topic
from sync.warehouse.archive import sweep_partial
from sync.warehouse.index import DocumentIndex, open_index
from sync.warehouse.ingest import Ingest, IngestSettings
from sync.warehouse.signatures import SigningTrust
from sync.warehouse.staging import StagingLimits

log = logging.getLogger("sohoa.warehouse")

MAX_RESTARTS = 5  # per worker within RESTART_WINDOW_S before the service gives up
RESTART_WINDOW_S = 60.0
WORKER_SESSION_S = 300  # how long the broker keeps an absent worker's queue


@dataclass
class WorkerStats:
    """Per-worker counters (the fleet service exports them)."""

    handled: int = 0
    failed: int = 0


def default_instance() -> str:
    return socket.gethostname().split(".")[0] or "warehouse"


def ingest_from_config(cfg: Config) -> tuple[Ingest, DocumentIndex]:
    """The ingest logic and the index it writes, from the ``[warehouse]`` section."""
    keys = load_warehouse_private(cfg.path(cfg.warehouse.private_key))
    index = open_index(cfg.warehouse.index, cfg.path(cfg.warehouse.archive))
    settings = IngestSettings(
        cfg.path(cfg.warehouse.archive),
        cfg.path(cfg.warehouse.devices),
        cfg.warehouse.max_segments,
        cfg.warehouse.max_envelope_mb * 2**20,
        StagingLimits(
            cfg.warehouse.staging_device_mb * 2**20,
            cfg.warehouse.staging_total_mb * 2**20,
            cfg.warehouse.staging_ttl_h * 3600.0,
        ),
        SigningTrust(
            tuple(cfg.path(p) for p in cfg.warehouse.signing_roots),
            tuple(cfg.path(p) for p in cfg.warehouse.signing_crls),
            cfg.warehouse.tsa_url,
        ),
    )
    return Ingest(settings, keys, index), index


Handler = Callable[[str, bytes], list[Message]]


def route(ingest: Ingest, desk: EnrolDesk) -> Handler:
    """Enrolment requests to the enrolment desk, everything else to ingest."""

    def handle(topic: str, payload: bytes) -> list[Message]:
        if parse_enrol_topic(topic) is not None:
            return desk.handle(topic, payload)
        return ingest.handle(topic, payload)

    return handle


def _publish(link: Link, answers: list[Message]) -> None:
    for a in answers:
        link.publish(a.topic, a.payload, qos=a.qos, retain=a.retain)


def _serve_link(
    link: Link, handle: Handler, ingest: Ingest, stop: threading.Event, stats: WorkerStats
) -> None:
    """Handle messages on one connection until it drops or ``stop`` is set; between
    messages, ``ingest.tick`` stages segments that waited for their manifest."""
    while not stop.is_set():
        msg = link.get(0.02 if len(ingest.parked) else 0.5)  # parked: its manifest is near
        _publish(link, ingest.tick())
        if msg is None:
            if not link.connected:
                raise BrokerError("connection to the broker lost", "reconnecting")
            continue
        stats.handled += 1
        try:
            answers = handle(msg.topic, msg.payload)
        except SohoaError as exc:
            stats.failed += 1
            log.error("message failed topic=%s reason=%s", msg.topic, exc.message)
            continue
        except Exception as exc:  # one message never takes a worker down
            stats.failed += 1
            log.error("message dropped topic=%s reason=%s", msg.topic, type(exc).__name__)
            continue
        _publish(link, answers)


def serve_warehouse(
    cfg: Config,
    *,
    worker: str = "w1",
    stop: threading.Event | None = None,
    ready: threading.Event | None = None,
    stats: WorkerStats | None = None,
) -> None:
    """One ingest worker; reconnects with back-off until ``stop`` is set."""
    stop = stop or threading.Event()
    stats = stats or WorkerStats()
    ingest, index = ingest_from_config(cfg)
    swept = sweep_partial(ingest.s.archive, ingest.staging)
    if swept:
        log.warning("removed %d decrypted copies left by a killed writer", swept)
    handle = route(ingest, EnrolDesk(cfg))
    broker = broker_config(cfg)
    delays = reconnect_delays()
    try:
        while not stop.is_set():
            link = Link(
                # a short session: a worker back within minutes gets what came meanwhile,
                # but mosquitto stops queueing a gone worker's share of the shared
                # subscription after WORKER_SESSION_S (devices ask again for the rest)
                replace(
                    LinkSettings.from_config(
                        broker, f"sohoa-warehouse-{worker}", clean_start=False
                    ),
                    session_expiry_s=WORKER_SESSION_S,
                )
            )
            try:
                link.connect()
                link.subscribe(shared_subscription("ingest", INGEST_FILTER), qos=1)
                link.subscribe(shared_subscription("enrol", ENROL_FILTER), qos=1)
                delays = reconnect_delays()
                if ready:
                    ready.set()
                _serve_link(link, handle, ingest, stop, stats)
            except BrokerError as exc:
                log.warning("warehouse link down reason=%s", exc.message)
                stop.wait(next(delays))
            finally:
                link.close()
    finally:
        index.close()


class _Worker:
    def __init__(self, cfg: Config, name: str, stop: threading.Event) -> None:
        self.cfg, self.name, self.stop = cfg, name, stop
        self.ready = threading.Event()
        self.stats = WorkerStats()
        self.restarts: list[float] = []
        self.error: str | None = None
        self.thread = self._thread()

    def _thread(self) -> threading.Thread:
        return threading.Thread(target=self._run, name=f"warehouse-{self.name}", daemon=True)

    def _run(self) -> None:
        try:
            serve_warehouse(
                self.cfg, worker=self.name, stop=self.stop, ready=self.ready, stats=self.stats
            )
        except Exception as exc:  # noted here; keep_alive restarts or gives up
            self.error = exc.message if isinstance(exc, SohoaError) else type(exc).__name__
            log.error("warehouse worker died worker=%s reason=%s", self.name, self.error)

    def restart(self, now: float) -> bool:
        """Start a fresh thread; False once it has died too often lately."""
        self.restarts = [t for t in self.restarts if now - t < RESTART_WINDOW_S] + [now]
        if len(self.restarts) > MAX_RESTARTS:
            return False
        self.thread = self._thread()
        self.thread.start()
        return True


class WarehouseWorkers:
    """``count`` supervised ingest workers in threads of this process, as a context manager.

    ``wait_ready`` returns once every worker has subscribed, so that callers
    wait on a condition instead of sleeping.
    """

    def __init__(self, cfg: Config, count: int = 1, *, name: str | None = None) -> None:
        instance = name if name is not None else default_instance()
        self._stop = threading.Event()
        self._workers = [_Worker(cfg, f"{instance}-w{i + 1}", self._stop) for i in range(count)]

    @classmethod
    def from_config(
        cls, cfg: Config, count: int = 1, *, name: str | None = None
    ) -> WarehouseWorkers:
        return cls(cfg, count, name=name)

    def start(self) -> WarehouseWorkers:
        for w in self._workers:
            w.thread.start()
        return self

    def wait_ready(self, timeout_s: float) -> bool:
        """True once every worker is subscribed (within ``timeout_s`` in all)."""
        deadline = time.monotonic() + timeout_s
        return all(w.ready.wait(max(0.0, deadline - time.monotonic())) for w in self._workers)

    def alive(self) -> bool:
        return any(w.thread.is_alive() for w in self._workers)

    def keep_alive(self) -> None:
        """Restart workers that died; raise when one keeps dying (the service then exits
        non-zero and systemd restarts it)."""
        if self._stop.is_set():
            return
        for w in self._workers:
            if not w.thread.is_alive() and not w.restart(time.monotonic()):
                raise SohoaError(
                    f"warehouse worker {w.name} keeps failing ({w.error})",
                    "fix the cause named above; systemd restarts the service",
                )

    def stats(self) -> dict[str, WorkerStats]:
        return {w.name: w.stats for w in self._workers}

    def join(self, timeout_s: float) -> None:
        for w in self._workers:
            w.thread.join(timeout_s)

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
