"""The device's certification register (sổ chứng thực bản sao): a number for every
certified copy, in a book per year, and a sealed entry for each.

Only the counter is kept in clear (``counter.json``: the year, the book and the last
number: no personal data); each entry is sealed to the warehouse at once
(``sync.certregister``) and appended to ``register.jsonl``, and also travels inside
the document's sealed metadata. A number is taken under a file lock and written
before the document is signed, so two captures never share one and a crash leaves a
gap, never a repeat; a number whose signing failed is recorded as void.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sync.certregister import seal_entry
from sync.durable import atomic_write, fsync_dir
from sync.keys import WarehousePublic


@dataclass(frozen=True)
class Certification:
    """One register entry: what the certification block prints and the warehouse keeps."""

    number: int
    book: str
    date: str  # YYYY-MM-DD, the day of certification
    doc_id: str
    signer: str
    title: str
    location: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def book_of(year: int) -> str:
    """The register book of a year, as the certification forms write it."""
    return f"01/{year}-SCT/BS"


def next_number(counter: dict[str, Any], year: int) -> tuple[int, dict[str, Any]]:
    """The next certification number for ``year`` and the counter after it; numbers
    start again at 1 with each year's new book."""
    last = int(counter.get("last", 0)) if counter.get("year") == year else 0
    return last + 1, {"year": year, "book": book_of(year), "last": last + 1}


class CertificationRegister:
    """The register in ``folder`` (the spool's ``register/``), sealed to ``warehouse``."""

    def __init__(self, folder: Path, warehouse: WarehousePublic) -> None:
        self.folder = folder
        self.warehouse = warehouse
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with (self.folder / ".lock").open("a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            yield

    def _counter(self) -> dict[str, Any]:
        try:
            counter: dict[str, Any] = json.loads((self.folder / "counter.json").read_text())
        except FileNotFoundError:
            return {}
        return counter

    def take_number(self, year: int) -> tuple[int, str]:
        """The next number and its book, written to disk before it is used."""
        with self._locked():
            number, counter = next_number(self._counter(), year)
            atomic_write(
                self.folder / "counter.json",
                json.dumps(counter).encode(),
                mode=0o600,
                what="the register",
            )
        return number, counter["book"]

    def record(self, entry: Certification, *, void: str | None = None) -> None:
        """Append the sealed entry (``void``: why the number was not used)."""
        body = entry.to_json() | ({"void": void} if void else {})
        line = seal_entry(body, self.warehouse) + "\n"
        with self._locked():
            path = self.folder / "register.jsonl"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, line.encode())
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(self.folder)

    def lines(self) -> list[str]:
        """The sealed lines, oldest first (for the province to open)."""
        path = self.folder / "register.jsonl"
        return path.read_text().splitlines() if path.exists() else []
