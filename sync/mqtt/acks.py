"""Acknowledgements a link waits for (PUBACK, SUBACK), matched by message id."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # paho itself is imported by sync.mqtt.link only
    from paho.mqtt.reasoncodes import ReasonCode


def describe(code: ReasonCode) -> str:
    """A reason code as text with its number, e.g. ``Not authorized (135)``."""
    return f"{code.getName()} ({code.value})"


class PendingPublish:
    """An outstanding acknowledgement (PUBACK, or SUBACK inside ``subscribe``)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.refused = False  # the broker answered with a failure reason code
        self._event = threading.Event()
        self._failed = False
        self._reason = ""
        self.settled_at = 0.0  # time.monotonic() of the acknowledgement
        self.topic_bytes = 0  # of the topic as it went on the wire (an alias: none)

    def done(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout_s: float) -> bool:
        """True when acknowledged within ``timeout_s``; False on timeout or failure."""
        return self._event.wait(timeout_s) and not self._failed

    @property
    def failed(self) -> bool:
        """The link went down before the acknowledgement, or the broker refused."""
        return self._failed

    @property
    def reason(self) -> str:
        return self._reason

    def _settle(self, reason: str = "", *, refused: bool = False) -> None:
        """Settle once: acknowledged when ``reason`` is empty, failed otherwise."""
        if not self._event.is_set():
            self._failed, self._reason, self.refused = bool(reason), reason, refused
            self.settled_at = time.monotonic()
            self._event.set()


class Acks:
    """Outstanding acknowledgements by message id.

    paho may acknowledge a message id before ``publish`` has returned it to us, and it
    calls back while holding its own lock, so no paho call is ever made under ours.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[int, PendingPublish] = {}
        self._early: dict[int, str] = {}  # acknowledged before tracked: mid -> refusal
        self._down = ""

    def track(self, mid: int, pending: PendingPublish) -> PendingPublish:
        with self._lock:
            early = self._early.pop(mid, None)
            if early is None and not self._down:
                self._waiting[mid] = pending
                return pending
        if early is not None:
            pending._settle(early, refused=bool(early))
        else:
            pending._settle(self._down)
        return pending

    def settle(self, mid: int, codes: list[ReasonCode]) -> None:
        refusal = ", ".join(describe(c) for c in codes if c.is_failure)
        with self._lock:
            pending = self._waiting.pop(mid, None)
            if pending is None:
                self._early[mid] = refusal
                return
        pending._settle(refusal, refused=bool(refusal))

    def fail_all(self, reason: str) -> None:
        with self._lock:
            self._down = reason
            waiting, self._waiting = self._waiting, {}
        for pending in waiting.values():
            pending._settle(reason)
