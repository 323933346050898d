"""Benchmark: store-and-forward over a slow, lossy link, and warehouse ingest.

Run: .venv/bin/python -m tests.bench.bench_sync [--kbps 256 --one-way-ms 150 ...]

Every figure comes from real parts: a private mosquitto per measure, the real
uploader and warehouse worker, and a FaultProxy (userspace, token bucket each way,
``one-way-ms`` latency each way) between the device and the broker.

- goodput: envelope bytes stored per second ÷ link rate. Baseline: a plain TCP
  bulk transfer of the same number of bytes through an identical proxy.
- resend after cuts: the link is reset ``--cuts`` times mid-upload; bytes of
  segments sent beyond the envelopes' ciphertext, ÷ that ciphertext. Also as
  segments per disconnect (the uploader uploads one document at a time).
- restore → first segment acknowledged: the proxy refuses connections for a
  while, then comes back; seconds until the broker has the next segment, plus
  one one-way delay for its PUBACK. Baseline: a fresh MQTT connection and one
  segment publish through the same link, nothing else.
- ingest: documents per second of one warehouse worker on loopback, a publisher
  blasting sealed documents. Baseline: the same messages handed to the ingest
  code in-process, without a broker.
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from agent.config import Config
from agent.services.sync import device_link
from agent.wiring import reconnect_delays
from sync.envelope.header import manifest_bytes
from sync.envelope.reader import iter_segments, read_header, read_prefix
from sync.errors import BrokerError
from sync.keys import load_warehouse_private, load_warehouse_public
from sync.mqtt.link import Link, PendingPublish
from sync.mqtt.settings import LinkSettings
from sync.protocol import manifest_topic, segment_topic
from sync.spool.store import Spool
from sync.uploader import Uploader, UploadSettings
from sync.warehouse.index import SqliteIndex
from sync.warehouse.ingest import Ingest, IngestSettings
from tests.support.faultproxy import FaultProxy
from tests.support.mqtt import Broker, start_mosquitto
from tests.support.site import Site, make_site
from tests.support.sync import seal, spool_documents, stored_documents, via, warehouse_workers
from tests.support.wait import became_true, wait_until


@dataclass
class Totals:
    bytes_sent: int = 0
    segments_sent: int = 0
    connects: int = 0


def upload_all(cfg: Config, settings: UploadSettings, stop: threading.Event) -> Totals:
    """The device's outer loop (as in ``run_sync``), keeping the uploader's counters."""
    totals = Totals()
    key = load_warehouse_public(cfg.path(cfg.warehouse.public_key)).signing
    delays = reconnect_delays()
    with Spool(cfg.home / "spool") as spool:
        while not stop.is_set():
            link = device_link(cfg)
            up: Uploader | None = None
            try:
                link.connect()
                totals.connects += 1
                delays = reconnect_delays()
                up = Uploader(link, spool, settings, key)
                up.start()
                if up.drain(time.monotonic() + 3600) == (0, 0):
                    break
            except BrokerError:
                stop.wait(next(delays))
            finally:
                if up is not None:
                    totals.bytes_sent += up.stats.bytes_sent
                    totals.segments_sent += up.stats.segments_sent
                link.close()
    return totals


def new_site(root: Path, name: str) -> tuple[Broker, Site]:
    broker = start_mosquitto(root / name / "broker")
    return broker, make_site(root / name, broker, f"dev-{name}")


def ciphertext_bytes(site: Site) -> tuple[int, int]:
    """(envelope file bytes, ciphertext bytes) of everything in the device's spool."""
    with Spool(site.device.home / "spool") as spool:
        docs = spool.documents()
    return (
        sum(d.envelope.stat().st_size for d in docs),
        sum(read_header(d.envelope).ciphertext_size for d in docs),
    )


# -- goodput ---------------------------------------------------------------------


