"""How long to wait before the next connection attempt: exponential back-off, full jitter.

Full jitter keeps a fleet that lost its broker at once from reconnecting in
lock-step when it comes back.
"""

from __future__ import annotations

import random
from collections.abc import Iterable


def backoff_delays(
    base: float = 1.0, cap: float = 60.0, rng: random.Random | None = None
) -> Iterable[float]:
    """Exponential back-off with full jitter."""
    r = rng or random.Random()  # noqa: S311 - jitter, not security
    attempt = 0
    while True:
        yield r.uniform(0, min(cap, base * 2**attempt))
        attempt += 1
