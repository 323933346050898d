"""Benchmark: sealing throughput of the envelope writer vs raw ChaCha20-Poly1305.

Run: .venv/bin/python -m tests.bench.bench_seal [--runs N]

For each size, the writer seals random bytes into a sink that discards them
(no disk I/O on either side), fixed costs included (HPKE, Ed25519 signature,
header); the baseline encrypts the same bytes with ChaCha20-Poly1305 in 64 KiB
chunks, no envelope code at all. Runs are interleaved (baseline, then each
measure, N times over) so that clock and frequency drift hit every row alike;
each figure is the median of the N runs.

Write patterns: the whole document in one write; 64 KiB writes; PDF-like
writes (what ``agent.pdf`` does: a 300 kB page stream after each 60-byte object
header); 4 KiB writes. The requirement (sealing 10 MB at 0.70 of the baseline
or better) is judged on the first three; 4 KiB writes are shown for what they
cost: the writer must copy small writes into its segment buffer (the AEAD
takes a whole segment at once), one extra pass over every byte.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import BinaryIO, cast

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from sync.envelope.opening import open_envelope
from sync.envelope.reader import iter_segments, read_header, read_prefix
from sync.envelope.seal import EnvelopeWriter
from sync.keys import init_device_keys, init_warehouse_keys, load_device_key
from sync.keys import load_warehouse_private as load_private

CHUNK = 64 * 1024
MB = 1_000_000
REQUIRED = 0.70
PATTERNS = {  # name: write sizes, cycled; None = the whole document at once
    "one write": None,
    "64 KiB writes": (CHUNK,),
    "PDF-like writes": (60, 300_000),
    "4 KiB writes": (4096,),
}
JUDGED = ("one write", "64 KiB writes", "PDF-like writes")


class Sink:
    """A write-only file that keeps nothing: measures sealing, not the disk."""

    def __init__(self) -> None:
        self.size = 0

    def write(self, data: bytes) -> int:
        self.size += len(data)
        return len(data)


def write_cuts(size: int, steps: tuple[int, ...] | None) -> list[tuple[int, int]]:
    """(start, end) of each write: the sizes in ``steps`` in turn, the last one cut short."""
    out: list[tuple[int, int]] = []
    pos = 0
    while pos < size:
        step = steps[len(out) % len(steps)] if steps else size
        out.append((pos, min(pos + step, size)))
        pos += step
    return out


def raw_encrypt(data: bytes) -> None:
    aead = ChaCha20Poly1305(os.urandom(32))
    view, aad = memoryview(data), os.urandom(32)
    for n, pos in enumerate(range(0, len(data), CHUNK)):
        aead.encrypt(n.to_bytes(12, "big"), view[pos : pos + CHUNK], aad)


def raw_decrypt(segments: list[bytes], aead: ChaCha20Poly1305, aad: bytes) -> None:
    for n, segment in enumerate(segments):
        aead.decrypt(n.to_bytes(12, "big"), segment, aad)


def interleaved_medians(fns: Sequence[Callable[[], object]], runs: int) -> list[float]:
    """Median seconds of each function, running them in turn ``runs`` times."""
    for fn in fns:
        fn()  # warm up
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(runs):
        for fn, spent in zip(fns, times, strict=True):
            start = time.perf_counter()
            fn()
            spent.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bench_seal_"))
    init_device_keys(home / "device.key")
    device_key = load_device_key(home / "device.key")
    warehouse = init_warehouse_keys(home / "warehouse.key", home / "warehouse.pub")
    warehouse_private = load_private(home / "warehouse.key")

    def seal(data: bytes, suite: str, pattern: str, out: BinaryIO | None = None) -> None:
        writer = EnvelopeWriter(
            out or cast(BinaryIO, Sink()),
            device_id="bench-01",
            doc_id="doc-0001",
            warehouse=warehouse,
            device_key=device_key,
            suite=suite,
        )
        view = memoryview(data)
        for pos, end in cuts[len(data), pattern]:
            writer.write(view[pos:end])
        writer.close()

    def open_(path: Path, segments: list[bytes]) -> None:
        header = read_header(path)
        for _ in open_envelope(header, read_prefix(path), segments, warehouse_private):
            pass

    sizes = (10 * MB, 1 * MB)
    cuts = {
        (size, pattern): write_cuts(size, steps)
        for size in (*sizes, 0)
        for pattern, steps in PATTERNS.items()
    }
    empty = [partial(seal, b"", suite, "one write") for suite in ("x25519", "mlkem768-x25519")]
    fixed = interleaved_medians(empty, args.runs)
    rows: list[tuple[str, float, float]] = []
    for size in sizes:
        data = os.urandom(size)
        label = f"{size // MB} MB"
        cases = [
            (f"seal {label} {suite}, {pattern}", partial(seal, data, suite, pattern))
            for suite in ("x25519", "mlkem768-x25519")
            for pattern in PATTERNS
        ]
        seconds = interleaved_medians(
            [partial(raw_encrypt, data)] + [fn for _, fn in cases], args.runs
        )
        base = size / MB / seconds[0]
        rows += [
            (name, size / MB / s, base) for (name, _), s in zip(cases, seconds[1:], strict=True)
        ]
        path = home / f"{label}.env"
        with path.open("wb") as out:
            seal(data, "x25519", "one write", out)
        segments = list(iter_segments(path))
        aead, aad = ChaCha20Poly1305(os.urandom(32)), os.urandom(32)
        sealed = [aead.encrypt(n.to_bytes(12, "big"), s[:-16], aad) for n, s in enumerate(segments)]
        decrypt_base, opening = interleaved_medians(
            [partial(raw_decrypt, sealed, aead, aad), partial(open_, path, segments)], args.runs
        )
        rows.append(
            (f"open {label} x25519, from memory", size / MB / opening, size / MB / decrypt_base)
        )

    print(f"command: {' '.join([sys.executable, *sys.orig_argv[1:]])}")
    print(
        "baseline: raw ChaCha20-Poly1305 in 64 KiB chunks (encrypt for seal rows, decrypt for"
        f" open rows); MB/s, median of {args.runs} interleaved runs"
    )
    width = max(len(r[0]) for r in rows)
    print(f"| {'measure':<{width}} | {'sohoa':>8} | {'baseline':>8} | {'ratio':>5} |")
    print(f"|{'-' * (width + 2)}|{'-' * 10}|{'-' * 10}|{'-' * 7}|")
    for name, ours, base in rows:
        print(f"| {name:<{width}} | {ours:8.0f} | {base:8.0f} | {ours / base:5.2f} |")
    print(
        "fixed cost per envelope (HPKE, Ed25519 signature, header; empty document):"
        f" x25519 {fixed[0] * 1000:.2f} ms, mlkem768-x25519 {fixed[1] * 1000:.2f} ms"
    )
    judged = [
        ours / base
        for name, ours, base in rows
        if name.startswith("seal 10 MB") and name.endswith(JUDGED)
    ]
    verdict = "met" if min(judged) >= REQUIRED else "NOT met"
    print(
        f"requirement: seal 10 MB ({', '.join(JUDGED)}) >= {REQUIRED:.2f} of baseline:"
        f" {verdict} (worst {min(judged):.2f})"
    )


if __name__ == "__main__":
    main()
