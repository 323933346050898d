"""The weak-link proxy itself: its bandwidth, latency, cuts and black holes are what tests assume."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from tests.support.faultproxy import FaultProxy
from tests.support.wait import wait_until

Handler = Callable[[socket.socket], None]


class Upstream:
    """A loopback TCP server running ``handler`` on each connection in its own thread."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.1)
        self.stopping = False
        self.threads: list[threading.Thread] = []
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", int(self.sock.getsockname()[1]))

    def _accept(self) -> None:
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            conn.settimeout(5)
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()
            self.threads.append(t)

    def _serve(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            self.handler(conn)

    def close(self) -> None:
        self.stopping = True
        self.acceptor.join(2)
        for t in self.threads:
            t.join(6)
        self.sock.close()


def echo(conn: socket.socket) -> None:
    while data := conn.recv(65536):
        conn.sendall(data)


def sink_timed(results: list[float]) -> Handler:
    """Read to EOF; record seconds from the first byte to the last, then the byte count."""

    def handler(conn: socket.socket) -> None:
        first = last = 0.0
        total = 0
        while data := conn.recv(65536):
            last = time.monotonic()
            first = first or last
            total += len(data)
        results.extend([last - first, float(total)])

    return handler


def source(size: int) -> Handler:
    def handler(conn: socket.socket) -> None:
        conn.sendall(b"x" * size)

    return handler


@pytest.fixture
def upstream_factory() -> Iterator[Callable[[Handler], Upstream]]:
    made: list[Upstream] = []

    def make(handler: Handler) -> Upstream:
        made.append(Upstream(handler))
        return made[-1]

    yield make
    for u in made:
        u.close()


def connect(proxy: FaultProxy) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


SIZE = 160_000  # 1.25 s at 1024 kbit/s


@pytest.mark.parametrize("kbps", [1024, 2048])
def test_upload_is_held_to_the_bandwidth_limit(
    upstream_factory: Callable[[Handler], Upstream], kbps: int
) -> None:
    results: list[float] = []
    up = upstream_factory(sink_timed(results))
    with FaultProxy(up.address, bandwidth_kbps=kbps) as proxy:
        started = time.monotonic()
        with connect(proxy) as s:
            s.sendall(b"u" * SIZE)
            s.shutdown(socket.SHUT_WR)
            s.recv(1)  # the proxy closes once the upstream has read everything
        elapsed = time.monotonic() - started
        up.close()
        assert proxy.bytes_up == SIZE
    expected = SIZE * 8 / (kbps * 1000)
    assert results[1] == SIZE
    assert 0.75 * expected <= elapsed <= 1.25 * expected


def test_download_is_held_to_the_bandwidth_limit(
    upstream_factory: Callable[[Handler], Upstream],
) -> None:
    up = upstream_factory(source(SIZE))
    with FaultProxy(up.address, bandwidth_kbps=1024) as proxy, connect(proxy) as s:
        started = time.monotonic()
        received = 0
        while data := s.recv(65536):
            received += len(data)
        elapsed = time.monotonic() - started
        assert (received, proxy.bytes_down, proxy.bytes_up) == (SIZE, SIZE, 0)
    expected = SIZE * 8 / 1_024_000
    assert 0.75 * expected <= elapsed <= 1.25 * expected


def test_unlimited_proxy_is_fast(upstream_factory: Callable[[Handler], Upstream]) -> None:
    up = upstream_factory(source(4 * SIZE))
    with FaultProxy(up.address) as proxy, connect(proxy) as s:
        started = time.monotonic()
        received = 0
        while data := s.recv(65536):
            received += len(data)
        assert received == 4 * SIZE
        assert time.monotonic() - started < 0.5


def round_trip(s: socket.socket) -> float:
    started = time.monotonic()
    s.sendall(b"ping")
    assert s.recv(16) == b"ping"
    return time.monotonic() - started


@pytest.mark.parametrize("latency_ms", [0, 80])
def test_latency_is_added_each_way(
    upstream_factory: Callable[[Handler], Upstream], latency_ms: int
) -> None:
    up = upstream_factory(echo)
    with FaultProxy(up.address, latency_ms=latency_ms) as proxy, connect(proxy) as s:
        rtts = sorted(round_trip(s) for _ in range(3))
    floor = 2 * latency_ms / 1000
    assert floor <= rtts[0] <= floor + 0.05


def test_latency_does_not_cap_throughput(
    upstream_factory: Callable[[Handler], Upstream],
) -> None:
    up = upstream_factory(source(4 * SIZE))
    with FaultProxy(up.address, latency_ms=200) as proxy, connect(proxy) as s:
        started = time.monotonic()
        received = 0
        while data := s.recv(65536):
            received += len(data)
        assert received == 4 * SIZE
        assert time.monotonic() - started < 0.6


def test_cut_resets_every_live_connection(
    upstream_factory: Callable[[Handler], Upstream],
) -> None:
    up = upstream_factory(echo)
    with FaultProxy(up.address) as proxy:
        a, b = connect(proxy), connect(proxy)
        round_trip(a), round_trip(b)
        assert proxy.connections == 2
        proxy.cut()
        for s in (a, b):
            with s, pytest.raises(ConnectionResetError):
                s.recv(16)
        assert (proxy.connections, proxy.cuts) == (0, 1)
        with connect(proxy) as c:  # the proxy itself keeps accepting
            round_trip(c)


def test_cut_every_interval_drops_connections_repeatedly(
    upstream_factory: Callable[[Handler], Upstream],
) -> None:
    up = upstream_factory(echo)
    with FaultProxy(up.address, cut_every_s=0.2) as proxy:
        for _ in range(2):
            with connect(proxy) as s:
                s.settimeout(2)
                started = time.monotonic()
                with pytest.raises(ConnectionResetError):
                    s.recv(16)
                assert time.monotonic() - started <= 0.4
        assert proxy.cuts >= 2


def test_blackhole_holds_traffic_until_cleared(
    upstream_factory: Callable[[Handler], Upstream],
) -> None:
    up = upstream_factory(echo)
    with FaultProxy(up.address) as proxy, connect(proxy) as s:
        round_trip(s)
        # the proxy counts a chunk just after sending it
        wait_until(lambda: (proxy.bytes_up, proxy.bytes_down) == (4, 4), 3, "4 bytes counted")
        before = (proxy.bytes_up, proxy.bytes_down)
        assert before == (4, 4)
        proxy.blackhole(True)
        s.sendall(b"lost?")
        s.settimeout(0.4)
        with pytest.raises(TimeoutError):
            s.recv(16)
        assert (proxy.bytes_up, proxy.bytes_down) == before
        proxy.blackhole(False)
        s.settimeout(2)
        assert s.recv(16) == b"lost?"


def test_stop_ends_the_proxy_thread(upstream_factory: Callable[[Handler], Upstream]) -> None:
    up = upstream_factory(echo)
    proxy = FaultProxy(up.address, bandwidth_kbps=64, latency_ms=50).start()
    s = connect(proxy)
    s.sendall(b"z" * 100_000)
    assert [t.name for t in threading.enumerate()].count("faultproxy") == 1
    proxy.stop()
    s.close()
    assert [t.name for t in threading.enumerate()].count("faultproxy") == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", proxy.port), timeout=1)


# -- shared-buffer mode: one modem buffer for every connection ---------------------------


def probe_rtt(s: socket.socket) -> float:
    t0 = time.monotonic()
    s.sendall(b"p" * 64)
    got = b""
    while len(got) < 64:
        got += s.recv(64 - len(got))
    return time.monotonic() - t0


def test_a_bulk_upload_fills_the_shared_buffer_and_delays_another_connection(
    upstream_factory: Callable[[Handler], Upstream],
) -> None:
    timings: list[float] = []
    sink = upstream_factory(sink_timed(timings))
    probe_up = upstream_factory(echo)
    # 512 kbit/s = 64 kB/s; a 32 kB buffer adds 0.5 s to whatever waits behind it
    with FaultProxy(sink.address, bandwidth_kbps=512, latency_ms=20, buffer_bytes=32_000) as proxy:
        probe = socket.create_connection(("127.0.0.1", proxy.add_route(probe_up.address)))
        probe.settimeout(10)
        idle = min(probe_rtt(probe) for _ in range(3))
        bulk = connect(proxy)
        bulk.sendall(b"x" * 200_000)  # lands in the kernel buffers; the proxy takes 32 kB
        wait_until(lambda: proxy.queued_bytes >= 30_000, 5, "the shared buffer fills")
        busy = probe_rtt(probe)
        bulk.close()
        probe.close()
    assert idle < 0.2
    assert 0.35 < busy - idle < 1.0, f"probe rtt idle {idle:.3f} s, behind the upload {busy:.3f} s"


def test_shared_buffer_mode_still_holds_the_rate(
    upstream_factory: Callable[[Handler], Upstream],
) -> None:
    timings: list[float] = []
    sink = upstream_factory(sink_timed(timings))
    with FaultProxy(sink.address, bandwidth_kbps=1024, buffer_bytes=64_000) as proxy:
        with connect(proxy) as s:
            s.sendall(b"x" * SIZE)
        wait_until(lambda: len(timings) == 2, 10, "the sink saw EOF")
    seconds, total = timings
    assert total == SIZE
    assert 1.0 < seconds < 1.6, f"{SIZE} bytes at 1024 kbit/s took {seconds:.2f} s"


def answers(proxy: FaultProxy) -> bool:
    try:
        with connect(proxy) as s:
            return round_trip(s) >= 0
    except OSError:
        return False


def test_after_a_cut_the_link_stays_down_for_down_s(
    upstream_factory: Callable[[Handler], Upstream],
) -> None:
    up = upstream_factory(echo)
    with FaultProxy(up.address, down_s=0.6) as proxy:
        with connect(proxy) as s:
            round_trip(s)
            proxy.cut()
        refused_until = time.monotonic() + 0.5
        while time.monotonic() < refused_until:
            assert not answers(proxy)
        wait_until(lambda: answers(proxy), 2, "the link is back")
