"""The OCR queue as values: a claimed job, a job's recorded state, who holds a lease,
and the ``OcrQueue`` protocol that both backends (``ocr_queue``, ``ocr_queue_pg``) fill.

The queue is a table ``ocr_jobs`` in the warehouse index's own database, keyed like
``documents`` by (device, doc). A stored document with no row is waiting. A worker
claims one with a lease that it renews while OCRmyPDF runs; a lease that expires, or
whose holder is a process on this host that no longer runs, is taken again, so that a
killed worker loses nothing. Each claim counts as an attempt: after ``MAX_ATTEMPTS``
the job is ``failed`` (kept, with its reason) instead of being tried for ever.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

MAX_ATTEMPTS = 3
LEASE_S = 120.0  # renewed every RENEW_S while OCRmyPDF runs
RENEW_S = 20.0
RETRY_AFTER_S = 60.0  # times the attempt number: 1 min, then 2 min
STATES = ("running", "retry", "done", "failed")
STOPPED_MID_OCR = "the OCR worker stopped mid-document (killed or crashed)"


@dataclass(frozen=True)
class OcrJob:
    """A document claimed for OCR: where its original is and which attempt this is."""

    device: str
    doc_id: str
    path: str  # the archived original PDF
    pages: int
    attempt: int  # 1 for the first
    holder: str


@dataclass(frozen=True)
class JobRecord:
    """What the queue holds about one document."""

    device: str
    doc_id: str
    state: str  # one of STATES
    attempts: int
    holder: str
    error: str | None

    def to_json(self) -> dict[str, str | int | None]:
        return {
            "device": self.device,
            "doc_id": self.doc_id,
            "state": self.state,
            "attempts": self.attempts,
            "error": self.error,
        }


class OcrQueue(Protocol):
    def holders(self) -> list[str]:
        """Holders of the jobs running now."""

    def give_up_stalled(self, now: float, dead: Sequence[str], max_attempts: int) -> list[str]:
        """Mark ``failed`` the running jobs whose holder is gone (lease expired or in
        ``dead``) and that have had their attempts; their doc ids."""

    def claim(
        self,
        holder: str,
        now: float,
        dead: Sequence[str],
        lease_s: float,
        max_attempts: int,
        since: str = "",
    ) -> OcrJob | None:
        """The next stored document that needs OCR, now leased to ``holder``: a job due
        again (a stalled one that has had ``max_attempts`` is not), else the oldest
        document stored at ``since`` (ISO 8601) or later with no job; None when none."""

    def renew(self, job: OcrJob, now: float, lease_s: float) -> bool:
        """Extend the lease; False when ``job.holder`` no longer holds it."""

    def finish(self, job: OcrJob, now: float, chars: int) -> bool:
        """Record the job done; False when the lease was lost meanwhile."""

    def fail(self, job: OcrJob, now: float, reason: str, *, retry_at: float | None) -> bool:
        """Record a failed attempt: tried again from ``retry_at``, or never (None)."""

    def release(self, job: OcrJob, now: float) -> bool:
        """Give a job back unfinished without counting the attempt (a clean stop)."""

    def requeue_failed(self) -> int:
        """Let every failed job be tried again from its first attempt; how many."""

    def records(self) -> list[JobRecord]: ...

    def waiting(self) -> int:
        """Stored documents with no job yet."""

    def close(self) -> None: ...


def next_try(attempt: int, now: float, max_attempts: int, retry_after_s: float) -> float | None:
    """When a job whose ``attempt`` failed is tried again; None once it has had them all."""
    return None if attempt >= max_attempts else now + retry_after_s * attempt


# -- lease holders: host:pid:start, so that a dead local holder is known at once ------------


def holder_name(host: str, pid: int, started: int) -> str:
    return f"{host}:{pid}:{started}"


def parse_holder(text: str) -> tuple[str, int, int] | None:
    host, _, rest = text.rpartition(":")
    host, _, pid = host.rpartition(":")
    if not (host and pid.isdigit() and rest.isdigit()):
        return None
    return host, int(pid), int(rest)


def dead_holders(
    holders: Iterable[str], host: str, started: Callable[[int], int | None]
) -> list[str]:
    """The holders that are processes of ``host`` no longer running: their pid is gone or
    now names a process that started at another time. Other hosts' holders are judged
    by their lease alone."""
    dead = []
    for text in holders:
        parsed = parse_holder(text)
        if parsed is not None and parsed[0] == host and started(parsed[1]) != parsed[2]:
            dead.append(text)
    return dead


def start_ticks(stat: str) -> int | None:
    """Field 22 of ``/proc/<pid>/stat``, the process's start time in clock ticks since
    boot (the fields after the command name, which may hold spaces and parentheses)."""
    fields = stat.rpartition(")")[2].split()
    return int(fields[19]) if len(fields) > 19 and fields[19].isdigit() else None


def process_started(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot); None when there is none."""
    try:
        return start_ticks(Path(f"/proc/{pid}/stat").read_text())
    except OSError:
        return None


def this_host() -> str:
    return socket.gethostname() or "localhost"


def this_holder() -> str:
    pid = os.getpid()
    return holder_name(this_host(), pid, process_started(pid) or 0)
