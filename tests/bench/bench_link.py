"""Benchmark: the self-tuning upload on a commune's shared link (issue: the link tunes itself).

Run: .venv/bin/python -m tests.bench.bench_link [--links 64,256,4096,halve] [--quick]

Real parts: a private mosquitto per link, real warehouse workers, the device's
uploader with the default configuration (no ``bandwidth_kbps``, 64 KiB
segments), and a FaultProxy in shared-buffer mode standing for the modem: one
FIFO per direction shared by every connection, so whatever the upload queues
delays the office's traffic, here an echo probe (64 bytes every 200 ms).

For each link (rate, round trip, modem buffer):
- goodput: ciphertext of the documents stored ÷ (seconds from the first connect
  to the last receipt × link rate); for the halving link the rate is the time
  average. Baselines in the same run: a plain TCP bulk transfer of the same
  bytes through the same proxy, and the fixed-window uploader sohoa had before
  (tests/bench/fixed_window_uploader.py, window 64).
- probe p95 rise: the probe's 95th percentile round trip during the upload less
  its median on the idle link; the same for both baselines.
- extra bytes with cuts: every 8 s the link is reset and stays down 2 s;
  segment bytes sent beyond the ciphertext ÷ the ciphertext (and all bytes the
  device put on the link beyond it, MQTT framing and queries included).
- black hole: the link silently stops carrying bytes for 15 s: seconds until
  the device gives up the connection, and seconds from the link's return to the
  first segment bytes at the broker.
"""

from __future__ import annotations

import argparse
import logging
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from agent.config import Config, SyncConfig
from agent.services.sync import device_link
from agent.wiring import reconnect_delays
from sync.envelope.reader import read_header
from sync.errors import BrokerError
from sync.keys import load_warehouse_public
from sync.mqtt.ledbat import Ledbat
from sync.mqtt.link import Link
from sync.mqtt.settings import LinkSettings
from sync.spool.store import Spool
from sync.uploader import LinkStalled, Uploader, UploadSettings
from tests.bench import fixed_window_uploader as fixed
from tests.support.faultproxy import FaultProxy
from tests.support.mqtt import Broker, start_mosquitto
from tests.support.site import Site, make_site
from tests.support.sync import spool_documents, via, warehouse_workers


@dataclass(frozen=True)
class LinkSpec:
    name: str
    kbps: int
    rtt_ms: int
    buffer: int
    docs: int
    doc_kb: int
    halve_at_s: float = 0.0  # the rate halves this long after the start (0 = never)

    @property
    def rate(self) -> float:
        return self.kbps * 1000 / 8


LINKS = {
    "64": LinkSpec("64 kbit/s, 600 ms RTT, 64 KB buffer", 64, 600, 64_000, 4, 60),
    "256": LinkSpec("256 kbit/s, 300 ms RTT, 256 KB buffer", 256, 300, 256_000, 6, 130),
    "4096": LinkSpec("4 Mbit/s, 60 ms RTT, 512 KB buffer", 4096, 60, 512_000, 8, 1500),
    "halve": LinkSpec(
        "1 Mbit/s halving to 512 kbit/s at 12 s, 100 ms RTT, 256 KB buffer",
        1024,
        100,
        256_000,
        10,
        320,
        halve_at_s=12.0,
    ),
}


# -- the office's traffic: an echo probe through the same modem ------------------------


class Echo:
    """A loopback echo server (the far end of the office's traffic)."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", int(self.server.getsockname()[1]))

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            try:
                while data := conn.recv(4096):
                    conn.sendall(data)
            except OSError:
                return


class Probe:
    """64 bytes every 200 ms through the proxy; the round trips while ``running``."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(60)
        self.rtts: list[tuple[float, float]] = []  # (sent at, round trip)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            t0 = time.monotonic()
            try:
                self.sock.sendall(b"p" * 64)
                got = 0
                while got < 64:
                    got += len(self.sock.recv(64 - got))
            except OSError:
                return
            self.rtts.append((t0, time.monotonic() - t0))
            self.stop.wait(max(0.0, 0.2 - (time.monotonic() - t0)))

    def between(self, start: float, end: float) -> list[float]:
        return [r for t, r in self.rtts if start <= t <= end]

    def close(self) -> None:
        self.stop.set()
        self.sock.close()
        self.thread.join(5)


