"""`sohoa audit verify` on a real spool: intact after scan and sync, and naming
the entry where the chain breaks after the audit table was tampered with."""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.capture.samples import make_page, receipt_page
from agent.cli import main
from agent.services.warehouse import WarehouseWorkers
from sync.spool.audit import AuditEntry, chain_entry, entry_hash, verify_chain
from tests.support.mqtt import Broker
from tests.support.site import make_site

DOSSIER = "000.00.20.H56-230512-0003"


@pytest.fixture(scope="module")
def synced_home(
    tmp_path_factory: pytest.TempPathFactory, mosquitto_session: Broker
) -> Iterator[Path]:
    """A device home whose spool went through one real scan and one real sync."""
    tmp = tmp_path_factory.mktemp("audit")
    site = make_site(tmp, mosquitto_session, device_id="dev-audit-01")
    pages = tmp / "pages"
    pages.mkdir()
    for i, p in enumerate(
        [
            receipt_page(DOSSIER),
            make_page(["TỜ KHAI"], seed=1),
            make_page([], codes=[("CODE128", "PATCHT")], seed=2),
            make_page(["ĐƠN ĐỀ NGHỊ"], seed=3),
        ]
    ):
        p.save(pages / f"p{i}.png", dpi=(300, 300))
    with WarehouseWorkers.from_config(site.warehouse, name="audit") as workers:
        assert workers.wait_ready(15)
        site.run("scan", "--from", str(pages), "--json", check=True)
        site.run("sync", "--once", "--timeout", "60", check=True)
    yield site.device.home