def raw_tcp_seconds(nbytes: int, kbps: int, one_way_ms: int) -> float:
    """Seconds to push ``nbytes`` through an identical proxy to a sink that counts them."""
    server = socket.create_server(("127.0.0.1", 0))
    got = threading.Event()

    def sink() -> None:
        conn, _ = server.accept()
        n = 0
        while n < nbytes:
            data = conn.recv(65536)
            if not data:
                break
            n += len(data)
        got.set()
        conn.close()

    threading.Thread(target=sink, daemon=True).start()
    proxy = FaultProxy(server.getsockname(), bandwidth_kbps=kbps, latency_ms=one_way_ms).start()
    try:
        with socket.create_connection(("127.0.0.1", proxy.port)) as c:
            t0 = time.monotonic()
            c.sendall(bytes(nbytes))
            got.wait(600)
            elapsed = time.monotonic() - t0
    finally:
        proxy.stop()
    server.close()
    return elapsed


def goodput(root: Path, a: argparse.Namespace) -> tuple[float, float]:
    broker, site = new_site(root, "goodput")
    try:
        spool_documents(site.device, a.docs, size=a.doc_kb * 1000, segment_size=a.segment_kb * 1024)
        env_bytes, _ = ciphertext_bytes(site)
        link_rate = a.kbps * 1000 / 8
        with (
            FaultProxy(
                (broker.host, broker.port), bandwidth_kbps=a.kbps, latency_ms=a.one_way_ms
            ) as proxy,
            warehouse_workers(site.warehouse, 1),
        ):
            cfg = via(site.device, proxy.port)
            t0 = time.monotonic()
            upload_all(cfg, settings(cfg.device.id, a), threading.Event())
            ours = env_bytes / (time.monotonic() - t0) / link_rate
        base = env_bytes / raw_tcp_seconds(env_bytes, a.kbps, a.one_way_ms) / link_rate
        return ours, base
    finally:
        broker.stop()


def settings(device: str, a: argparse.Namespace) -> UploadSettings:
    return UploadSettings(
        device, window=a.window, receipt_timeout_s=20.0, bandwidth_kbps=a.cap_kbps
    )


# -- resend after cuts -------------------------------------------------------------


def resend(root: Path, a: argparse.Namespace) -> tuple[float, float, int]:
    """(resent ÷ needed, resent segments per disconnect, disconnects)."""
    broker, site = new_site(root, "resend")
    try:
        spool_documents(
            site.device, a.cut_docs, size=a.doc_kb * 1000, segment_size=a.segment_kb * 1024
        )
        _, needed = ciphertext_bytes(site)
        with (
            FaultProxy(
                (broker.host, broker.port), bandwidth_kbps=a.kbps, latency_ms=a.one_way_ms
            ) as proxy,
            warehouse_workers(site.warehouse, 1),
        ):
            cfg = via(site.device, proxy.port)
            stop = threading.Event()
            out: list[Totals] = []
            t = threading.Thread(
                target=lambda: out.append(upload_all(cfg, settings(cfg.device.id, a), stop))
            )
            t.start()
            cuts = 0
            while cuts < a.cuts:
                t.join(a.cut_every_s)  # a cut every interval, until the upload ends
                if not t.is_alive():
                    break
                proxy.cut()
                cuts += 1
            t.join(600)
        resent = out[0].bytes_sent - needed
        per_cut = resent / (a.segment_kb * 1024) / max(cuts, 1)
        return resent / needed, per_cut, cuts
    finally:
        broker.stop()


# -- restore -------------------------------------------------------------------------


