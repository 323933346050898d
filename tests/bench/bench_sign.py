"""Benchmark: what signing a certified copy adds to capturing it.

Run: .venv/bin/python -m tests.bench.bench_sign [--pages 1,4,10] [--runs R] [--profile text]

For documents of each page count, one batch of that many 300-dpi A4 grey pages is
captured through capture_batch (barcodes, checks, PDF/A, sealing, commit into a
real Spool) without signing, and the same batch again with a certifier on a
SoftHSM2 token made for the run (RSA-2048 key, certificate from a test CA):
PAdES-B-B, visible certification block, the device's own check of the signature,
the sealed register entry. CPU is process_time (SoftHSM runs inside the process,
so the token's RSA signature is counted), decoding of the stored page PNGs
excluded; the median of R runs. Target: signing adds at most 20 % to capture CPU
per document.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from agent.capture.certifier import CertifiedPdf, Certifier
from agent.capture.pipeline import capture_batch
from agent.capture.register import CertificationRegister
from agent.capture.signing import TokenCertifier, open_certifier
from agent.config import CaptureConfig, SignConfig
from device.barcodes import ZbarReader
from sync.spool.store import Spool
from tests.bench.bench_capture import LazyPages, page_pngs, seal_settings
from tests.support.softhsm import Token, make_token

TARGET = 0.20


def capture_cpu(
    pngs: list[bytes], pages: int, profile: str, certifier: Certifier | None, tmp: Path
) -> tuple[float, float]:
    """One document of ``pages`` pages captured: (CPU seconds, wall seconds)."""
    (tmp / "keys").mkdir()
    seal = seal_settings(tmp / "keys")
    source = LazyPages(pngs[:-1], pages)  # text pages only: one document, no receipt split
    with Spool(tmp / "spool", reserve_bytes=0) as spool:
        wall, start = time.perf_counter(), time.process_time()
        result = capture_batch(
            source,
            spool=spool,
            reader=ZbarReader(),
            capture=CaptureConfig(profile=profile),
            seal=seal,
            certifier=certifier,
        )
        cpu = time.process_time() - start - source.decode_cpu
        wall = time.perf_counter() - wall
    assert len(result.documents) == 1 and "unsigned" not in result.flags, result.warnings
    return cpu, wall


class TimedCertifier:
    """The real certifier, with the CPU of each certify call kept apart."""

    def __init__(self, inner: TokenCertifier) -> None:
        self.inner = inner
        self.cpu: list[float] = []

    def certify(self, pdf: bytes, doc_id: str) -> CertifiedPdf:
        start = time.process_time()
        try:
            return self.inner.certify(pdf, doc_id)
        finally:
            self.cpu.append(time.process_time() - start)


def certifier_for(token: Token, tmp: Path) -> TokenCertifier:
    (tmp / "register-keys").mkdir()
    warehouse = seal_settings(tmp / "register-keys").warehouse
    sign = SignConfig(module=token.module, token=token.label, key="signer")
    register = CertificationRegister(tmp / "register", warehouse)
    opened = open_certifier(sign, token.pin, register, lambda p: p)
    assert isinstance(opened, TokenCertifier), getattr(opened, "error", None)
    return opened


def measure(
    pngs: list[bytes], pages: int, profile: str, token: Token, runs: int
) -> tuple[float, float, float, float]:
    """Per document, medians over interleaved runs: capture CPU unsigned, signing CPU
    (the certify call: PDF parse, block, token signature, own check, register entry),
    capture CPU signed, and its wall time."""
    plain, signing, signed, walls = [], [], [], []
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="bench-sign-") as d:
            plain.append(capture_cpu(pngs, pages, profile, None, Path(d))[0])
        with tempfile.TemporaryDirectory(prefix="bench-sign-") as d:
            certifier = TimedCertifier(certifier_for(token, Path(d)))
            try:
                cpu, wall = capture_cpu(pngs, pages, profile, certifier, Path(d))
            finally:
                certifier.inner.close()
            signing.extend(certifier.cpu)
            signed.append(cpu)
            walls.append(wall)
    return (
        statistics.median(plain),
        statistics.median(signing),
        statistics.median(signed),
        statistics.median(walls),
    )


def machine() -> str:
    model = ""
    with open("/proc/cpuinfo") as fh:  # noqa: PTH123
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (
        f"{os.cpu_count()} cores of {model or platform.processor()}, {platform.machine()},"
        f" Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", default="1,4,10", help="document sizes in pages")
    parser.add_argument("--runs", type=int, default=7, help="timed runs per size")
    parser.add_argument("--profile", default="text", help="PDF profile")
    args = parser.parse_args()
    sizes = [int(n) for n in args.pages.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-softhsm-") as d:
        token = make_token(Path(d))
        os.environ["SOFTHSM2_CONF"] = str(token.conf)  # before the module is loaded
        pngs = page_pngs()
        measure(pngs, 1, args.profile, token, 1)  # warm-up: imports, fonts, the token
        rows = []
        for pages in sizes:
            plain, signing, signed, wall = measure(pngs, pages, args.profile, token, args.runs)
            rows.append(
                (f"{pages}-page document", f"{plain * 1000:.0f} ms", f"{signing * 1000:.0f} ms",
                 f"{signing / plain:.2f} (≤ {TARGET:.2f})", f"{signed * 1000:.0f} ms",
                 f"{wall * 1000:.0f} ms")
            )  # fmt: skip
    header = (
        "document",
        "capture CPU (baseline)",
        "signing CPU",
        "ratio",
        "capture + sign CPU",
        "wall, signed",
    )
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    command = " ".join([".venv/bin/python", *sys.orig_argv[1:]])
    print(f"command: {command}  (runs={args.runs} profile={args.profile})")
    print(f"machine: {machine()}")
    for row in [header, *rows]:
        print(" | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
