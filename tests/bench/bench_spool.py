"""Benchmark: the spool's durable commits and its restart after a kill.

Run: .venv/bin/python -m tests.bench.bench_spool [--commits N] [--docs N] [--dir DIR]

commits/s: ``Spool.commit_document`` of small pre-made envelope files (fsync of
the file, row as 'captured', rename, fsync of both folders, row 'queued' with
its audit entry; WAL, synchronous=FULL), against a baseline of plain SQLite
inserts in WAL mode with synchronous=FULL, one transaction each, same folder.

restart: a child process commits documents into a spool that already holds
``--docs`` documents and is killed with SIGKILL; then ``Spool(...)`` +
``recover()`` is timed against a baseline that opens the same database, reads
every row and lists the envelope folder (the least any recovery must do).
Times are the median of 5 runs, page cache warm.
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sync.spool.store import Spool
from tests.support.wait import wait_until

ROW = "INSERT INTO documents (doc_id, batch_id, state, bytes, pages, created_at)"


def commit_rate(root: Path, n: int) -> float:
    with Spool(root) as spool:
        spool.begin_batch("b1")
        tmps = []
        for i in range(n):
            tmp = spool.temp_envelope(f"d{i:06d}")
            tmp.write_bytes(os.urandom(512))
            tmps.append(tmp)
        t0 = time.perf_counter()
        for i, tmp in enumerate(tmps):
            spool.commit_document(
                tmp,
                doc_id=f"d{i:06d}",
                batch_id="b1",
                pages=1,
                page_sha256=["0" * 64],
                pdf_sha256="1" * 64,
                ciphertext_sha256="2" * 64,
            )
        return n / (time.perf_counter() - t0)


def baseline_rate(db: Path, n: int) -> float:
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(
        "CREATE TABLE documents (doc_id TEXT PRIMARY KEY, batch_id TEXT, state TEXT,"
        " bytes INTEGER, pages INTEGER, created_at REAL)"
    )
    t0 = time.perf_counter()
    for i in range(n):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(ROW + " VALUES (?, 'b1', 'queued', 512, 1, ?)", (f"d{i:06d}", time.time()))
        conn.execute("COMMIT")
    rate = n / (time.perf_counter() - t0)
    conn.close()
    return rate


def build_backlog(root: Path, docs: int) -> None:
    """A spool holding ``docs`` queued documents, built fast: one transaction, tiny files."""
    with Spool(root) as spool:
        spool._conn.execute("BEGIN")
        spool._conn.executemany(
            ROW + " VALUES (?, 'b0', 'queued', 16, 1, ?)",
            ((f"q{i:06d}", time.time()) for i in range(docs)),
        )
        spool._conn.execute("COMMIT")
        for i in range(docs):
            spool.envelope_path(f"q{i:06d}").write_bytes(b"sealed envelope.")


KILL_AFTER = 500  # commits before the kill: about 0.8 s of them on the development machine

CHILD = """
import os, sys
from pathlib import Path
from sync.spool.store import Spool
spool = Spool(Path(sys.argv[1]))
spool.begin_batch(sys.argv[2])
i = 0
while True:
    tmp = spool.temp_envelope(f"{sys.argv[2]}-{i}")
    tmp.write_bytes(os.urandom(512))
    spool.commit_document(tmp, doc_id=f"{sys.argv[2]}-{i}", batch_id=sys.argv[2], pages=1,
                          page_sha256=[], pdf_sha256="1" * 64, ciphertext_sha256="2" * 64)
    i += 1
"""


def kill_mid_commit(root: Path, run: int) -> None:
    """SIGKILL a child in the middle of its commits, once it has made KILL_AFTER of them."""
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(root), f"k{run}"])

    def committed() -> bool:
        if child.poll() is not None:
            raise RuntimeError(f"the committing child exited with {child.returncode}")
        prefix = f"k{run}-"
        with os.scandir(root / "env") as it:
            return sum(e.name.startswith(prefix) for e in it) >= KILL_AFTER

    wait_until(committed, 120, f"{KILL_AFTER} commits by the child")
    child.send_signal(signal.SIGKILL)
    child.wait()


def restart_time(root: Path) -> tuple[float, int]:
    t0 = time.perf_counter()
    with Spool(root) as spool:
        report = spool.recover()
    return time.perf_counter() - t0, report.finished + report.lost + report.temp_removed


def baseline_restart(root: Path) -> float:
    t0 = time.perf_counter()
    conn = sqlite3.connect(root / "spool.db")
    rows = conn.execute("SELECT doc_id, state FROM documents").fetchall()
    names = os.listdir(root / "env")
    conn.close()
    assert rows and names
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--commits", type=int, default=300)
    ap.add_argument("--docs", type=int, default=10_000)
    ap.add_argument("--dir", default=None, help="folder on the disk to measure (default: temp)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        tmp = Path(d)
        ours = commit_rate(tmp / "commit", args.commits)
        base = baseline_rate(tmp / "baseline.db", args.commits)
        build_backlog(tmp / "backlog", args.docs)
        times, bases, fixed = [], [], 0
        for run in range(5):
            kill_mid_commit(tmp / "backlog", run)
            t, n = restart_time(tmp / "backlog")
            times.append(t)
            fixed += n
            bases.append(baseline_restart(tmp / "backlog"))
        total = len(os.listdir(tmp / "backlog" / "env"))
    rt, rb = statistics.median(times), statistics.median(bases)
    rows = [
        ("measure", "sohoa", "baseline", "ratio"),
        ("commits/s (synchronous=FULL)", f"{ours:.0f}", f"{base:.0f}", f"{ours / base:.2f}"),
        (
            f"restart after kill, {total} docs (ms)",
            f"{rt * 1000:.0f}",
            f"{rb * 1000:.0f}",
            f"{rt / rb:.2f}",
        ),
    ]
    print(f"$ {' '.join([Path(sys.executable).name, *sys.orig_argv[1:]])}")
    print(
        f"(filesystem of {args.dir or tempfile.gettempdir()}; recovery fixed {fixed} crash leftovers in 5 kills)"
    )
    for r in rows:
        print(f"| {r[0]:<38} | {r[1]:>7} | {r[2]:>8} | {r[3]:>5} |")


if __name__ == "__main__":
    main()
