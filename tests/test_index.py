"""The warehouse document index behaves the same on SQLite and on PostgreSQL: what it
stores, what it stores only once however many workers race, and how it fails.

Every backend test runs against both: the SQLite file in a temporary archive and a
fresh database in a private PostgreSQL cluster (``tests/support/postgres.py``).
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import pytest

from sync.errors import ConfigError, WarehouseIndexError
from sync.localbroker import free_port
from sync.warehouse.index import DocumentIndex, StoredDocument, open_index, redacted_dsn
from tests.support.postgres import Postgres
from tests.support.site import REPO, SOHOA, Site, write_toml
from tests.support.sync import spool_documents, warehouse_workers

DOC = StoredDocument(
    doc_id="doc-0001",
    device="dev-ix-01",
    ciphertext_sha256="c" * 64,
    stored_at="2024-05-12T08:30:00Z",
    bytes=123_456,
    pages=3,
    pdf_sha256="p" * 64,
    path="/archive/docs/dev-ix-01/doc-0001/document.pdf",
    dossier_code="000.00.20.H56-230512-0003",
    doc_type="KQ.G15.000031",
)
SECRET = "s3cret-pw"
T = TypeVar("T")


@pytest.fixture(params=["sqlite", "postgresql"])
def spec(request: pytest.FixtureRequest) -> str:
    """``[warehouse] index`` for each backend: "sqlite", or a fresh database's URL."""
    return "sqlite" if request.param == "sqlite" else str(request.getfixturevalue("postgres_db"))


@pytest.fixture
def opener(spec: str, tmp_path: Path) -> Iterator[Callable[[], DocumentIndex]]:
    """Opens another index object on the same store (as another process would)."""
    opened: list[DocumentIndex] = []

    def open_one() -> DocumentIndex:
        opened.append(open_index(spec, tmp_path / "archive"))
        return opened[-1]

    yield open_one
    for index in opened:
        index.close()


@pytest.fixture
def index(opener: Callable[[], DocumentIndex]) -> DocumentIndex:
    return opener()


def doc(n: int) -> StoredDocument:
    return replace(DOC, doc_id=f"doc-{n:04d}")


