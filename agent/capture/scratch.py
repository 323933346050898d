"""Encrypted scratch space for the pages of a batch in flight.

Pages must wait until the batch is split (a citizen-ID QR late in a dossier tags
documents before it), but a 500-page batch must not sit in memory and no
plaintext page may reach the disk. Each encoded page is appended to a scratch
file under a random key that lives only in this object: after a crash the file
is unreadable noise and recovery deletes it.
"""

from __future__ import annotations

import contextlib
import struct
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305


class Scratch:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._aead = ChaCha20Poly1305(ChaCha20Poly1305.generate_key())
        self._fh = path.open("w+b")  # noqa: SIM115 - lives as long as the batch
        self._count = 0
        self._end = 0

    def append(self, data: bytes) -> tuple[int, int]:
        """Store ``data``; return the handle needed to read it back."""
        nonce = struct.pack(">4xQ", self._count)
        blob = self._aead.encrypt(nonce, data, None)
        offset = self._end
        self._fh.seek(offset)
        self._fh.write(struct.pack(">Q", self._count) + blob)
        self._count += 1
        self._end += 8 + len(blob)
        return offset, 8 + len(blob)

    def read(self, handle: tuple[int, int]) -> bytes:
        offset, length = handle
        self._fh.flush()
        self._fh.seek(offset)
        raw = self._fh.read(length)
        (n,) = struct.unpack(">Q", raw[:8])
        return self._aead.decrypt(struct.pack(">4xQ", n), raw[8:], None)

    def close(self) -> None:
        self._fh.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def __enter__(self) -> Scratch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
