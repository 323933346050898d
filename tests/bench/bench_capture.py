"""Benchmark: a whole feeder batch through capture_batch against a naive pipeline.

Run: .venv/bin/python -m tests.bench.bench_capture [--pages N] [--runs R] [--rss-pages M]

Pages are 300-dpi A4 grey scans: seven text pages and one receipt carrying a
Code 128 dossier code, repeated (one page in eight has a code). They are made
once, kept as PNG bytes and decoded lazily one at a time; the decoding CPU is
measured inside the page source and subtracted, so only the pipeline counts.

sohoa: capture_batch over a real Spool in a temporary directory (barcodes,
page checks, PDF/A, sealing, commit), CPU time (process_time) per page, the
median of R batches of N pages. Baseline: zbar over every full-resolution page
plus Pillow's own PDF writer (``img.save(..., "PDF")``) of the page, no checks,
no sealing. Peak RSS: a subprocess captures M pages and reports its peak RSS
(VmHWM, else ru_maxrss).
"""

from __future__ import annotations

import argparse
import io
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from PIL import Image

from agent.capture.pipeline import SealSettings, capture_batch
from agent.capture.samples import content_lines, make_page, receipt_page
from agent.config import CaptureConfig
from device.barcodes import NaiveZbarReader, ZbarReader
from device.scanner import ScannedPage
from sync.keys import init_device_keys, init_warehouse_keys, load_device_key
from sync.spool.store import Spool

DOSSIER = "000.00.20.H56-230512-0003"
DISTINCT_TEXT_PAGES = 7
RSS_LIMIT_MB = 150
CPU_LIMIT_MS = 60
PROFILES = ("text", "color", "lossless")


def page_pngs() -> list[bytes]:
    """Seven text pages and a receipt with a dossier code, each as PNG bytes."""
    pages = [
        make_page(content_lines(seed), marker=f"p{seed}", seed=seed)
        for seed in range(DISTINCT_TEXT_PAGES)
    ]
    pages.append(receipt_page(DOSSIER))
    out = []
    for page in pages:
        buffer = io.BytesIO()
        page.save(buffer, "PNG", compress_level=1)
        out.append(buffer.getvalue())
    return out


class LazyPages:
    """A page source that decodes one stored PNG per page; keeps its decoding CPU apart."""

    def __init__(self, pngs: list[bytes], count: int) -> None:
        self.pngs = pngs
        self.count = count
        self.decode_cpu = 0.0

    def images(self) -> Iterator[Image.Image]:
        for n in range(self.count):
            start = time.process_time()
            image = Image.open(io.BytesIO(self.pngs[n % len(self.pngs)]))
            image.load()
            self.decode_cpu += time.process_time() - start
            yield image

    def pages(self) -> Iterator[ScannedPage]:
        for n, image in enumerate(self.images()):
            yield ScannedPage(n, image, 300, "bench")


def seal_settings(directory: Path) -> SealSettings:
    init_device_keys(directory / "device.key")
    warehouse = init_warehouse_keys(directory / "warehouse.key", directory / "warehouse.pub")
    return SealSettings("bench-device", load_device_key(directory / "device.key"), warehouse)


def run_sohoa(pngs: list[bytes], count: int, profile: str) -> tuple[float, float]:
    """One batch: (pipeline CPU seconds per page, sealed bytes per page)."""
    with tempfile.TemporaryDirectory(prefix="bench-capture-") as tmp:
        seal = seal_settings(Path(tmp))
        source = LazyPages(pngs, count)
        with Spool(Path(tmp) / "spool", reserve_bytes=0) as spool:
            reader = ZbarReader()
            start = time.process_time()
            result = capture_batch(
                source,
                spool=spool,
                reader=reader,
                capture=CaptureConfig(profile=profile),
                seal=seal,
            )
            cpu = time.process_time() - start - source.decode_cpu
        assert result.pages_in == count and result.status == "complete", result.warnings
        return cpu / count, sum(d.bytes for d in result.documents) / count


def run_baseline(pngs: list[bytes], count: int) -> tuple[float, float]:
    """zbar on every full page plus Pillow's PDF writer: (CPU seconds, bytes) per page."""
    reader = NaiveZbarReader()
    source = LazyPages(pngs, count)
    size = 0
    start = time.process_time()
    for n, image in enumerate(source.images()):
        reader.read(image, n)
        buffer = io.BytesIO()
        image.save(buffer, "PDF", resolution=300)
        size += len(buffer.getvalue())
    cpu = time.process_time() - start - source.decode_cpu
    return cpu / count, size / count


