"""The link tunes itself: documents pipelined, the rate found and shared, stalls noticed.

Real mosquitto, real warehouse ingest, the device's real uploader or sync loop; the
device's link goes through a FaultProxy in shared-buffer mode (one modem buffer for
every connection, so what one connection queues delays the others). Every test
ends with each document stored exactly once, its PDF identical to what was sealed.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import TracebackType

import pytest

from agent.config import Config
from agent.services.sync import device_link
from agent.services.warehouse import ingest_from_config
from sync.keys import load_warehouse_public
from sync.mqtt.link import Link
from sync.mqtt.settings import LinkSettings, Message
from sync.protocol import parse_doc_topic, parse_receipt, split_piece
from sync.spool.store import Spool
from sync.uploader import Uploader, UploadSettings
from tests.support.faultproxy import FaultProxy
from tests.support.mqtt import Broker
from tests.support.site import Site
from tests.support.sync import (
    DeviceLoop,
    Sealed,
    assert_stored_exactly_once,
    pending_count,
    spool_documents,
    start_device,
    stored_documents,
    via,
    warehouse_workers,
)
from tests.support.wait import wait_until

DOC_FILTER = "sohoa/v1/d/+/doc/#"
SAMPLE_S = 0.25  # how often the proxy's byte counters are read while measuring a rate


def expected(site: Site, sealed: list[Sealed]) -> dict[tuple[str, str], str]:
    return {(site.device.device.id, s.doc_id): s.pdf_sha256 for s in sealed}


def broker_link(broker: Broker, client_id: str) -> Link:
    return Link(LinkSettings(broker.host, broker.port, client_id, clean_start=True))


def modem(site: Site, kbps: int, latency_ms: int, buffer_bytes: int) -> FaultProxy:
    """The device's link: a shared-buffer proxy in front of the site's broker."""
    return FaultProxy(
        (site.broker.host, site.broker.port),
        bandwidth_kbps=kbps,
        latency_ms=latency_ms,
        buffer_bytes=buffer_bytes,
    )


@contextmanager
def device_running(cfg: Config) -> Iterator[DeviceLoop]:
    """``sohoa sync`` in a thread; stopped at the end unless the test ended it."""
    loop = start_device(cfg)
    try:
        yield loop
    finally:
        if not loop.stop.is_set():
            loop.end()


@dataclass(frozen=True)
class Seen:
    at: float  # time.time(), to compare with log records
    topic: str
    size: int  # of the payload; of a piece, its bytes of the segment
    segment: int | None = None  # a piece's segment and offset (in its payload)
    offset: int | None = None


def seen(topic: str, payload: bytes) -> Seen:
    t = parse_doc_topic(topic)
    if t.kind == "p" and t.segment is None:
        n, offset, data = split_piece(payload)
        return Seen(time.time(), topic, len(data), n, offset)
    return Seen(time.time(), topic, len(payload), t.segment, t.offset)


class Watcher:
    """A client on the broker itself, recording every document message it carries."""

    def __init__(self, broker: Broker) -> None:
        self.link = broker_link(broker, "link-tuning-watcher")
        self.seen: list[Seen] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Watcher:
        self.link.connect()
        self.link.subscribe(DOC_FILTER)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(5)
        self.link.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self.link.get(0.05)
            if msg is not None:
                self.seen.append(seen(msg.topic, msg.payload))

    def data(self) -> list[Seen]:
        """Segment and piece messages, in the order the broker delivered them."""
        return [s for s in list(self.seen) if parse_doc_topic(s.topic).kind in ("s", "p")]


# -- pipelining, receipts out of order -------------------------------------------------------


@dataclass
class WithholdingWarehouse:
    """The real ingest on a plain subscription that holds back every answer until all
    ``count`` documents are archived, then sends their receipts once, last stored
    first, and never answers again: a device that asks for one again waits in vain."""

    site: Site
    count: int
    held: dict[str, Message] = field(default_factory=dict)  # stored receipts, in order
    released: list[str] = field(default_factory=list)
    withheld: int = 0  # answers never sent: to queries, and everything after the release
    ready: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        ingest, index = ingest_from_config(self.site.warehouse)
        try:
            with broker_link(self.site.broker, "withholding-warehouse") as link:
                link.subscribe(DOC_FILTER)
                self.ready.set()
                while not self.stop.is_set():
                    msg = link.get(0.05)
                    answers = ingest.tick()
                    if msg is not None:
                        answers += ingest.handle(msg.topic, msg.payload)
                    self._answer(link, answers)
        finally:
            index.close()

    def _answer(self, link: Link, answers: list[Message]) -> None:
        for a in answers:
            r = parse_receipt(a.payload)
            if r.status == "stored" and not self.released:
                self.held.setdefault(r.doc, a)
            else:
                self.withheld += 1
        if len(self.held) == self.count and not self.released:
            for doc in reversed(list(self.held)):
                link.publish(self.held[doc].topic, self.held[doc].payload)
                self.released.append(doc)


def test_several_documents_in_flight_and_receipts_matched_in_reverse_order(site: Site) -> None:
    sealed = spool_documents(site.device, 6, size=20_000)  # 5 segments each
    docs = [s.doc_id for s in sealed]
    warehouse = WithholdingWarehouse(site, len(sealed))
    t = threading.Thread(target=warehouse.run, daemon=True)
    t.start()
    spool = Spool(site.device.home / "spool")
    link = device_link(site.device)
    try:
        assert warehouse.ready.wait(10), "the test's warehouse did not subscribe"
        link.connect()
        up = Uploader(
            link,
            spool,
            UploadSettings(site.device.device.id, receipt_timeout_s=5.0),
            load_warehouse_public(site.device.path(site.device.warehouse.public_key)).signing,
        )
        up.start()
        # a device that waited for each receipt before sending the next document would
        # never get all six to the warehouse, and no receipt would ever come; one that
        # matched only the receipt of its oldest document would wait for the others
        left = up.drain(time.monotonic() + 20)
        states = spool.document_states()
    finally:
        link.close()
        spool.close()
        warehouse.stop.set()
        t.join(10)
    assert list(warehouse.held) == docs  # all six archived before any receipt went out
    assert warehouse.released == docs[::-1]  # then the receipts, last first
    assert (left, up.stats.stored) == ((0, 0), 6)
    assert states == dict.fromkeys(docs, "stored")
    assert_stored_exactly_once(site, expected(site, sealed))


# -- giving way to the office's traffic --------------------------------------------------------


class CountingSink:
    """A loopback TCP server that reads and counts what every connection sends it."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.received = 0
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", int(self.server.getsockname()[1]))

    def _accept(self) -> None:
        with contextlib.suppress(OSError):  # closed
            while True:
                conn, _ = self.server.accept()
                threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            while data := conn.recv(65536):
                self.received += len(data)

    def close(self) -> None:
        self.server.close()


