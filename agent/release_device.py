"""The sync service's release side: its fetcher, what it checks of an offer, and how it
starts the installer.

A device takes offers only when it pins the province's release key
(``[release] public_key``): without it no bundle could be verified. The
downloaded bundle goes to ``sohoa release install`` in a process of its own
(``--restart-pidfile``: the installer asks this service to stop once the new
release is switched on, the unit's restart brings it back through
``sohoa-launch``, and again after a switch back).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

from agent import release_install as ab
from agent.config import Config
from agent.wiring import broker_config
from sync import __version__
from sync.durable import atomic_write
from sync.keys import load_warehouse_public
from sync.mqtt.settings import LinkSettings
from sync.release.fetch import FetchSettings, ReleaseFetcher
from sync.release.manifest import check_order
from sync.release.wire import Offer

log = logging.getLogger("sohoa.release")


def pidfile(prefix: Path) -> Path:
    return prefix / "run" / "sync.pid"


def installer_command(cfg: Config, bundle: Path, offer: Offer) -> list[str]:
    cmd = [sys.executable, "-m", "agent.cli"]
    if cfg.source is not None:
        cmd += ["--config", str(cfg.source)]
    prefix = cfg.release.prefix
    cmd += ["release", "install", str(bundle), "--prefix", str(prefix), "--no-restart"]
    cmd += ["--restart-pidfile", str(pidfile(prefix))]
    return cmd + (["--allow-downgrade"] if offer.allow_downgrade else [])


def make_fetcher(cfg: Config) -> ReleaseFetcher | None:
    """The fetcher of a device that pins a release key, else None."""
    if not cfg.path(cfg.release.public_key).exists():
        return None
    prefix = cfg.release.prefix
    if (prefix / "current").is_symlink():  # running from the A/B prefix
        try:
            atomic_write(pidfile(prefix), f"{os.getpid()}\n".encode(), durable=False)
        except OSError as exc:  # a read-only prefix (the unit's ProtectSystem): no restart by pid
            log.warning("release pid file not written reason=%s", exc.strerror)
    warehouse = load_warehouse_public(cfg.path(cfg.warehouse.public_key))
    settings = FetchSettings(cfg.device.id, cfg.home / "release", warehouse.command)
    link = LinkSettings.from_config(
        broker_config(cfg), f"{cfg.device.id}-rel", clean_start=True, username=cfg.device.id
    )

    def check(offer: Offer) -> None:
        installed = ab.installed_version(prefix) or __version__
        check_order(installed, offer.version, allow_downgrade=offer.allow_downgrade)

    def install(bundle: Path, offer: Offer) -> None:
        log = (cfg.home / "release" / f"install-{offer.version}.log").open("ab")
        subprocess.Popen(
            installer_command(cfg, bundle, offer),
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd="/",
        )

    return ReleaseFetcher(
        settings,
        link,
        check=check,
        install=install,
        reports=lambda version: ab.read_report(prefix, version),
    )