def p95(values: list[float]) -> float:
    """The 95th percentile; a link so loaded that few probes came back gives its worst."""
    if len(values) < 2:
        return max(values, default=float("nan"))
    return statistics.quantiles(values, n=20)[-1]


# -- the device ------------------------------------------------------------------------------


@dataclass
class DeviceRun:
    bytes_sent: int = 0
    connects: int = 0
    stalls: list[float] = field(default_factory=list)  # when a connection was given up
    finished: float = 0.0


def default_cfg(cfg: Config, port: int) -> Config:
    """The device's configuration as shipped (no cap, default timeouts), via ``port``."""
    return via(replace(cfg, sync=SyncConfig()), port)


def run_device(cfg: Config, stop: threading.Event, out: DeviceRun, *, fixed_window: bool) -> None:
    """The device's outer loop as in ``run_sync``, keeping the uploader's counters."""
    key = load_warehouse_public(cfg.path(cfg.warehouse.public_key)).signing
    control = Ledbat(time.monotonic)
    delays = reconnect_delays()
    with Spool(cfg.home / "spool") as spool:
        while not stop.is_set():
            link = device_link(cfg)
            up: Uploader | fixed.Uploader | None = None
            try:
                link.connect()
                out.connects += 1
                delays = reconnect_delays()
                if fixed_window:
                    up = fixed.Uploader(link, spool, fixed.UploadSettings(cfg.device.id), key)
                else:
                    up = Uploader(link, spool, UploadSettings(cfg.device.id), key, control=control)
                up.start()
                if up.drain(time.monotonic() + 3600) == (0, 0):
                    out.finished = time.monotonic()
                    break
            except LinkStalled:
                out.stalls.append(time.monotonic())
                link.drop()
            except BrokerError:
                out.stalls.append(time.monotonic())
                stop.wait(next(delays))
            finally:
                if up is not None:
                    out.bytes_sent += up.stats.bytes_sent
                link.close()


def ciphertext(cfg: Config) -> int:
    with Spool(cfg.home / "spool") as spool:
        return sum(read_header(d.envelope).ciphertext_size for d in spool.documents())


# -- one scenario ------------------------------------------------------------------------------


@dataclass
class Scenario:
    root: Path
    spec: LinkSpec
    tag: str
    broker: Broker = field(init=False)
    site: Site = field(init=False)

    def __post_init__(self) -> None:
        self.broker = start_mosquitto(self.root / self.tag / "broker")
        self.site = make_site(self.root / self.tag, self.broker, f"dev-{self.tag}")

    def proxy(self, **kw: float) -> FaultProxy:
        s = self.spec
        return FaultProxy(
            (self.broker.host, self.broker.port),
            bandwidth_kbps=s.kbps,
            latency_ms=s.rtt_ms // 2,
            buffer_bytes=s.buffer,
            **kw,  # type: ignore[arg-type]
        ).start()

    def close(self) -> None:
        self.broker.stop()


