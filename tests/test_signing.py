"""Certified copies, every part real: a SoftHSM2 token with a key and certificate from a
test CA, `sohoa scan --certify --pin-stdin` through the capture path, sync through
mosquitto to a warehouse worker, and the archived PDF checked by two independent
validators (pyHanko and poppler's pdfsig). Token problems keep the batch unsigned
and flagged, never half-signed, never lost."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyhanko.keys import load_cert_from_pemder
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation import validate_pdf_signature
from pyhanko.sign.validation.status import SignatureCoverageLevel
from pyhanko_certvalidator import ValidationContext

from agent.capture.samples import make_page, receipt_page
from agent.services.warehouse import WarehouseWorkers
from sync.certregister import open_entry
from sync.keys import load_warehouse_private
from tests.support.mqtt import Broker
from tests.support.pdfa import signed_pdfa_findings
from tests.support.site import Site, make_site
from tests.support.softhsm import SIGNER_NAME, SIGNER_TITLE, Token
from tests.support.tsa import timestamp_authority

DOSSIER = "000.00.20.H56-230512-0003"
OWNER = "001090012345"


def write_batch(folder: Path) -> None:
    """Two documents: a receipt with its form, and a second dossier's one page."""
    folder.mkdir()
    pages = [
        receipt_page(DOSSIER),
        make_page(["GIẤY KHAI SINH", "BẢN CHÍNH"], seed=1),
        receipt_page("000.00.20.H56-230512-0004"),
    ]
    for i, p in enumerate(pages):
        p.save(folder / f"p{i:02d}.png", dpi=(300, 300))


def with_signing(site: Site, token: Token, sign: dict[str, str] | None = None) -> Site:
    """The site's device with a [sign] section (``sign`` overrides keys of it), its
    warehouse trusting the test CA."""
    section = {**token.sign_section(), **(sign or {})}
    site.device_toml.write_text(
        site.device_toml.read_text()
        + "[sign]\n"
        + "".join(f"{k} = {json.dumps(v)}\n" for k, v in section.items())
    )
    roots = (token.ca_cert,)
    warehouse = dataclasses.replace(
        site.warehouse, warehouse=dataclasses.replace(site.warehouse.warehouse, signing_roots=roots)
    )
    return dataclasses.replace(site, warehouse=warehouse)


@pytest.fixture
def signing_site(tmp_path: Path, mosquitto: Broker, softhsm_token: Token) -> Site:
    return with_signing(make_site(tmp_path, mosquitto), softhsm_token)


@pytest.fixture
def signing_worker(signing_site: Site) -> Iterator[WarehouseWorkers]:
    with WarehouseWorkers.from_config(signing_site.warehouse, name="t") as workers:
        assert workers.wait_ready(15), "warehouse worker did not connect"
        yield workers


def certify(site: Site, folder: Path, pin: str) -> subprocess.CompletedProcess[str]:
    args = ("scan", "--from", str(folder), "--json", "--hashes", "--certify", "--pin-stdin")
    return site.run(*args, stdin=pin + "\n")


def pyhanko_status(pdf: bytes, token: Token) -> tuple[bool, bool, bool, bool]:
    """pyHanko's verdict: intact, valid, trusted (to the test CA), whole file covered."""
    sig = PdfFileReader(io.BytesIO(pdf)).embedded_signatures[0]
    root = load_cert_from_pemder(str(token.ca_cert))
    status = validate_pdf_signature(sig, ValidationContext(trust_roots=[root]))
    whole = status.coverage == SignatureCoverageLevel.ENTIRE_FILE
    return status.intact, status.valid, status.trusted, whole


def pdfsig(path: Path) -> str:
    """poppler's report (it has no trust store here, so only integrity is asked)."""
    return subprocess.run(["pdfsig", str(path)], capture_output=True, text=True).stdout


