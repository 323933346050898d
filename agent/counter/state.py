"""What the counter page shows, in memory only: the batch in progress and the last few.

``CounterState`` is the capture pipeline's ``CaptureEvents``: it keeps each
page's thumbnail and badges, each batch's documents with their codes and its
warnings, and forgets all of it ``[ui] keep_minutes`` after the batch ended.
Nothing here touches the disk or the network. Watchers (the page's event
stream) are called after every change with the new version number.

In review mode the capture thread, in ``review``, waits for the officer's
corrections; after ``review_timeout_s`` without an answer the batch is sealed
as it stands (nothing is lost by waiting for someone who went home).
"""

from __future__ import annotations

import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agent.capture.review import Edit
from agent.capture.split import BatchPlan

if TYPE_CHECKING:
    from agent.capture.results import DocumentResult

KEEP_BATCHES = 5


@dataclass
class PageView:
    index: int
    badges: tuple[str, ...]
    thumb: bytes | None


@dataclass
class BatchView:
    batch_id: str
    source: str
    started: float
    status: str = "running"  # running | review | complete | interrupted | disk_full | failed
    pages: list[PageView] = field(default_factory=list)
    documents: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    ended: float | None = None
    pages_in: int = 0
    edits: queue.Queue[Edit] = field(default_factory=queue.Queue)

    def to_json(self) -> dict[str, Any]:
        return {
            "batch_id": self.batch_id,
            "source": self.source,
            "status": self.status,
            "pages_in": self.pages_in or len(self.pages),
            "pages": [
                {"index": p.index, "badges": list(p.badges), "thumb": p.thumb is not None}
                for p in self.pages
            ],
            "warnings": list(self.warnings),
            "documents": list(self.documents),
        }


def plan_documents(plan: BatchPlan) -> list[dict[str, Any]]:
    return [
        {
            "dossier_code": d.dossier_code,
            "owner_id": d.owner_id,
            "doc_type": d.doc_type,
            "pages": len(d.pages),
            "page_indexes": list(d.pages),
            "flags": list(d.flags),
        }
        for d in plan.documents
    ]


def document_view(d: DocumentResult) -> dict[str, Any]:
    """A sealed document as the page shows it: the keys of /api/state's contract, and
    for a certified copy its number and book, or why it stayed unsigned."""
    view: dict[str, Any] = {
        "dossier_code": d.dossier_code,
        "owner_id": d.owner_id,
        "doc_type": d.doc_type,
        "pages": d.pages,
        "flags": list(d.flags),
    }
    if d.certification:
        view["certified"] = {"number": d.certification["number"], "book": d.certification["book"]}
    if d.problem:
        view["unsigned"] = d.problem
    return view


