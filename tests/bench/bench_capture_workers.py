"""Benchmark: capture on 1, 2 and 4 workers against today's pipeline (main), same run.

Run: .venv/bin/python -m tests.bench.bench_capture_workers [--pages N] [--rss-pages M]
     [--baseline-ref main]

Pages: the harder generated counter corpus (``tests/support/counter_pages.py``:
crooked feeds, phone photos, curled, faded, grime, small codes, true blank
backs, as grey 300-dpi JPEGs) and the real scans of ``../shared/corpus/scans``.
The generated pages are also run once as SANE delivers a page, grey pixels with
no JPEG to decode (decoded before the clock starts; row "as SANE delivers").
Each measurement is a child process capturing one batch of N pages through
``capture_batch`` into a real spool (barcodes, checks, PDF/A ``text``,
sealing, commit) with ``drop_blank = true``; pages are handed over as the
scanner's JPEG bytes and decoded by the pipeline, so decoding counts. The
baseline is the same child run over ``git archive <baseline-ref>``'s agent,
device and sync packages: today's code path, measured in the same run.

CPU per page is the child's process CPU (every thread, user + system) over the
batch after a warm-up batch, so it holds on a loaded machine; pages per second
are wall clock and are not load-robust: each is the better of two runs, printed
with the load average and the CPU time the host stole from this VM meanwhile.
Blank errors: faded pages dropped as blank, and true blank backs not dropped.
The host's speed is printed beside them: Pillow decoding the corpus JPEGs alone,
before and after the runs (this VM shares its host, and that floor moves from 17
to 26 ms a page between runs), and CPU per page beyond it.
Peak RSS: VmHWM of the child (threads share it) over a batch of M pages
(main's over at most 100: its memory is flat after the first pages).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import resource
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SCANS = REPO.parent / "shared" / "corpus" / "scans"
SHARED_SCANS = Path("/work/shared/corpus/scans")
CPU_TARGET_MS = 40.0
SCALING_TARGET = 1.7
RSS_LIMIT_MB = 150
MAIN_RSS_PAGES = 100


def child(args: argparse.Namespace) -> None:
    """One batch (after a warm-up) in this process; prints one JSON line."""
    from PIL import Image

    from agent.capture.pipeline import capture_batch
    from agent.config import CaptureConfig
    from device.barcodes import ZbarReader
    from device.files import pages_from_path
    from device.scanner import ScannedPage
    from sync.spool.store import Spool
    from tests.bench.bench_capture import seal_settings

    folder = Path(args.child)
    kinds = json.loads((folder / "kinds.json").read_text())
    jpegs = [(folder / f"{n:03d}.jpg").read_bytes() for n in range(len(kinds))]
    scans = Path(args.scans) if args.scans else None
    # --raw: decoded before the clock starts (a scanner on SANE delivers pixels, not JPEG)
    decoded = [Image.open(io.BytesIO(d)).convert("L") for d in jpegs] if args.raw else []

    class Source:
        def __init__(self, count: int) -> None:
            self.count = count

        def pages(self) -> Any:
            if scans is not None:  # the real scans, over and over (decoded by device.files)
                n = 0
                while n < self.count:
                    for file in sorted(scans.glob("*.p*")):
                        for page in pages_from_path(file):
                            if n < self.count:
                                yield ScannedPage(n, page.image, page.dpi, "bench", page.jpeg)
                            n += 1
                return
            for n in range(self.count):
                data = jpegs[n % len(jpegs)]
                if decoded:  # as SANE hands a page over: raw grey pixels, copied from its buffer
                    yield ScannedPage(n, decoded[n % len(decoded)].copy(), 300, "bench")
                else:
                    yield ScannedPage(n, Image.open(io.BytesIO(data)), 300, "bench", data)

    options: dict[str, Any] = {"drop_blank": True, "min_dpi": 100}
    if "workers" in CaptureConfig.__dataclass_fields__:
        options["workers"] = args.workers
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp:
        seal = seal_settings(Path(tmp))
        with Spool(Path(tmp) / "spool", reserve_bytes=0) as spool:
            reader = ZbarReader()

            def batch(count: int) -> Any:
                return capture_batch(
                    Source(count),
                    spool=spool,
                    reader=reader,
                    capture=CaptureConfig(**options),
                    seal=seal,
                )

            batch(4)
            usage = resource.getrusage(resource.RUSAGE_SELF)
            cpu0, wall0 = usage.ru_utime + usage.ru_stime, time.perf_counter()
            result = batch(args.count)
            usage = resource.getrusage(resource.RUSAGE_SELF)
            cpu, wall = usage.ru_utime + usage.ru_stime - cpu0, time.perf_counter() - wall0
    dropped = set()
    for warning in result.warnings:
        if found := re.search(r"blank pages dropped \(pages ([\d, ]+)\)", warning):
            dropped = {int(p) - 1 for p in found.group(1).split(", ")}
    kind_of = [kinds[n % len(kinds)] for n in range(args.count)]
    faded_dropped = sum(1 for n in dropped if kind_of[n].startswith("faded"))
    backs = [n for n in range(args.count) if kind_of[n] == "blank_back"]
    out = {
        "cpu_ms": 1000 * cpu / args.count,
        "pages_s": args.count / wall,
        "rss_mb": _peak_rss_mb(),
        "faded": sum(1 for k in kind_of if k.startswith("faded")),
        "faded_dropped": faded_dropped,
        "backs": len(backs) if scans is None else 0,
        "backs_missed": sum(1 for n in backs if n not in dropped) if scans is None else 0,
        "documents": len(result.documents),
    }
    print(json.dumps(out))


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(
    code: Path, folder: Path, workers: int, count: int, scans: Path | None, *, raw: bool = False
) -> Any:
    cmd = [sys.executable, "-m", "tests.bench.bench_capture_workers", "--child", str(folder)]
    cmd += ["--workers", str(workers), "--count", str(count)]
    cmd += ["--scans", str(scans)] if scans else []
    cmd += ["--raw"] if raw else []
    # the child imports agent/device/sync from ``code`` and the bench helpers from here
    env = {**os.environ, "PYTHONPATH": f"{code}{os.pathsep}{REPO}"}
    proc = subprocess.run(cmd, cwd=code, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"error: benchmark child failed — {proc.stderr.strip()[-400:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def host_ticks() -> tuple[int, int]:
    """CPU ticks the host stole from this machine (a shared VM) and all ticks, from
    /proc/stat; (0, 0) where there is none."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    except OSError:
        return 0, 0
    ticks = [int(v) for v in fields]
    return (ticks[7] if len(ticks) > 7 else 0), sum(ticks)


