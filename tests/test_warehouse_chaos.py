"""Warehouse processes killed at random while devices upload: nothing is lost,
nothing is stored twice, nothing decrypted is left lying around.

Three ``sohoa warehouse serve --workers 2`` processes share one PostgreSQL index and
one archive folder on one real mosquitto; five enrolled devices run ``sohoa sync
--once`` on 100 sealed documents each, while a chaos loop SIGKILLs one warehouse
process every 2–4 s and starts it again under the same instance name, as systemd
would. Every part is real and driven through the command line.
"""

from __future__ import annotations

import json
import random
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from tests.support.chaos import (
    Device,
    Province,
    ServeProcess,
    archive_leftovers,
    enrol_device,
    env_for,
    fill_spool,
    make_province,
    sha256_file,
    staging_leftovers,
    subscribed,
)
from tests.support.mqtt import Broker, start_mosquitto
from tests.support.site import REPO, SOHOA
from tests.support.wait import became_true, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.soak]

DEVICES = 5
DOCS = 100
DOC_BYTES = 3000  # one 4 KiB segment each: the test is about crashes, not bandwidth
SERVERS = 3
WORKERS = 2
KILL_EVERY_S = (2.0, 4.0)
LINK_KBPS = 128  # each device's upload cap: ~30 s for its 100 documents, ~10 kills
MIN_KILLS = 5  # fewer means the uploads ended before the chaos had a chance
SYNC_TIMEOUT_S = 150.0
BIG_BYTES = 8_000_000  # large enough that archiving it takes a while
BIG_SEGMENT = 256 * 1024


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """mosquitto that logs subscriptions, so that a worker is known to be listening."""
    broker = start_mosquitto(tmp_path / "broker", extra_conf="log_type subscribe\n")
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def province(tmp_path: Path, broker: Broker, postgres_db: str) -> Province:
    return make_province(tmp_path, broker.url(), postgres_db)


def wait_listening(broker: Broker, servers: list[ServeProcess]) -> None:
    clients = [c for p in servers for c in p.client_ids]
    wait_until(
        lambda: all(subscribed(broker.log_text(), c) for c in clients),
        30,
        "every warehouse worker subscribed",
        poll_s=0.1,
    )


@pytest.fixture
def devices(tmp_path: Path, province: Province) -> list[Device]:
    return [
        fill_spool(
            enrol_device(tmp_path, province, f"dev-chaos-{i:02d}", bandwidth_kbps=LINK_KBPS),
            DOCS,
            DOC_BYTES,
        )
        for i in range(DEVICES)
    ]


@pytest.fixture
def servers(tmp_path: Path, province: Province, broker: Broker) -> Iterator[list[ServeProcess]]:
    """The warehouse processes, every worker of each subscribed."""
    procs = [
        ServeProcess(province, f"chaos-{k}", WORKERS, tmp_path / f"serve-{k}.log").start()
        for k in range(SERVERS)
    ]
    try:
        wait_listening(broker, procs)
        yield procs
    finally:
        for p in procs:
            p.stop()


@dataclass
class Upload:
    """One device's ``sohoa sync --once``, its output in ``log``."""

    device: Device
    log: Path
    proc: subprocess.Popen[bytes]

    def end(self, timeout_s: float = 0.0) -> tuple[int, str]:
        """Exit status (killed if still running after ``timeout_s``) and the tail of
        what it printed."""
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        return self.proc.wait(30), self.log.read_text(errors="replace")[-400:]


def start_sync(device: Device, log: Path) -> Upload:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*SOHOA, "sync", "--once", "--timeout", str(SYNC_TIMEOUT_S)],
            env=env_for(device.toml),
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Upload(device, log, proc)


def chaos(
    servers: list[ServeProcess], syncs: list[subprocess.Popen[bytes]], rng: random.Random
) -> list[str]:
    """Kill a random warehouse process every 2–4 s and start it again, until every
    device is done; which were killed, when."""
    t0 = time.monotonic()
    kills: list[str] = []
    deadline = t0 + SYNC_TIMEOUT_S + 10
    while time.monotonic() < deadline:
        if became_true(
            lambda: all(s.poll() is not None for s in syncs), rng.uniform(*KILL_EVERY_S)
        ):
            break
        victim = rng.choice(servers)
        victim.kill()
        victim.start()
        kills.append(f"{time.monotonic() - t0:.1f}s {victim.instance}")
    return kills


@dataclass(frozen=True)
class Ledger:
    """What the warehouse and the devices hold at the end, as plain values."""

    rows_not_once: dict[str, int]  # "device/doc" -> rows in the index, where not 1
    wrong_ciphertext: list[str]
    wrong_envelope: list[str]
    wrong_pdf: list[str]
    spool_states: dict[str, dict[str, int]]
    archive_tmp: list[str]
    staging: list[str]
    errors_logged: list[str]

    @classmethod
    def clean(cls, stored: dict[str, int]) -> Ledger:
        """Each device's documents stored once and intact, nothing else left anywhere."""
        states = {device: {"stored": n} for device, n in stored.items()}
        return cls({}, [], [], [], states, [], [], [])


