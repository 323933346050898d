"""Benchmark: page checks and PDF encoding on a 300-dpi A4 grey text page.

Run: .venv/bin/python -m tests.bench.bench_pages [--runs N]

Times are CPU time (process_time) per page, the median of N runs after one
warm-up. Baselines: the per-step share of the capture budget on this machine
(check_page 15 ms; the whole pipeline must fit 60 ms on a Raspberry-Pi-class
device), and for sizes a grey JPEG at quality 75 of the same page.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from agent.capture.orientation import estimate_orientation
from agent.capture.pages import check_page, prepare_page
from agent.capture.pdf import encode_page
from tests.support.pages import color_page, text_page, turned


def cpu_ms(action: Callable[[], object], runs: int) -> float:
    action()
    times = []
    for _ in range(runs):
        start = time.process_time()
        action()
        times.append((time.process_time() - start) * 1000)
    return statistics.median(times)


def jpeg_size(image: Image.Image) -> int:
    out = io.BytesIO()
    image.convert("L").save(out, "JPEG", quality=75)
    return len(out.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    runs = parser.parse_args().runs
    page, skewed, colour = text_page(), turned(text_page(), 3), color_page()
    rows: list[tuple[str, str, str, str]] = []

    def timed(measure: str, action: Callable[[], object], budget: float | None) -> None:
        ms = cpu_ms(action, runs)
        baseline = f"{budget:.0f} ms" if budget else "-"
        ratio = f"{ms / budget:.2f}" if budget else "-"
        rows.append((measure, f"{ms:.1f} ms", baseline, ratio))

    timed("check_page, grey text", lambda: check_page(page, 300), 15)
    timed("prepare_page, straight", lambda: prepare_page(page, 300), 15)
    timed("prepare_page, 3 deg skew (deskews)", lambda: prepare_page(skewed, 300), None)
    timed("estimate_orientation", lambda: estimate_orientation(page, 300), None)
    for profile in ("text", "color", "lossless"):
        timed(f"encode_page {profile}, grey", lambda p=profile: encode_page(page, 300, p), None)
    timed("encode_page color, RGB", lambda: encode_page(colour, 300, "color"), None)
    reference = jpeg_size(page)
    for profile in ("text", "color", "lossless"):
        size = len(encode_page(page, 300, profile).data)
        rows.append(
            (f"KB/page {profile}", f"{size / 1024:.0f} KB", f"{reference / 1024:.0f} KB JPEG q75",
             f"{size / reference:.3f}")
        )  # fmt: skip
    widths = [max(len(row[i]) for row in rows + [("measure", "sohoa", "baseline", "ratio")])
              for i in range(4)]  # fmt: skip
    print(f"command: {' '.join([Path(sys.executable).name, *sys.orig_argv[1:]])}  runs={runs}")
    for row in [("measure", "sohoa", "baseline", "ratio"), *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
