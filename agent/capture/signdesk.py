"""The officer's signing session at the counter page.

The officer types the token PIN on the page once; the token session opens at once
and the PIN is dropped (only the logged-in session is kept, in memory). Batches
the officer marks ("chứng thực mẻ tiếp theo") are signed as certified copies
through that session; the mark applies to the next batch only, like a preset
dossier code. The session ends when the officer closes it, after ``idle_s``
without use, or when the agent stops; a batch being signed keeps it until it is
done (closing then waits for the batch, never cuts a signature in half).

Pure bookkeeping over an ``opener`` (the token, ``agent.capture.signing``) and a
clock, so the rules are tested without a token and the page tested with one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from agent.capture.certifier import Certifier, SignerInfo

IDLE_S = 30 * 60.0


class Session(Certifier, Protocol):
    info: SignerInfo

    def close(self) -> None: ...


@dataclass(frozen=True)
class Opened:
    session: Session | None  # None: the token refused; ``error`` says why
    error: str | None = None


class SigningDesk:
    def __init__(
        self,
        opener: Callable[[str], Opened] | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        idle_s: float = IDLE_S,
    ) -> None:
        self._opener, self._clock, self._idle_s = opener, clock, idle_s
        self._lock = threading.Lock()
        self._session: Session | None = None
        self._used_at = 0.0
        self._marked = False
        self._in_use = 0
        self._closing = False

    @property
    def available(self) -> bool:
        """A token is configured ([sign] module)."""
        return self._opener is not None

    def open(self, pin: str) -> str | None:
        """Log in to the token with ``pin``; an error line, or None once open."""
        if self._opener is None:
            return "Thiết bị chưa cấu hình token ký số / no signing token configured ([sign])"
        if not pin:
            return "Nhập mã PIN của token / enter the token's PIN"
        opened = self._opener(pin)
        del pin
        if opened.session is None:
            return opened.error or "token ký số từ chối / the signing token refused"
        with self._lock:
            previous, self._session = self._session, opened.session
            self._used_at, self._closing = self._clock(), False
        if previous is not None:
            previous.close()
        return None

    def mark_next(self, on: bool) -> str | None:
        """Certify the next batch (or not); an error line when no session is open."""
        with self._lock:
            if on and self._session is None:
                return "Chưa mở phiên ký: nhập PIN trước / open a signing session first (PIN)"
            self._marked = on
            self._used_at = self._clock()
        return None

    @contextmanager
    def for_batch(self) -> Iterator[Certifier | None]:
        """The certifier for the batch starting now (None unless marked), held open
        while it runs; the mark is used up."""
        with self._lock:
            session = self._session if self._marked else None
            self._marked = False
            if session is not None:
                self._in_use += 1
                self._used_at = self._clock()
        try:
            yield session
        finally:
            if session is not None:
                with self._lock:
                    self._in_use -= 1
                    self._used_at = self._clock()
                    done = self._in_use == 0 and self._closing
                if done:
                    self._finish_close()

    def close(self) -> None:
        """End the session (after the batch signing with it, if one is)."""
        with self._lock:
            self._closing, self._marked = True, False
            busy = self._in_use > 0
        if not busy:
            self._finish_close()

    def expire(self) -> None:
        """Close a session left unused for ``idle_s``."""
        with self._lock:
            idle = self._session is not None and self._clock() - self._used_at >= self._idle_s
        if idle:
            self.close()

    def _finish_close(self) -> None:
        with self._lock:
            session, self._session, self._closing = self._session, None, False
        if session is not None:
            session.close()

    def status(self) -> dict[str, Any]:
        """For the page: whether signing is possible, open, by whom, the next mark."""
        with self._lock:
            s = self._session
            return {
                "available": self.available,
                "open": s is not None,
                "signer": s.info.name if s is not None else None,
                "title": (s.info.title or None) if s is not None else None,
                "certify_next": self._marked,
            }
