"""One batch from pages to the provincial warehouse, every part real, driven
through the `sohoa` command line as outside scripts drive it."""

from __future__ import annotations

import hashlib
import json
import subprocess
import threading
from pathlib import Path

from agent.capture.samples import make_page, receipt_page
from tests.support.pdfa import info_xmp_mismatches, pdfa_findings
from tests.support.site import SOHOA, Site

DOSSIER_A = "000.00.20.H56-230512-0003"
DOSSIER_B = "000.00.20.H56-230512-0004"
OWNER = "001090012345"
NAME = "Nguyen Van Marker"


def write_batch(folder: Path) -> None:
    folder.mkdir()
    pages = [
        receipt_page(DOSSIER_A),
        make_page(["TỜ KHAI ĐĂNG KÝ KHAI SINH", "MARKER-PLAINTEXT-7731"], seed=1),
        make_page(
            ["CCCD"], codes=[("QRCODE", f"{OWNER}||{NAME}|01011990|Nam|Ha Noi|01012021")], seed=2
        ),
        make_page([], codes=[("CODE128", "PATCHT")], seed=3),
        make_page(["GIẤY CHỨNG SINH"], seed=4),
        receipt_page(DOSSIER_B),
        make_page(["ĐƠN ĐỀ NGHỊ"], seed=5),
    ]
    for i, p in enumerate(pages):
        p.save(folder / f"p{i:02d}.png", dpi=(300, 300))


def scan(site: Site, folder: Path) -> dict:
    proc = site.run("scan", "--from", str(folder), "--json", "--hashes", check=True)
    return json.loads(proc.stdout)


def test_batch_reaches_warehouse_exactly_once_with_identical_pdfs(
    site: Site, tmp_path: Path, warehouse_worker: threading.Event
) -> None:
    write_batch(tmp_path / "pages")
    result = scan(site, tmp_path / "pages")
    assert result["pages_in"] == 7
    assert result["separators"] == [3]
    docs = result["documents"]
    assert [(d["dossier_code"], d["owner_id"], d["pages"]) for d in docs] == [
        (DOSSIER_A, OWNER, 3),
        (DOSSIER_A, OWNER, 1),
        (DOSSIER_B, None, 2),
    ]
    status = json.loads(site.run("status", "--json", check=True).stdout)
    assert status["by_state"]["queued"] == 3
    assert status["pending_docs"] == 3 and status["pending_bytes"] == sum(d["bytes"] for d in docs)

    sync = site.run("sync", "--once", "--timeout", "60")
    assert sync.returncode == 0, sync.stderr

    listing = json.loads(site.run("warehouse", "ls", "--json", side="warehouse", check=True).stdout)
    stored = {d["doc_id"]: d for d in listing["documents"]}
    assert set(stored) == {d["doc_id"] for d in docs}
    for d in docs:
        pdf = Path(stored[d["doc_id"]]["path"]).read_bytes()
        assert hashlib.sha256(pdf).hexdigest() == d["pdf_sha256"]
        assert pdfa_findings(pdf) + info_xmp_mismatches(pdf) == []  # archived as PDF/A-2b
        assert stored[d["doc_id"]]["device"] == "dev-test-01"
        assert stored[d["doc_id"]]["pages"] == d["pages"]
    status = json.loads(site.run("status", "--json", check=True).stdout)
    assert status["by_state"]["stored"] == 3 and status["pending_docs"] == 0 and status["last_sync"]

    again = site.run("sync", "--once", "--timeout", "10")
    assert again.returncode == 0
    listing2 = json.loads(
        site.run("warehouse", "ls", "--json", side="warehouse", check=True).stdout
    )
    assert len(listing2["documents"]) == 3


def test_receipt_signed_by_wrong_key_leaves_document_pending(site: Site, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from agent.services.warehouse import serve_warehouse  # noqa: F401 - same code path, other key below
    from sync.keys import WarehousePrivate, load_warehouse_private
    from sync.mqtt.link import Link
    from sync.mqtt.settings import LinkSettings, shared_subscription
    from sync.protocol import INGEST_FILTER
    from sync.warehouse.index import SqliteIndex
    from sync.warehouse.ingest import Ingest, IngestSettings

    write_batch(tmp_path / "pages")
    docs = scan(site, tmp_path / "pages")["documents"]
    real = load_warehouse_private(site.warehouse.path(site.warehouse.warehouse.private_key))
    impostor = WarehousePrivate(generations=real.generations, signing=Ed25519PrivateKey.generate())
    wh = site.warehouse
    index = SqliteIndex(wh.path(wh.warehouse.archive) / "index.db")
    ingest = Ingest(
        IngestSettings(wh.path(wh.warehouse.archive), wh.path(wh.warehouse.devices)),
        impostor,
        index,
    )
    stop, subscribed = threading.Event(), threading.Event()

    def serve() -> None:
        link = Link(LinkSettings.from_config(wh.broker, "impostor", clean_start=True))
        link.connect()
        link.subscribe(shared_subscription("ingest", INGEST_FILTER))
        subscribed.set()
        while not stop.is_set():
            msg = link.get(0.2)
            if msg is not None:
                for a in ingest.handle(msg.topic, msg.payload):
                    link.publish(a.topic, a.payload)
        link.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    assert subscribed.wait(15), "the impostor warehouse did not subscribe"
    proc = site.run("sync", "--once", "--timeout", "25")
    stop.set()
    t.join(5)
    assert proc.returncode == 9
    assert "without a verified warehouse receipt" in proc.stderr
    assert len(index.all()) == 3  # the documents did arrive ...
    status = json.loads(site.run("status", "--json", check=True).stdout)
    assert status["by_state"]["stored"] == 0  # ... but the device never saw a receipt it trusts
    assert status["pending_docs"] == 3 == len(docs)


def test_spool_never_holds_personal_data_or_plaintext(site: Site, tmp_path: Path) -> None:
    write_batch(tmp_path / "pages")
    scan(site, tmp_path / "pages")
    markers = [
        DOSSIER_A.encode(),
        DOSSIER_B.encode(),
        OWNER.encode(),
        NAME.encode(),
        b"%PDF-",
        b"SOHOAPT1",
    ]
    files = [p for p in site.device.home.rglob("*") if p.is_file() and "keys" not in p.parts]
    assert any(p.suffix == ".env" for p in files)
    for p in files:
        data = p.read_bytes()
        for m in markers:
            assert m not in data, f"{m!r} found in {p}"


def test_every_command_has_help() -> None:
    for args in (
        ["--help"],
        ["scan", "--help"],
        ["status", "--help"],
        ["sync", "--help"],
        ["warehouse", "serve", "--help"],
        ["warehouse", "ls", "--help"],
        ["warehouse", "search", "--help"],
        ["warehouse", "report", "--help"],
        ["warehouse", "export", "--help"],
        ["warehouse", "ocr", "--help"],
        ["fleet", "--help"],
        ["keys", "init", "--help"],
        ["keys", "enroll", "--help"],
        ["sheets", "--help"],
        ["audit", "verify", "--help"],
        ["doctor", "--help"],
        ["demo", "--help"],
    ):
        proc = subprocess.run([*SOHOA, *args], capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0 and "usage:" in proc.stdout, args
