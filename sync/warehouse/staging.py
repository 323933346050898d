"""The warehouse's staging area: where a document's segments wait until all have arrived.

``archive/staging/<device>/<doc>/`` holds the verified manifest and the
segments that passed authentication (``s0000000``…). Staging is a cache, not
fsynced: a crash loses at most what the device sends again.

Bounds, all from ``[warehouse]``:

- nothing is staged before a manifest whose device signature verifies, and a
  manifest is staged only while its device's staged envelopes, and everyone's,
  stay within ``staging_device_mb`` and ``staging_total_mb`` (by the sizes the
  signed manifests declare, so a device cannot stage more than it announced);
- a document whose staging has not changed for ``staging_ttl_h`` is dropped
  (its device sends it again when it asks);
- segments that arrive before their manifest (shared subscriptions hand the
  messages of one document to different workers) wait in memory, bounded in
  bytes and age, never on disk.
"""

from __future__ import annotations

import logging
import re
import shutil
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from sync.durable import atomic_write
from sync.envelope.header import Header, parse_manifest

log = logging.getLogger("sohoa.warehouse")

MANIFEST_CACHE = 4096
MAX_BAD_BODIES = 3  # a staged segment that fails authentication this often rejects the document
_BAD_SEGMENT = re.compile(r"^segment (\d+) fails authentication$")
PARKED_BYTES = 64 * 2**20  # segments waiting for their manifest, per worker
PARKED_AGE_S = 60.0
SWEEP_EVERY_S = 600.0


@dataclass(frozen=True)
class StagingLimits:
    device_bytes: int = 2 * 2**30
    total_bytes: int = 32 * 2**30
    ttl_s: float = 72 * 3600.0


def segment_name(n: int) -> str:
    return f"s{n:07d}"


class Staging:
    """The staging folders, their manifests (parsed once per file) and their bounds."""

    def __init__(
        self, root: Path, limits: StagingLimits, clock: Callable[[], float] = time.time
    ) -> None:
        self.root = root
        self.limits = limits
        self.clock = clock
        root.mkdir(parents=True, exist_ok=True)
        # keyed on the file's identity so that a manifest another worker replaced is read again
        self._manifests: dict[Path, tuple[tuple[int, int, int], tuple[Header, bytes]]] = {}
        self._swept = float("-inf")

    def dir(self, device: str, doc: str) -> Path:
        return self.root / device / doc

    def manifest(self, device: str, doc: str) -> tuple[Header, bytes] | None:
        return self._manifest_at(self.dir(device, doc) / "manifest")

    def _manifest_at(self, path: Path) -> tuple[Header, bytes] | None:
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        ident = (st.st_ino, st.st_mtime_ns, st.st_size)
        hit = self._manifests.get(path)
        if hit is not None and hit[0] == ident:
            return hit[1]
        try:
            man = parse_manifest(path.read_bytes())
        except (OSError, ValueError):
            return None  # replaced or removed while we read it
        if len(self._manifests) >= MANIFEST_CACHE:
            self._manifests.pop(next(iter(self._manifests)), None)
        self._manifests[path] = (ident, man)
        return man

    @staticmethod
    def missing(d: Path, segments: int) -> list[int]:
        """Segments not staged yet: one directory listing, not a stat per segment."""
        try:
            names = {p.name for p in d.iterdir()}
        except FileNotFoundError:
            names = set()
        return [i for i in range(segments) if segment_name(i) not in names]

    def _declared(self, device_dir: Path, skip: str) -> int:
        total = 0
        for manifest in device_dir.glob("*/manifest"):
            man = self._manifest_at(manifest)
            if man is not None and manifest.parent.name != skip:
                total += man[0].ciphertext_size
        return total

    def refusal(self, device: str, doc: str, size: int) -> str | None:
        """Why a new envelope of ``size`` bytes cannot be staged now, or None."""
        mine = self._declared(self.root / device, doc)
        if mine + size > self.limits.device_bytes:
            return (
                f"staging for device {device} is full ({mine >> 20} MiB of"
                f" {self.limits.device_bytes >> 20} MiB declared)"
            )
        total = (
            mine
            + size
            + sum(self._declared(d, "") for d in self._device_dirs() if d.name != device)
        )
        if total > self.limits.total_bytes:
            return f"staging is full ({self.limits.total_bytes >> 20} MiB)"
        return None

    def _device_dirs(self) -> Iterator[Path]:
        try:
            yield from (d for d in self.root.iterdir() if d.is_dir())
        except FileNotFoundError:
            return

    def sweep(self, *, force: bool = False) -> int:
        """Drop documents whose staging has not changed for the TTL; how many."""
        now = self.clock()
        if not force and now - self._swept < SWEEP_EVERY_S:
            return 0
        self._swept = now
        dropped = 0
        for device_dir in self._device_dirs():
            for d in device_dir.iterdir():
                if d.is_dir() and now - _newest(d) > self.limits.ttl_s:
                    shutil.rmtree(d, ignore_errors=True)
                    dropped += 1
                    log.info("abandoned staging expired device=%s doc=%s", device_dir.name, d.name)
        return dropped


def _newest(d: Path) -> float:
    try:
        return max([d.stat().st_mtime, *(p.stat().st_mtime for p in d.iterdir())])
    except FileNotFoundError:
        return time.time()  # changing under us: someone is working on it


@dataclass(frozen=True)
class Parked:
    device: str
    doc: str
    n: int
    payload: bytes
    at: float
    offset: int = -1  # a piece of segment n from this byte; -1 for the whole segment


class ParkedSegments:
    """Segments whose manifest has not arrived yet, in memory, oldest dropped first."""

    def __init__(self, max_bytes: int = PARKED_BYTES, max_age_s: float = PARKED_AGE_S) -> None:
        self.max_bytes, self.max_age_s = max_bytes, max_age_s
        self._items: OrderedDict[tuple[str, str, int, int], Parked] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def park(self, item: Parked) -> None:
        key = (item.device, item.doc, item.n, item.offset)
        if key in self._items or len(item.payload) > self.max_bytes:
            return
        self._items[key] = item
        self._bytes += len(item.payload)
        while self._bytes > self.max_bytes:
            self._drop(next(iter(self._items)))

    def _drop(self, key: tuple[str, str, int, int]) -> Parked:
        item = self._items.pop(key)
        self._bytes -= len(item.payload)
        return item

    def take(self, ready: Callable[[str, str], bool], now: float) -> list[Parked]:
        """The parked segments whose manifest is now staged; stale ones are forgotten."""
        out: list[Parked] = []
        checked: dict[tuple[str, str], bool] = {}
        for key, item in list(self._items.items()):
            if now - item.at > self.max_age_s:
                self._drop(key)
                continue
            doc = (item.device, item.doc)
            if doc not in checked:
                checked[doc] = ready(*doc)
            if checked[doc]:
                out.append(self._drop(key))
        return out


def damaged_segment(d: Path, paths: list[Path], reason: str) -> int | None:
    """The segment to ask for again when ``reason`` blames one staged body, else None.

    A body damaged on the way (disk, broker) is dropped and re-requested; a segment
    that keeps failing was sealed that way, and the document is rejected.
    """
    m = _BAD_SEGMENT.match(reason)
    if m is None or int(m[1]) >= len(paths):
        return None
    n = int(m[1])
    count_file = d / f"bad{n:07d}"
    count = int(count_file.read_text() or "0") if count_file.exists() else 0
    if count + 1 >= MAX_BAD_BODIES:
        return None
    atomic_write(count_file, str(count + 1).encode(), durable=False)
    paths[n].unlink(missing_ok=True)
    return n
