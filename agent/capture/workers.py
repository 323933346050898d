"""A bounded pool of threads for page work, whose results come back in page order.

Page work is C almost all the way (Pillow's decoders, filters and encoders,
numpy, zbar through ctypes, libtiff) and those calls release Python's
interpreter lock, so threads use every core without a process per worker: no
second copy of numpy, Pillow and zbar in memory, no pickling of page images.
Splitting and sealing need the pages in order, and a 500-page batch must not
be read ahead into memory: at most ``workers`` pages are being worked on, and
the next page is read only when a worker is free (a page from a scanner comes
decoded, 8.7 MB at 300 dpi); finished pages behind a slow one wait for their
turn as small results, at most ``READY_PER_WORKER`` per worker.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

MAX_AUTO_WORKERS = 4
# results done ahead of a slow page, at most, per worker (a few KB to a few hundred each)
READY_PER_WORKER = 4


def auto_workers(cores: int | None = None) -> int:
    """Workers when the configuration says 0: every core, at most four (a Pi has four)."""
    count = cores if cores is not None else len(os.sched_getaffinity(0))
    return max(1, min(MAX_AUTO_WORKERS, count))


def in_order(
    work: Callable[[Item], Result], items: Iterable[Item], workers: int
) -> Iterator[Result]:
    """``work`` over ``items`` on ``workers`` threads, results in the items' order.

    One worker runs everything on the calling thread. An exception from ``work``
    comes out when its item's turn comes, after every earlier result; the pages
    after it are not started or are waited for, never handed out.
    """
    if workers <= 1:
        yield from map(work, items)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="sohoa-page") as pool:
        pending: deque[Future[Result]] = deque()
        try:
            for item in items:
                pending.append(pool.submit(work, item))
                while pending:
                    if pending[0].done():
                        yield pending.popleft().result()
                        continue
                    unfinished = [f for f in pending if not f.done()]
                    # a slow page at the head does not idle the other workers: pages
                    # behind it are worked on, their (small) results wait for their turn
                    if len(unfinished) < workers and len(pending) < READY_PER_WORKER * workers:
                        break
                    wait(unfinished, return_when=FIRST_COMPLETED)
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()