class BulkUpload:
    """Someone in the office sending a large file: a plain TCP bulk upload through the
    proxy until ``end``, which resets the connection so that nothing it queued lingers."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        chunk = b"x" * 16384
        with contextlib.suppress(OSError):
            while not self._stop.is_set():
                self.sock.sendall(chunk)

    def end(self) -> None:
        self._stop.set()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()
        self._thread.join(5)


@dataclass(frozen=True)
class Shares:
    """Each one's part of the link rate over one window."""

    device: float
    other: float


def shares(
    proxy: FaultProxy, sink: CountingSink, link_rate: float, settle_s: float, window_s: float
) -> Shares:
    """Measured over ``window_s`` once ``settle_s`` has given the controller time to adapt;
    the device's bytes are what crossed the link less what the sink received."""
    time.sleep(settle_s)  # a duration, not a condition: the scenario's phase goes on
    t0, up0, other0 = time.monotonic(), proxy.bytes_up, sink.received
    while time.monotonic() < t0 + window_s:
        time.sleep(SAMPLE_S)
    seconds = time.monotonic() - t0
    other = sink.received - other0
    device = proxy.bytes_up - up0 - other
    return Shares(device / seconds / link_rate, other / seconds / link_rate)


def test_upload_gives_way_to_the_office_traffic_and_takes_the_link_back(site: Site) -> None:
    # Measured (1 Mbit/s, 20 ms each way, 128 kB buffer; five runs, one with both CPUs
    # busy): alone 1.00 of the link; with the bulk upload 0.07-0.09 for the device and
    # 0.91-0.93 for the upload; after it 0.95-0.98. A controller that does not back off
    # (target 100 s) keeps 0.96 and leaves the office 0.04.
    kbps = 1024
    sealed = spool_documents(site.device, 8, size=300_000, segment_size=65536)
    sink = CountingSink()
    try:
        with (
            modem(site, kbps, 20, 128_000) as proxy,
            warehouse_workers(site.warehouse, 2),
            device_running(via(site.device, proxy.port)) as loop,
        ):
            rate = kbps * 1000 / 8
            wait_until(lambda: proxy.bytes_up > 64_000, 10, "the upload under way")
            alone = shares(proxy, sink, rate, 2.0, 4.0)
            bulk = BulkUpload(proxy.add_route(sink.address))
            try:
                shared = shares(proxy, sink, rate, 3.0, 5.0)
            finally:
                bulk.end()
            after = shares(proxy, sink, rate, 3.0, 4.0)
            still_uploading = pending_count(site.device)
            wait_until(lambda: pending_count(site.device) == 0, 30, "the spool to drain")
            outcome = loop.end()
    finally:
        sink.close()
    print(f"link shares: alone {alone}, with a bulk upload {shared}, after it {after}")
    assert alone.device >= 0.8
    assert shared.device <= 0.25 and shared.other >= 0.65
    assert still_uploading > 0  # the last window measured an upload, not an idle device
    assert after.device >= 0.8
    assert outcome.rejected == 0
    assert_stored_exactly_once(site, expected(site, sealed))


