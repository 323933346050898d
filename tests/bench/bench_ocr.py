"""Benchmark: the warehouse OCR stage against plain Tesseract on the same pages.

Run: .venv/bin/python -m tests.bench.bench_ocr [--pages N] [--runs N]

Pages: generated Vietnamese A4 pages of known text at 300 dpi (``tests.support.ocr``),
half clean and half degraded (skew, blur, noise, JPEG), each through the device's
``text`` profile into a one-page PDF, stored in a fresh warehouse archive.

sohoa: ``sync.warehouse.ocr.run_ocr`` over those documents, as ``sohoa warehouse ocr``
runs it (one OCRmyPDF process per document, ``-j 1``, ``OMP_THREAD_LIMIT`` =
ocr_threads, pikepdf's PDF/A-2b check, the copy moved into place, the text indexed).
Baseline: ``tesseract page.png out -l vie txt pdf`` on the same page image (the
device's bilevel page, decoded beforehand; OCRmyPDF hands Tesseract the same pixels),
with ``OMP_THREAD_LIMIT=1``: the OCR itself, no PDF/A, no checks, no process of ours.
Runs are interleaved (baseline, then sohoa, N times over); each figure is the median.
CPU is user + system time of every process involved; "pages per hour per core"
divides an hour by the CPU seconds a page takes. CER is the character error rate of
the text layer (sohoa: as pdfium extracts it from the PDF/A copy; baseline:
Tesseract's text output), diacritics counted.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pikepdf

from sync.warehouse.index import open_index
from sync.warehouse.ocr import Liveness, OcrSettings, ocr_copy_path, run_ocr
from sync.warehouse.ocr_jobs import process_started, this_holder, this_host
from sync.warehouse.ocr_queue import open_ocr_queue
from sync.warehouse.ocr_tool import OcrTool
from tests.support.ocr import TEXT, cer, pdf_text, store_document, text_profile_pdf
from tests.support.ocr import vietnamese_page as page


@dataclass(frozen=True)
class Run:
    wall_s: float
    cpu_s: float
    cer: dict[str, list[float]]  # kind -> one per page
    out_bytes: int  # the searchable PDFs written


def cpu_now() -> float:
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall and CPU seconds (this process and its children) that ``fn`` takes."""
    wall, cpu = time.monotonic(), cpu_now()
    fn()
    return time.monotonic() - wall, cpu_now() - cpu


def rates(kinds: list[str], texts: list[str]) -> dict[str, list[float]]:
    """CER of each page's text by kind of page."""
    out: dict[str, list[float]] = {}
    for kind, text in zip(kinds, texts, strict=True):
        out.setdefault(kind, []).append(cer(TEXT, text))
    return out


@dataclass(frozen=True)
class Doc:
    kind: str  # of every page in it
    pdf: bytes
    pages: int


def sohoa(root: Path, docs: list[Doc], threads: int) -> Run:
    archive = root / "archive"
    index = open_index("sqlite", archive)
    stored = [
        store_document(archive, index, f"p{n:03d}", d.pdf, pages=d.pages)
        for n, d in enumerate(docs)
    ]
    queue = open_ocr_queue("sqlite", archive)
    tool = OcrTool((sys.executable, "-m", "ocrmypdf"), dict(os.environ), threads=threads)
    me = Liveness(this_holder(), this_host(), process_started)
    try:
        settings = OcrSettings(archive, tool)
        wall, cpu = timed(lambda: run_ocr(queue, index, settings, me, threading.Event(), once=True))
    finally:
        queue.close()
        index.close()
    copies = [ocr_copy_path(Path(d.doc.path)) for d in stored]
    assert all(c.exists() for c in copies), "a document was not OCRed"
    texts = [page for c in copies for page in pdf_text(c).split("\f")]
    kinds = [d.kind for d in docs for _ in range(d.pages)]
    return Run(wall, cpu, rates(kinds, texts), sum(c.stat().st_size for c in copies))


def tesseract(root: Path, pngs: list[tuple[str, Path]]) -> Run:
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    root.mkdir()
    outs = [root / f"t{n:03d}" for n in range(len(pngs))]

    def work() -> None:
        for (_, png), out in zip(pngs, outs, strict=True):
            cmd = ["tesseract", str(png), str(out), "-l", "vie", "txt", "pdf"]
            subprocess.run(cmd, env=env, check=True, capture_output=True)

    wall, cpu = timed(work)
    texts = [o.with_suffix(".txt").read_text(encoding="utf-8") for o in outs]
    size = sum(o.with_suffix(".pdf").stat().st_size for o in outs)
    return Run(wall, cpu, rates([k for k, _ in pngs], texts), size)


def page_images(root: Path, docs: list[Doc]) -> list[tuple[str, Path]]:
    """Every page image as the device stored it (the bilevel G4 image, decoded), which
    is also what OCRmyPDF hands Tesseract for such a page."""
    out: list[tuple[str, Path]] = []
    for d in docs:
        with pikepdf.open(io.BytesIO(d.pdf)) as pdf:
            for pdf_page in pdf.pages:
                (image,) = pdf_page.get_images().values()
                png = root / f"page{len(out):03d}.png"
                decoded = pikepdf.PdfImage(cast(pikepdf.Stream, image)).as_pil_image()
                decoded.save(png, dpi=(300, 300))
                out.append((d.kind, png))
    return out


