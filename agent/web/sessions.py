"""Signed-in sessions, CSRF tokens and the sign-in rate limit, in memory only.

A session is a random 256-bit token in an HttpOnly, SameSite=Strict cookie;
its CSRF token travels in the page and must come back in the ``X-CSRF-Token``
header of every change. Ten wrong passwords for one name (or from one
address) within the window lock further attempts for ``LOCK_S``. A restart
signs everyone out, which is what an appliance on a counter should do.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

SESSION_S = 8 * 3600  # a working day
MAX_FAILURES = 10
WINDOW_S = 15 * 60
LOCK_S = 15 * 60
COOKIE = "sohoa_session"


@dataclass
class Session:
    name: str
    csrf: str
    expires: float


@dataclass
class _Failures:
    times: list[float] = field(default_factory=list)
    locked_until: float = 0.0


class Sessions:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}
        self._failures: dict[str, _Failures] = {}

    def open(self, name: str) -> tuple[str, Session]:
        token = secrets.token_urlsafe(32)
        session = Session(name, secrets.token_urlsafe(32), self._clock() + SESSION_S)
        with self._lock:
            self._drop_expired()
            self._sessions[token] = session
        return token, session

    def get(self, token: str | None) -> Session | None:
        if not token:
            return None
        with self._lock:
            session = self._sessions.get(token)
            if session is None or session.expires < self._clock():
                self._sessions.pop(token, None)
                return None
            return session

    def close(self, token: str | None) -> None:
        with self._lock:
            self._sessions.pop(token or "", None)

    def _drop_expired(self) -> None:
        now = self._clock()
        for token in [t for t, s in self._sessions.items() if s.expires < now]:
            del self._sessions[token]

    @staticmethod
    def csrf_ok(session: Session, sent: str | None) -> bool:
        # as bytes: compare_digest refuses str with non-ASCII characters (a 500, not a 403)
        return bool(sent) and hmac.compare_digest(
            session.csrf.encode(), (sent or "").encode("utf-8", "replace")
        )

    # -- rate limit ----------------------------------------------------------

    def locked_for(self, *keys: str) -> float:
        """Seconds until a sign-in for any of ``keys`` (name, address) is allowed."""
        now = self._clock()
        with self._lock:
            return max(
                (self._failures.get(k, _Failures()).locked_until - now for k in keys), default=0.0
            )

    def failed(self, *keys: str) -> None:
        now = self._clock()
        with self._lock:
            for key in keys:
                f = self._failures.setdefault(key, _Failures())
                f.times = [t for t in f.times if now - t < WINDOW_S] + [now]
                if len(f.times) >= MAX_FAILURES:
                    f.locked_until, f.times = now + LOCK_S, []

    def succeeded(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._failures.pop(key, None)
