"""A weak link for tests and benchmarks: a userspace TCP proxy that injects faults.

``FaultProxy`` listens on 127.0.0.1 and forwards each accepted connection to one
upstream address. One selector thread shuttles the bytes; each direction has a token
bucket (``bandwidth_kbps``, kilobits per second, 0 = unlimited) shared by all
connections, like one modem link; every chunk is held back ``latency_ms`` after it was
read (timestamps, so latency does not cap throughput); ``cut``/``cut_every_s`` reset
every live connection (and, with ``down_s``, refuses new ones for that long);
``blackhole(True)`` keeps accepting and reading but forwards nothing until cleared,
like a link that silently stops (no reset: the bytes are held, as TCP would keep
retransmitting them). This kernel has no netem.

Shared-buffer mode (``buffer_bytes`` > 0) models a modem: each direction has one
FIFO of that many bytes shared by every connection, drained at the link rate and
then delayed by ``latency_ms``; a connection is read only while the FIFO has room
(TCP's back-pressure stands for a full modem's drops), a packet's worth at a time
so that connections share the room. Whatever one connection queues delays every
other's bytes, like an upload delays the office's browsing. ``add_route`` serves
another upstream (an echo probe, a competing download) through the same link.
Everything is bounded: connections, buffered bytes per direction, and every thread
ends on ``stop()``.
"""

from __future__ import annotations

import contextlib
import math
import queue
import selectors
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from types import TracebackType

MAX_BUFFERED = 1 << 20  # bytes held per direction of one connection before reading pauses
MIN_SEND = 1024  # the bucket waits for this much credit rather than sending dribbles
RECV_SIZE = 65536
MAX_TICK_S = 0.2
PACKET = 1448  # bytes read from one connection at a time in shared-buffer mode


class _Bucket:
    """Token bucket in bytes; rate 0 means unlimited."""

    def __init__(self, kbps: int) -> None:
        self.stamp = time.monotonic()
        self.tokens = 0.0  # no initial burst, so short transfers measure the rate
        self.set_rate(kbps)

    def set_rate(self, kbps: int) -> None:
        self.rate = kbps * 1000 / 8
        self.burst = max(self.rate * 0.05, 2.0 * MIN_SEND)
        self.tokens = min(self.tokens, self.burst)

    def allowance(self, now: float, want: int) -> int:
        if self.rate <= 0:
            return want
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < min(want, MIN_SEND):
            return 0
        return min(want, int(self.tokens))

    def spend(self, n: int) -> None:
        if self.rate > 0:
            self.tokens -= n

    def ready_at(self, now: float, want: int) -> float:
        return now + max(0.0, min(want, MIN_SEND) - self.tokens) / self.rate


@dataclass(eq=False)
class _Lane:
    src: socket.socket
    dst: socket.socket
    up: bool
    chunks: deque[tuple[float, memoryview]] = field(default_factory=deque)
    queued: int = 0
    eof: bool = False
    shut: bool = False
    blocked: bool = False
    dead: bool = False  # its connection was closed: FIFO entries of it are dropped


@dataclass(eq=False)
class _Pipe:
    client: socket.socket
    upstream: socket.socket
    lanes: tuple[_Lane, _Lane]


