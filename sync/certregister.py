"""The certification register's sealed entries, a format both ends share.

Each certified copy gets one entry (number, book, date, document id, signer's name
and title). On the device an entry is sealed with HPKE to the warehouse's key at
once, like a document, so the device keeps no signer or document detail in clear and
cannot read its own register back; the province opens it with ``open_entry``. One
entry per line: ``{"v", "number", "book", "key_id", "sealed"}`` (base64 of HPKE enc
‖ ciphertext); number and book stay in clear: they are counters, not personal data.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidTag

from sync.envelope.seal import hpke_suite
from sync.errors import CryptoError
from sync.keys import WarehousePrivate, WarehousePublic

INFO = b"sohoa certification register v1 "
SUITE = "x25519"


def _info(key_id: str, number: int, book: str) -> bytes:
    return INFO + json.dumps([key_id, number, book]).encode()


def seal_entry(entry: Mapping[str, Any], warehouse: WarehousePublic) -> str:
    """One register line: ``entry`` sealed to the warehouse, its number and book clear
    (and bound to the ciphertext, so that they cannot be swapped)."""
    number, book = int(entry["number"]), str(entry["book"])
    body = json.dumps(dict(entry), ensure_ascii=False, sort_keys=True).encode()
    sealed = hpke_suite(SUITE).encrypt(
        body, warehouse.x25519, info=_info(warehouse.key_id, number, book)
    )
    line = {
        "v": 1,
        "number": number,
        "book": book,
        "key_id": warehouse.key_id,
        "sealed": base64.b64encode(sealed).decode(),
    }
    return json.dumps(line, sort_keys=True)


def open_entry(line: str, keys: WarehousePrivate) -> dict[str, Any]:
    """The entry of one register line (warehouse side); ``CryptoError`` when it does not
    open with any generation of the warehouse key."""
    try:
        head = json.loads(line)
        generation = keys.find(str(head["key_id"]))
        body = hpke_suite(SUITE).decrypt(
            base64.b64decode(head["sealed"]),
            generation.x25519,
            info=_info(str(head["key_id"]), int(head["number"]), str(head["book"])),
        )
    except (ValueError, KeyError, TypeError, InvalidTag) as exc:
        raise CryptoError(
            f"a certification register line does not open ({type(exc).__name__})",
            "check that it comes from a device sealing to this warehouse",
        ) from None
    entry: dict[str, Any] = json.loads(body)
    return entry