def race(workers: list[Callable[[], T]]) -> list[T]:
    """Run every worker in its own thread, released together; their results."""
    start = threading.Barrier(len(workers))
    results: list[T | None] = [None] * len(workers)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        start.wait()
        try:
            results[i] = workers[i]()
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(workers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and not any(t.is_alive() for t in threads)
    return [r for r in results if r is not None]


# -- what is stored ------------------------------------------------------------------


def test_a_stored_document_reads_back_whole(index: DocumentIndex) -> None:
    assert index.add(DOC) is True
    assert index.get(DOC.device, DOC.doc_id) == DOC
    assert index.all() == [DOC]
    assert index.get(DOC.device, "doc-9999") is None
    assert index.get("dev-other", DOC.doc_id) is None


@pytest.mark.parametrize(
    ("signed_by", "valid", "problem"),
    [
        ("Nguyễn Thị Thu Hà", True, None),
        ("Nguyễn Thị Thu Hà", False, "the signer's certificate is revoked"),
        (None, None, None),
    ],
)
def test_a_signature_verdict_reads_back_as_stored_and_listed(
    index: DocumentIndex, signed_by: str | None, valid: bool | None, problem: str | None
) -> None:
    signed = replace(DOC, signed_by=signed_by, signature_valid=valid, signature_problem=problem)
    index.add(signed)
    [listed] = index.all()
    want = {"signed_by": signed_by, "signature_valid": valid, "signature_problem": problem}
    got = listed.to_json()
    assert {k: got[k] for k in want} == want
    assert isinstance(got["signature_valid"], bool | None)  # true/false in JSON, not 1/0


def test_a_document_without_dossier_code_or_type_reads_back_with_none(
    index: DocumentIndex,
) -> None:
    bare = replace(DOC, dossier_code=None, doc_type=None)
    index.add(bare)
    assert index.all() == [bare]


@pytest.mark.parametrize(
    ("second", "added", "stored"),
    [
        (DOC, False, [DOC]),  # the same envelope again: a resend
        (replace(DOC, ciphertext_sha256="d" * 64), False, [DOC]),  # another envelope, same id
        (replace(DOC, stored_at="2030-01-01T00:00:00Z"), False, [DOC]),  # a later retry
        (replace(DOC, device="dev-ix-02"), True, [DOC, replace(DOC, device="dev-ix-02")]),
    ],
    ids=["same-envelope", "other-envelope", "later-retry", "other-device"],
)
def test_a_device_and_document_id_is_stored_once(
    index: DocumentIndex, second: StoredDocument, added: bool, stored: list[StoredDocument]
) -> None:
    assert index.add(DOC) is True
    assert index.add(second) is added
    assert sorted(index.all(), key=lambda d: d.device) == stored


def test_documents_are_listed_in_stored_order_then_by_id_in_byte_order(
    index: DocumentIndex,
) -> None:
    docs = [
        replace(DOC, doc_id="doc-b", stored_at="2024-05-12T08:30:01Z"),
        replace(DOC, doc_id="doc-a", stored_at="2024-05-12T08:30:01Z"),
        replace(DOC, doc_id="doc-B", stored_at="2024-05-12T08:30:01Z"),
        replace(DOC, doc_id="doc-z", stored_at="2024-05-12T08:30:00Z"),
    ]
    for d in docs:
        index.add(d)
    assert [d.doc_id for d in index.all()] == ["doc-z", "doc-B", "doc-a", "doc-b"]


def test_what_one_index_object_stored_another_sees(
    opener: Callable[[], DocumentIndex],
) -> None:
    first, second = opener(), opener()
    first.add(DOC)
    assert second.get(DOC.device, DOC.doc_id) == DOC


# -- exactly once, under races ---------------------------------------------------------


def test_threads_sharing_one_index_store_a_document_exactly_once(index: DocumentIndex) -> None:
    results = race([lambda: index.add(DOC)] * 8)
    assert sorted(results) == [False] * 7 + [True]
    assert index.all() == [DOC]


def test_two_processes_racing_store_a_document_exactly_once(
    opener: Callable[[], DocumentIndex],
) -> None:
    first, second = opener(), opener()
    results = race([lambda: first.add(DOC), lambda: second.add(DOC)] * 4)
    assert sorted(results) == [False] * 7 + [True]
    assert first.all() == second.all() == [DOC]


def test_many_workers_storing_overlapping_documents_store_each_once(
    opener: Callable[[], DocumentIndex],
) -> None:
    shared, other = opener(), opener()
    batch = [doc(n) for n in range(40)]

    def store_all(index: DocumentIndex) -> Callable[[], int]:
        return lambda: sum(index.add(d) for d in batch)

    inserted = race([store_all(shared)] * 3 + [store_all(other)] * 3)
    assert sum(inserted) == len(batch)  # each add reported as new exactly once
    assert sorted(shared.all(), key=lambda d: d.doc_id) == batch


def test_warehouse_processes_starting_together_all_open_the_index(
    opener: Callable[[], DocumentIndex],
) -> None:
    """Schema creation on a fresh store must not trip over itself."""
    opened = race([opener] * 6)
    assert len(opened) == 6 and all(i.all() == [] for i in opened)


# -- how it fails ------------------------------------------------------------------------


def unreachable(server: Postgres) -> str:
    port = free_port()  # nothing listens there
    return f"postgresql://sohoa:{SECRET}@127.0.0.1:{port}/sohoa"


def wrong_password(server: Postgres) -> str:
    return server.dsn(password=SECRET)


@pytest.mark.parametrize(
    ("dsn_for", "reason"),
    [(unreachable, "Connection refused"), (wrong_password, "password authentication failed")],
)
def test_a_database_it_cannot_reach_is_one_clear_error_without_the_password(
    postgres_server: Postgres, tmp_path: Path, dsn_for: Callable[[Postgres], str], reason: str
) -> None:
    dsn = dsn_for(postgres_server)
    with pytest.raises(WarehouseIndexError) as caught:
        open_index(dsn, tmp_path)
    line = caught.value.line()
    assert line.startswith(f"error: the warehouse index at {redacted_dsn(dsn)} is unreachable (")
    assert line.endswith(" — check [warehouse] index and that PostgreSQL runs")
    assert reason in line and "\n" not in line
    assert SECRET not in line


def test_a_connection_the_server_dropped_costs_one_error_then_reconnects(
    postgres_server: Postgres, postgres_db: str, tmp_path: Path
) -> None:
    index = open_index(postgres_db, tmp_path)
    index.add(DOC)
    database = postgres_db.rsplit("/", 1)[1]
    postgres_server.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        f" WHERE datname = '{database}' AND pid <> pg_backend_pid()"
    )
    with pytest.raises(WarehouseIndexError, match="is unreachable"):
        index.get(DOC.device, DOC.doc_id)
    assert index.get(DOC.device, DOC.doc_id) == DOC
    index.close()