def restore(root: Path, a: argparse.Namespace) -> tuple[list[float], float]:
    broker, site = new_site(root, "restore")
    try:
        spool_documents(site.device, 1, size=4_000_000, segment_size=a.segment_kb * 1024)
        seen: list[float] = []
        watch = Link(LinkSettings(broker.host, broker.port, "bench-watch", clean_start=True))
        watch.connect()
        watch.subscribe("sohoa/v1/d/+/doc/+/s/+")

        def watcher(stop: threading.Event) -> None:
            while not stop.is_set():
                if watch.get(0.05) is not None:
                    seen.append(time.monotonic())

        results: list[float] = []
        stop = threading.Event()
        threading.Thread(target=watcher, args=(stop,), daemon=True).start()
        proxy = FaultProxy(
            (broker.host, broker.port), bandwidth_kbps=a.kbps, latency_ms=a.one_way_ms
        ).start()
        port = proxy.port
        with warehouse_workers(site.warehouse, 1):
            cfg = via(site.device, port)
            dev_stop = threading.Event()
            t = threading.Thread(
                target=upload_all, args=(cfg, settings(cfg.device.id, a), dev_stop), daemon=True
            )
            t.start()
            for _ in range(a.restores):
                time.sleep(3.0)  # the scenario: the link is up for 3 s of upload ...
                proxy.stop()  # the link goes away: connections reset, new ones refused
                time.sleep(a.down_s)  # ... and down for --down-s
                proxy = FaultProxy(
                    (broker.host, broker.port),
                    bandwidth_kbps=a.kbps,
                    latency_ms=a.one_way_ms,
                    listen_port=port,
                ).start()
                restored = time.monotonic()
                deadline = restored + 30
                became_true(lambda t=restored: any(s > t for s in seen), 30, poll_s=0.01)
                first = min((s for s in seen if s > restored), default=deadline)
                results.append(first - restored + a.one_way_ms / 1000)
            dev_stop.set()
            proxy.stop()
            t.join(30)
        stop.set()
        watch.close()
        base = bare_publish_seconds(broker, a)
        return results, base
    finally:
        broker.stop()


def bare_publish_seconds(broker: Broker, a: argparse.Namespace) -> float:
    with FaultProxy(
        (broker.host, broker.port), bandwidth_kbps=a.kbps, latency_ms=a.one_way_ms
    ) as proxy:
        t0 = time.monotonic()
        with Link(LinkSettings("127.0.0.1", proxy.port, "bench-bare", clean_start=True)) as link:
            link.publish("bench/one", bytes(a.segment_kb * 1024 + 16))
            return time.monotonic() - t0


# -- ingest ---------------------------------------------------------------------------


def ingest_rate(root: Path, a: argparse.Namespace) -> tuple[float, float]:
    broker, site = new_site(root, "ingest")
    try:
        msgs: list[tuple[str, bytes]] = []
        dev = site.device
        for i in range(a.ingest_docs):
            doc = f"in-{i:05d}"
            path = root / "ingest" / f"{doc}.env"
            seal(dev, doc, b"%PDF" + bytes(10_000), path)
            header = read_header(path)
            msgs.append(
                (manifest_topic(dev.device.id, doc), manifest_bytes(header, read_prefix(path)))
            )
            for n, seg in enumerate(iter_segments(path)):
                msgs.append((segment_topic(dev.device.id, doc, n), seg))
        base = in_process_rate(root, site, msgs, a.ingest_docs)
        blaster = Link(LinkSettings(broker.host, broker.port, "blaster", clean_start=True))
        with warehouse_workers(site.warehouse, 1), blaster as link:
            t0 = time.monotonic()
            pend: list[PendingPublish] = [link.publish_nowait(t, p) for t, p in msgs]
            for p in pend:
                p.wait(60)
            wait_until(
                lambda: len(stored_documents(site.warehouse)) >= a.ingest_docs,
                300,
                f"{a.ingest_docs} documents stored",
                poll_s=0.05,
            )
            ours = a.ingest_docs / (time.monotonic() - t0)
        return ours, base
    finally:
        broker.stop()


