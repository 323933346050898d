"""How fast to upload: delay-based control in the manner of LEDBAT (RFC 6817).

A commune's link is shared with everyone's browser, and nobody there knows its
rate. The controller learns it from the round trips the upload already makes
(publish → PUBACK): the smallest delay seen in the last ten minutes is the
link's base delay; what the latest round trips add to it is the queue that the
upload (or the office) keeps in the modem. The bytes allowed in flight grow
while that queue stays under ``TARGET_S`` and shrink in proportion once it
rises above, so the upload takes the spare capacity and yields to the
office's traffic, which makes the queue grow. A burst never fills the modem:
sends are paced at the rate the window allows, and the message size follows
the link (a piece takes about ``PIECE_TIME_S`` on it).

Two details of our own: each round trip includes the time its message took to
cross the link, so that time (its size over the delivery rate, measured as BBR
does) is taken off before the delay is compared, otherwise a large message
would look like a queue; and start-up doubles the window each round trip while
the queue stays under half the target, as uTP does, rather than growing it by
one message per round trip from two.

Pure: the clock is passed in and every figure comes from ``on_ack``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

TARGET_S = 0.1  # queueing delay the upload may add to the office's link
GAIN = 1.0
ALLOWED_INCREASE = 1  # pieces the window may run ahead of what is in flight
MIN_WINDOW_PIECES = 2
INITIAL_WINDOW = 8 * 1024  # 1 s of a 64 kbit/s link
BASE_HISTORY = 10  # one-minute minima kept for the base delay
CURRENT_FILTER = 4  # the current delay is the least of the latest samples
RATE_WINDOW_S = 10.0  # the delivery rate is the most seen over this long
PIECE_TIME_S = 0.1  # a message's time on the link
MIN_PIECE = 1024  # 1/8 s of a 64 kbit/s link: a cut loses little, the office waits little
MAX_PIECE = 64 * 1024 + 16
QUEUE_TARGET_PIECES = 1.0  # the queue may hold this many messages on a very slow link
PACING_GAIN = 1.25  # paced a little faster than the window, so pacing never limits it
STALL_MIN_S, STALL_MAX_S = 4.0, 8.0


@dataclass(frozen=True)
class Ticket:
    """What the controller knew when a message went out."""

    sent_at: float
    size: int
    delivered: int  # bytes acknowledged before it
    delivered_at: float  # when the last of those was
    in_flight: int  # bytes in flight once it was sent: how much of the window was used


@dataclass(frozen=True)
class LinkEstimate:
    """For the health report."""

    rate_bps: float | None  # delivery rate, bits per second
    base_rtt_ms: float | None
    queue_delay_ms: float | None
    window_bytes: int


class Ledbat:
    """The upload's window (bytes in flight), pacing rate and message size."""

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        cap_kbps: int = 0,
        target_s: float = TARGET_S,
    ) -> None:
        self.clock = clock
        self.cap = cap_kbps * 1000 / 8  # bytes/s; 0 = no cap
        self.target = target_s
        self.cwnd = float(INITIAL_WINDOW)
        self.slow_start = True
        self.delivered = 0
        self.delivered_at = clock()
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.queue_delay: float | None = None
        # raw (minute, round trip, size, rate then) samples: their own crossing is taken
        # off with the better of the rate known then and the rate known now, so an early
        # low estimate of the rate does not stay in the base for ten minutes, and a low
        # one now (a small window delivers little) does not wipe out a base measured
        # while the link was well used
        self._base: deque[tuple[int, float, int, float]] = deque(maxlen=BASE_HISTORY)
        self._current: deque[tuple[float, int]] = deque(maxlen=CURRENT_FILTER)
        self._rates: deque[tuple[float, float]] = deque()

    # -- what the sender asks ------------------------------------------------------

    def ticket(self, size: int, in_flight: int) -> Ticket:
        """For a message of ``size`` bytes sent now, ``in_flight`` bytes out with it."""
        now = self.clock()
        if in_flight <= size:  # the pipe was empty: the time it stood idle is no delivery
            self.delivered_at = now
        return Ticket(now, size, self.delivered, self.delivered_at, in_flight)

    @property
    def rate(self) -> float:
        """The delivery rate, bytes/s: the most seen lately (0 before any)."""
        return max((r for _t, r in self._rates), default=0.0)

    def _delay(self, rtt: float, size: int, known: float = 0.0) -> float:
        """A round trip less the message's own time on the link (at the best rate known)."""
        rate = max(self.rate, known)
        return max(rtt - size / rate, 0.0) if rate else rtt

    @property
    def base_delay(self) -> float | None:
        return min((self._delay(r, n, k) for _m, r, n, k in self._base), default=None)

    def window(self) -> int:
        return int(self.cwnd)

    def piece_size(self) -> int:
        """Bytes for one message: about ``PIECE_TIME_S`` of the link, or of the share of it
        the upload has now (small messages while the office's traffic fills the modem)."""
        rate = self.rate
        if self._current and rate:
            rate = min(rate, self._window_rate())
        if self.cap:
            rate = min(rate, self.cap) if rate else self.cap
        return int(min(MAX_PIECE, max(MIN_PIECE, rate * PIECE_TIME_S)))

    def _window_rate(self) -> float:
        """What the window carries per latest round trip, bytes/s."""
        return self.cwnd / max(min(r for r, _n in self._current), 1e-3)

    def pacing_rate(self) -> float:
        """Bytes/s to space sends at (inf until a round trip was measured), within the cap:
        the window over the latest round trips (not the smoothed one, which lags for
        seconds once the office's traffic leaves and the queue empties)."""
        if not self._current:
            return self.cap or math.inf
        pace = PACING_GAIN * self._window_rate()
        return min(pace, self.cap) if self.cap else pace

    def stall_after(self) -> float:
        """Seconds without any acknowledgement, while some are due, that mean a dead link."""
        if self.srtt is None:
            return STALL_MAX_S
        return min(STALL_MAX_S, max(STALL_MIN_S, 2 * (self.srtt + 4 * self.rttvar)))

    def estimate(self) -> LinkEstimate:
        base = self.base_delay
        return LinkEstimate(
            rate_bps=self.rate * 8 if self._rates else None,
            base_rtt_ms=None if base is None else round(base * 1000, 1),
            queue_delay_ms=None if self.queue_delay is None else round(self.queue_delay * 1000, 1),
            window_bytes=self.window(),
        )

    # -- what the link reports --------------------------------------------------------

    def on_ack(self, t: Ticket, acked_at: float) -> None:
        """The message of ``t`` was acknowledged at ``acked_at``."""
        rtt = max(acked_at - t.sent_at, 1e-4)
        self.delivered += t.size
        self._sample_rate(t, acked_at)
        self.delivered_at = acked_at
        self._sample_rtt(rtt)
        self._sample_base(rtt, t.size, acked_at)
        self._current.append((rtt, t.size))
        base = self.base_delay or 0.0
        current = min(self._delay(r, n) for r, n in self._current)
        self.queue_delay = max(current - base, 0.0)
        self._grow(t.size, self.queue_delay, t.in_flight)

    def on_stall(self) -> None:
        """The link stopped carrying bytes: start the next connection more carefully."""
        self.cwnd = max(self.cwnd / 2, self._min_window())
        self.slow_start = False

    # -- inside -------------------------------------------------------------------------

    @staticmethod
    def _min_window() -> float:
        return float(MIN_WINDOW_PIECES * MIN_PIECE)

    def _sample_rate(self, t: Ticket, acked_at: float) -> None:
        interval = acked_at - t.delivered_at
        # a message sent before anything was delivered measures its round trip, not
        # the rate: taking it would make its own crossing look like the whole delay
        if interval > 0 and t.delivered > 0:
            self._rates.append((acked_at, (self.delivered - t.delivered) / interval))
        while self._rates and acked_at - self._rates[0][0] > RATE_WINDOW_S:
            self._rates.popleft()

    def _sample_rtt(self, rtt: float) -> None:
        """Smoothed round trip and its variation, as TCP keeps them (RFC 6298)."""
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt

    def _sample_base(self, rtt: float, size: int, now: float) -> None:
        minute = int(now // 60)
        sample = (minute, rtt, size, self.rate)
        if not self._base or self._base[-1][0] != minute:
            self._base.append(sample)
        elif self._delay(rtt, size) < self._delay(*self._base[-1][1:]):
            self._base[-1] = sample

    def queue_target(self, piece: int | None = None) -> float:
        """The queueing delay to keep: ``target``, or on a link so slow that one message
        (``piece`` bytes, else the current piece size) takes longer to cross it, that
        message's time (a queue shorter than one message leaves the link idle)."""
        rate = self.rate
        if not rate:
            return self.target
        size = self.piece_size() if piece is None else piece
        return max(self.target, QUEUE_TARGET_PIECES * size / rate)

    def _grow(self, acked: int, queue_delay: float, used: int) -> None:
        mss = self.piece_size()
        target = self.queue_target(mss)
        if self.slow_start and queue_delay < target / 2:
            self.cwnd += acked
        else:
            self.slow_start = False
            off_target = (target - queue_delay) / target
            self.cwnd += GAIN * off_target * acked * mss / self.cwnd
        # a window the sender does not use must not grow (RFC 6817 §2.4.2)
        self.cwnd = min(self.cwnd, max(used, self._min_window()) + ALLOWED_INCREASE * mss)
        self.cwnd = max(self.cwnd, self._min_window())
