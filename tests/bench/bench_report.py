"""Benchmark: ``sohoa warehouse report`` time over 100,000 indexed documents, on SQLite
and on PostgreSQL.

Run: .venv/bin/python -m tests.bench.bench_report [--docs N] [--repeat N] [--quick]

Documents are generated (200 procedures, 60 devices, issue years 1980–2024 or none,
dossier dates, 1–40 pages, a year of stored dates) and put in through the index API
(``DocumentIndex.add``, four connections for PostgreSQL), so that both indexes hold
the same rows with their search rows; the SQLite file lives on /dev/shm when there is
one, PostgreSQL is a private cluster (``tests/support/postgres.py``, fsync off). Then,
best of ``--repeat``:

- sohoa: what ``sohoa warehouse report`` does after opening the index —
  ``DocumentIndex.tally`` (the backend groups by procedure, period of issue, device)
  and ``build_report`` (rows, devices, totals) — over every document, and over one
  month (``--from``/``--to``, which reads the stored-date index);
- baselines, same run, same table, same WHERE, on their own connection: a plain
  ``SELECT count(*)`` (what reading the rows costs at the least), and a plain
  ``SELECT tthc_code, count(*), sum(pages) … GROUP BY tthc_code`` (the same scan and
  grouping without the period of issue, A4 pages or the per-device counts).
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from functools import partial
from pathlib import Path

import psycopg

from sync.warehouse.index import DocumentIndex, StoredDocument, open_index
from sync.warehouse.report import Report, build_report, stored_bounds
from tests.support import chaos
from tests.support.postgres import start_postgres

MONTH = (date(2024, 3, 1), date(2024, 3, 31))
PG_CONNECTIONS = 4
COUNT = "SELECT count(*) FROM documents"
GROUP = "SELECT tthc_code, count(*), sum(pages) FROM documents{where} GROUP BY tthc_code"


def corpus(n: int, seed: int = 13) -> list[StoredDocument]:
    """``n`` documents as ingest would index them, the same for every run."""
    rng = random.Random(seed)
    procedures = [f"1.{rng.randrange(10**6):06d}" for _ in range(200)]
    docs = []
    for i in range(n):
        received = date(2016, 1, 1).toordinal() + rng.randrange(3000)
        day = date.fromordinal(received)
        code = f"000.00.{rng.randrange(100):02d}.H56-{day:%y%m%d}-{1 + i % 9999:04d}"
        pages = rng.randint(1, 40)
        stored = date(2024, 1, 1).toordinal() + rng.randrange(366)
        docs.append(
            StoredDocument(
                doc_id=f"d{i:07d}",
                device=f"dev-{i % 60:02d}",
                ciphertext_sha256=hashlib.sha256(b"%d" % i).hexdigest(),
                stored_at=f"{date.fromordinal(stored)}T0{rng.randrange(10)}:15:00Z",
                bytes=pages * 40_000,
                pages=pages,
                pdf_sha256="p" * 64,
                path=f"/archive/docs/dev-{i % 60:02d}/d{i:07d}/document.pdf",
                dossier_code=code,
                doc_type=f"KQ.G{rng.randrange(30):02d}.{rng.randrange(10**6):06d}",
                owner_id=f"0010{rng.randrange(10**8):08d}",
                tthc_code=rng.choice(procedures),
                issue_year=rng.choice([None, *range(1980, 2025)]),
                dossier_date=day.isoformat(),
                captured_at=f"{date.fromordinal(stored)}T00:10:00Z",
                a4_pages=pages + rng.choice([0, 0, 0, 1, 2]),
            )
        )
    return docs


def fill(spec: str, root: Path, docs: list[StoredDocument], connections: int) -> float:
    """Add every document through the index API; seconds it took."""
    opened = [open_index(spec, root) for _ in range(connections)]
    t0 = time.monotonic()
    chaos.calls_per_s(opened, lambda ix, i: ix.add(docs[i]), len(docs))
    seconds = time.monotonic() - t0
    for ix in opened:
        ix.close()
    return seconds


def best(repeat: int, run: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return min(times)


def where(bounds: tuple[str | None, str | None], mark: str) -> tuple[str, list[str]]:
    since, until = bounds
    if since is None or until is None:
        return "", []
    return f" WHERE stored_at >= {mark} AND stored_at < {mark}", [since, until]


Row = tuple[str, float, float, float]  # measure, sohoa, count(*), GROUP BY (seconds)
Query = Callable[[str, list[str]], list[tuple[object, ...]]]


def report_of(index: DocumentIndex, bounds: tuple[str | None, str | None]) -> Report:
    return build_report(index.tally(*bounds), None)


def measure(name: str, index: DocumentIndex, query: Query, mark: str, repeat: int) -> list[Row]:
    """The report and both baselines, over every document and over one month."""
    rows = []
    for label, bounds in (("all", (None, None)), ("one month", stored_bounds(*MONTH))):
        clause, params = where(bounds, mark)
        (expected,) = query(COUNT + clause, params)[0]
        report = build_report(index.tally(*bounds), None)
        assert report.total.documents == expected, (name, label)
        ours = best(repeat, partial(report_of, index, bounds))
        count = best(repeat, partial(query, COUNT + clause, params))
        group = best(repeat, partial(query, GROUP.format(where=clause), params))
        rows.append((f"{name} report, {label} ({expected:,} docs)", ours, count, group))
    return rows


def sqlite_rows(root: Path, docs: list[StoredDocument], repeat: int) -> tuple[list[Row], float]:
    seconds = fill("sqlite", root, docs, 1)
    raw = sqlite3.connect(root / "index.db")
    index = open_index("sqlite", root)
    try:

        def query(sql: str, params: list[str]) -> list[tuple[object, ...]]:
            return raw.execute(sql, params).fetchall()

        return measure("SQLite", index, query, "?", repeat), seconds
    finally:
        index.close()
        raw.close()


def postgres_rows(
    root: Path, docs: list[StoredDocument], repeat: int
) -> tuple[list[Row], float, str]:
    server = start_postgres()
    try:
        server.execute("CREATE DATABASE bench")
        dsn = server.dsn("bench")
        seconds = fill(dsn, root, docs, PG_CONNECTIONS)
        with psycopg.connect(dsn, autocommit=True) as raw:
            raw.execute("VACUUM ANALYZE documents")
            index = open_index(dsn, root)
            try:

                def query(sql: str, params: list[str]) -> list[tuple[object, ...]]:
                    sql = sql.replace("stored_at", 'stored_at COLLATE "C"')
                    return raw.execute(sql.encode(), params).fetchall()

                rows = measure("PostgreSQL", index, query, "%s", repeat)
            finally:
                index.close()
        version = subprocess.run(
            [server.bindir / "postgres", "--version"], capture_output=True, text=True
        ).stdout.strip()
        return rows, seconds, version
    finally:
        server.stop()


def ratio(ours: float, base: float) -> str:
    r = ours / base
    return f"{r:>5.1f}×" if r < 100 else f"{r:>5.0f}×"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--docs", type=int, help="documents indexed (default 100000; --quick 10000)")
    p.add_argument("--repeat", type=int, default=5, help="best of N timings (default 5)")
    p.add_argument("--quick", action="store_true", help="10,000 documents")
    a = p.parse_args()
    n = a.docs or (10_000 if a.quick else 100_000)
    started = time.monotonic()
    docs = corpus(n)
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(
        prefix="bench-report-", dir=shm if shm.is_dir() else None
    ) as tmp:
        lite, lite_fill = sqlite_rows(Path(tmp) / "sqlite", docs, a.repeat)
        pg, pg_fill, pg_version = postgres_rows(Path(tmp) / "pg", docs, a.repeat)
    cpu = Path("/proc/cpuinfo").read_text().split("model name", 1)[1].split("\n", 1)[0]
    print(f"command: {' '.join([sys.executable, *sys.orig_argv[1:]])}")
    print(
        f"machine: nproc {len(list(Path('/sys/devices/system/cpu').glob('cpu[0-9]*')))},"
        f" {cpu.split(':', 1)[1].strip()}; {platform.system()} {platform.release()};"
        f" Python {platform.python_version()}; SQLite {sqlite3.sqlite_version}; {pg_version}"
    )
    print(
        f"documents: {n:,}, added through DocumentIndex.add in {lite_fill:.0f} s (SQLite,"
        f" 1 connection) and {pg_fill:.0f} s (PostgreSQL, {PG_CONNECTIONS} connections);"
        f" best of {a.repeat}; {time.monotonic() - started:.0f} s in all"
    )
    rows = lite + pg
    w = max(len(r[0]) for r in rows)
    print(
        f"| {'measure':<{w}} | {'sohoa':>9} | {'count(*)':>9} | {'ratio':>6} |"
        f" {'GROUP BY':>9} | {'ratio':>6} |"
    )
    print(f"|{'-' * (w + 2)}|{'-' * 11}|{'-' * 11}|{'-' * 8}|{'-' * 11}|{'-' * 8}|")
    for name, ours, count, group in rows:
        print(
            f"| {name:<{w}} | {ours * 1000:>6.1f} ms | {count * 1000:>6.1f} ms |"
            f" {ratio(ours, count)} | {group * 1000:>6.1f} ms | {ratio(ours, group)} |"
        )
    print(
        "baselines (same run, same table, same WHERE): count(*) = SELECT count(*) FROM"
        " documents; GROUP BY = SELECT tthc_code, count(*), sum(pages) … GROUP BY tthc_code"
    )


if __name__ == "__main__":
    main()
