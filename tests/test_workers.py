"""Page work on threads: results in page order, and no page read before a worker is free."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from agent.capture.workers import auto_workers, in_order


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_pages_come_back_in_order_and_none_is_read_before_a_worker_is_free(
    workers: int,
) -> None:
    lock = threading.Lock()
    state = {"read": 0, "most": 0}  # pages read and not yet worked on, and the most at once

    def pages() -> Iterator[int]:
        for n in range(24):
            with lock:
                state["read"] += 1
                state["most"] = max(state["most"], state["read"])
            yield n

    def work(n: int) -> int:
        time.sleep(0.003 * (n % 4))  # slow pages ahead of quick ones
        with lock:
            state["read"] -= 1
        return n * n

    assert list(in_order(work, pages(), workers)) == [n * n for n in range(24)]
    # a scanner's page is 8.7 MB decoded: only as many as there are workers at once
    assert state["most"] <= workers
    assert workers == 1 or state["most"] > 1  # and they are worked on side by side


@pytest.mark.parametrize(("cores", "workers"), [(1, 1), (2, 2), (4, 4), (8, 4)])
def test_workers_by_default_are_one_per_core_at_most_four(cores: int, workers: int) -> None:
    assert auto_workers(cores) == workers