def stolen_since(before: tuple[int, int]) -> str:
    """The share of CPU time the host stole since ``before`` (``host_ticks``)."""
    stolen, total = (now - then for now, then in zip(host_ticks(), before, strict=True))
    return f"{100 * stolen / total:.0f}%" if total else "?"


def baseline_tree(ref: str, into: Path) -> Path:
    """``ref``'s agent, device and sync packages, unpacked: today's code path."""
    archive = subprocess.run(
        ["git", "archive", ref, "agent", "device", "sync"], cwd=REPO, capture_output=True
    )
    if archive.returncode != 0:
        raise SystemExit(f"error: cannot read {ref} — {archive.stderr.decode().strip()}")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    return into


def decode_ms(folder: Path) -> float:
    """The host's speed, measured beside the runs: CPU ms to decode one of the corpus
    JPEGs with Pillow alone (best of 3 rounds), the floor under every page's CPU."""
    from PIL import Image

    jpegs = sorted(folder.glob("*.jpg"))
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        for jpeg in jpegs:
            with Image.open(jpeg) as image:
                image.load()
        best = min(best, time.process_time() - started)
    return 1000 * best / max(1, len(jpegs))


def write_corpus(folder: Path, rounds: int) -> list[str]:
    from tests.support.counter_pages import corpus

    kinds = []
    for n, page in enumerate(corpus(rounds)):
        (folder / f"{n:03d}.jpg").write_bytes(page.jpeg)
        kinds.append(page.kind)
    (folder / "kinds.json").write_text(json.dumps(kinds))
    return kinds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=40, help="pages per timed batch")
    parser.add_argument("--rss-pages", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=1, help="distinct corpus rounds (20 pages)")
    parser.add_argument("--baseline-ref", default="main")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--scans", default="", help=argparse.SUPPRESS)
    parser.add_argument("--raw", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    scans = SCANS if SCANS.is_dir() else SHARED_SCANS if SHARED_SCANS.is_dir() else None
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp:
        folder = Path(tmp) / "pages"
        folder.mkdir()
        write_corpus(folder, args.rounds)
        base = baseline_tree(args.baseline_ref, Path(tmp) / "baseline")
        decode_before = decode_ms(folder)
        rows = []
        for corpus_name, source in (("generated", None), ("real scans", scans)):
            if corpus_name == "real scans" and source is None:
                continue
            load, ticks = os.getloadavg()[0], host_ticks()
            main_run = measure(base, folder, 1, args.pages, source)
            # pages per second are wall clock: each worker count twice, interleaved, the
            # faster kept, so that one stolen stretch of the host does not decide a ratio
            tries = [
                measure(REPO, folder, n, args.pages, source) for _ in (0, 1) for n in (1, 2, 4)
            ]
            runs = {
                n: max(tries[k], tries[k + 3], key=lambda run: run["pages_s"])
                for k, n in enumerate((1, 2, 4))
            }
            load = (load + os.getloadavg()[0]) / 2
            rows.append((corpus_name, main_run, runs, load, stolen_since(ticks)))
        # the same pages as SANE delivers them, with no JPEG to decode
        load = os.getloadavg()[0]
        raw_main = measure(base, folder, 1, args.pages, None, raw=True)
        raw_one = measure(REPO, folder, 1, args.pages, None, raw=True)
        raw = (raw_main, raw_one, (load + os.getloadavg()[0]) / 2)
        rss = measure(REPO, folder, 4, args.rss_pages, None)
        # main's memory is flat after its first pages; 100 keep the run within 4 minutes
        rss_main = measure(base, folder, 1, min(args.rss_pages, MAIN_RSS_PAGES), None)
        decode = (decode_before, decode_ms(folder))
    report(args, rows, raw, rss, rss_main, decode, time.time() - started)


def report(
    args: argparse.Namespace,
    rows: Any,
    raw: Any,
    rss: Any,
    rss_main: Any,
    decode: tuple[float, float],
    took: float,
) -> None:
    print(
        f"command: .venv/bin/python -m tests.bench.bench_capture_workers --pages {args.pages}"
        f" --rss-pages {args.rss_pages}   ({os.cpu_count()} cores, {took:.0f} s)"
    )
    print("| measure | sohoa | baseline (main) | ratio |")
    print("|---|---|---|---|")
    print(
        f"| host speed: JPEG decode alone, CPU per page (before / after the runs) |"
        f" {decode[0]:.1f} / {decode[1]:.1f} ms | — | the floor under a page's CPU |"
    )
    for name, main_run, runs, load, steal in rows:
        one = runs[1]
        if name == "generated":
            print(
                f"| generated: CPU per page beyond decoding, 1 worker |"
                f" {one['cpu_ms'] - decode[0]:.1f} ms | {main_run['cpu_ms'] - decode[0]:.1f} ms |"
                f" {(one['cpu_ms'] - decode[0]) / (main_run['cpu_ms'] - decode[0]):.2f} |"
            )
        print(
            f"| {name}: CPU per page, 1 worker (target ≤ {CPU_TARGET_MS:.0f} ms) |"
            f" {one['cpu_ms']:.1f} ms | {main_run['cpu_ms']:.1f} ms |"
            f" {one['cpu_ms'] / main_run['cpu_ms']:.2f} |"
        )
        for n in (2, 4):
            print(
                f"| {name}: CPU per page, {n} workers | {runs[n]['cpu_ms']:.1f} ms |"
                f" {main_run['cpu_ms']:.1f} ms | {runs[n]['cpu_ms'] / main_run['cpu_ms']:.2f} |"
            )
        for n in (1, 2, 4):
            print(
                f"| {name}: pages/s, {n} worker(s) (best of 2; load {load:.1f},"
                f" host steal {steal}) |"
                f" {runs[n]['pages_s']:.2f} | {main_run['pages_s']:.2f} |"
                f" {runs[n]['pages_s'] / runs[1]['pages_s']:.2f}× one worker |"
            )
        if name == "generated":
            print(
                f"| faded pages dropped as blank (of {one['faded']}) |"
                f" {one['faded_dropped']} | {main_run['faded_dropped']} | target 0 |"
            )
            print(
                f"| true blank backs not found (of {one['backs']}) |"
                f" {one['backs_missed']} | {main_run['backs_missed']} | target 0 |"
            )
    raw_main, raw_one, raw_load = raw
    print(
        f"| generated, as SANE delivers (no JPEG decode): CPU per page, 1 worker"
        f" (target ≤ {CPU_TARGET_MS:.0f} ms; load {raw_load:.1f}) | {raw_one['cpu_ms']:.1f} ms |"
        f" {raw_main['cpu_ms']:.1f} ms | {raw_one['cpu_ms'] / raw_main['cpu_ms']:.2f} |"
    )
    main_pages = min(args.rss_pages, MAIN_RSS_PAGES)
    print(
        f"| peak RSS over {args.rss_pages} pages (4 workers; main: 1, {main_pages} pages) |"
        f" {rss['rss_mb']:.0f} MB | {rss_main['rss_mb']:.0f} MB |"
        f" limit {RSS_LIMIT_MB} MB: {rss['rss_mb'] / RSS_LIMIT_MB:.2f} |"
    )
    print(
        f"| CPU per page over {args.rss_pages} pages (main: {main_pages}) |"
        f" {rss['cpu_ms']:.1f} ms (4 workers) |"
        f" {rss_main['cpu_ms']:.1f} ms | {rss['cpu_ms'] / rss_main['cpu_ms']:.2f} |"
    )


if __name__ == "__main__":
    main()