def index_rows(dsn: str) -> tuple[dict[tuple[str, str], int], dict[tuple[str, str], str]]:
    """Rows per (device, doc_id), and each one's ciphertext hash, straight from PostgreSQL."""
    with psycopg.connect(dsn) as conn:
        counts = conn.execute(
            "SELECT device, doc_id, count(*) FROM documents GROUP BY device, doc_id"
        ).fetchall()
        hashes = conn.execute("SELECT device, doc_id, ciphertext_sha256 FROM documents").fetchall()
    return {(d, n): c for d, n, c in counts}, {(d, n): h for d, n, h in hashes}


def spool_states(device: Device) -> dict[str, int]:
    proc = subprocess.run(
        [*SOHOA, "status", "--json"],
        env=env_for(device.toml),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    by_state: dict[str, int] = json.loads(proc.stdout)["by_state"]
    return {state: n for state, n in by_state.items() if n}


def ledger(province: Province, devices: list[Device], logs: list[Path]) -> Ledger:
    rows, ciphertexts = index_rows(province.cfg.warehouse.index)
    wanted = {(dev.id, s.doc_id) for dev in devices for s in dev.sealed}
    not_once = {
        f"{dv}/{doc}": rows.get((dv, doc), 0)
        for dv, doc in sorted(wanted | set(rows))
        if rows.get((dv, doc), 0) != 1 or (dv, doc) not in wanted
    }
    wrong_ct, wrong_env, wrong_pdf = [], [], []
    for dev in devices:
        for s in dev.sealed:
            where = f"{dev.id}/{s.doc_id}"
            if ciphertexts.get((dev.id, s.doc_id), s.ciphertext_sha256) != s.ciphertext_sha256:
                wrong_ct.append(where)
            folder = province.archive / "docs" / dev.id / s.doc_id
            envelope, pdf = folder / "envelope.sohoa", folder / "document.pdf"
            if not envelope.exists() or sha256_file(envelope) != dev.envelope_sha256[s.doc_id]:
                wrong_env.append(where)
            if not pdf.exists() or sha256_file(pdf) != s.pdf_sha256:
                wrong_pdf.append(where)
    errors = [
        f"{log.name}: {line}"
        for log in logs
        for line in log.read_text(errors="replace").splitlines()
        if " ERROR " in line or "Traceback" in line
    ]
    return Ledger(
        rows_not_once=not_once,
        wrong_ciphertext=wrong_ct,
        wrong_envelope=wrong_env,
        wrong_pdf=wrong_pdf,
        spool_states={dev.id: spool_states(dev) for dev in devices},
        archive_tmp=archive_leftovers(province.archive),
        staging=staging_leftovers(province.archive),
        errors_logged=errors[:20],
    )


def test_warehouse_processes_killed_at_random_store_every_document_exactly_once(
    tmp_path: Path, province: Province, devices: list[Device], servers: list[ServeProcess]
) -> None:
    seed = secrets.randbits(32)
    uploads = [start_sync(d, tmp_path / f"sync-{d.id}.log") for d in devices]
    try:
        kills = chaos(servers, [u.proc for u in uploads], random.Random(seed))
    finally:
        ends = {u.device.id: u.end() for u in uploads}  # all ended, or the chaos gave up
    assert {d: code for d, (code, _) in ends.items()} == {d.id: 0 for d in devices}, (seed, ends)
    assert len(kills) >= MIN_KILLS, kills
    assert all(p.running() for p in servers), "a warehouse process died on its own"
    assert [p.stop() for p in servers] == [0] * SERVERS

    found = ledger(province, devices, [p.log for p in servers])
    assert found == Ledger.clean({d.id: DOCS for d in devices}), f"seed {seed}, kills {kills}"
    print(f"{len(kills)} kills: {', '.join(kills)}")


def test_a_warehouse_killed_while_archiving_leaves_no_decrypted_copy_behind(
    tmp_path: Path, broker: Broker, province: Province
) -> None:
    """The kill the random loop lands only by chance: while a document's decrypted PDF
    is being written into the archive. The document is stored when its device sends
    it again, and the plaintext written so far must not stay behind."""
    device = fill_spool(
        enrol_device(tmp_path, province, "dev-chaos-big"), 2, BIG_BYTES, BIG_SEGMENT
    )
    server = ServeProcess(province, "chaos-big", 1, tmp_path / "serve-big.log").start()
    try:
        wait_listening(broker, [server])
        upload = start_sync(device, tmp_path / "sync-big.log")
        archive_dir = province.archive
        wait_until(lambda: archive_leftovers(archive_dir), 60, "a PDF being archived", poll_s=0.005)
        server.kill()
        server.start()
        code, tail = upload.end(SYNC_TIMEOUT_S)
        assert code == 0, tail
    finally:
        server.stop()
    assert ledger(province, [device], [server.log]) == Ledger.clean({device.id: 2})
