"""Power cuts, simulated: capture and sync run as child processes of the real
`sohoa` command and are killed with SIGKILL at random points, hundreds of
times, then restarted. Afterwards every document a scan reported reaches the
warehouse exactly once and byte-identical, and the spool is whole.

The schedule comes from ``random.Random(seed)``; set ``SOHOA_CRASH_SEED`` to
replay one (process timing still varies a little from run to run).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agent.capture.samples import make_page, receipt_page
from tests.support.site import REPO, SOHOA, Site

SEED = int(os.environ.get("SOHOA_CRASH_SEED", "20261123"))
KILLS = 210
DPI = 200
FOLDERS = 6
# kill windows after start, as fractions of how long one whole scan takes on this machine
# (measured first): during import, during page intake, during sealing and commit
SCAN_DELAYS = ((0.0, 0.5), (0.5, 0.8), (0.7, 1.0))
SYNC_DELAYS = (0.2, 2.5)


def batch_folders(root: Path) -> list[Path]:
    """Small batches of different pages: receipt, content, PATCHT, content, PATCHT, content."""
    sep = make_page([], codes=[("CODE128", "PATCHT")], dpi=DPI)
    folders = []
    for n in range(FOLDERS):
        folder = root / f"batch{n}"
        folder.mkdir(parents=True)
        pages = [
            receipt_page(f"000.00.20.H56-230512-{n + 1:04d}", dpi=DPI),
            make_page([f"TO KHAI {n}"], dpi=DPI, seed=n),
            sep,
            make_page([f"GIAY TO {n}"], dpi=DPI, seed=100 + n),
            sep,
            make_page([f"DON {n}"], dpi=DPI, seed=200 + n),
        ]
        for i, p in enumerate(pages):
            p.save(folder / f"p{i}.png", dpi=(DPI, DPI))
        folders.append(folder)
    return folders


@dataclass
class Child:
    proc: subprocess.Popen[str]
    kill_at: float | None  # monotonic time; None: let it finish
    started: float = field(default_factory=time.monotonic)


@dataclass
class Chaos:
    site: Site
    rng: random.Random
    kills: dict[str, int] = field(default_factory=lambda: {"scan": 0, "sync": 0})
    captured: dict[str, str] = field(default_factory=dict)  # doc_id -> pdf_sha256
    scans_completed: int = 0
    # one whole scan here, start-up included: measured first (``measure_scan``), then
    # followed over the scans left to finish, which run beside a sync as the killed
    # ones do (alone, a scan ran faster and the late windows fell before its batch began)
    scan_s: float = 0.8

    def spawn(self, *args: str, out: int | None = subprocess.PIPE) -> subprocess.Popen[str]:
        env = {**os.environ, "SOHOA_CONFIG": str(self.site.device_toml)}
        env.pop("SOHOA_HOME", None)
        return subprocess.Popen(
            [*SOHOA, *args],
            env=env,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.DEVNULL,
            text=True,
        )

    def kill(self, child: Child, what: str) -> None:
        if child.proc.poll() is None:
            child.proc.send_signal(signal.SIGKILL)
            self.kills[what] += 1
        child.proc.wait()

    def new_scan(self, folders: list[Path]) -> Child:
        proc = self.spawn("scan", "--from", str(self.rng.choice(folders)), "--json", "--hashes")
        if self.rng.random() < 0.15:
            return Child(proc, None)
        lo, hi = self.rng.choice(SCAN_DELAYS)
        return Child(proc, time.monotonic() + self.scan_s * self.rng.uniform(lo, hi))

    def measure_scan(self, folders: list[Path]) -> None:
        """Time one scan left to finish, so that the kills land inside the work on a
        fast machine and a slow one alike."""
        started = time.monotonic()
        proc = self.spawn("scan", "--from", str(folders[0]), "--json", "--hashes")
        proc.wait(timeout=120)
        self.scan_s = time.monotonic() - started
        self.collect(Child(proc, None))
        if proc.stdout:
            proc.stdout.close()

    def new_sync(self) -> Child:
        proc = self.spawn("sync", out=subprocess.DEVNULL)
        return Child(proc, time.monotonic() + self.rng.uniform(*SYNC_DELAYS))

    def collect(self, child: Child) -> None:
        """A scan that exited 0 with its whole JSON printed reported its documents captured."""
        out = child.proc.stdout.read() if child.proc.stdout else ""
        if child.proc.returncode != 0:
            return
        result = json.loads(out)
        self.scans_completed += 1
        for d in result["documents"]:
            self.captured[d["doc_id"]] = d["pdf_sha256"]

    def run(self, folders: list[Path], kills: int) -> None:
        self.measure_scan(folders)
        scan, sync = self.new_scan(folders), self.new_sync()
        while sum(self.kills.values()) < kills:
            now = time.monotonic()
            if scan.kill_at is not None and now >= scan.kill_at:
                self.kill(scan, "scan")
            if scan.proc.poll() is not None:
                if scan.kill_at is None and scan.proc.returncode == 0:
                    self.scan_s = (self.scan_s + time.monotonic() - scan.started) / 2
                self.collect(scan)
                if scan.proc.stdout:
                    scan.proc.stdout.close()
                scan = self.new_scan(folders)
            if sync.kill_at is not None and now >= sync.kill_at:
                self.kill(sync, "sync")
                sync = self.new_sync()
            # until the scan ends or the next kill is due
            due = min(t for t in (scan.kill_at, sync.kill_at) if t is not None)
            with contextlib.suppress(subprocess.TimeoutExpired):
                scan.proc.wait(timeout=max(0.0, due - time.monotonic()))
        self.kill(scan, "scan")
        self.kill(sync, "sync")
        if scan.proc.stdout:
            scan.proc.stdout.close()


def query(db: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


@pytest.mark.slow
@pytest.mark.soak
def test_hundreds_of_power_cuts_lose_and_duplicate_nothing(
    site: Site, tmp_path: Path, warehouse_worker: threading.Event
) -> None:
    folders = batch_folders(tmp_path / "pages")
    chaos = Chaos(site, random.Random(SEED))
    started = time.monotonic()
    chaos.run(folders, KILLS)
    chaos_s = time.monotonic() - started
    why = (
        f"seed={SEED} kills={chaos.kills} scans_completed={chaos.scans_completed}"
        f" scan_s={chaos.scan_s:.2f}"
    )
    assert sum(chaos.kills.values()) >= 200, why
    # which process each kill hits is random: on a loaded machine 99 of 210 hit scans
    assert chaos.kills["scan"] >= 90 and chaos.kills["sync"] >= 30, why
    assert len(chaos.captured) >= 20, why  # enough reported documents to mean something

    final = site.run("sync", "--once", "--timeout", "120")
    assert final.returncode == 0, f"{why}: {final.stderr}"

    spool = site.device.home / "spool"
    index = site.warehouse.path(site.warehouse.warehouse.archive) / "index.db"
    stored = dict(query(index, "SELECT doc_id, pdf_sha256 FROM documents"))
    per_doc = query(index, "SELECT doc_id, count(*) FROM documents GROUP BY device, doc_id")
    assert all(n == 1 for _, n in per_doc), why
    # every reported document, exactly once and byte-identical
    assert {d: stored.get(d) for d in chaos.captured} == chaos.captured, why
    rows = dict(query(spool / "spool.db", "SELECT doc_id, state FROM documents"))
    # nothing the spool holds is left behind, nothing arrives that the spool never held
    assert set(stored) == set(rows), why
    assert set(rows.values()) == {"stored"}, why

    assert query(spool / "spool.db", "PRAGMA integrity_check") == [("ok",)]
    assert query(index, "PRAGMA integrity_check") == [("ok",)]
    envelopes = {p.name.removesuffix(".env") for p in (spool / "env").iterdir()}
    assert envelopes == set(rows), why  # no orphan file, no row without its file
    assert list((spool / "tmp").iterdir()) == []
    audit = site.run("audit", "verify")
    assert audit.returncode == 0, f"{why}: {audit.stdout}{audit.stderr}"
    # the kills hit inside the work, not only during start-up
    batches = dict(query(spool / "spool.db", "SELECT status, count(*) FROM batches GROUP BY 1"))
    recovered = query(
        spool / "spool.db",
        "SELECT json_extract(body, '$.action'), count(*) FROM audit WHERE kind='recovery' GROUP BY 1",
    )
    mid_batch = query(
        spool / "spool.db",
        "SELECT count(*) FROM documents JOIN batches USING (batch_id) WHERE status='interrupted'",
    )[0][0]
    print(
        f"\n{why} captured={len(chaos.captured)} chaos_s={chaos_s:.0f}"
        f" batches={batches} recovered={recovered} sealed_in_killed_batches={mid_batch}"
    )
    assert batches.get("interrupted", 0) >= 20, why  # killed between begin and end of batch