def mean_cer(kind: str) -> Callable[[Run], float]:
    return lambda r: statistics.mean(r.cer[kind])


def median(runs: list[Run], fn: Callable[[Run], float]) -> float:
    return statistics.median(fn(r) for r in runs)


def table(pages: int, original: int, runs: dict[str, list[Run]]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []

    def row(name: str, ours: float, base: float, fmt: str) -> None:
        ratio = f"{ours / base:5.2f}" if base else "    -"
        rows.append((name, format(ours, fmt), format(base, fmt), ratio))

    s, t = runs["sohoa"], runs["tesseract"]
    row(
        "OCR seconds per page (wall)",
        median(s, lambda r: r.wall_s / pages),
        median(t, lambda r: r.wall_s / pages),
        ".2f",
    )
    row(
        "CPU seconds per page",
        median(s, lambda r: r.cpu_s / pages),
        median(t, lambda r: r.cpu_s / pages),
        ".2f",
    )
    row(
        "pages per hour per core",
        median(s, lambda r: 3600 * pages / r.cpu_s),
        median(t, lambda r: 3600 * pages / r.cpu_s),
        ".0f",
    )
    for kind in ("clean", "degraded"):
        row(
            f"CER {kind} (text layer)",
            median(s, mean_cer(kind)),
            median(t, mean_cer(kind)),
            ".4f",
        )
    row(
        "bytes: searchable PDF / original",
        median(s, lambda r: r.out_bytes / original),
        median(t, lambda r: r.out_bytes / original),
        ".2f",
    )
    if "sohoa, ocr_threads=2" in runs:
        two = runs["sohoa, ocr_threads=2"]
        row(
            "wall s/page, ocr_threads 2 vs 1",
            median(two, lambda r: r.wall_s / pages),
            median(s, lambda r: r.wall_s / pages),
            ".2f",
        )
        row(
            "CPU s/page, ocr_threads 2 vs 1",
            median(two, lambda r: r.cpu_s / pages),
            median(s, lambda r: r.cpu_s / pages),
            ".2f",
        )
    return rows


def versions() -> str:
    cpu = Path("/proc/cpuinfo").read_text().split("model name", 1)[1].split("\n", 1)[0]
    tess = subprocess.run(["tesseract", "--version"], capture_output=True, text=True).stdout
    ocrmypdf = subprocess.run(
        [sys.executable, "-m", "ocrmypdf", "--version"], capture_output=True, text=True
    ).stdout.strip()
    return (
        f"machine: nproc {os.cpu_count()}, {cpu.split(':', 1)[1].strip()};"
        f" {platform.system()} {platform.release()}; Python {platform.python_version()};"
        f" {tess.splitlines()[0]}; OCRmyPDF {ocrmypdf}"
    )


def documents(count: int, pages: int) -> list[Doc]:
    """``count`` documents of ``pages`` pages each, clean and degraded by turns."""
    docs = []
    for n in range(count):
        kind = "clean" if n % 2 == 0 else "degraded"
        images = [page(degraded=kind == "degraded", seed=n * pages + k) for k in range(pages)]
        docs.append(Doc(kind, text_profile_pdf(images), pages))
    return docs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--docs", type=int, default=4, help="documents, half clean (default 4)")
    p.add_argument("--doc-pages", type=int, default=1, help="pages per document (default 1)")
    p.add_argument("--runs", type=int, default=3, help="interleaved runs (default 3)")
    p.add_argument("--threads", action="store_true", help="also measure ocr_threads = 2")
    a = p.parse_args()
    docs = documents(a.docs, a.doc_pages)
    pages, original = a.docs * a.doc_pages, sum(len(d.pdf) for d in docs)
    runs: dict[str, list[Run]] = {"tesseract": [], "sohoa": []}
    if a.threads:
        runs["sohoa, ocr_threads=2"] = []
    with tempfile.TemporaryDirectory(prefix="bench-ocr-") as tmp:
        root = Path(tmp)
        pngs = page_images(root, docs)
        for n in range(a.runs):
            runs["tesseract"].append(tesseract(root / f"t{n}", pngs))
            runs["sohoa"].append(sohoa(root / f"s{n}", docs, 1))
            if a.threads:
                runs["sohoa, ocr_threads=2"].append(sohoa(root / f"s2-{n}", docs, 2))
    print(f"command: {' '.join([sys.executable, *sys.orig_argv[1:]])}")
    print(versions())
    print(
        f"documents: {a.docs} of {a.doc_pages} A4 page(s) at 300 dpi, clean and degraded by"
        f" turns, text profile, {original} bytes in all; median of {a.runs} interleaved runs"
    )
    rows = table(pages, original, runs)
    w = max(len(r[0]) for r in rows)
    print(f"| {'measure':<{w}} | {'sohoa':>8} | {'baseline':>8} | {'ratio':>5} |")
    print(f"|{'-' * (w + 2)}|{'-' * 10}|{'-' * 10}|{'-' * 7}|")
    for name, ours, base, ratio in rows:
        print(f"| {name:<{w}} | {ours:>8} | {base:>8} | {ratio:>5} |")


if __name__ == "__main__":
    main()
