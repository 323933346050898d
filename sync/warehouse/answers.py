"""The warehouse's signed answers to a device: receipts and rejections."""

from __future__ import annotations

import logging
from collections.abc import Callable

from sync.durable import iso
from sync.keys import WarehousePrivate
from sync.mqtt.settings import Message
from sync.protocol import Receipt, receipt_topic, sign_receipt

log = logging.getLogger("sohoa.warehouse")


class Answers:
    """Receipts signed with the current generation of the receipt key."""

    def __init__(self, keys: WarehousePrivate, clock: Callable[[], float]) -> None:
        self.keys = keys
        self.clock = clock

    def receipt(self, device: str, doc: str, status: str, **kw: object) -> Message:
        r = Receipt(device=device, doc=doc, status=status, ts=iso(self.clock()), **kw)  # type: ignore[arg-type]
        signed = sign_receipt(r, self.keys.receipt_key())
        return Message(receipt_topic(device), signed.to_bytes(), qos=1)

    def reject(
        self, device: str, doc: str, reason: str, ciphertext: str | None = None
    ) -> list[Message]:
        """A signed rejection. Devices act only on one that names their envelope's
        ciphertext, so a rejection earned by someone else's garbage changes nothing."""
        log.warning("rejected device=%s doc=%s reason=%s", device, doc, reason)
        return [self.receipt(device, doc, "rejected", reason=reason, ciphertext_sha256=ciphertext)]