class CounterState:
    wants_thumbnails = True

    def __init__(
        self,
        *,
        keep_minutes: int = 30,
        review_mode: bool = False,
        review_timeout_s: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keep_s = keep_minutes * 60.0
        self.review_mode = review_mode
        self.review_timeout_s = review_timeout_s if review_timeout_s is not None else self.keep_s
        self.clock = clock
        self._lock = threading.Lock()
        self._batches: OrderedDict[str, BatchView] = OrderedDict()
        self._watchers: list[Callable[[int], None]] = []
        self.version = 0
        self.banner: dict[str, str] | None = None

    # -- watchers --------------------------------------------------------------

    def watch(self, fn: Callable[[int], None]) -> Callable[[], None]:
        """Call ``fn(version)`` after every change; the function that stops it."""
        with self._lock:
            self._watchers.append(fn)
        return lambda: self._unwatch(fn)

    def _unwatch(self, fn: Callable[[int], None]) -> None:
        with self._lock:
            if fn in self._watchers:
                self._watchers.remove(fn)

    def _changed(self) -> None:
        with self._lock:
            self.version += 1
            version, watchers = self.version, list(self._watchers)
        for fn in watchers:
            fn(version)

    # -- CaptureEvents -----------------------------------------------------------

    def batch_started(self, batch_id: str, source: str) -> None:
        with self._lock:
            self._batches[batch_id] = BatchView(batch_id, source, self.clock())
            while len(self._batches) > KEEP_BATCHES:
                self._batches.popitem(last=False)
        self._changed()

    def page_taken(
        self, batch_id: str, index: int, thumbnail: bytes | None, badges: tuple[str, ...]
    ) -> None:
        with self._lock:
            view = self._batches.get(batch_id)
            if view is not None:
                view.pages = [p for p in view.pages if p.index != index]  # a re-scan replaces
                view.pages.append(PageView(index, badges, thumbnail))
                view.pages.sort(key=lambda p: p.index)
        self._changed()

    def review(self, batch_id: str, plan: BatchPlan) -> Edit:
        view = self._batches.get(batch_id)
        if not self.review_mode or view is None:
            return Edit("confirm")
        with self._lock:
            view.status, view.documents = "review", plan_documents(plan)
        self._changed()
        try:
            edit = view.edits.get(timeout=self.review_timeout_s)
        except queue.Empty:
            edit = Edit("confirm")
        with self._lock:
            view.status = "running"
        return edit

    def batch_ended(self, batch_id: str, result: Any) -> None:
        docs = [document_view(d) for d in result.documents]
        with self._lock:
            view = self._batches.get(batch_id)
            if view is not None:
                view.status, view.documents = result.status, docs
                view.warnings, view.pages_in = list(result.warnings), result.pages_in
                view.ended = self.clock()
            kind = "batch_done" if result.status == "complete" else "batch_problem"
            self.banner = {"kind": kind, "batch_id": batch_id, "status": result.status}
        self._changed()

    def batch_failed(self, batch_id: str, reason: str) -> None:
        with self._lock:
            view = self._batches.get(batch_id)
            if view is not None:
                view.status, view.ended = "failed", self.clock()
                view.warnings.append(reason)
            self.banner = {"kind": "batch_failed", "batch_id": batch_id, "status": "failed"}
        self._changed()

    # -- the page's side -----------------------------------------------------------

    def submit(self, batch_id: str, edit: Edit) -> bool:
        """Hand the officer's correction to a batch waiting in review."""
        view = self._batches.get(batch_id)
        if view is None or view.status != "review":
            return False
        view.edits.put(edit)
        return True

    def release(self) -> None:
        """Seal every batch waiting for review as it stands (the agent is stopping)."""
        with self._lock:
            waiting = [v for v in self._batches.values() if v.status == "review"]
        for view in waiting:
            view.edits.put(Edit("confirm"))

    def expire(self) -> None:
        """Forget batches (thumbnails, codes) that ended more than keep_minutes ago."""
        now = self.clock()
        with self._lock:
            gone = [
                b
                for b, v in self._batches.items()
                if v.ended is not None and now - v.ended > self.keep_s
            ]
            for b in gone:
                del self._batches[b]
            if self.banner and self.banner["batch_id"] in gone:
                self.banner = None
        if gone:
            self._changed()

    def thumbnail(self, batch_id: str, index: int) -> bytes | None:
        self.expire()  # a thumbnail past keep_minutes is not served, even if asked first
        with self._lock:
            view = self._batches.get(batch_id)
            pages = [p for p in view.pages if p.index == index] if view else []
            return pages[0].thumb if pages else None

    def snapshot(self) -> dict[str, Any]:
        """``batch`` (the one in progress, or null) and ``last_batches``, newest first."""
        self.expire()
        with self._lock:
            views = list(self._batches.values())
            current = next((v for v in reversed(views) if v.ended is None), None)
            return {
                "batch": current.to_json() if current else None,
                "last_batches": [v.to_json() for v in reversed(views) if v.ended is not None],
                "banner": dict(self.banner) if self.banner else None,
                "version": self.version,
            }
