"""Waiting on a condition with a deadline, never on a fixed sleep."""

from __future__ import annotations

import time
from collections.abc import Callable

POLL_S = 0.02


def wait_until(check: Callable[[], object], timeout_s: float, what: str) -> None:
    """Return once ``check()`` is true; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        time.sleep(POLL_S)


def became_true(check: Callable[[], object], timeout_s: float) -> bool:
    """True once ``check()`` is; False if it is still false after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_S)
    return True
