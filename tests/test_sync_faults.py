"""Store-and-forward over a bad link: every document reaches the warehouse exactly once.

Real mosquitto, real warehouse workers, real device sync loops; the device's link
goes through a FaultProxy that cuts, slows or delays it.
"""

from __future__ import annotations

import logging
import random
import shutil
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.config import Config, DeviceConfig
from agent.services.sync import device_link, sync_once
from sync import enrolment, keys
from sync.envelope.header import manifest_bytes
from sync.envelope.reader import iter_segments, read_header, read_prefix
from sync.keys import load_warehouse_private, load_warehouse_public
from sync.mqtt.backoff import backoff_delays
from sync.mqtt.link import Link
from sync.mqtt.settings import BrokerConfig, LinkSettings
from sync.protocol import (
    Receipt,
    manifest_topic,
    parse_doc_topic,
    receipt_topic,
    segment_topic,
    sign_receipt,
)
from sync.spool.store import Spool
from sync.uploader import Uploader, UploadSettings
from tests.support.faultproxy import FaultProxy
from tests.support.mqtt import Broker, make_tls, start_mosquitto
from tests.support.site import Site, make_site
from tests.support.sync import (
    assert_stored_exactly_once,
    pending_count,
    spool_documents,
    start_device,
    stored_documents,
    via,
    warehouse_workers,
)
from tests.support.wait import wait_until


def add_device(site: Site, tmp: Path, device_id: str) -> Config:
    """Another enrolled device on the site's warehouse."""
    dev = replace(site.device, home=tmp / device_id, device=DeviceConfig(id=device_id))
    keys.init_device_keys(dev.path(dev.device.key))
    shutil.copy(
        site.warehouse.path(site.warehouse.warehouse.public_key),
        dev.path(dev.warehouse.public_key),
    )
    enrolment.enroll_device(
        dev.path(dev.device.key).with_suffix(".pub"),
        device_id,
        site.warehouse.path(site.warehouse.warehouse.devices),
    )
    return dev


def sent_count(cfg: Config) -> int:
    with Spool(cfg.home / "spool") as spool:
        return spool.status().by_state["sent"]


@pytest.mark.slow
def test_three_devices_on_cutting_links_store_every_document_exactly_once(
    site: Site, tmp_path: Path
) -> None:
    devices = [site.device] + [add_device(site, tmp_path, f"dev-cut-{i}") for i in (2, 3)]
    expected = {
        (d.device.id, s.doc_id): s.pdf_sha256
        for d in devices
        for s in spool_documents(d, 60, size=random.randint(2000, 12000))
    }
    upstream = (site.broker.host, site.broker.port)
    proxies = [FaultProxy(upstream, cut_every_s=2.0 + 0.4 * i).start() for i in range(3)]
    try:
        with warehouse_workers(site.warehouse, 2):
            loops = [start_device(via(d, p.port)) for d, p in zip(devices, proxies, strict=True)]
            wait_until(
                lambda: len(stored_documents(site.warehouse)) >= 180, 50, "180 documents stored"
            )
            wait_until(
                lambda: all(pending_count(d) == 0 for d in devices), 20, "every spool drained"
            )
            outcomes = [loop.end() for loop in loops]
    finally:
        for p in proxies:
            p.stop()
    assert sum(p.cuts for p in proxies) >= 3  # the links really were cut
    assert [o.rejected for o in outcomes] == [0, 0, 0]
    assert_stored_exactly_once(site, expected)


def test_backlog_drains_once_the_warehouse_comes_back(site: Site) -> None:
    sealed = spool_documents(site.device, 15)
    with warehouse_workers(site.warehouse, 1, tag="early"):
        pass  # the workers' persistent sessions now exist; the warehouse goes down
    loop = start_device(site.device)
    # the device uploads, and no receipt comes while the warehouse is down
    wait_until(lambda: sent_count(site.device) >= 1, 30, "a document sent without a receipt")
    assert (stored_documents(site.warehouse), pending_count(site.device)) == ([], 15)
    with warehouse_workers(site.warehouse, 1, tag="early"):
        wait_until(lambda: pending_count(site.device) == 0, 40, "the spool to drain")
    loop.end()
    assert_stored_exactly_once(
        site, {(site.device.device.id, s.doc_id): s.pdf_sha256 for s in sealed}
    )


