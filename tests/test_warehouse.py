"""Warehouse ingest: what it stores, what it re-requests, what it rejects, and why.

The ingest is driven message by message (no broker needed): real keys, real
envelopes, real staging on disk, the real SQLite index.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.config import Config, DeviceConfig
from sync import enrolment, keys
from sync.envelope.header import Header, manifest_bytes
from sync.envelope.reader import iter_segments, read_header, read_prefix
from sync.keys import load_warehouse_private
from sync.mqtt.settings import Message
from sync.protocol import (
    Query,
    manifest_topic,
    parse_receipt,
    query_topic,
    segment_topic,
    verify_receipt,
)
from sync.warehouse.index import SqliteIndex
from sync.warehouse.ingest import Ingest, IngestSettings
from sync.warehouse.staging import MAX_BAD_BODIES, StagingLimits
from tests.support.sync import seal

DEVICE = "dev-wh-01"


@dataclass
class Env:
    header: Header
    prefix: bytes
    segments: list[bytes]
    pdf_sha256: str

    def manifest(self) -> bytes:
        return manifest_bytes(self.header, self.prefix)


@dataclass
class Homes:
    device: Config
    warehouse: Config
    tmp: Path

    def ingest(
        self, limits: StagingLimits | None = None, clock: Callable[[], float] = time.time
    ) -> Ingest:
        w = self.warehouse
        archive, devices = w.path(w.warehouse.archive), w.path(w.warehouse.devices)
        settings = IngestSettings(archive, devices, staging=limits or StagingLimits())
        return Ingest(
            settings,
            load_warehouse_private(w.path(w.warehouse.private_key)),
            SqliteIndex(w.path(w.warehouse.archive) / "index.db"),
            clock=clock,
        )

    def envelope(self, doc_id: str, size: int = 10_000, device: Config | None = None) -> Env:
        path = self.tmp / f"{doc_id}.env"
        _, pdf_sha = seal(device or self.device, doc_id, b"%PDF" + bytes(size), path)
        return Env(read_header(path), read_prefix(path), list(iter_segments(path)), pdf_sha)


def device_home(tmp: Path, wh: Config, device_id: str, *, enroll: bool = True) -> Config:
    dev = Config(home=tmp / device_id, device=DeviceConfig(id=device_id))
    keys.init_device_keys(dev.path(dev.device.key))
    shutil.copy(wh.path(wh.warehouse.public_key), dev.path(dev.warehouse.public_key))
    if enroll:
        enrolment.enroll_device(
            dev.path(dev.device.key).with_suffix(".pub"), device_id, wh.path(wh.warehouse.devices)
        )
    return dev


@pytest.fixture
def homes(tmp_path: Path) -> Homes:
    wh = Config(home=tmp_path / "warehouse")
    keys.init_warehouse_keys(wh.path(wh.warehouse.private_key), wh.path(wh.warehouse.public_key))
    return Homes(device_home(tmp_path, wh, DEVICE), wh, tmp_path)


def receipts(out: list[Message], homes: Homes) -> list[tuple[str, tuple[int, ...], str | None]]:
    """(status, missing, reason) of each answer, after checking its signature."""
    pub = keys.load_warehouse_public(homes.warehouse.path(homes.warehouse.warehouse.public_key))
    got = []
    for m in out:
        r = parse_receipt(m.payload)
        assert verify_receipt(r, pub.signing)
        got.append((r.status, r.missing, r.reason))
    return got


def send(ingest: Ingest, env: Env, doc: str = "", device: str = DEVICE) -> list[Message]:
    doc = doc or env.header.doc_id
    out = ingest.handle(manifest_topic(device, doc), env.manifest())
    for i, s in enumerate(env.segments):
        out += ingest.handle(segment_topic(device, doc, i), s)
    return out


def ask(ingest: Ingest, env: Env) -> list[Message]:
    q = Query(env.header.ciphertext_sha256, env.header.segments)
    return ingest.handle(query_topic(DEVICE, env.header.doc_id), q.to_bytes())


def archived(homes: Homes) -> list[Path]:
    docs = homes.warehouse.path(homes.warehouse.warehouse.archive) / "docs"
    return sorted(p for p in docs.rglob("*") if p.is_file()) if docs.exists() else []


def test_document_is_stored_byte_identical_and_only_once(homes: Homes) -> None:
    ingest, env = homes.ingest(), homes.envelope("doc-a", 20_000)
    first = send(ingest, env)
    again = send(ingest, env) + ask(ingest, env)
    assert [s for s, _, _ in receipts(first, homes)] == ["stored"]
    assert [s for s, _, _ in receipts(again, homes)] == ["stored", "stored"]
    [rec] = ingest.index.all()
    assert (rec.device, rec.doc_id, rec.pdf_sha256) == (DEVICE, "doc-a", env.pdf_sha256)
    assert json.loads(Path(rec.path).with_name("metadata.json").read_text())["pdf_sha256"] == (
        env.pdf_sha256
    )


def test_query_answers_with_the_segments_still_missing(homes: Homes) -> None:
    ingest, env = homes.ingest(), homes.envelope("doc-q", 22_000)
    assert len(env.segments) == 6
    ingest.handle(manifest_topic(DEVICE, "doc-q"), env.manifest())
    for i in (0, 2, 5):
        ingest.handle(segment_topic(DEVICE, "doc-q", i), env.segments[i])
    assert receipts(ask(ingest, env), homes) == [("missing", (1, 3, 4), None)]


def test_two_workers_racing_store_each_document_once(homes: Homes) -> None:
    envs = [homes.envelope(f"doc-r{i}", 9_000) for i in range(6)]
    workers = [homes.ingest(), homes.ingest()]
    errors: list[BaseException] = []

    def feed(ingest: Ingest) -> None:
        try:
            for env in envs:
                send(ingest, env)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=feed, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    stored = workers[0].index.all()
    assert sorted((r.doc_id, r.pdf_sha256) for r in stored) == sorted(
        (e.header.doc_id, e.pdf_sha256) for e in envs
    )


def flip_body(env: Env, n: int) -> Env:
    seg = bytearray(env.segments[n])
    seg[3] ^= 0x40  # the body, not the tag: only decryption notices
    return dataclasses.replace(
        env, segments=[*env.segments[:n], bytes(seg), *env.segments[n + 1 :]]
    )


def test_damaged_segment_body_is_dropped_on_arrival_asked_for_again_then_stored(
    homes: Homes,
) -> None:
    ingest, env = homes.ingest(), homes.envelope("doc-d", 12_000)
    out = send(ingest, flip_body(env, 1))
    assert receipts(out, homes) == []  # the copy failed its AEAD: never staged
    assert not (ingest.staging / DEVICE / "doc-d" / "s0000001").exists()
    assert receipts(ask(ingest, env), homes) == [("missing", (1,), None)]
    fixed = ingest.handle(segment_topic(DEVICE, "doc-d", 1), env.segments[1])
    assert [s for s, _, _ in receipts(fixed, homes)] == ["stored"]


def test_garbage_segments_never_displace_or_reject_a_genuine_document(homes: Homes) -> None:
    ingest, env = homes.ingest(), homes.envelope("doc-f", 12_000)
    bad = flip_body(env, 2)
    out = ingest.handle(manifest_topic(DEVICE, "doc-f"), env.manifest())
    out += ingest.handle(segment_topic(DEVICE, "doc-f", 0), env.segments[0])
    for _ in range(3 * MAX_BAD_BODIES):  # someone without the key, again and again
        out += ingest.handle(
            segment_topic(DEVICE, "doc-f", 0), bad.segments[2][: len(env.segments[0])]
        )
        out += ingest.handle(segment_topic(DEVICE, "doc-f", 2), bad.segments[2])
    assert receipts(out, homes) == []
    for i in range(1, env.header.segments):
        out += ingest.handle(segment_topic(DEVICE, "doc-f", i), env.segments[i])
    assert [s for s, _, _ in receipts(out, homes)] == ["stored"]
    assert [r.pdf_sha256 for r in ingest.index.all()] == [env.pdf_sha256]


def test_segments_before_their_manifest_wait_in_memory_not_on_disk(homes: Homes) -> None:
    ingest, env = homes.ingest(), homes.envelope("doc-early", 12_000)
    for i, seg in enumerate(env.segments):
        assert ingest.handle(segment_topic(DEVICE, "doc-early", i), seg) == []
    assert not (ingest.staging / DEVICE / "doc-early").exists()

    out = ingest.handle(manifest_topic(DEVICE, "doc-early"), env.manifest())

    assert [s for s, _, _ in receipts(out, homes)] == ["stored"]


def test_a_parked_segment_is_staged_by_the_tick_once_another_worker_wrote_the_manifest(
    homes: Homes,
) -> None:
    first, second = homes.ingest(), homes.ingest()
    env = homes.envelope("doc-two", 12_000)
    for i, seg in enumerate(env.segments[:-1]):
        first.handle(segment_topic(DEVICE, "doc-two", i), seg)
    second.handle(manifest_topic(DEVICE, "doc-two"), env.manifest())
    last = len(env.segments) - 1
    second.handle(segment_topic(DEVICE, "doc-two", last), env.segments[last])

    out = first.tick()

    assert [s for s, _, _ in receipts(out, homes)] == ["stored"]


def test_a_device_cannot_stage_more_than_its_share(homes: Homes) -> None:
    ingest = homes.ingest(StagingLimits(device_bytes=40_000))
    big, next_ = homes.envelope("doc-big", 30_000), homes.envelope("doc-next", 30_000)
    ingest.handle(manifest_topic(DEVICE, "doc-big"), big.manifest())

    held = ingest.handle(manifest_topic(DEVICE, "doc-next"), next_.manifest())

    assert held == [] and not (ingest.staging / DEVICE / "doc-next").exists()
    assert [s for s, _, _ in receipts(send(ingest, big), homes)][-1] == "stored"
    assert [s for s, _, _ in receipts(send(ingest, next_), homes)][-1] == "stored"


def test_abandoned_staging_expires_and_the_document_still_arrives_later(homes: Homes) -> None:
    now = [1_000_000.0]
    ingest = homes.ingest(StagingLimits(ttl_s=3600), clock=lambda: now[0])
    env = homes.envelope("doc-gone", 12_000)
    ingest.handle(manifest_topic(DEVICE, "doc-gone"), env.manifest())
    ingest.handle(segment_topic(DEVICE, "doc-gone", 0), env.segments[0])
    ingest.tick()  # the first sweep
    staged = ingest.staging / DEVICE / "doc-gone"
    for p in [staged, *staged.iterdir()]:
        os.utime(p, (now[0] - 7200, now[0] - 7200))  # untouched for two hours
    now[0] += 3 * 3600  # past the next sweep

    ingest.tick()

    assert not staged.exists()
    assert [s for s, _, _ in receipts(send(ingest, env), homes)][-1] == "stored"


def _other(homes: Homes) -> Env:
    return homes.envelope("doc-other", 12_000)


def _swap_header(homes: Homes, env: Env) -> Env:
    other = _other(homes)
    return dataclasses.replace(
        env, header=dataclasses.replace(other.header, doc_id=env.header.doc_id)
    )


def _fewer_segments(homes: Homes, env: Env) -> Env:
    return dataclasses.replace(env, header=dataclasses.replace(env.header, segments=2))


def _tag_flipped(homes: Homes, env: Env) -> Env:
    seg = bytearray(env.segments[0])
    seg[-1] ^= 1
    return dataclasses.replace(env, segments=[bytes(seg), *env.segments[1:]])


def _last_missing(homes: Homes, env: Env) -> Env:
    return dataclasses.replace(env, segments=env.segments[:-1])


def _segments_of_another(homes: Homes, env: Env) -> Env:
    return dataclasses.replace(env, segments=_other(homes).segments)


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        (_swap_header, [("rejected", (), "manifest prefix does not match its header")]),
        (
            _fewer_segments,
            [("rejected", (), "malformed envelope header: segment count does not match its tags")],
        ),
        # a damaged or foreign segment is dropped on arrival; the device is asked for it
        (_tag_flipped, [("missing", (0,), None)]),
        (_last_missing, [("missing", (2,), None)]),
        (_segments_of_another, [("missing", (0, 1, 2), None)]),
    ],
)
def test_tampered_envelope_is_never_stored(
    homes: Homes, tamper: Callable[[Homes, Env], Env], expected: list[object]
) -> None:
    ingest, env = homes.ingest(), homes.envelope("doc-t", 10_000)
    out = send(ingest, tamper(homes, env))
    out += (
        [] if any(parse_receipt(m.payload).status == "rejected" for m in out) else ask(ingest, env)
    )
    assert receipts(out, homes) == expected
    assert (ingest.index.all(), archived(homes)) == ([], [])


def test_unknown_device_is_rejected_with_the_reason(homes: Homes) -> None:
    stranger = device_home(homes.tmp, homes.warehouse, "dev-stranger", enroll=False)
    ingest, env = homes.ingest(), homes.envelope("doc-u", 5_000, device=stranger)
    out = send(ingest, env, device="dev-stranger")
    assert receipts(out, homes) == [
        ("rejected", (), "device dev-stranger is not enrolled at this warehouse")
    ]
    assert (ingest.index.all(), archived(homes)) == ([], [])


def test_device_publishing_under_another_devices_id_is_rejected(homes: Homes) -> None:
    other = device_home(homes.tmp, homes.warehouse, "dev-other")
    ingest, env = homes.ingest(), homes.envelope("doc-x", 5_000, device=other)
    out = send(ingest, env, device=DEVICE)  # other's envelope on DEVICE's topics
    assert receipts(out, homes) == [
        ("rejected", (), "manifest names another device or document than its topic")
    ]
    assert (ingest.index.all(), archived(homes)) == ([], [])


def test_signature_by_another_devices_key_is_rejected(homes: Homes) -> None:
    impostor = device_home(homes.tmp, homes.warehouse, "dev-imp", enroll=False)
    impostor = dataclasses.replace(impostor, device=DeviceConfig(id=DEVICE))
    ingest, env = homes.ingest(), homes.envelope("doc-s", 5_000, device=impostor)
    out = send(ingest, env)
    assert receipts(out, homes) == [("rejected", (), "device signature does not verify")]
    assert (ingest.index.all(), archived(homes)) == ([], [])


@pytest.mark.parametrize(
    ("topic", "payload", "answers"),
    [
        ("sohoa/v1/d/dev-wh-01/doc", b"x", []),
        ("sohoa/v1/d/dev-wh-01/doc/a/b/c", b"x", []),
        ("sohoa/v1/d/../doc/d1/m", b"{}", []),
        ("sohoa/v1/d/dev-wh-01/doc/d1/s/9999999", b"x" * 100, []),
        ("sohoa/v1/d/dev-wh-01/doc/d1/s/0", b"x" * ((1 << 22) + 17), []),
        ("sohoa/v1/d/dev-wh-01/doc/d1/q", b"\xff\xfe garbage", []),
        ("sohoa/v1/d/dev-wh-01/doc/d1/q", b'{"ciphertext_sha256": 5}', []),
        ("sohoa/v1/d/dev-wh-01/doc/d1/m", b"\x00garbage", ["rejected"]),
        (
            "sohoa/v1/d/dev-wh-01/doc/d1/m",
            b'{"format": 1, "header": [], "prefix": 2}',
            ["rejected"],
        ),
        (
            "sohoa/v1/d/dev-wh-01/doc/d1/m",
            b'{"format":"sohoa-manifest/1","header":{"a":[]},"prefix":""}',
            ["rejected"],
        ),
        ("sohoa/v1/d/dev-nobody/doc/d1/s/0", b"x" * 100, []),
    ],
)
def test_malformed_traffic_is_answered_or_ignored_never_stored(
    homes: Homes, topic: str, payload: bytes, answers: list[str]
) -> None:
    ingest = homes.ingest()
    out = ingest.handle(topic, payload)
    assert [s for s, _, _ in receipts(out, homes)] == answers
    assert all(r[2] for r in receipts(out, homes))  # a rejection always says why
    assert (ingest.index.all(), archived(homes)) == ([], [])
