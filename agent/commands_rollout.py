"""``sohoa release offer|serve|rollout``: the province rolls a release out over MQTT.

- ``release offer VERSION --to DEVICE|group:NAME|N% [--allow-downgrade]``: the
  bundle ``sohoa-VERSION.bundle`` of the releases folder (``--bundles``, else
  ``<home>/releases``) goes, as a signed retained offer under the command key, to
  the devices named; the rollout is recorded beside it.
- ``release serve``: the warehouse identity serves bundle segments and folds the
  devices' reports into the rollout, which stops itself (and withdraws the offers
  not yet taken) when more than ``[release] max_rollback_fraction`` roll back.
- ``release rollout VERSION [--json]``: the rollout's progress and failures.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from agent.commands_keys import publish_retained
from agent.config import Config
from agent.wiring import broker_config
from sync import command_key, keys
from sync.durable import iso
from sync.errors import BrokerError, InputFileError
from sync.fleet_model import load_register
from sync.mqtt.link import Link
from sync.mqtt.settings import LinkSettings
from sync.release.rollout import Rollout, may_offer, progress, select_targets, widen
from sync.release.server import (
    ReleaseServer,
    bundle_file,
    load_rollout,
    offers,
    rollout_file,
    save_rollout,
)

if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]


def _folder(args: argparse.Namespace, cfg: Config) -> Path:
    return Path(args.bundles) if args.bundles else cfg.home / "releases"


def _groups(cfg: Config) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for entry in (load_register(cfg.fleet.register) or {}).values():
        for name in {entry.commune, entry.district} - {""}:
            groups.setdefault(name, []).append(entry.device)
    return groups


def _offer(args: argparse.Namespace, cfg: Config) -> int:
    folder = _folder(args, cfg)
    bundle = bundle_file(folder, args.version)
    if not bundle.is_file():
        raise InputFileError(
            f"no bundle {bundle}", f"copy sohoa-{args.version}.bundle there (sohoa release build)"
        )
    enrolled = [p.stem for p in cfg.path(cfg.warehouse.devices).glob("*.pub")]
    targets = select_targets(args.to, args.version, enrolled, _groups(cfg))
    if rollout_file(folder, args.version).exists():
        rollout = widen(
            load_rollout(folder, args.version), targets, allow_downgrade=args.allow_downgrade
        )
    else:
        rollout = Rollout(
            args.version, targets, cfg.release.max_rollback_fraction, args.allow_downgrade
        )
    save_rollout(folder, rollout)
    path = command_key.command_key_path(cfg.path(cfg.warehouse.private_key))
    wpub = keys.load_warehouse_public(cfg.path(cfg.warehouse.public_key))
    now = time.time()
    signer = command_key.take_counter(path, now)
    command_key.check_pinned(signer, wpub, path)
    expires = iso(now + args.expires_days * 86400)
    publish_retained(cfg, offers(rollout, bundle, signer.key, signer.counter, expires))
    sent = len([d for d in rollout.targets if may_offer(rollout, d)])
    print(
        f"release {args.version} offered to {sent} device(s); the rollout has"
        f" {len(rollout.targets)} (in {folder})"
    )
    return 0


def _serve(args: argparse.Namespace, cfg: Config) -> int:
    folder = _folder(args, cfg)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    name = f"sohoa-release-{socket.gethostname()}-{os.getpid()}"
    while not stop.is_set():
        settings = LinkSettings.from_config(broker_config(cfg), name, clean_start=True)
        try:
            with Link(settings) as link:
                server = ReleaseServer(link, folder)
                server.start()
                server.serve(stop, until=lambda: not link.connected)
        except BrokerError as exc:
            print(f"warning: release serve: {exc.message}; connecting again", flush=True)
            stop.wait(2)
    return 0


def _rollout(args: argparse.Namespace, cfg: Config) -> int:
    doc = progress(load_rollout(_folder(args, cfg), args.version))
    if args.json:
        print(json.dumps(doc, ensure_ascii=False))
        return 0
    by = doc["by_status"]
    assert isinstance(by, dict)
    print(
        f"release {doc['version']}: {doc['targets']} device(s), "
        + ", ".join(f"{k} {v}" for k, v in by.items() if v)
    )
    if doc["stopped"]:
        print(f"stopped: {doc['stopped']}")
    failures = doc["failures"]
    assert isinstance(failures, dict)
    for device, reason in failures.items():
        print(f"  {device}: {reason}")
    return 0


def add_rollout(rsub: Subparsers) -> None:
    r = rsub.add_parser("offer", help="province: offer a release to devices over MQTT")
    r.add_argument("version", metavar="VERSION", help="the release, e.g. 0.2.0")
    r.add_argument("--to", required=True, help="DEVICE, group:NAME (commune/district) or N%%")
    r.add_argument("--allow-downgrade", action="store_true", help="the release is older")
    r.add_argument("--expires-days", type=int, default=30, help="the offer's validity")
    r.add_argument("--bundles", help="the releases folder (else <home>/releases)")
    r.set_defaults(func=_offer)
    r = rsub.add_parser("serve", help="province: serve bundles and follow the rollouts")
    r.add_argument("--bundles", help="the releases folder (else <home>/releases)")
    r.set_defaults(func=_serve)
    r = rsub.add_parser("rollout", help="province: a rollout's progress and failures")
    r.add_argument("version", metavar="VERSION", help="the release")
    r.add_argument("--bundles", help="the releases folder (else <home>/releases)")
    r.add_argument("--json", action="store_true", help="print as JSON")
    r.set_defaults(func=_rollout)
