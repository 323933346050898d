"""The warehouse's command key: its file, its counter, and the commands it signs.

``command.key`` (beside warehouse.key unless given elsewhere; mode 0600) is JSON
``{"format": "sohoa-command-key/1", "key": b64 raw Ed25519 private key,
"counter": N}``. It is apart from warehouse.key on purpose: the serving workers
never read it, so it can be kept offline and brought back only to rotate, and a
copy of warehouse.key can never sign a command. Its public half is pinned in
warehouse.pub (``command``), which devices already pin.

Each issue of commands takes the next counter, written before any command
leaves: at least the last one + 1, and at least the Unix time in seconds, so
that a command key restored from an older backup still counts above what
devices have seen.

``receipt_key_commands`` signs one ``receipt-keys`` command (``sync.commands``)
per enrolled device, to be published retained with QoS 1 on its ``cmd`` topic:
a device that was offline gets it when it reconnects. A command expires after
``ttl_s`` (30 days by default); ``sohoa keys push-commands`` issues fresh ones
for devices offline longer than that.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sync.commands import Command, sign_command
from sync.durable import atomic_write, iso
from sync.errors import CryptoError
from sync.keyfiles import (
    b64,
    dumps,
    ed25519_kid,
    json_doc,
    read_key_file,
    refuse_overwrite,
    required,
    unb64,
)
from sync.keys import (
    WarehousePublic,
    init_warehouse_keys,
    load_warehouse_private,
    load_warehouse_public,
    pin_command_key,
)
from sync.mqtt.settings import Message
from sync.protocol import ReceiptKey, command_topic

FORMAT = "sohoa-command-key/1"
DEFAULT_TTL_S = 30 * 86400


def command_key_path(warehouse_key: Path) -> Path:
    """Where the command key lives unless given elsewhere: beside warehouse.key."""
    return warehouse_key.with_name("command.key")


@dataclass(frozen=True)
class CommandKey:
    key: Ed25519PrivateKey
    counter: int  # the last counter issued


def _write(path: Path, key: Ed25519PrivateKey, counter: int) -> None:
    doc = {"format": FORMAT, "key": b64(key.private_bytes_raw()), "counter": counter}
    atomic_write(path, dumps(doc), mode=0o600, what="a key file")


def init_command_key(path: Path, *, force: bool = False) -> Ed25519PublicKey:
    refuse_overwrite(path, force)
    key = Ed25519PrivateKey.generate()
    _write(path, key, 0)
    return key.public_key()


def load_command_key(path: Path) -> CommandKey:
    if not path.exists():
        raise CryptoError(
            f"command key {path} does not exist",
            "give the command key kept offline with --command-key FILE; a warehouse"
            " without one gets it from 'sohoa keys init --warehouse'",
        )
    doc = json_doc(read_key_file(path, "command key", private=True), path, FORMAT)
    key = Ed25519PrivateKey.from_private_bytes(unb64(required(doc, "key", path), "key", path, 32))
    counter = required(doc, "counter", path)
    if not isinstance(counter, int) or isinstance(counter, bool) or counter < 0:
        raise CryptoError(f"{path}: the counter is not a number", "restore it from its backup")
    return CommandKey(key, counter)


def init_warehouse(
    private_path: Path, public_path: Path, command_path: Path, *, force: bool = False
) -> WarehousePublic:
    """Every key a warehouse needs: encryption and receipt keys, and the command key."""
    refuse_overwrite(private_path, force)
    refuse_overwrite(command_path, force)
    command = init_command_key(command_path, force=force)
    return init_warehouse_keys(private_path, public_path, force=force, command=command)


def add_command_key(private_path: Path, public_path: Path, command_path: Path) -> WarehousePublic:
    """A command key for a warehouse set up before commands existed."""
    pinned = load_warehouse_private(private_path).command
    if pinned is not None:  # kept offline, not lost: a new one would strand every device
        raise CryptoError(
            f"{private_path} already pins command key {ed25519_kid(pinned)},"
            f" whose file is not at {command_path}",
            "give the command key's file with --command-key FILE (pass --force only to"
            " replace every warehouse key)",
        )
    command = init_command_key(command_path)
    pin_command_key(private_path, public_path, command)
    return load_warehouse_public(public_path)


def check_pinned(command: CommandKey, warehouse: WarehousePublic, path: Path) -> None:
    """Refuse a command key that devices would not accept (not the one warehouse.pub pins)."""
    pinned = warehouse.command
    if pinned is None or pinned.public_bytes_raw() != command.key.public_key().public_bytes_raw():
        raise CryptoError(
            f"command key {path} ({ed25519_kid(command.key.public_key())}) is not the one"
            " warehouse.pub pins",
            "point --command-key at the right file, or pin this one with"
            " 'sohoa keys init --warehouse' and copy warehouse.pub to every device",
        )


def take_counter(path: Path, now: float) -> CommandKey:
    """The command key with the next counter, recorded before it is used."""
    current = load_command_key(path)
    counter = max(current.counter + 1, int(now))
    _write(path, current.key, counter)
    return CommandKey(current.key, counter)


def receipt_key_commands(
    path: Path,
    devices: Sequence[str],
    keys: Sequence[ReceiptKey],
    *,
    now: float,
    ttl_s: float = DEFAULT_TTL_S,
) -> tuple[int, list[Message]]:
    """One signed ``receipt-keys`` command per device, retained; (counter, messages)."""
    signer = take_counter(path, now)
    expires = iso(now + ttl_s)
    messages = []
    for device in devices:
        cmd = sign_command(Command(device, signer.counter, expires, tuple(keys)), signer.key)
        messages.append(Message(command_topic(device), cmd.to_bytes(), qos=1, retain=True))
    return signer.counter, messages