def test_certified_copy_is_signed_at_the_counter_and_valid_at_the_warehouse(
    signing_site: Site, signing_worker: WarehouseWorkers, softhsm_token: Token, tmp_path: Path
) -> None:
    site = signing_site
    write_batch(tmp_path / "pages")
    proc = certify(site, tmp_path / "pages", softhsm_token.pin)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    docs = result["documents"]
    assert [d["certification"]["number"] for d in docs] == [1, 2]
    assert {d["certification"]["level"] for d in docs} == {"PAdES-B-B"}
    assert "unsigned" not in result["flags"] and all("unsigned" not in d["flags"] for d in docs)

    assert site.run("sync", "--once", "--timeout", "60").returncode == 0
    listing = json.loads(site.run("warehouse", "ls", "--json", side="warehouse", check=True).stdout)
    stored = {d["doc_id"]: d for d in listing["documents"]}
    assert {(d["signed_by"], d["signature_valid"]) for d in stored.values()} == {
        (SIGNER_NAME, True)
    }
    text = site.run("warehouse", "ls", side="warehouse", check=True).stdout
    assert text.count(f"ký số hợp lệ / signed, valid: {SIGNER_NAME}") == len(docs)
    for d in docs:
        path = Path(stored[d["doc_id"]]["path"])
        pdf = path.read_bytes()
        assert hashlib.sha256(pdf).hexdigest() == d["pdf_sha256"]  # the original, untouched
        assert pyhanko_status(pdf, softhsm_token) == (True, True, True, True)
        report = pdfsig(path)
        assert "Signature is Valid." in report and "Total document signed" in report, report
        assert SIGNER_NAME in report
        block = subprocess.run(  # the visible block, on the last page
            ["pdftotext", "-f", str(d["pages"]), "-l", str(d["pages"]), str(path), "-"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        number = d["certification"]["number"]
        for text in (
            "CHỨNG THỰC BẢN SAO ĐÚNG VỚI BẢN CHÍNH",
            f"Số chứng thực: {number}",
            f"Quyển số: {d['certification']['book']}",
            f"Mã tài liệu: {d['doc_id']}",
            f"Người chứng thực: {SIGNER_NAME}",
            f"Chức vụ: {SIGNER_TITLE}",
        ):
            assert text in block, block
        assert signed_pdfa_findings(pdf) == []
        meta = json.loads((path.parent / "metadata.json").read_text())
        assert meta["certification"]["signer"] == SIGNER_NAME
        assert meta["certification"]["title"] == SIGNER_TITLE
        assert meta["certification"]["doc_id"] == d["doc_id"]
        assert meta["certification"]["book"].endswith("-SCT/BS")


def test_a_changed_byte_in_the_archived_copy_fails_both_validators(
    signing_site: Site, signing_worker: WarehouseWorkers, softhsm_token: Token, tmp_path: Path
) -> None:
    site = signing_site
    write_batch(tmp_path / "pages")
    assert certify(site, tmp_path / "pages", softhsm_token.pin).returncode == 0
    assert site.run("sync", "--once", "--timeout", "60").returncode == 0
    listing = json.loads(site.run("warehouse", "ls", "--json", side="warehouse", check=True).stdout)
    pdf = Path(listing["documents"][0]["path"]).read_bytes()
    at = pdf.index(b"stream\n") + 200  # inside the first page's image
    tampered = tmp_path / "tampered.pdf"
    tampered.write_bytes(pdf[:at] + bytes([pdf[at] ^ 0x01]) + pdf[at + 1 :])

    intact, _, _, _ = pyhanko_status(tampered.read_bytes(), softhsm_token)
    assert not intact
    report = pdfsig(tampered)
    assert "Signature is Valid." not in report and "Digest Mismatch" in report, report


def test_pin_and_signer_never_reach_the_device_disk_in_clear(
    signing_site: Site, softhsm_token: Token, tmp_path: Path
) -> None:
    site = signing_site
    write_batch(tmp_path / "pages")
    proc = site.run(
        "--verbose",
        "scan",
        "--from",
        str(tmp_path / "pages"),
        "--json",
        "--certify",
        "--pin-stdin",
        stdin=softhsm_token.pin + "\n",
    )
    assert proc.returncode == 0, proc.stderr
    docs = json.loads(proc.stdout)["documents"]
    assert softhsm_token.pin not in proc.stderr + proc.stdout
    secrets = [softhsm_token.pin, SIGNER_NAME, "Nguy", SIGNER_TITLE, DOSSIER]
    home = site.device.home
    for f in (p for p in home.rglob("*") if p.is_file()):
        data = f.read_bytes()
        for s in secrets:
            assert s.encode() not in data, f"{s!r} in clear in {f.relative_to(home)}"
    # the register travels sealed: the province opens it with the warehouse key
    keys = load_warehouse_private(site.warehouse.path(site.warehouse.warehouse.private_key))
    lines = (home / "spool" / "register" / "register.jsonl").read_text().splitlines()
    assert not any(d["doc_id"] in line for d in docs for line in lines)  # random ids, sealed too
    entries = [open_entry(line, keys) for line in lines]
    assert [(e["number"], e["doc_id"], e["signer"]) for e in entries] == [
        (n, d["doc_id"], SIGNER_NAME) for n, d in enumerate(docs, start=1)
    ]


@pytest.mark.parametrize(
    ("sign", "pin", "line"),
    [
        ({}, "0000-wrong", "wrong PIN for the signing token"),
        ({"module": "/usr/lib/no-such-pkcs11.so"}, None, "PKCS#11 module"),
        ({"token": "not-plugged-in"}, None, "is not plugged in"),
        ({"key": "expired"}, None, "certificate expired on"),
        ({"key": "no-such-key"}, None, "'no-such-key'"),
        ({"certificate": "/nonexistent/signer.pem"}, None, "[sign] certificate or chain"),
    ],
    ids=[
        "wrong-pin",
        "module-absent",
        "token-absent",
        "certificate-expired",
        "key-absent",
        "certificate-file-absent",
    ],
)
def test_a_batch_that_cannot_be_signed_is_kept_unsigned_and_flagged(
    tmp_path: Path,
    mosquitto: Broker,
    softhsm_token: Token,
    sign: dict[str, str],
    pin: str | None,
    line: str,
) -> None:
    site = with_signing(make_site(tmp_path, mosquitto), softhsm_token, sign)
    write_batch(tmp_path / "pages")
    proc = certify(site, tmp_path / "pages", pin or softhsm_token.pin)
    assert proc.returncode == 9, proc.stderr  # incomplete: kept, but not signed
    errors = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and line in errors[0] and " — " in errors[0], proc.stderr
    result = json.loads(proc.stdout)
    assert "unsigned" in result["flags"]
    assert [(d["flags"], d["certification"]) for d in result["documents"]] == [
        (["unsigned"], None),
        (["unsigned"], None),
    ]
    assert any(line in w for w in result["warnings"])
    status = json.loads(site.run("status", "--json", check=True).stdout)
    assert status["by_state"]["queued"] == 2  # nothing lost
    register = site.device.home / "spool" / "register" / "register.jsonl"
    assert not register.exists()  # no number was taken for a session that never opened


def test_a_dead_timestamp_authority_signs_pades_b_b_and_says_so_once(
    tmp_path: Path, mosquitto: Broker, softhsm_token: Token
) -> None:
    site = with_signing(
        make_site(tmp_path, mosquitto), softhsm_token, {"tsa_url": "http://127.0.0.1:9/tsr"}
    )
    write_batch(tmp_path / "pages")
    proc = certify(site, tmp_path / "pages", softhsm_token.pin)
    assert proc.returncode == 0, proc.stderr  # signed: a valid PAdES-B-B signature
    result = json.loads(proc.stdout)
    assert [d["certification"]["level"] for d in result["documents"]] == ["PAdES-B-B"] * 2
    notes = [w for w in result["warnings"] if "no timestamp, signed PAdES-B-B" in w]
    assert len(notes) == 1 and "http://127.0.0.1:9/tsr did not answer" in notes[0]


@pytest.mark.parametrize(
    ("sign", "line"),
    [
        ({}, "ok    signing token: 'sohoa-test' plugged in (SoftHSM project), key 'signer'"),
        (
            {"token": "not-plugged-in"},
            "FAIL  signing token: không thấy token ký số / signing token 'not-plugged-in' is"
            " not plugged in",
        ),
    ],
)
def test_doctor_says_whether_the_signing_token_is_plugged_in(
    tmp_path: Path, mosquitto: Broker, softhsm_token: Token, sign: dict[str, str], line: str
) -> None:
    site = with_signing(make_site(tmp_path, mosquitto), softhsm_token, sign)
    doctor = site.run("doctor").stdout
    assert any(x.startswith(line) for x in doctor.splitlines()), doctor


def test_certify_without_a_configured_token_refuses_before_scanning(
    site: Site, tmp_path: Path
) -> None:
    write_batch(tmp_path / "pages")
    proc = certify(site, tmp_path / "pages", "1234")
    assert proc.returncode == 4
    assert proc.stderr.strip() == (
        "error: --certify needs a signing token and [sign] module is empty"
        " — set [sign] module, token and key (see README: certified copies)"
    )
    assert json.loads(site.run("status", "--json", check=True).stdout)["pending_docs"] == 0


def test_pin_then_dossier_code_both_come_from_stdin(
    signing_site: Site, softhsm_token: Token, tmp_path: Path
) -> None:
    folder = tmp_path / "pages"
    folder.mkdir()
    make_page(["GIẤY KHAI SINH", "BẢN CHÍNH"], seed=7).save(folder / "p00.png", dpi=(300, 300))
    proc = signing_site.run(
        "scan",
        "--from",
        str(folder),
        "--json",
        "--certify",
        "--pin-stdin",
        "--dossier-stdin",
        stdin=f"{softhsm_token.pin}\n{DOSSIER}\n",
    )
    assert proc.returncode == 0, proc.stderr
    [doc] = json.loads(proc.stdout)["documents"]
    assert (doc["dossier_code"], doc["certification"]["number"]) == (DOSSIER, 1)


def test_pin_stdin_without_certify_is_refused_in_one_line(site: Site, tmp_path: Path) -> None:
    write_batch(tmp_path / "pages")
    proc = site.run("scan", "--from", str(tmp_path / "pages"), "--pin-stdin", stdin="1234\n")
    assert proc.returncode == 2
    assert (
        proc.stderr.strip() == "error: --pin-stdin is only for --certify — add --certify or drop it"
    )


def test_the_warehouse_timestamps_a_certified_copy_on_arrival(
    signing_site: Site, softhsm_token: Token, tmp_path: Path
) -> None:
    site = signing_site
    write_batch(tmp_path / "pages")
    proc = certify(site, tmp_path / "pages", softhsm_token.pin)
    assert proc.returncode == 0, proc.stderr
    docs = json.loads(proc.stdout)["documents"]
    with timestamp_authority(softhsm_token) as url:
        wh = site.warehouse.warehouse
        warehouse = dataclasses.replace(
            site.warehouse, warehouse=dataclasses.replace(wh, tsa_url=url)
        )
        with WarehouseWorkers.from_config(warehouse, name="t") as workers:
            assert workers.wait_ready(15), "warehouse worker did not connect"
            assert site.run("sync", "--once", "--timeout", "60").returncode == 0
    listing = json.loads(site.run("warehouse", "ls", "--json", side="warehouse", check=True).stdout)
    for d in listing["documents"]:
        original = Path(d["path"])
        lta = original.with_name("document.lta.pdf").read_bytes()
        assert lta.startswith(original.read_bytes()) and len(lta) > original.stat().st_size
        reader = PdfFileReader(io.BytesIO(lta))
        assert [s.field_name for s in reader.embedded_signatures][-1] != "ChungThuc"
    assert {
        hashlib.sha256(Path(d["path"]).read_bytes()).hexdigest() for d in listing["documents"]
    } == {d["pdf_sha256"] for d in docs}
