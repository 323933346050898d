"""Waiting on a condition with a deadline, never on a fixed sleep."""

from __future__ import annotations

import time
from collections.abc import Callable

POLL_S = 0.02


def wait_until(
    check: Callable[[], object], timeout_s: float, what: str, *, poll_s: float = POLL_S
) -> None:
    """Return once ``check()`` is true; fail naming ``what`` after ``timeout_s``."""
    if not became_true(check, timeout_s, poll_s=poll_s):
        raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def became_true(check: Callable[[], object], timeout_s: float, *, poll_s: float = POLL_S) -> bool:
    """True once ``check()`` is; False if it is still false after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(poll_s)  # the poll interval, the one sleep the tests need
    return True
