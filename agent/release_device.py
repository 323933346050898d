"""The sync service's release side: its fetcher, what it checks of an offer, and how it
hands a downloaded bundle over.

A device takes offers only when it pins the province's release key
(``[release] public_key``): without it no bundle could be verified. The sync
service runs as the service user in a read-only system and cannot install: it
writes a request (``<home>/release/install.json``) that starts
sohoa-release-switch.service (root, through its .path unit), which verifies the
bundle with the root-owned pinned key, unpacks it, switches ``current``,
restarts the services and waits for the new release's health, else switches
back (``sohoa release apply``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from agent import release_install as ab
from agent.config import Config
from agent.wiring import broker_config
from sync import __version__
from sync.keys import load_warehouse_public
from sync.mqtt.settings import LinkSettings
from sync.release.fetch import FetchSettings, ReleaseFetcher
from sync.release.manifest import check_order
from sync.release.wire import Offer

log = logging.getLogger("sohoa.release")


def make_fetcher(cfg: Config) -> ReleaseFetcher | None:
    """The fetcher of a device that pins a release key, else None."""
    if not cfg.path(cfg.release.public_key).exists():
        return None
    prefix = cfg.release.prefix
    warehouse = load_warehouse_public(cfg.path(cfg.warehouse.public_key))
    settings = FetchSettings(cfg.device.id, cfg.home / "release", warehouse.command)
    link = LinkSettings.from_config(
        broker_config(cfg), f"{cfg.device.id}-rel", clean_start=True, username=cfg.device.id
    )

    def check(offer: Offer) -> None:
        installed = ab.installed_version(prefix) or __version__
        check_order(installed, offer.version, allow_downgrade=offer.allow_downgrade)

    def install(bundle: Path, offer: Offer) -> None:
        ab.write_request(cfg.home, bundle, allow_downgrade=offer.allow_downgrade)
        log.info("release install requested version=%s", offer.version)

    return ReleaseFetcher(
        settings,
        link,
        check=check,
        install=install,
        reports=lambda version: ab.read_report(prefix, version),
    )
