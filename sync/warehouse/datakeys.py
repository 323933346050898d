"""The data keys a warehouse worker has opened, so that each segment's AEAD check
does not cost an HPKE opening."""

from __future__ import annotations

from collections import OrderedDict

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from sync.envelope.header import Header
from sync.envelope.opening import open_data_key
from sync.keys import WarehousePrivate

KEY_CACHE = 256  # opened data keys, by document


class DataKeys:
    """A document's data key, opened once per worker (a few hundred kept)."""

    def __init__(self, keys: WarehousePrivate, size: int = KEY_CACHE) -> None:
        self.keys = keys
        self.size = size
        self._cache: OrderedDict[tuple[str, str, str], tuple[ChaCha20Poly1305, bytes]] = (
            OrderedDict()
        )

    def open(self, header: Header, prefix: bytes) -> tuple[ChaCha20Poly1305, bytes]:
        key = (header.device_id, header.doc_id, header.ciphertext_sha256)
        hit = self._cache.get(key)
        if hit is None:
            hit = open_data_key(header, prefix, self.keys)
            self._cache[key] = hit
            if len(self._cache) > self.size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return hit