def verify(home: Path, tmp: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    toml = tmp / "verify.toml"
    toml.write_text(f'home = "{home}"\n')
    code = main(["--config", str(toml), "audit", "verify"], env={})
    out, err = capsys.readouterr()
    return code, out, err


def test_audit_log_of_a_real_scan_and_sync_verifies(
    synced_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conn = sqlite3.connect(synced_home / "spool" / "spool.db")
    rows = [
        (k, json.loads(b)) for k, b in conn.execute("SELECT kind, body FROM audit ORDER BY seq")
    ]
    conn.close()
    kinds = [k for k, _ in rows]
    assert kinds[:3] == ["batch", "document", "document"]
    # documents go up together: each one's 'sent' comes before its receipt
    events = [(k, body["doc_id"]) for k, body in rows[3:]]
    docs = {doc for _, doc in events}
    assert len(docs) == 2
    assert sorted(events) == sorted([(k, d) for d in docs for k in ("receipt", "sent")])
    assert all(events.index(("sent", d)) < events.index(("receipt", d)) for d in docs)
    assert verify(synced_home, tmp_path, capsys) == (0, "audit log intact: 7 entries\n", "")


def edit_body(c: sqlite3.Connection) -> None:
    body = c.execute("SELECT body FROM audit WHERE seq=3").fetchone()[0]
    c.execute("UPDATE audit SET body=? WHERE seq=3", (body.replace('"d', '"x', 1),))


def edit_body_and_rehash(c: sqlite3.Connection) -> None:
    """A careful forger: rewrites entry 3 and its own hash; entry 4 still points at the old one."""
    seq, ts, kind, body, prev = c.execute(
        "SELECT seq, ts, kind, body, prev FROM audit WHERE seq=3"
    ).fetchone()
    forged = {**json.loads(body), "pdf_sha256": "0" * 64}
    c.execute(
        "UPDATE audit SET body=?, hash=? WHERE seq=3",
        (json.dumps(forged), entry_hash(prev, seq, ts, kind, forged)),
    )


def delete_row(c: sqlite3.Connection) -> None:
    c.execute("DELETE FROM audit WHERE seq=4")


def swap_rows(c: sqlite3.Connection) -> None:
    c.execute("UPDATE audit SET seq=-1 WHERE seq=2")
    c.execute("UPDATE audit SET seq=2 WHERE seq=3")
    c.execute("UPDATE audit SET seq=3 WHERE seq=-1")


def cut_tail(c: sqlite3.Connection) -> None:
    """The last receipt entry cut off the end: the chain alone still links."""
    c.execute("DELETE FROM audit WHERE seq=7")


def edit_time(c: sqlite3.Connection) -> None:
    c.execute("UPDATE audit SET ts='2020-01-01T00:00:00Z' WHERE seq=6")


@pytest.mark.parametrize(
    "tamper, first_break",
    [
        (edit_body, "entry 3: entry was modified after it was written"),
        (edit_body_and_rehash, "entry 4: link to the previous entry is broken"),
        (delete_row, "entry 5: entry 4 is missing"),
        (swap_rows, "entry 2: link to the previous entry is broken"),
        (edit_time, "entry 6: entry was modified after it was written"),
        (cut_tail, "entry 7: receipt of document {doc} is missing from the log"),
    ],
    ids=[
        "edited body",
        "edited and rehashed",
        "deleted row",
        "reordered rows",
        "edited time",
        "cut tail",
    ],
)
def test_tampered_audit_log_fails_naming_the_entry_where_it_breaks(
    synced_home: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    tamper: Callable[[sqlite3.Connection], None],
    first_break: str,
) -> None:
    home = tmp_path / "home"
    shutil.copytree(synced_home / "spool", home / "spool")
    conn = sqlite3.connect(home / "spool" / "spool.db", isolation_level=None)
    last_doc = json.loads(conn.execute("SELECT body FROM audit WHERE seq=7").fetchone()[0])[
        "doc_id"
    ]
    tamper(conn)
    conn.close()
    first_break = first_break.format(doc=last_doc)
    code, out, err = verify(home, tmp_path, capsys)
    assert code != 0
    assert out.splitlines()[0] == first_break
    assert (
        err
        == f"error: audit chain broken at {first_break} — keep the device as it is and report it to provincial IT\n"
    )


def entry(prev: AuditEntry | None, kind: str, **body: object) -> AuditEntry:
    return chain_entry(prev, "2024-01-01T00:00:00Z", kind, body)


def chain(*specs: tuple[str, dict[str, object]]) -> list[AuditEntry]:
    out: list[AuditEntry] = []
    for kind, body in specs:
        out.append(entry(out[-1] if out else None, kind, **body))
    return out


@pytest.mark.parametrize(
    "specs, problems",
    [
        (
            [
                ("batch", {"batch_id": "b1", "page_sha256": ["p1", "p2"]}),
                ("document", {"doc_id": "d1", "batch_id": "b1", "page_sha256": ["p1"]}),
                ("sent", {"doc_id": "d1"}),
                ("receipt", {"doc_id": "d1"}),
                ("purge", {"doc_id": "d1"}),
            ],
            [],
        ),
        (
            [("document", {"doc_id": "d1", "batch_id": "b9", "page_sha256": ["p1"]})],
            [(1, "document refers to a batch not in the log")],
        ),
        (
            [
                ("batch", {"batch_id": "b1", "page_sha256": ["p1"]}),
                ("document", {"doc_id": "d1", "batch_id": "b1", "page_sha256": ["p7"]}),
            ],
            [(2, "document holds pages its batch never scanned")],
        ),
        ([("receipt", {"doc_id": "d5"})], [(1, "receipt for a document not in the log")]),
        (
            [
                ("recovery", {"doc_id": "d5", "action": "finished"}),
                ("recovery", {"doc_id": "d6", "action": "adopted"}),
                ("sent", {"doc_id": "d5"}),
                ("receipt", {"doc_id": "d6"}),
            ],
            [],
        ),
        (
            [
                ("recovery", {"doc_id": "d5", "action": "lost_before_seal"}),
                ("sent", {"doc_id": "d5"}),
            ],
            [(2, "sent for a document not in the log")],
        ),
    ],
    ids=[
        "whole life",
        "unknown batch",
        "foreign pages",
        "receipt only",
        "recovered then synced",
        "lost then sent",
    ],
)
def test_cross_links_between_batch_document_and_receipt_are_checked(
    specs: list[tuple[str, dict[str, object]]], problems: list[tuple[int, str]]
) -> None:
    assert [(p.seq, p.reason) for p in verify_chain(chain(*specs))] == problems