@pytest.mark.parametrize(
    ("spec", "shown"),
    [
        ("mysql://root:hunter2@db/x", "'mysql://db/x'"),
        ("host=db password=hunter2", "'(not shown: it may hold a password)'"),
        ("sqlite3", "'sqlite3'"),
    ],
)
def test_an_index_that_is_neither_sqlite_nor_postgresql_is_a_config_error(
    tmp_path: Path, spec: str, shown: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        open_index(spec, tmp_path)
    assert caught.value.message == (
        f'[warehouse] index = {shown} is not "sqlite" or a postgresql:// URL'
    )
    assert "hunter2" not in caught.value.line()


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        ("sqlite", "sqlite"),
        ("postgresql://u:pw@db.lan:5432/sohoa", "postgresql://db.lan:5432/sohoa"),
        ("postgres://u:pw@db/sohoa?sslmode=require&password=x", "postgres://db/sohoa"),
        ("postgresql:///sohoa", "postgresql:///sohoa"),
        ("postgresql://u:p@[::1]:5432,db2/sohoa", "postgresql://[::1]:5432,db2/sohoa"),
        # a password with a raw '/', '#' or '?' could be split another way: hide it all
        ("postgresql://u:pa/ss@db/sohoa", "postgresql://(not shown)"),
        ("postgresql://u:pa#ss@db/sohoa", "postgresql://(not shown)"),
        ("postgresql://u:123?x@db/sohoa", "postgresql://(not shown)"),
        ("postgresql://db/sohoa?password=a@b", "postgresql://(not shown)"),
    ],
)
def test_a_dsn_in_messages_and_logs_has_no_credentials(dsn: str, shown: str) -> None:
    assert redacted_dsn(dsn) == shown


# -- end to end ----------------------------------------------------------------------------


def test_documents_synced_to_a_postgresql_warehouse_are_stored_and_listed(
    site: Site, postgres_db: str
) -> None:
    """Real broker, real ingest workers, real device sync, the index on PostgreSQL."""
    wh = replace(site.warehouse, warehouse=replace(site.warehouse.warehouse, index=postgres_db))
    write_toml(
        site.warehouse_toml,
        wh.home,
        "warehouse",
        site.broker.url(),
        warehouse={"index": postgres_db},
    )
    sealed = spool_documents(site.device, 3, prefix="pg")
    with warehouse_workers(wh, 2, tag="pg"):
        sync = site.run("sync", "--once", "--timeout", "60")
    assert sync.returncode == 0, sync.stderr

    listing = json.loads(site.run("warehouse", "ls", "--json", side="warehouse", check=True).stdout)
    stored = {d["doc_id"]: d for d in listing["documents"]}
    assert sorted(stored) == [s.doc_id for s in sealed]
    for s in sealed:
        assert stored[s.doc_id]["device"] == site.device.device.id
        assert stored[s.doc_id]["pdf_sha256"] == s.pdf_sha256
        assert stored[s.doc_id]["ciphertext_sha256"] == s.ciphertext_sha256
    assert not (wh.path(wh.warehouse.archive) / "index.db").exists()  # nothing went to SQLite


def test_warehouse_ls_on_an_unreachable_index_fails_in_one_line(tmp_path: Path) -> None:
    dsn = f"postgresql://sohoa:{SECRET}@127.0.0.1:{free_port()}/sohoa"
    cfg = write_toml(
        tmp_path / "warehouse.toml",
        tmp_path,
        "warehouse",
        "mqtt://127.0.0.1:1883",
        warehouse={"index": dsn},
    )
    env = {**os.environ, "SOHOA_CONFIG": str(cfg)}
    env.pop("SOHOA_HOME", None)
    proc = subprocess.run(
        [*SOHOA, "warehouse", "ls"], env=env, capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert (proc.returncode, proc.stdout) == (10, "")
    assert proc.stderr.startswith(
        f"error: the warehouse index at {redacted_dsn(dsn)} is unreachable ("
    )
    assert proc.stderr.count("\n") == 1 and SECRET not in proc.stderr
