"""The one place a ``Config`` becomes the parts that sync and warehouse services use.

Only what every service shares lives here (the spool, the broker settings, the
reconnection schedule); capture has its own wiring in ``agent.capture.wiring``
so that a warehouse never imports scanner or barcode code.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING

from agent.config import Config
from sync.mqtt.backoff import backoff_delays
from sync.mqtt.settings import BrokerConfig

if TYPE_CHECKING:
    from pathlib import Path

    from sync.spool.store import Spool

RECONNECT_BASE_S = 0.5
RECONNECT_CAP_S = 2.0  # a restored link is used within seconds; refused connects are cheap


def open_spool(cfg: Config) -> Spool:
    """The device's spool under its home, with the configured free-space reserve."""
    from sync.spool.store import Spool  # here, so that a warehouse never loads the spool

    return Spool(spool_root(cfg), reserve_bytes=cfg.spool.reserve_mb * 2**20)


def spool_root(cfg: Config) -> Path:
    return cfg.home / "spool"


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
    """Back-off with jitter between connection attempts, restarted after each success."""
    return iter(backoff_delays(RECONNECT_BASE_S, RECONNECT_CAP_S))