def in_process_rate(root: Path, site: Site, msgs: list[tuple[str, bytes]], docs: int) -> float:
    wh = replace(site.warehouse, home=root / "ingest-inproc")
    wh.home.mkdir(parents=True)
    src = site.warehouse
    ingest = Ingest(
        IngestSettings(wh.path(wh.warehouse.archive), src.path(src.warehouse.devices)),
        load_warehouse_private(src.path(src.warehouse.private_key)),
        SqliteIndex(wh.path(wh.warehouse.archive) / "index.db"),
    )
    t0 = time.monotonic()
    for topic, payload in msgs:
        ingest.handle(topic, payload)
    rate = docs / (time.monotonic() - t0)
    assert len(ingest.index.all()) == docs
    ingest.index.close()
    return rate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--kbps", type=int, default=256, help="link rate each way")
    p.add_argument("--one-way-ms", type=int, default=150, help="latency each way")
    p.add_argument("--segment-kb", type=int, default=16, help="envelope segment size, KiB")
    p.add_argument("--window", type=int, default=2, help="segments in flight")
    p.add_argument(
        "--cap-kbps",
        type=int,
        default=None,
        help="uploader's own rate cap (default 0.98 × --kbps: the modem queues nothing,\n"
        "so a cut loses at most the segment on the wire; 0 = no cap)",
    )
    p.add_argument("--doc-kb", type=int, default=200, help="size of each document")
    p.add_argument("--docs", type=int, default=3, help="documents for goodput")
    p.add_argument("--cut-docs", type=int, default=6, help="documents for the cut run")
    p.add_argument("--cuts", type=int, default=20)
    p.add_argument("--cut-every-s", type=float, default=1.5)
    p.add_argument("--restores", type=int, default=3)
    p.add_argument("--down-s", type=float, default=6.0)
    p.add_argument("--ingest-docs", type=int, default=300)
    p.add_argument("--only", default="goodput,resend,restore,ingest", help="measures to run")
    a = p.parse_args()
    only = set(a.only.split(","))
    if a.cap_kbps is None:
        a.cap_kbps = int(a.kbps * 0.98)
    rows: list[tuple[str, str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if "goodput" in only:
            ours, base = goodput(root, a)
            rows.append(
                (
                    "goodput ÷ link rate (target ≥ 0.85)",
                    f"{ours:.3f}",
                    f"{base:.3f}",
                    f"{ours / base:.2f}",
                )
            )
        if "resend" in only:
            ratio, per_cut, cuts = resend(root, a)
            rows.append((f"resent ÷ needed after {cuts} cuts", f"{ratio:.3f}", "0", "-"))
            rows.append(("resent segments per cut (target ≤ 1)", f"{per_cut:.2f}", "0", "-"))
        if "restore" in only:
            times, bare = restore(root, a)
            worst = max(times)
            rows.append(
                (
                    f"restore → 1st segment acked, s (max of {len(times)}; < 5)",
                    f"{worst:.2f}",
                    f"{bare:.2f}",
                    f"{worst / bare:.2f}",
                )
            )
            rows.append(("  each restore, s", " ".join(f"{t:.2f}" for t in times), "", ""))
        if "ingest" in only:
            ours, base = ingest_rate(root, a)
            rows.append(
                (
                    "ingest docs/s, 1 worker (10 kB docs)",
                    f"{ours:.0f}",
                    f"{base:.0f}",
                    f"{ours / base:.2f}",
                )
            )
    print(f"command: {' '.join([sys.executable, *sys.orig_argv[1:]])}")
    print(
        f"link: {a.kbps} kbit/s, {a.one_way_ms} ms each way; segments {a.segment_kb} KiB, "
        f"window {a.window}, uploader cap {a.cap_kbps or 'none'} kbit/s; "
        f"documents {a.doc_kb} kB; one run each"
    )
    width = max(len(r[0]) for r in rows)
    print(f"| {'measure':<{width}} | {'sohoa':>8} | {'baseline':>8} | {'ratio':>5} |")
    print(f"|{'-' * (width + 2)}|{'-' * 10}|{'-' * 10}|{'-' * 7}|")
    for name, ours_s, base_s, ratio_s in rows:
        print(f"| {name:<{width}} | {ours_s:>8} | {base_s:>8} | {ratio_s:>5} |")


if __name__ == "__main__":
    main()
