"""Hostile messages on the loopback broker: the warehouse and the device stay up, drop
them with a reason, and the genuine path goes on working."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from agent.services.sync import device_link, run_sync
from agent.services.warehouse import MAX_RESTARTS, WarehouseWorkers
from sync.errors import SohoaError
from sync.mqtt.link import Link
from sync.mqtt.settings import LinkSettings
from sync.protocol import (
    ProtocolError,
    Query,
    load_json,
    manifest_topic,
    parse_receipt,
    query_topic,
    receipt_topic,
)
from tests.support.site import REPO, Site
from tests.support.sync import spool_documents, stored_documents
from tests.support.wait import wait_until

DEEP = b"[" * 200_000


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (DEEP, "JSON nested deeper than 16 levels"),
        (b'{"a":' * 17 + b"1" + b"}" * 17, "JSON nested deeper than 16 levels"),
        (b'{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}', None),  # brackets inside a string are text
        (b"x" * (256 * 1024 + 1), "JSON payload larger than 256 KiB"),
    ],
)
def test_json_from_the_wire_is_bounded_before_it_is_parsed(
    payload: bytes, reason: str | None
) -> None:
    if reason is None:
        assert load_json(payload) == {"a": "[" * 29}
    else:
        with pytest.raises(ProtocolError, match=reason):
            load_json(payload)


def attacker(site: Site) -> Link:
    link = Link(LinkSettings(site.broker.host, site.broker.port, "t-attacker", clean_start=True))
    link.connect()
    return link


def test_deeply_nested_query_leaves_the_warehouse_up_and_storing(
    site: Site, warehouse_worker: WarehouseWorkers
) -> None:
    with attacker(site) as evil:
        for _ in range(3):
            evil.publish(query_topic(site.device.device.id, "d1"), DEEP)
    sealed = spool_documents(site.device, 2)

    outcome = run_sync(site.device, once=True, timeout_s=60)

    assert (outcome.stored, outcome.pending) == (2, 0)
    assert sorted(d.doc_id for d in stored_documents(site.warehouse)) == sorted(
        s.doc_id for s in sealed
    )
    assert warehouse_worker.alive()
    wait_until(
        lambda: (
            sum(s.failed for s in warehouse_worker.stats().values()) == 0
            and sum(s.handled for s in warehouse_worker.stats().values()) >= 3
        ),
        10,
        "the worker to have handled the garbage as ignored queries",
    )


def test_deeply_nested_receipt_does_not_end_sohoa_sync(
    site: Site, warehouse_worker: WarehouseWorkers
) -> None:
    with device_link(site.device) as dev:  # the device's persistent session exists
        dev.subscribe(receipt_topic(site.device.device.id))
    with attacker(site) as evil:
        evil.publish(receipt_topic(site.device.device.id), DEEP)
        evil.publish(receipt_topic(site.device.device.id), b"\xff\xfe not json")
    spool_documents(site.device, 1)

    proc = site.run("sync", "--once", "--timeout", "60")

    assert (proc.returncode, "internal error" in proc.stderr) == (0, False)


def test_a_worker_that_cannot_start_is_retried_then_the_service_gives_up(site: Site) -> None:
    broken = replace(
        site.warehouse,
        warehouse=replace(site.warehouse.warehouse, private_key=Path("keys/missing.key")),
    )
    workers = WarehouseWorkers.from_config(broken, name="t-broken").start()
    try:
        with pytest.raises(SohoaError, match="warehouse worker t-broken-w1 keeps failing"):
            for _ in range(MAX_RESTARTS + 2):
                workers.join(5)
                workers.keep_alive()
    finally:
        workers.stop()


def test_warehouse_serve_without_its_key_exits_non_zero_with_one_line(site: Site) -> None:
    (site.warehouse.home / "keys" / "warehouse.key").unlink()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "agent.cli",
            "--config",
            str(site.warehouse_toml),
            "warehouse",
            "serve",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0
    assert lines[-1].startswith("error: warehouse worker ") and "keeps failing" in lines[-1]


def test_a_tiny_query_claiming_65536_segments_gets_a_small_receipt(
    site: Site, warehouse_worker: WarehouseWorkers
) -> None:
    device = site.device.device.id
    with attacker(site) as evil:
        evil.subscribe(receipt_topic(device))
        evil.publish(query_topic(device, "d-claim"), Query("ab" * 32, 65536, "0a1d").to_bytes())
        answer = evil.get(10)

    assert answer is not None
    receipt = parse_receipt(answer.payload)
    assert (receipt.status, len(receipt.missing), len(answer.payload) < 16 * 1024) == (
        "missing",
        1024,
        True,
    )


def test_a_manifest_announcing_a_huge_envelope_is_rejected_before_staging(site: Site) -> None:
    # the only worker: a stopped one would keep a persistent share of the subscription
    # and swallow every other message until its session expires
    tight = replace(site.warehouse, warehouse=replace(site.warehouse.warehouse, max_envelope_mb=1))
    with WarehouseWorkers.from_config(tight, name="t-tight") as workers:
        assert workers.wait_ready(15)
        spool_documents(site.device, 1, size=2 * 1024 * 1024, segment_size=65536)
        outcome = run_sync(site.device, once=True, timeout_s=30)

    assert (outcome.stored, outcome.rejected) == (0, 1)
    assert "envelope larger than this warehouse accepts" in next(iter(outcome.rejections.values()))
    staging = site.warehouse.path(site.warehouse.warehouse.archive) / "staging"
    assert [p for p in staging.rglob("s*") if p.is_file()] == []


def test_a_rejection_earned_by_garbage_on_a_documents_topic_is_ignored_by_the_device(
    site: Site, warehouse_worker: WarehouseWorkers
) -> None:
    device = site.device.device.id
    [sealed] = spool_documents(site.device, 1)
    with device_link(site.device) as dev:  # the device's persistent session holds its rcpt
        dev.subscribe(receipt_topic(device))
    with attacker(site) as evil:
        evil.subscribe(receipt_topic(device))
        evil.publish(manifest_topic(device, sealed.doc_id), b'{"format": "garbage"}')
        rejection = evil.get(10)
    assert rejection is not None and parse_receipt(rejection.payload).status == "rejected"

    outcome = run_sync(site.device, once=True, timeout_s=60)

    assert (outcome.stored, outcome.rejected, outcome.pending) == (1, 0, 0)
    assert [d.doc_id for d in stored_documents(site.warehouse)] == [sealed.doc_id]
