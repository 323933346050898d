"""The OCR queue in the index database, on SQLite and on PostgreSQL: each stored document
is leased to one worker at a time, a lease whose holder died is taken again, every
attempt counts, and a job ends done or kept as failed, never lost."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sync.warehouse.index import DocumentIndex, StoredDocument, open_index
from sync.warehouse.ocr import OcrSettings, Scan
from sync.warehouse.ocr_jobs import (
    STOPPED_MID_OCR,
    OcrQueue,
    dead_holders,
    holder_name,
    next_try,
    parse_holder,
    process_started,
    start_ticks,
)
from sync.warehouse.ocr_queue import open_ocr_queue
from sync.warehouse.ocr_tool import OcrTool

LEASE = 60.0
MAX = 3


@pytest.fixture(params=["sqlite", "postgresql"])
def index_spec(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return "sqlite"
    dsn: str = request.getfixturevalue("postgres_db")
    return dsn


@pytest.fixture
def index(index_spec: str, tmp_path: Path) -> Iterator[DocumentIndex]:
    idx = open_index(index_spec, tmp_path / "archive")
    yield idx
    idx.close()


@pytest.fixture
def queue(index: DocumentIndex, index_spec: str, tmp_path: Path) -> Iterator[OcrQueue]:
    q = open_ocr_queue(index_spec, tmp_path / "archive")
    yield q
    q.close()


def add_docs(index: DocumentIndex, count: int) -> list[str]:
    ids = [f"d{n:03d}" for n in range(count)]
    for n, doc_id in enumerate(ids):
        index.add(
            StoredDocument(
                doc_id,
                "dev-1",
                f"{n:064x}",
                f"2025-01-01T00:{n // 60:02d}:{n % 60:02d}Z",
                100,
                1,
                "0" * 64,
                f"/a/{doc_id}.pdf",
            )
        )
    return ids


def states(queue: OcrQueue) -> dict[str, tuple[str, int]]:
    return {r.doc_id: (r.state, r.attempts) for r in queue.records()}


def test_documents_are_claimed_oldest_first_and_each_by_one_worker(
    index: DocumentIndex, queue: OcrQueue
) -> None:
    add_docs(index, 3)
    first = queue.claim("h:1:1", 1000.0, [], LEASE, MAX)
    second = queue.claim("h:2:1", 1000.0, [], LEASE, MAX)
    third = queue.claim("h:1:1", 1000.0, [], LEASE, MAX)

    assert [j.doc_id if j else None for j in (first, second, third)] == ["d000", "d001", "d002"]
    assert queue.claim("h:3:1", 1000.0, [], LEASE, MAX) is None
    assert (queue.waiting(), sorted(queue.holders())) == (0, ["h:1:1", "h:2:1"])


def test_an_idle_look_from_a_watermark_sees_newer_documents_and_every_due_job(
    index: DocumentIndex, queue: OcrQueue
) -> None:
    add_docs(index, 3)  # stored at 00:00:00, 00:00:01, 00:00:02
    first = queue.claim("h:1:1", 1000.0, [], LEASE, MAX)
    assert first is not None and queue.fail(first, 1000.0, "x", retry_at=1001.0)

    newer = queue.claim("h:2:1", 1000.0, [], LEASE, MAX, "2025-01-01T00:00:02Z")
    due = queue.claim("h:2:1", 1001.0, [], LEASE, MAX, "2025-01-01T00:00:03Z")

    assert (newer and newer.doc_id, due and due.doc_id) == ("d002", "d000")
    assert queue.claim("h:2:1", 1001.0, [], LEASE, MAX, "2025-01-01T00:00:03Z") is None
    assert queue.claim("h:2:1", 1001.0, [], LEASE, MAX) is not None  # a full look: d001


def test_a_finished_job_is_never_claimed_again(index: DocumentIndex, queue: OcrQueue) -> None:
    add_docs(index, 1)
    job = queue.claim("h:1:1", 1000.0, [], LEASE, MAX)
    assert job is not None and queue.finish(job, 1001.0, chars=42)

    assert queue.claim("h:2:1", 1e9, [], LEASE, MAX) is None
    assert states(queue) == {"d000": ("done", 1)}


@pytest.mark.parametrize(
    ("later", "dead", "taken"),
    [
        (LEASE - 1, [], False),  # the holder's lease still runs
        (LEASE + 1, [], True),  # it expired: the holder stopped renewing
        (1.0, ["h:1:1"], True),  # the holder is a process of this host that is gone
        (1.0, ["h:9:9"], False),  # another holder died, not this one
    ],
)
def test_a_job_whose_holder_is_gone_is_taken_again_as_the_next_attempt(
    index: DocumentIndex, queue: OcrQueue, later: float, dead: list[str], taken: bool
) -> None:
    add_docs(index, 1)
    first = queue.claim("h:1:1", 1000.0, [], LEASE, MAX)
    again = queue.claim("h:2:1", 1000.0 + later, dead, LEASE, MAX)

    assert first is not None
    assert (again is not None, again.attempt if again else None) == (taken, 2 if taken else None)
    if again is not None:  # the old holder can no longer change the job
        assert not queue.finish(first, 1000.0 + later, chars=1)
        assert not queue.renew(first, 1000.0 + later, LEASE)
        assert queue.finish(again, 1000.0 + later, chars=1)


def test_a_failed_attempt_waits_then_is_tried_again_until_it_is_kept_as_failed(
    index: DocumentIndex, queue: OcrQueue
) -> None:
    add_docs(index, 1)
    now, seen = 1000.0, []
    for _ in range(MAX):
        job = queue.claim("h:1:1", now, [], LEASE, MAX)
        assert job is not None
        retry_at = next_try(job.attempt, now, MAX, 60.0)
        assert queue.fail(job, now, f"broken {job.attempt}", retry_at=retry_at)
        seen.append(states(queue)["d000"])
        assert queue.claim("h:1:1", now + 1, [], LEASE, MAX) is None  # not before its time
        now += 1000.0

    assert seen == [("retry", 1), ("retry", 2), ("failed", 3)]
    assert queue.claim("h:1:1", now + 1e6, [], LEASE, MAX) is None
    assert [(r.state, r.error) for r in queue.records()] == [("failed", "broken 3")]


def test_a_job_that_killed_its_last_worker_is_kept_as_failed(
    index: DocumentIndex, queue: OcrQueue
) -> None:
    add_docs(index, 1)
    now = 1000.0
    for _ in range(MAX):  # every worker that takes it dies mid-OCR
        assert queue.claim("h:1:1", now, ["h:1:1"], LEASE, MAX) is not None
        now += 1.0

    assert queue.give_up_stalled(now, ["h:1:1"], MAX) == ["dev-1/d000"]
    assert [(r.state, r.attempts, r.error) for r in queue.records()] == [
        ("failed", MAX, STOPPED_MID_OCR)
    ]
    assert queue.claim("h:2:1", now + 1e6, [], LEASE, MAX) is None
    assert queue.requeue_failed() == 1
    retried = queue.claim("h:2:1", now, [], LEASE, MAX)
    assert retried is not None and retried.attempt == 1


def test_a_job_given_back_at_a_clean_stop_keeps_its_attempts(
    index: DocumentIndex, queue: OcrQueue
) -> None:
    add_docs(index, 1)
    job = queue.claim("h:1:1", 1000.0, [], LEASE, MAX)
    assert job is not None and queue.release(job, 1001.0)

    again = queue.claim("h:2:1", 1001.0, [], LEASE, MAX)
    assert again is not None and again.attempt == 1


def test_workers_racing_for_jobs_take_each_document_once(
    index: DocumentIndex, index_spec: str, tmp_path: Path
) -> None:
    ids = add_docs(index, 40)
    taken: dict[str, list[str]] = {}
    queues = [open_ocr_queue(index_spec, tmp_path / "archive") for _ in range(4)]

    def work(n: int) -> None:
        mine = taken.setdefault(f"h:{n}:1", [])
        while (job := queues[n].claim(f"h:{n}:1", 1000.0, [], LEASE, MAX)) is not None:
            mine.append(job.doc_id)
            queues[n].finish(job, 1000.0, chars=0)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for q in queues:
        q.close()

    assert sorted(d for docs in taken.values() for d in docs) == ids


# -- lease holders ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("wh1:123:456", ("wh1", 123, 456)),
        ("wh-1.lan:1:0", ("wh-1.lan", 1, 0)),
        ("wh1:123", None),
        ("wh1:x:1", None),
        (":1:2", None),
    ],
)
def test_a_holder_names_host_pid_and_start(text: str, parsed: tuple[str, int, int] | None) -> None:
    assert parse_holder(text) == parsed


def test_dead_holders_are_this_hosts_gone_or_reused_pids_only() -> None:
    running = {10: 500, 11: 700}  # pid -> start ticks
    holders = [
        holder_name("wh1", 10, 500),  # alive
        holder_name("wh1", 11, 600),  # pid 11 now names a newer process: the holder is gone
        holder_name("wh1", 12, 800),  # no such process
        holder_name("wh2", 12, 800),  # another host: its lease decides
        "garbage",
    ]
    assert dead_holders(holders, "wh1", running.get) == ["wh1:11:600", "wh1:12:800"]


def test_start_ticks_read_past_a_command_name_with_spaces() -> None:
    stat = "42 (a b) c) S 1 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 98765 1 2 3"
    assert start_ticks(stat) == 98765
    assert start_ticks("42 (x) S 1") is None
    assert process_started(1) is not None and process_started(2**22 + 1) is None


def test_only_a_full_look_that_finds_nothing_moves_the_watermark(tmp_path: Path) -> None:
    s = OcrSettings(tmp_path, OcrTool(("ocrmypdf",), {}), scan_margin_s=3600, full_scan_s=600)
    scan = Scan()
    assert scan.since_now(0.0) == ""
    scan.found_none("2025-01-01T00:00:00Z", 1e9, 0.0, s)  # a partial look: no change
    assert (scan.since, scan.full_due) == ("", 0.0)
    scan.found_none("", 1_735_693_200.0, 10.0, s)  # 2025-01-01T01:00:00Z
    assert [scan.since_now(t) for t in (10.0, 609.0, 610.0)] == ["2025-01-01T00:00:00Z"] * 2 + [""]
