"""The receipt keys a device accepts, and the command state that changes them.

A device starts from the receipt key of its pinned ``keys/warehouse.pub``
(``signing``). A signed ``receipt-keys`` command (``sync.commands``) replaces
that set; the device records the set with the command's counter in
``keys/commands.json`` beside warehouse.pub (mode 0600, written atomically)::

    {"format": "sohoa-commands/1", "command_key": kid, "counter": N,
     "applied": iso, "payload_sha256": hex, "receipt_keys": [{"kid", "public"}]}

From then on a receipt counts only when it verifies against a key of that set:
after a rotation, an old copy of the warehouse's key file cannot make a device
purge. The state belongs to the command key it names: when warehouse.pub pins
another command key (the warehouse was set up again) the state is set aside and
the device starts again from warehouse.pub.

The warehouse publishes commands retained, so a device gets the last one again
on every subscribe: that exact command is ignored with an info line. Any other
command that does not pass is refused with one warning line naming the reason;
neither changes anything.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from sync.commands import CommandRefused, check_command, parse_command
from sync.durable import atomic_write
from sync.errors import CryptoError
from sync.keyfiles import b64, dumps, ed25519_kid, json_doc, read_key_file, required, unb64
from sync.keys import WarehousePublic
from sync.protocol import Receipt, ReceiptKey, verify_receipt

log = logging.getLogger("sohoa.commands")

STATE_FORMAT = "sohoa-commands/1"


def command_state_path(warehouse_pub: Path) -> Path:
    """Where a device keeps its command state: beside its pinned warehouse.pub."""
    return warehouse_pub.with_name("commands.json")


class ReceiptVerifier(Protocol):
    def refusal(self, receipt: Receipt) -> str | None:
        """None when ``receipt`` verifies against an accepted key, else the reason."""
        ...


@dataclass(frozen=True)
class ReceiptKeys:
    """A set of receipt keys; a receipt counts when one of them signed it."""

    keys: tuple[ReceiptKey, ...]

    @classmethod
    def single(cls, public: Ed25519PublicKey) -> ReceiptKeys:
        return cls((ReceiptKey.of(public),))

    def kids(self) -> tuple[str, ...]:
        return tuple(k.kid for k in self.keys)

    def refusal(self, receipt: Receipt) -> str | None:
        # a receipt without a kid comes from a warehouse older than rotation: any key
        candidates = [k for k in self.keys if receipt.kid in (None, k.kid)]
        if not candidates:
            return f"signed by receipt key {receipt.kid}, which this device does not accept"
        if any(verify_receipt(receipt, k.public) for k in candidates):
            return None
        return "signature does not verify against the pinned receipt key"


@dataclass(frozen=True)
class CommandState:
    counter: int = 0
    payload_sha256: str = ""
    receipt_keys: ReceiptKeys | None = None  # None: the key of warehouse.pub


def _damaged(path: Path, what: str) -> CryptoError:
    return CryptoError(
        f"command state {path} is damaged ({what})",
        "delete it; the warehouse's retained command applies again on the next sync",
    )


def _parse_state(doc: dict[str, Any], path: Path) -> CommandState:
    counter, digest = required(doc, "counter", path), required(doc, "payload_sha256", path)
    entries = required(doc, "receipt_keys", path)
    if not isinstance(counter, int) or isinstance(counter, bool) or counter < 0:
        raise _damaged(path, "counter")
    if not isinstance(digest, str) or not isinstance(entries, list) or not entries:
        raise _damaged(path, "receipt_keys")
    keys = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise _damaged(path, "receipt_keys")
        key = ReceiptKey.of(
            Ed25519PublicKey.from_public_bytes(unb64(entry.get("public"), "public", path, 32))
        )
        if entry.get("kid") != key.kid:
            raise _damaged(path, f"receipt key {str(entry.get('kid'))[:16]!r}")
        keys.append(key)
    return CommandState(counter, digest, ReceiptKeys(tuple(keys)))


def load_command_state(path: Path, command_key: Ed25519PublicKey | None) -> CommandState:
    """The state recorded under ``command_key``; a fresh one when there is none."""
    if not path.exists():
        return CommandState()
    doc = json_doc(read_key_file(path, "command state", private=False), path, STATE_FORMAT)
    if command_key is None or doc.get("command_key") != ed25519_kid(command_key):
        log.warning(
            "command state of another command key set aside path=%s; "
            "receipt keys from warehouse.pub until the next command",
            path,
        )
        return CommandState()
    return _parse_state(doc, path)


def save_command_state(
    path: Path, state: CommandState, command_key: Ed25519PublicKey, now: datetime
) -> None:
    keys = state.receipt_keys.keys if state.receipt_keys else ()
    doc = {
        "format": STATE_FORMAT,
        "command_key": ed25519_kid(command_key),
        "counter": state.counter,
        "applied": now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "payload_sha256": state.payload_sha256,
        "receipt_keys": [{"kid": k.kid, "public": b64(k.public.public_bytes_raw())} for k in keys],
    }
    atomic_write(path, dumps(doc), mode=0o600, what="the command state")


class DeviceCommands:
    """The warehouse's commands applied on one device, and the receipt keys it accepts."""

    def __init__(
        self,
        device_id: str,
        warehouse: WarehousePublic,
        state_path: Path,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.device_id = device_id
        self.command_key = warehouse.command
        self.state_path = state_path
        self.clock = clock
        self.state = load_command_state(state_path, warehouse.command)
        self.receipt_keys = self.state.receipt_keys or ReceiptKeys.single(warehouse.signing)

    def refusal(self, receipt: Receipt) -> str | None:
        return self.receipt_keys.refusal(receipt)

    def apply(self, payload: bytes) -> bool:
        """Act on one command from the ``cmd`` topic; True when it changed the receipt keys."""
        digest = hashlib.sha256(payload).hexdigest()
        if digest == self.state.payload_sha256:
            log.info("command already applied, ignored counter=%d", self.state.counter)
            return False
        try:
            cmd = parse_command(payload)
            if self.command_key is None:
                raise CommandRefused(
                    "this device pins no command key (its keys/warehouse.pub predates"
                    " commands: copy the warehouse's current one)"
                )
            now = self.clock()
            check_command(
                cmd,
                device=self.device_id,
                key=self.command_key,
                last_counter=self.state.counter,
                now=now,
            )
        except CommandRefused as exc:
            log.warning("command refused reason=%s", exc)
            return False
        state = CommandState(cmd.counter, digest, ReceiptKeys(cmd.keys))
        save_command_state(self.state_path, state, self.command_key, now)
        self.state, self.receipt_keys = state, ReceiptKeys(cmd.keys)
        kids = ",".join(self.receipt_keys.kids())
        log.info("receipt keys replaced counter=%d kids=%s", cmd.counter, kids)
        return True
