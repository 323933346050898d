"""``sohoa keys``: device and warehouse keys, and the signed commands that carry a
receipt-key rotation to the devices.

- ``keys init``: the device key. ``keys init --warehouse``: warehouse.key,
  warehouse.pub and command.key; on a warehouse set up before commands existed,
  only the missing command key (copy warehouse.pub to the devices afterwards).
- ``keys enroll DEVICE_PUB --id ID``: accept a device at the warehouse.
- ``keys rotate``: a new encryption generation, old ones kept (copy warehouse.pub
  to the devices). It leaves the receipt key alone: rotating that needs the
  command key, which may be kept offline.
- ``keys rotate --receipts``: a new receipt key generation, the old private key
  destroyed, then ``push-commands``. Running warehouse workers sign with the new
  key from their next receipt; a device accepts it once the command reached it.
- ``keys push-commands``: a signed command naming the current receipt key,
  published retained (QoS 1) to every enrolled device's ``cmd`` topic with a new
  counter and expiry: after the broker was unreachable, or for a device offline
  for longer than the expiry.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from agent.config import Config
from agent.wiring import broker_config
from device.errors import InputError
from sync import command_key, enrolment, keys
from sync.errors import BrokerError, ExitCode
from sync.mqtt.link import Link
from sync.mqtt.settings import LinkSettings, Message
from sync.protocol import ReceiptKey

if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

DEFAULT_EXPIRES_DAYS = 30


def _command_path(args: argparse.Namespace, cfg: Config) -> Path:
    if args.command_key:
        return Path(args.command_key)
    return command_key.command_key_path(cfg.path(cfg.warehouse.private_key))


def _init_warehouse(args: argparse.Namespace, cfg: Config) -> None:
    private, public = cfg.path(cfg.warehouse.private_key), cfg.path(cfg.warehouse.public_key)
    command = _command_path(args, cfg)
    if private.exists() and not command.exists() and not args.force:
        command_key.add_command_key(private, public, command)
        print(
            f"command key created ({command}, keep it safe; only rotations need it);"
            f" copy {public} to every device's keys/warehouse.pub again"
        )
        return
    pub = command_key.init_warehouse(private, public, command, force=args.force)
    print(
        f"warehouse keys created (key id {pub.key_id}, command key {command});"
        f" copy {public} to every device's keys/warehouse.pub"
    )


def publish_retained(cfg: Config, messages: list[Message]) -> None:
    """Publish ``messages`` as the warehouse, each acknowledged by the broker."""
    settings = LinkSettings.from_config(
        broker_config(cfg), f"sohoa-keys-{os.getpid()}", clean_start=True
    )
    with Link(settings) as link:
        for m in messages:
            link.publish(m.topic, m.payload, qos=m.qos, retain=m.retain)


def push_commands(args: argparse.Namespace, cfg: Config, *, rotated: str = "") -> None:
    """Sign and publish the current receipt key to every enrolled device."""
    path = _command_path(args, cfg)
    wpub = keys.load_warehouse_public(cfg.path(cfg.warehouse.public_key))
    command_key.check_pinned(command_key.load_command_key(path), wpub, path)
    devices = enrolment.enrolled_ids(cfg.path(cfg.warehouse.devices))
    counter, messages = command_key.receipt_key_commands(
        path, devices, [ReceiptKey.of(wpub.signing)], now=time.time(), ttl_s=args.expires * 86400
    )
    try:
        publish_retained(cfg, messages)
    except BrokerError as exc:
        raise BrokerError(
            f"{rotated}the receipt-key command did not reach the broker ({exc.message})",
            "run 'sohoa keys push-commands' once the broker is reachable; until then"
            " devices keep their documents as sent",
        ) from None
    kid = ReceiptKey.of(wpub.signing).kid
    print(f"receipt key {kid}: command {counter} published to {len(devices)} device(s)")


def _rotate(args: argparse.Namespace, cfg: Config) -> None:
    private, public = cfg.path(cfg.warehouse.private_key), cfg.path(cfg.warehouse.public_key)
    if not args.receipts:
        wpub = keys.rotate_warehouse_keys(private, public)
        print(f"new warehouse key {wpub.key_id}; old keys kept so that old envelopes still open")
        return
    # the command key first: a rotation that no device can learn of would only stall them
    path = _command_path(args, cfg)
    command_key.check_pinned(
        command_key.load_command_key(path), keys.load_warehouse_public(public), path
    )
    old = ReceiptKey.of(keys.load_warehouse_private(private).signing.public_key()).kid
    new = ReceiptKey.of(keys.rotate_receipt_key(private, public).signing).kid
    print(f"new receipt key {new}; the old one ({old}) is destroyed")
    push_commands(args, cfg, rotated=f"receipt key rotated to {new}, but ")


def cmd_keys(args: argparse.Namespace, cfg: Config) -> int:
    if args.keys_cmd == "init" and args.warehouse:
        _init_warehouse(args, cfg)
    elif args.keys_cmd == "init":
        dpub = keys.init_device_keys(cfg.path(cfg.device.key), force=args.force)
        print(
            f"device key created, fingerprint {keys.device_fingerprint(dpub)}; enrol"
            f" {cfg.path(cfg.device.key).with_suffix('.pub')} at the warehouse:"
            f" sohoa keys enroll device.pub --id {cfg.device.id}"
        )
    elif args.keys_cmd == "enroll":
        path = enrolment.enroll_device(
            Path(args.device_pub), args.id, cfg.path(cfg.warehouse.devices)
        )
        print(f"device {args.id} enrolled ({path})")
    elif args.keys_cmd == "rotate":
        _rotate(args, cfg)
    elif args.keys_cmd == "push-commands":
        push_commands(args, cfg)
    else:
        raise InputError("unknown keys command", "see sohoa keys --help")
    return ExitCode.ok


def _days(text: str) -> int:
    try:
        days = int(text)
    except ValueError:
        days = 0
    if not 1 <= days <= 365:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days from 1 to 365")
    return days


def _command_options(p: argparse.ArgumentParser, *, expires: bool) -> None:
    p.add_argument(
        "--command-key",
        metavar="FILE",
        help="the command key (default: command.key beside the warehouse key)",
    )
    if expires:
        p.add_argument(
            "--expires",
            type=_days,
            default=DEFAULT_EXPIRES_DAYS,
            metavar="DAYS",
            help=f"days a command stays valid (default {DEFAULT_EXPIRES_DAYS})",
        )


def add_keys(sub: Subparsers) -> None:
    s = sub.add_parser("keys", help="device and warehouse keys, receipt-key rotation")
    ksub = s.add_subparsers(dest="keys_cmd", required=True, metavar="KEYS_COMMAND")
    k = ksub.add_parser(
        "init", help="create this device's (or, with --warehouse, the warehouse's) keys"
    )
    k.add_argument("--warehouse", action="store_true", help="create warehouse keys")
    k.add_argument("--force", action="store_true", help="replace existing keys")
    _command_options(k, expires=False)
    k = ksub.add_parser("enroll", help="warehouse side: enrol a device's public key")
    k.add_argument("device_pub", metavar="DEVICE_PUB", help="the device's keys/device.pub")
    k.add_argument("--id", required=True, help="the device id")
    k = ksub.add_parser(
        "rotate", help="warehouse side: new key generation (encryption, or --receipts)"
    )
    k.add_argument(
        "--receipts",
        action="store_true",
        help="rotate the receipt key instead and send the devices the signed command",
    )
    _command_options(k, expires=True)
    k = ksub.add_parser(
        "push-commands", help="warehouse side: send every device the current receipt key again"
    )
    _command_options(k, expires=True)
    s.set_defaults(func=cmd_keys)
