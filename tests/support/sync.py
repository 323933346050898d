"""Helpers for the sync tests and benchmark: small sealed documents straight into a
spool, warehouse workers and device sync loops in threads, a device seen through a
FaultProxy.

Documents are sealed with the real EnvelopeWriter and real keys; only the PDF is a
stand-in (random bytes behind a PDF header), which the warehouse does not parse.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from agent.config import Config, SyncConfig
from agent.services.sync import SyncOutcome, run_sync
from agent.services.warehouse import WarehouseWorkers
from sync.envelope.header import Header
from sync.envelope.payload import PayloadWriter
from sync.envelope.seal import EnvelopeWriter
from sync.keys import load_device_key, load_warehouse_public
from sync.mqtt.settings import BrokerConfig
from sync.spool.store import Spool
from sync.warehouse.index import StoredDocument, open_index
from tests.support.site import Site


@dataclass(frozen=True)
class Sealed:
    doc_id: str
    pdf_sha256: str
    ciphertext_sha256: str
    envelope: Path


def seal(
    cfg: Config, doc_id: str, pdf: bytes, out: Path, *, segment_size: int = 4096
) -> tuple[Header, str]:
    """Seal a fake PDF for ``cfg``'s device into ``out``; (header, pdf sha256)."""
    sha = hashlib.sha256(pdf).digest()
    with out.open("wb") as fh:
        w = EnvelopeWriter(
            fh,
            device_id=cfg.device.id,
            doc_id=doc_id,
            warehouse=load_warehouse_public(cfg.path(cfg.warehouse.public_key)),
            device_key=load_device_key(cfg.path(cfg.device.key)),
            segment_size=segment_size,
        )
        payload = PayloadWriter(
            w.write,
            {"doc_type": "test", "decree30": {"PageAmount": 1}},
            device_id=cfg.device.id,
            doc_id=doc_id,
            device_key=load_device_key(cfg.path(cfg.device.key)),
        )
        payload.write(pdf)
        payload.close()
        header = w.close()
    return header, sha.hex()


def fake_pdf(size: int) -> bytes:
    return b"%PDF-1.7\n" + os.urandom(max(0, size - 9))


def spool_documents(
    cfg: Config, count: int, *, size: int = 3000, segment_size: int = 4096, prefix: str = "doc"
) -> list[Sealed]:
    """Put ``count`` sealed documents into the device's spool, queued for sync."""
    out: list[Sealed] = []
    with Spool(cfg.home / "spool") as spool:
        spool.begin_batch(f"{prefix}-batch")
        for i in range(count):
            doc_id = f"{prefix}-{i:04d}"
            tmp = spool.temp_envelope(doc_id)
            header, pdf_sha = seal(cfg, doc_id, fake_pdf(size), tmp, segment_size=segment_size)
            done = spool.commit_document(
                tmp,
                doc_id=doc_id,
                batch_id=f"{prefix}-batch",
                pages=1,
                page_sha256=[],
                pdf_sha256=pdf_sha,
                ciphertext_sha256=header.ciphertext_sha256,
            )
            out.append(Sealed(doc_id, pdf_sha, header.ciphertext_sha256, done.envelope))
    return out


def via(cfg: Config, port: int, **sync: object) -> Config:
    """``cfg`` pointed at a proxy on ``port``, with ``sync`` settings changed."""
    return replace(
        cfg,
        broker=BrokerConfig(url=f"mqtt://127.0.0.1:{port}"),
        sync=replace(cfg.sync, **sync) if sync else cfg.sync,  # type: ignore[arg-type]
    )


@contextmanager
def warehouse_workers(cfg: Config, count: int, tag: str = "w") -> Iterator[WarehouseWorkers]:
    """``count`` ingest workers sharing the load, every one subscribed before it yields."""
    with WarehouseWorkers.from_config(cfg, count, name=tag) as workers:
        assert workers.wait_ready(15), "warehouse worker did not connect"
        yield workers


@dataclass
class DeviceLoop:
    """``run_sync`` in a thread until ``stop``; ``outcome`` when it ended."""

    thread: threading.Thread
    stop: threading.Event
    outcome: list[SyncOutcome]

    def end(self) -> SyncOutcome:
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), "sync loop did not stop"
        return self.outcome[0]


def start_device(cfg: Config) -> DeviceLoop:
    stop = threading.Event()
    outcome: list[SyncOutcome] = []

    def run() -> None:
        outcome.append(run_sync(cfg, once=False, timeout_s=None, stop=stop))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return DeviceLoop(t, stop, outcome)


def stored_documents(warehouse: Config) -> list[StoredDocument]:
    index = open_index(warehouse.warehouse.index, warehouse.path(warehouse.warehouse.archive))
    try:
        return index.all()
    finally:
        index.close()


def pending_count(cfg: Config) -> int:
    with Spool(cfg.home / "spool") as spool:
        return len(spool.pending())


def fast_sync(cfg: Config) -> Config:
    return replace(cfg, sync=SyncConfig(receipt_timeout_s=5.0, health_interval_s=5))


def assert_stored_exactly_once(site: Site, expected: dict[tuple[str, str], str]) -> None:
    """Each (device, doc) once, with the PDF byte-identical to what was sealed."""
    stored = stored_documents(site.warehouse)
    got = {(r.device, r.doc_id): r.pdf_sha256 for r in stored}
    assert len(stored) == len(got)
    assert got == expected
    for r in stored:
        assert hashlib.sha256(Path(r.path).read_bytes()).hexdigest() == r.pdf_sha256