def halving(proxy: FaultProxy, spec: LinkSpec, start: float, stop: threading.Event) -> None:
    if spec.halve_at_s and not stop.wait(max(0.0, start + spec.halve_at_s - time.monotonic())):
        proxy.set_bandwidth(spec.kbps // 2)


def capacity(spec: LinkSpec, seconds: float) -> float:
    """Bytes the link could carry in ``seconds`` from the start."""
    if not spec.halve_at_s or seconds <= spec.halve_at_s:
        return spec.rate * seconds
    return spec.rate * spec.halve_at_s + spec.rate / 2 * (seconds - spec.halve_at_s)


@dataclass(frozen=True)
class Measured:
    goodput: float
    rise: float


def upload_measure(root: Path, spec: LinkSpec, *, fixed_window: bool) -> Measured:
    sc = Scenario(root, spec, "fixed" if fixed_window else "ours")
    try:
        spool_documents(sc.site.device, spec.docs, size=spec.doc_kb * 1000, segment_size=65536)
        need = ciphertext(sc.site.device)
        echo = Echo()
        proxy = sc.proxy()
        probe = Probe(proxy.add_route(echo.address))
        try:
            time.sleep(3.0)  # the idle link's round trips, for the baseline of the rise
            idle = statistics.median(probe.between(0, time.monotonic()))
            cfg = default_cfg(sc.site.device, proxy.port)
            with warehouse_workers(sc.site.warehouse, 1):
                stop, out = threading.Event(), DeviceRun()
                start = time.monotonic()
                threading.Thread(
                    target=halving, args=(proxy, spec, start, stop), daemon=True
                ).start()
                run_device(cfg, stop, out, fixed_window=fixed_window)
                stop.set()
            seconds = out.finished - start
            rise = p95(probe.between(start + 1.0, out.finished)) - idle
            return Measured(need / capacity(spec, seconds), rise)
        finally:
            probe.close()
            proxy.stop()
    finally:
        sc.close()


def tcp_measure(root: Path, spec: LinkSpec, nbytes: int) -> Measured:
    """A plain TCP bulk transfer of ``nbytes`` through the same modem, with the probe."""
    sink = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def drain() -> None:
        conn, _ = sink.accept()
        n = 0
        while n < nbytes and (data := conn.recv(65536)):
            n += len(data)
        done.set()
        conn.close()

    threading.Thread(target=drain, daemon=True).start()
    echo = Echo()
    proxy = FaultProxy(
        sink.getsockname(),
        bandwidth_kbps=spec.kbps,
        latency_ms=spec.rtt_ms // 2,
        buffer_bytes=spec.buffer,
    ).start()
    probe = Probe(proxy.add_route(echo.address))
    try:
        time.sleep(3.0)
        idle = statistics.median(probe.between(0, time.monotonic()))
        stop = threading.Event()
        with socket.create_connection(("127.0.0.1", proxy.port)) as c:
            start = time.monotonic()
            threading.Thread(target=halving, args=(proxy, spec, start, stop), daemon=True).start()
            c.sendall(bytes(nbytes))
            done.wait(900)
            end = time.monotonic()
        stop.set()
        rise = p95(probe.between(start + 1.0, end)) - idle
        return Measured(nbytes / capacity(spec, end - start), rise)
    finally:
        probe.close()
        proxy.stop()
        sink.close()


def cuts_measure(root: Path, spec: LinkSpec, seconds: float) -> tuple[float, float, int]:
    """(segment bytes resent ÷ ciphertext, link bytes beyond it ÷ ciphertext, cuts)."""
    sc = Scenario(root, spec, "cuts")
    try:
        # about what the link carries in ``seconds`` of its up time
        per_doc = spec.doc_kb * 1000
        count = max(2, int(spec.rate * seconds * 0.75 * 0.8 / per_doc))
        spool_documents(sc.site.device, count, size=per_doc, segment_size=65536)
        need = ciphertext(sc.site.device)
        proxy = sc.proxy(cut_every_s=8.0, down_s=2.0)
        try:
            cfg = default_cfg(sc.site.device, proxy.port)
            with warehouse_workers(sc.site.warehouse, 1):
                stop, out = threading.Event(), DeviceRun()
                run_device(cfg, stop, out, fixed_window=False)
            return (out.bytes_sent - need) / need, (proxy.bytes_up - need) / need, proxy.cuts
        finally:
            proxy.stop()
    finally:
        sc.close()


def blackhole_measure(root: Path, spec: LinkSpec) -> tuple[float, float]:
    """(seconds to notice a black hole, seconds from its end to segment bytes at the broker)."""
    sc = Scenario(root, spec, "hole")
    try:
        spool_documents(sc.site.device, 4, size=int(spec.rate * 12), segment_size=65536)
        seen: list[float] = []
        watch = Link(LinkSettings(sc.broker.host, sc.broker.port, "bench-watch", clean_start=True))
        watch.connect()
        watch.subscribe("sohoa/v1/d/+/doc/+/#")
        stop_watch = threading.Event()

        def watcher() -> None:
            while not stop_watch.is_set():
                msg = watch.get(0.05)
                if msg is not None and ("/s/" in msg.topic or "/p" in msg.topic):
                    seen.append(time.monotonic())

        threading.Thread(target=watcher, daemon=True).start()
        proxy = sc.proxy()
        try:
            cfg = default_cfg(sc.site.device, proxy.port)
            with warehouse_workers(sc.site.warehouse, 1):
                stop, out = threading.Event(), DeviceRun()
                t = threading.Thread(
                    target=run_device, args=(cfg, stop, out), kwargs={"fixed_window": False}
                )
                t.start()
                time.sleep(8.0)  # uploading at full rate
                hole = time.monotonic()
                proxy.blackhole(True)
                time.sleep(15.0)
                proxy.blackhole(False)
                back = time.monotonic()
                first = wait_for(lambda: next((s for s in seen if s > back), None), 60)
                stop.set()
                t.join(60)
            noticed = min((s for s in out.stalls if s > hole), default=float("nan")) - hole
            resumed = (first or float("nan")) - back + spec.rtt_ms / 2000
            return noticed, resumed
        finally:
            proxy.stop()
            stop_watch.set()
            watch.close()
    finally:
        sc.close()


def wait_for(check: Callable[[], float | None], timeout_s: float) -> float | None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        got = check()
        if got is not None:
            return got
        time.sleep(0.02)
    return None


# -- the table --------------------------------------------------------------------------------


def measure_link(root: Path, spec: LinkSpec, a: argparse.Namespace) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    if "upload" in a.measures:
        rows += upload_rows(root, spec)
    if spec.halve_at_s:
        return rows
    if "cuts" in a.measures:
        resent, on_link, cuts = cuts_measure(root / "c", spec, a.cut_seconds)
        rows.append(
            (f"extra bytes, cut every 8 s ({cuts} cuts; ≤ 0.10)", f"{resent:.3f}", "-", "-")
        )
        rows.append(("  all bytes on the link beyond the ciphertext", f"{on_link:.3f}", "-", "-"))
    if "hole" in a.measures:
        noticed, resumed = blackhole_measure(root / "b", spec)
        rows.append(("black hole noticed, s (≤ 10)", f"{noticed:.1f}", "-", "≥ 30 (keepalive)"))
        rows.append(("link back → first segment bytes, s (≤ 3)", f"{resumed:.2f}", "-", "-"))
    return rows


def upload_rows(root: Path, spec: LinkSpec) -> list[tuple[str, ...]]:
    ours = upload_measure(root / "u", spec, fixed_window=False)
    old = upload_measure(root / "f", spec, fixed_window=True)
    nbytes = spec.docs * spec.doc_kb * 1000
    tcp = tcp_measure(root / "t", spec, nbytes)
    return [
        (
            "goodput ÷ link rate (≥ 0.9)",
            f"{ours.goodput:.2f}",
            f"{tcp.goodput:.2f}",
            f"{old.goodput:.2f}",
        ),
        (
            "probe p95 rise, s (≤ 0.3; 1.5 at 64k)",
            f"{ours.rise:.2f}",
            f"{tcp.rise:.2f}",
            f"{old.rise:.2f}",
        ),
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--links", default="64,256,4096,halve", help="which links: 64,256,4096,halve")
    p.add_argument("--cut-seconds", type=float, default=40.0, help="length of the cut run")
    p.add_argument("--measures", default="upload,cuts,hole", help="which: upload,cuts,hole")
    a = p.parse_args()
    logging.basicConfig(level=logging.ERROR)
    print(f"command: {' '.join([sys.executable, *sys.orig_argv[1:]])}")
    with tempfile.TemporaryDirectory() as tmp:
        for key in a.links.split(","):
            spec = LINKS[key]
            rows = measure_link(Path(tmp) / key, spec, a)
            print(f"\n{spec.name}; {spec.docs} documents of {spec.doc_kb} kB, 64 KiB segments")
            width = max(len(r[0]) for r in rows)
            print(
                f"| {'measure':<{width}} | {'sohoa':>7} | {'TCP bulk':>8} | {'fixed window':>16} |"
            )
            print(f"|{'-' * (width + 2)}|{'-' * 9}|{'-' * 10}|{'-' * 18}|")
            for name, ours, tcp, old in rows:
                print(f"| {name:<{width}} | {ours:>7} | {tcp:>8} | {old:>16} |")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