def test_broker_restart_loses_nothing(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="sohoa.sync")

    def links_down() -> int:
        return sum(r.name == "sohoa.sync" and "link down" in r.getMessage() for r in caplog.records)

    sealed = spool_documents(site.device, 30, size=20_000)
    with warehouse_workers(site.warehouse, 2):
        loop = start_device(site.device)
        wait_until(lambda: len(stored_documents(site.warehouse)) >= 3, 20, "some documents stored")
        before = links_down()
        site.broker.stop()
        # the outage lasts until the device has seen it: it must ride out a broker that is gone
        wait_until(lambda: links_down() > before, 20, "the device to see its link go down")
        site.broker.start()
        wait_until(lambda: pending_count(site.device) == 0, 45, "the spool to drain")
        loop.end()
    assert_stored_exactly_once(
        site, {(site.device.device.id, s.doc_id): s.pdf_sha256 for s in sealed}
    )


def _partial_upload(cfg: Config, doc_id: str, envelope: Path, count: int) -> None:
    """What a device that died mid-document left behind: manifest and ``count`` segments."""
    header = read_header(envelope)
    with Link(
        LinkSettings(cfg.broker.host, cfg.broker.port, "dead-device", clean_start=True)
    ) as link:
        link.publish(
            manifest_topic(cfg.device.id, doc_id), manifest_bytes(header, read_prefix(envelope))
        )
        for n, seg in enumerate(iter_segments(envelope)):
            if n < count:
                link.publish(segment_topic(cfg.device.id, doc_id, n), seg)


def _queue_stale_answer(site: Site, doc_id: str) -> None:
    """A warehouse answer to an older query ('all 8 missing'), queued in the broker
    for the device's persistent session while it was away."""
    dev = device_link(site.device)
    with dev:
        dev.subscribe(receipt_topic(site.device.device.id))
    signing = load_warehouse_private(site.warehouse.path(site.warehouse.warehouse.private_key))
    stale = Receipt(site.device.device.id, doc_id, "missing", missing=tuple(range(8)), query="0a1d")
    with Link(
        LinkSettings(site.broker.host, site.broker.port, "old-answer", clean_start=True)
    ) as w:
        w.publish(
            receipt_topic(site.device.device.id), sign_receipt(stale, signing.signing).to_bytes()
        )


@pytest.mark.parametrize(
    ("state", "sent_before", "stale_answer", "expected_segments"),
    [
        ("sent", 5, False, 3),  # the upload had begun: ask first, send only what is missing
        ("sent", 5, True, 3),  # an answer to an older question does not count
        ("queued", 0, False, 8),  # nothing was sent before the restart
    ],
)
def test_upload_resumes_after_a_restart_sending_only_missing_segments(
    site: Site, state: str, sent_before: int, stale_answer: bool, expected_segments: int
) -> None:
    [doc] = spool_documents(site.device, 1, size=30_000)  # 8 segments of 4 KiB
    with warehouse_workers(site.warehouse, 1):
        _partial_upload(site.device, doc.doc_id, doc.envelope, sent_before)
        if stale_answer:
            _queue_stale_answer(site, doc.doc_id)
        spool = Spool(site.device.home / "spool")
        if state == "sent":
            spool.mark_sent(doc.doc_id)
        staged = site.warehouse.path(site.warehouse.warehouse.archive) / "staging"
        wait_until(
            lambda: len(list(staged.glob(f"*/{doc.doc_id}/s*"))) == sent_before,
            10,
            f"{sent_before} segments staged at the warehouse",
        )
        link = device_link(site.device)
        link.connect()
        try:
            up = Uploader(
                link,
                spool,
                UploadSettings(site.device.device.id, receipt_timeout_s=5.0),
                load_warehouse_public(site.device.path(site.device.warehouse.public_key)).signing,
            )
            up.start()
            assert up.drain(time.monotonic() + 20) == (0, 0)
        finally:
            link.close()
            spool.close()
    assert (up.stats.stored, up.stats.segments_sent) == (1, expected_segments)
    assert_stored_exactly_once(site, {(site.device.device.id, doc.doc_id): doc.pdf_sha256})