def peak_rss_mb(pngs: list[bytes], count: int) -> float:
    """Capture ``count`` pages in a fresh interpreter; its peak resident set in MB.
    The pages come made (as PNG files): making them is not scanning."""
    with tempfile.TemporaryDirectory(prefix="bench-pages-") as tmp:
        for n, png in enumerate(pngs):
            (Path(tmp) / f"{n:02d}.png").write_bytes(png)
        done = subprocess.run(
            [sys.executable, __file__, "--rss-child", str(count), "--pngs", tmp],
            check=True,
            capture_output=True,
            text=True,
        )
    return float(done.stdout.split()[-1])


def rss_child(count: int, directory: Path) -> None:
    pngs = [path.read_bytes() for path in sorted(directory.glob("*.png"))]
    run_sohoa(pngs, count, "text")
    print(peak_rss_self_mb())


def peak_rss_self_mb() -> float:
    """This process's peak RSS. Linux's ru_maxrss survives fork and exec, so a child
    started by a big parent reports the parent's size: prefer the kernel's VmHWM,
    which starts afresh at exec."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def barcode_ms(pngs: list[bytes]) -> tuple[float, float]:
    """Median CPU ms of ZbarReader.read and of one full-resolution zbar pass, text pages."""
    pages = [Image.open(io.BytesIO(png)) for png in pngs[:DISTINCT_TEXT_PAGES]]
    ours, naive = ZbarReader(), NaiveZbarReader()
    times: dict[str, list[float]] = {"ours": [], "naive": []}
    for _ in range(3):
        for n, page in enumerate(pages):
            for name, reader in (("ours", ours), ("naive", naive)):
                start = time.process_time()
                reader.read(page, n)
                times[name].append((time.process_time() - start) * 1000)
    return statistics.median(times["ours"]), statistics.median(times["naive"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=40, help="pages per timed batch")
    parser.add_argument("--runs", type=int, default=3, help="timed batches per profile")
    parser.add_argument("--rss-pages", type=int, default=500, help="pages for the RSS run")
    parser.add_argument("--rss-child", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--pngs", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(args.rss_child, args.pngs)
        return
    pngs = page_pngs()
    run_sohoa(pngs, len(pngs), "text")  # warm-up: imports, fonts, zbar
    base_cpu, base_size = statistics.median_low(
        [run_baseline(pngs, args.pages) for _ in range(args.runs)]
    )
    rows: list[tuple[str, str, str, str]] = []
    ours_ms, naive_ms = barcode_ms(pngs)
    rows.append(
        ("barcodes, text page (median)", f"{ours_ms:.1f} ms", f"{naive_ms:.1f} ms zbar full",
         f"{ours_ms / naive_ms:.2f}")
    )  # fmt: skip
    for profile in PROFILES:
        cpu, size = statistics.median_low(
            [run_sohoa(pngs, args.pages, profile) for _ in range(args.runs)]
        )
        rows.append(
            (f"CPU/page {profile}", f"{cpu * 1000:.1f} ms", f"{base_cpu * 1000:.1f} ms",
             f"{cpu / base_cpu:.2f} ({base_cpu / cpu:.1f}x faster)")
        )  # fmt: skip
        rows.append(
            (f"KB/page {profile}", f"{size / 1024:.0f} KB", f"{base_size / 1024:.0f} KB",
             f"{size / base_size:.2f}")
        )  # fmt: skip
    rss = peak_rss_mb(pngs, args.rss_pages)
    rows.append(
        (f"peak RSS, {args.rss_pages} pages text", f"{rss:.0f} MB", f"{RSS_LIMIT_MB} MB limit",
         f"{rss / RSS_LIMIT_MB:.2f}")
    )  # fmt: skip
    header = ("measure", "sohoa", "baseline", "ratio")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
    command = " ".join([".venv/bin/python", *sys.orig_argv[1:]])
    print(f"command: {command}  (pages={args.pages} runs={args.runs} rss-pages={args.rss_pages})")
    for row in [header, *rows]:
        print(" | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