class FaultProxy:
    """127.0.0.1:port → upstream, with bandwidth limit, latency, cuts and black holes."""

    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        bandwidth_kbps: int = 0,
        latency_ms: int = 0,
        cut_every_s: float = 0.0,
        listen_port: int = 0,
        max_connections: int = 64,
        buffer_bytes: int = 0,
        down_s: float = 0.0,
    ) -> None:
        self.upstream = upstream
        self.latency_ms = latency_ms
        self.cut_every_s = cut_every_s
        self.buffer_bytes = buffer_bytes
        self.down_s = down_s
        self.max_connections = max_connections
        self.bytes_up = 0
        self.bytes_down = 0
        self.cuts = 0
        self.accepted = 0
        self._listen_port = listen_port
        self._kbps = bandwidth_kbps
        self._buckets = {True: _Bucket(bandwidth_kbps), False: _Bucket(bandwidth_kbps)}
        self._black = False
        self._stopping = False
        self._cut_requests: queue.SimpleQueue[threading.Event] = queue.SimpleQueue()
        self._pipes: list[_Pipe] = []
        self._masks: dict[socket.socket, int] = {}
        self._listener: socket.socket | None = None
        self._routes: dict[socket.socket, tuple[str, int]] = {}
        self._new_routes: queue.SimpleQueue[socket.socket] = queue.SimpleQueue()
        self._fifo: dict[bool, deque[tuple[_Lane, memoryview]]] = {True: deque(), False: deque()}
        self._fifo_bytes = {True: 0, False: 0}
        self._refuse_until = 0.0
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread: threading.Thread | None = None

    # --- control, from any thread ------------------------------------------------

    def start(self) -> FaultProxy:
        self._listener = _listen(self._listen_port)
        self._routes[self._listener] = self.upstream
        self._thread = threading.Thread(target=self._run, name="faultproxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping = True
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._listener is None:
            raise RuntimeError("FaultProxy is not started")
        return int(self._listener.getsockname()[1])

    @property
    def connections(self) -> int:
        return len(self._pipes)

    def cut(self) -> None:
        """Reset every live connection now; returns once they are closed."""
        done = threading.Event()
        self._cut_requests.put(done)
        self._wake()
        if not done.wait(timeout=5):
            raise RuntimeError("FaultProxy thread did not perform the cut")

    def add_route(self, upstream: tuple[str, int]) -> int:
        """Serve ``upstream`` on another port through the same link; returns the port."""
        listener = _listen(0)
        self._new_routes.put(listener)
        self._routes[listener] = upstream
        self._wake()
        return int(listener.getsockname()[1])

    @property
    def queued_bytes(self) -> int:
        """Bytes waiting in the shared buffers, both directions."""
        return self._fifo_bytes[True] + self._fifo_bytes[False]

    def blackhole(self, on: bool) -> None:
        self._black = on
        self._wake()

    def set_bandwidth(self, kbps: int) -> None:
        self._kbps = kbps
        for bucket in self._buckets.values():
            bucket.set_rate(kbps)
        self._wake()

    def set_latency(self, ms: int) -> None:
        self.latency_ms = ms
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    # --- the proxy thread ----------------------------------------------------------

    def _run(self) -> None:
        assert self._listener is not None
        sel = selectors.DefaultSelector()
        for listener in list(self._routes):
            sel.register(listener, selectors.EVENT_READ, None)
        sel.register(self._wake_r, selectors.EVENT_READ, None)
        next_cut = time.monotonic() + self.cut_every_s if self.cut_every_s > 0 else math.inf
        try:
            while not self._stopping:
                now = time.monotonic()
                while not self._new_routes.empty():
                    listener = self._new_routes.get()
                    if listener not in sel.get_map():
                        sel.register(listener, selectors.EVENT_READ, None)
                while not self._cut_requests.empty():
                    self._cut_all(sel)
                    self._cut_requests.get().set()
                if now >= next_cut:
                    self._cut_all(sel)
                    next_cut = now + self.cut_every_s
                wake_at = min(self._pump_all(sel, now), next_cut)
                self._sync_masks(sel)
                timeout = min(max(wake_at - time.monotonic(), 0.0), MAX_TICK_S)
                for key, events in sel.select(timeout):
                    self._on_ready(sel, key.fileobj, events)  # type: ignore[arg-type]
        finally:
            for pipe in list(self._pipes):
                self._close_pipe(sel, pipe, reset=True)
            for listener in self._routes:
                listener.close()
            sel.close()
            while not self._cut_requests.empty():
                self._cut_requests.get().set()

    def _on_ready(self, sel: selectors.BaseSelector, sock: socket.socket, events: int) -> None:
        if sock is self._wake_r:
            with contextlib.suppress(OSError):
                self._wake_r.recv(4096)
        elif sock in self._routes:
            self._accept(sock)
        else:
            for pipe in list(self._pipes):
                for lane in pipe.lanes:
                    if events & selectors.EVENT_WRITE and lane.dst is sock:
                        lane.blocked = False
                    if events & selectors.EVENT_READ and lane.src is sock:
                        self._read(sel, pipe, lane)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            if len(self._pipes) >= self.max_connections or time.monotonic() < self._refuse_until:
                _reset(client)  # full, or the link is down after a cut
                continue
            try:
                upstream = socket.create_connection(self._routes[listener], timeout=2)
            except OSError:
                _reset(client)
                continue
            for s in (client, upstream):
                s.setblocking(False)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            lanes = (_Lane(client, upstream, up=True), _Lane(upstream, client, up=False))
            self._pipes.append(_Pipe(client, upstream, lanes))
            self.accepted += 1

    def _read(self, sel: selectors.BaseSelector, pipe: _Pipe, lane: _Lane) -> None:
        want = RECV_SIZE
        if self.buffer_bytes:
            want = min(PACKET, self.buffer_bytes - self._fifo_bytes[lane.up])
            if want <= 0:
                return
        try:
            data = lane.src.recv(want)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close_pipe(sel, pipe, reset=True)
            return
        if not data:
            lane.eof = True
            return
        if self.buffer_bytes:
            self._fifo[lane.up].append((lane, memoryview(data)))
            self._fifo_bytes[lane.up] += len(data)
            return
        lane.chunks.append((time.monotonic() + self.latency_ms / 1000, memoryview(data)))
        lane.queued += len(data)

    def _pump_all(self, sel: selectors.BaseSelector, now: float) -> float:
        """Forward what is due; return when something next becomes due."""
        wake_at = math.inf
        if self._black:
            return wake_at
        if self.buffer_bytes:
            wake_at = min(self._drain_fifo(True, now), self._drain_fifo(False, now))
        for pipe in list(self._pipes):
            for lane in pipe.lanes:
                try:
                    wake_at = min(wake_at, self._pump(lane, now))
                except OSError:
                    self._close_pipe(sel, pipe, reset=True)
                    break
            else:
                if all(lane.shut for lane in pipe.lanes):
                    self._close_pipe(sel, pipe, reset=False)
        return wake_at

    def _drain_fifo(self, up: bool, now: float) -> float:
        """Shared-buffer mode: move what the link rate allows from the FIFO onto the wire
        (each lane's chunks, due after the latency); when the next bytes can go."""
        fifo, bucket = self._fifo[up], self._buckets[up]
        due = now + self.latency_ms / 1000
        while fifo:
            lane, data = fifo[0]
            if lane.dead:
                fifo.popleft()
                self._fifo_bytes[up] -= len(data)
                continue
            allowed = bucket.allowance(now, len(data))
            if allowed == 0:
                return bucket.ready_at(now, len(data))
            bucket.spend(allowed)
            lane.chunks.append((due, data[:allowed]))
            lane.queued += allowed
            self._fifo_bytes[up] -= allowed
            if allowed == len(data):
                fifo.popleft()
            else:
                fifo[0] = (lane, data[allowed:])
        return math.inf

    def _pump(self, lane: _Lane, now: float) -> float:
        bucket = self._buckets[lane.up]
        shared = bool(self.buffer_bytes)  # the rate was applied on leaving the FIFO
        while lane.chunks and not lane.blocked:
            release, data = lane.chunks[0]
            if release > now:
                return release
            allowed = len(data) if shared else bucket.allowance(now, len(data))
            if allowed == 0:
                return bucket.ready_at(now, len(data))
            try:
                sent = lane.dst.send(data[:allowed])
            except (BlockingIOError, InterruptedError):
                lane.blocked = True
                return math.inf
            if not shared:
                bucket.spend(sent)
            if lane.up:
                self.bytes_up += sent
            else:
                self.bytes_down += sent
            lane.queued -= sent
            if sent == len(data):
                lane.chunks.popleft()
            else:
                lane.chunks[0] = (release, data[sent:])
        if lane.eof and not lane.chunks and not lane.shut and not self._holds(lane):
            lane.shut = True
            with contextlib.suppress(OSError):
                lane.dst.shutdown(socket.SHUT_WR)
        return math.inf

    def _holds(self, lane: _Lane) -> bool:
        return bool(self.buffer_bytes) and any(q is lane for q, _ in self._fifo[lane.up])

    def _room(self, lane: _Lane) -> bool:
        if self.buffer_bytes:
            return self._fifo_bytes[lane.up] < self.buffer_bytes
        return lane.queued < MAX_BUFFERED

    def _sync_masks(self, sel: selectors.BaseSelector) -> None:
        wanted: dict[socket.socket, int] = {}
        for pipe in self._pipes:
            for lane in pipe.lanes:
                if not lane.eof and self._room(lane):
                    wanted[lane.src] = wanted.get(lane.src, 0) | selectors.EVENT_READ
                if lane.blocked:
                    wanted[lane.dst] = wanted.get(lane.dst, 0) | selectors.EVENT_WRITE
        for sock in list(self._masks):
            if sock not in wanted:
                sel.unregister(sock)
                del self._masks[sock]
        for sock, mask in wanted.items():
            if sock not in self._masks:
                sel.register(sock, mask)
            elif self._masks[sock] != mask:
                sel.modify(sock, mask)
            self._masks[sock] = mask

    def _cut_all(self, sel: selectors.BaseSelector) -> None:
        self.cuts += 1  # counted first: a reader woken by the reset sees it
        self._refuse_until = time.monotonic() + self.down_s
        for pipe in list(self._pipes):
            self._close_pipe(sel, pipe, reset=True)

    def _close_pipe(self, sel: selectors.BaseSelector, pipe: _Pipe, *, reset: bool) -> None:
        if pipe not in self._pipes:
            return
        self._pipes.remove(pipe)
        for lane in pipe.lanes:
            lane.dead = True
        for sock in (pipe.client, pipe.upstream):
            if sock in self._masks:
                sel.unregister(sock)
                del self._masks[sock]
            if reset:
                _reset(sock)
            else:
                sock.close()


def _listen(port: int) -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(16)
    listener.setblocking(False)
    return listener


def _reset(sock: socket.socket) -> None:
    """Close with an RST, as a dropped link looks to both ends."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