def _upload_time(site: Site, window: int, port: int, doc_prefix: str) -> float:
    spool_documents(site.device, 1, size=160_000, prefix=doc_prefix)  # 40 segments
    cfg = via(site.device, port)
    spool = Spool(cfg.home / "spool")
    link = device_link(cfg)
    link.connect()
    try:
        up = Uploader(
            link,
            spool,
            UploadSettings(cfg.device.id, window=window, receipt_timeout_s=10.0),
            load_warehouse_public(cfg.path(cfg.warehouse.public_key)).signing,
        )
        up.start()
        t0 = time.monotonic()
        assert up.drain(t0 + 30) == (0, 0)
        return time.monotonic() - t0
    finally:
        link.close()
        spool.close()


def test_sliding_window_keeps_many_segments_in_flight(site: Site) -> None:
    with (
        FaultProxy((site.broker.host, site.broker.port), latency_ms=25) as proxy,
        warehouse_workers(site.warehouse, 1),
    ):
        one_at_a_time = _upload_time(site, 1, proxy.port, "w1")
        windowed = _upload_time(site, 64, proxy.port, "w64")
    # 40 segments one round trip (50 ms) each, against a few round trips in all
    assert one_at_a_time > 2.0
    assert windowed < one_at_a_time / 3


def test_tls_broker_with_certificate_paths_relative_to_the_home(tmp_path: Path) -> None:
    tls = make_tls(tmp_path / "pki")
    broker: Broker = start_mosquitto(tmp_path / "tls-broker", tls=tls)
    try:
        site = make_site(tmp_path / "site", broker)
        for cfg in (site.device, site.warehouse):
            (cfg.home / "tls").mkdir(parents=True, exist_ok=True)
            for src, name in (
                (tls.ca, "ca.crt"),
                (tls.client_cert, "client.crt"),
                (tls.client_key, "client.key"),
            ):
                shutil.copy(src, cfg.home / "tls" / name)
        rel = BrokerConfig(
            url=broker.url(),
            ca=Path("tls/ca.crt"),
            cert=Path("tls/client.crt"),
            key=Path("tls/client.key"),
        )
        dev, wh = replace(site.device, broker=rel), replace(site.warehouse, broker=rel)
        [doc] = spool_documents(dev, 1)
        with warehouse_workers(wh, 1):
            out = sync_once(dev, 20)
        assert (out.stored, out.pending, out.rejected) == (1, 0, 0)
        assert_stored_exactly_once(site, {(dev.device.id, doc.doc_id): doc.pdf_sha256})
    finally:
        broker.stop()


def test_receipt_that_does_not_verify_never_purges(site: Site) -> None:
    """A forger answers every query with 'stored', signed by a key of its own."""
    [doc] = spool_documents(site.device, 1)
    forger_key = Ed25519PrivateKey.generate()
    stop = threading.Event()
    header = read_header(doc.envelope)

    def forger() -> None:
        with Link(
            LinkSettings(site.broker.host, site.broker.port, "forger", clean_start=True)
        ) as link:
            link.subscribe(f"sohoa/v1/d/{site.device.device.id}/doc/+/q")
            while not stop.is_set():
                msg = link.get(0.2)
                if msg is None:
                    continue
                t = parse_doc_topic(msg.topic)
                r = Receipt(
                    t.device, t.doc, "stored", header.ciphertext_sha256, ts="2026-01-01T00:00:00Z"
                )
                link.publish(receipt_topic(t.device), sign_receipt(r, forger_key).to_bytes())

    t = threading.Thread(target=forger, daemon=True)
    t.start()
    try:
        with pytest.raises(Exception, match="still without a verified warehouse receipt"):
            sync_once(
                replace(site.device, sync=replace(site.device.sync, receipt_timeout_s=2.0)), 6
            )
    finally:
        stop.set()
        t.join(5)
    with Spool(site.device.home / "spool") as spool:
        assert spool.purge_expired(0) == 0
        assert [(d.doc_id, d.state) for d in spool.documents()] == [(doc.doc_id, "sent")]
    assert doc.envelope.exists()


def test_backoff_grows_with_jitter_and_stays_under_its_cap() -> None:
    delays = iter(backoff_delays(0.5, 2.0, random.Random(7)))
    got = [next(delays) for _ in range(31)]
    limits = [min(2.0, 0.5 * 2**i) for i in range(31)]
    assert all(0 <= d <= lim for d, lim in zip(got, limits, strict=True))
    assert len(set(got)) == len(got)  # jittered, never in lock-step