# -- a black hole ------------------------------------------------------------------------------


def test_black_hole_is_noticed_within_ten_seconds_and_the_upload_resumes_after_it(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    # Measured (512 kbit/s, 25 ms each way, 64 kB buffer): the stall logged 3.9-4.0 s
    # into the hole; the link up again 0.1 s and the first segment bytes at the broker
    # 0.26 s after it ends (the device's new CONNECT waited in the modem meanwhile).
    caplog.set_level(logging.WARNING, logger="sohoa.sync")
    caplog.set_level(logging.INFO, logger="sync.mqtt.link")
    sealed = spool_documents(site.device, 8, size=60_000, segment_size=65536)

    def logged(text: str, after: float) -> list[float]:
        return [r.created for r in caplog.records if text in r.getMessage() and r.created > after]

    with (
        modem(site, 512, 25, 64_000) as proxy,
        warehouse_workers(site.warehouse, 1),
        Watcher(site.broker) as watch,
        device_running(via(site.device, proxy.port)) as loop,
    ):
        device_up = f"mqtt link up broker=127.0.0.1:{proxy.port}"
        wait_until(lambda: len(stored_documents(site.warehouse)) >= 2, 20, "2 documents stored")
        hole = time.time()
        proxy.blackhole(True)
        wait_until(lambda: logged("link stalled", hole), 10, "the device to see the stall")
        stalled = logged("link stalled", hole)[0] - hole
        time.sleep(max(0.0, hole + 12 - time.time()))  # the hole lasts 12 s, whatever happens
        proxy.blackhole(False)
        back = time.time()
        wait_until(lambda: logged(device_up, back), 10, "the device's link up again")
        up_again = logged(device_up, back)[0]
        # bytes the old connection left in the modem reach the broker first: count only
        # what came after the new connection was up
        wait_until(lambda: [s for s in watch.data() if s.at > up_again], 10, "segment bytes")
        resumed = min(s.at for s in watch.data() if s.at > up_again) - back
        wait_until(lambda: pending_count(site.device) == 0, 30, "the spool to drain")
        outcome = loop.end()
    print(
        f"stall logged {stalled:.1f} s into the hole; after it: link up {up_again - back:.2f} s,"
        f" segment bytes at the broker {resumed:.2f} s"
    )
    assert stalled <= 10
    assert resumed <= 3.0
    assert outcome.rejected == 0
    assert_stored_exactly_once(site, expected(site, sealed))


# -- an explicit cap ---------------------------------------------------------------------------


def test_device_with_a_bandwidth_cap_never_exceeds_it(site: Site) -> None:
    # Measured (256 kbit/s cap = 32 000 B/s on a 4 Mbit/s link): the worst 2 s window
    # 33 600-34 800 B/s (the limit here is 35 648), the whole run 32 400-32 900 B/s: the
    # cap paces envelope bytes, and MQTT framing (about 1.4 %), manifests, queries and
    # the health report come on top. Paced at 1.5 × the cap, the worst window is 50 500.
    cap_kbps = 256
    cap = cap_kbps * 1000 / 8
    one_message = 4096
    sealed = spool_documents(site.device, 3, size=110_000, segment_size=65536)
    samples: list[tuple[float, int]] = []
    with (
        modem(site, 4096, 20, 512_000) as proxy,
        warehouse_workers(site.warehouse, 1),
        device_running(via(site.device, proxy.port, bandwidth_kbps=cap_kbps)) as loop,
    ):
        wait_until(lambda: proxy.bytes_up > 0, 10, "the device connected")
        start = time.monotonic()
        while time.monotonic() < start + 8:
            samples.append((time.monotonic(), proxy.bytes_up))
            time.sleep(SAMPLE_S)
        samples.append((time.monotonic(), proxy.bytes_up))
        wait_until(lambda: pending_count(site.device) == 0, 30, "the spool to drain")
        outcome = loop.end()
    per_window = round(2.0 / SAMPLE_S)
    windows = [
        (b1 - b0) / (t1 - t0)
        for (t0, b0), (t1, b1) in zip(samples, samples[per_window:], strict=False)
    ]
    (t_first, b_first), (t_last, b_last) = samples[0], samples[-1]
    average = (b_last - b_first) / (t_last - t_first)
    print(f"cap {cap:.0f} B/s: worst 2 s window {max(windows):.0f} B/s, run {average:.0f} B/s")
    assert max(windows) <= cap * 1.05 + one_message / 2.0
    assert average >= 0.7 * cap
    assert outcome.rejected == 0
    assert_stored_exactly_once(site, expected(site, sealed))


# -- pieces on a slow link, and a cut inside a segment ------------------------------------------


def pieces_of_segment_0(seen: list[Seen]) -> list[tuple[int, int]]:
    """(offset, length) of every piece of segment 0, in the order they came."""
    out: list[tuple[int, int]] = []
    for s in seen:
        if parse_doc_topic(s.topic).kind == "p" and s.segment == 0 and s.offset is not None:
            out.append((s.offset, s.size))
    return out


def test_slow_link_sends_a_segment_in_pieces_and_a_cut_resumes_inside_it(site: Site) -> None:
    # Measured (64 kbit/s, 150 ms each way): pieces of 3 856 B (17 to a 64 KiB segment);
    # cut after 3 of them, the device resumed at byte 11 568 of segment 0.
    [doc] = spool_documents(site.device, 1, size=90_000, segment_size=65536)
    with (
        modem(site, 64, 150, 64_000) as proxy,
        warehouse_workers(site.warehouse, 1),
        Watcher(site.broker) as watch,
        device_running(via(site.device, proxy.port)) as loop,
    ):
        wait_until(
            lambda: sum(offset > 0 for offset, _ in pieces_of_segment_0(watch.data())) >= 2,
            20,
            "pieces of segment 0 past its start",
        )
        proxy.cut()
        cut_at = time.time()
        wait_until(lambda: pending_count(site.device) == 0, 40, "the document stored")
        outcome = loop.end()
        seen = list(watch.seen)
    # back on the link, the device asks what the warehouse holds before it sends again:
    # what came before that question is what the old connection delivered
    asked = next(s.at for s in seen if s.at > cut_at and parse_doc_topic(s.topic).kind == "q")
    held = 0
    for offset, length in sorted(pieces_of_segment_0([s for s in seen if s.at < asked])):
        if offset <= held:
            held = max(held, offset + length)
    resumed = pieces_of_segment_0([s for s in seen if s.at > asked])
    print(f"segment 0: {held} B delivered before the cut, resumed with {resumed[:1]}")
    assert held > 0
    assert [offset for offset, _ in resumed][:1] == [held]  # from where the warehouse stood
    # on this link every message is a piece of a few KiB: no segment went whole
    assert [s.topic for s in seen if parse_doc_topic(s.topic).kind == "s"] == []
    assert outcome.rejected == 0
    assert_stored_exactly_once(site, {(site.device.device.id, doc.doc_id): doc.pdf_sha256})
