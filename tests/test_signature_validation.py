"""The warehouse's verdict on a signed copy, and the device's signing session, over a
real SoftHSM2 token: trusted, untrusted, revoked, altered and expired signatures each
get their one-line reason; a timestamp authority that does not answer leaves
PAdES-B-B; the register numbers copies in order and voids nothing that succeeded."""

from __future__ import annotations

import io
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from pyhanko.keys import load_cert_from_pemder
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation import validate_pdf_signature, validate_pdf_timestamp
from pyhanko_certvalidator import ValidationContext

from agent.capture import sealing
from agent.capture.pdf import PdfMetadata, encode_page, write_pdf
from agent.capture.pipeline import SealSettings, capture_batch
from agent.capture.register import CertificationRegister, next_number
from agent.capture.signing import (
    RefusedCertifier,
    SigningError,
    TokenCertifier,
    open_certifier,
    signed_ranges,
)
from agent.config import CaptureConfig, SignConfig
from device.barcodes import ZbarReader
from device.scanner import ScannedPage
from sync.certregister import open_entry
from sync.keys import (
    init_device_keys,
    init_warehouse_keys,
    load_device_key,
    load_warehouse_private,
    load_warehouse_public,
)
from sync.spool.store import Spool
from sync.warehouse.index import SqliteIndex, StoredDocument
from sync.warehouse.signatures import SignatureCheck, SigningTrust, signature_checker
from tests.support.pages import text_page
from tests.support.pdfa import pdfa_findings, signed_pdfa_findings
from tests.support.softhsm import SIGNER_NAME, Token
from tests.support.tsa import timestamp_authority


@pytest.fixture(scope="module")
def unsigned_pdf() -> bytes:
    out = io.BytesIO()
    page = encode_page(text_page(300, lines=20), 300, "text")
    write_pdf([page, page], PdfMetadata(file_code="000.00.20.H56-230512-0003"), out)
    return out.getvalue()


@pytest.fixture
def register(tmp_path: Path) -> CertificationRegister:
    warehouse = init_warehouse_keys(tmp_path / "wh.key", tmp_path / "wh.pub")
    return CertificationRegister(tmp_path / "register", warehouse)


@pytest.fixture
def certifier(softhsm_token: Token, register: CertificationRegister) -> Iterator[TokenCertifier]:
    sign = SignConfig(module=softhsm_token.module, token=softhsm_token.label, key="signer")
    opened = open_certifier(sign, softhsm_token.pin, register, lambda p: p)
    assert isinstance(opened, TokenCertifier), getattr(opened, "error", None)
    yield opened
    opened.close()


def archived(tmp_path: Path, pdf: bytes, name: str = "document.pdf") -> Path:
    (tmp_path / "docs").mkdir(exist_ok=True)
    path = tmp_path / "docs" / name
    path.write_bytes(pdf)
    return path


def test_a_signed_copy_keeps_its_pdfa_revision_and_passes_pdfa_rules_for_signatures(
    certifier: TokenCertifier, unsigned_pdf: bytes
) -> None:
    signed = certifier.certify(unsigned_pdf, "d-test-1").pdf
    assert signed.startswith(unsigned_pdf)  # an incremental update: the original bytes stay
    assert pdfa_findings(unsigned_pdf) == []
    assert signed_pdfa_findings(signed) == []


def test_trust_revocation_and_alteration_each_get_their_reason(
    certifier: TokenCertifier, unsigned_pdf: bytes, softhsm_token: Token, tmp_path: Path
) -> None:
    pdf = archived(tmp_path, certifier.certify(unsigned_pdf, "d-test-2").pdf)
    roots = (softhsm_token.ca_cert,)
    revoked = softhsm_token.crl(tmp_path / "revoked.crl", ("signer",))
    clean = softhsm_token.crl(tmp_path / "clean.crl", ())
    data = pdf.read_bytes()
    at = data.index(b"stream\n") + 300
    altered = archived(tmp_path, data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :], "x.pdf")
    unsigned = archived(tmp_path, unsigned_pdf, "plain.pdf")
    cases = [
        (SigningTrust(roots), pdf, SignatureCheck(SIGNER_NAME, True, None)),
        (SigningTrust(roots, (clean,)), pdf, SignatureCheck(SIGNER_NAME, True, None)),
        (
            SigningTrust(roots, (revoked,)),
            pdf,
            SignatureCheck(SIGNER_NAME, False, "the signer's certificate is revoked"),
        ),
        (
            SigningTrust(),
            pdf,
            SignatureCheck(
                SIGNER_NAME,
                False,
                "the signer's certificate does not chain to [warehouse] signing_roots",
            ),
        ),
        (
            SigningTrust(roots),
            altered,
            SignatureCheck(SIGNER_NAME, False, "the document was changed after it was signed"),
        ),
        (SigningTrust(roots), unsigned, SignatureCheck(None, None, None)),
    ]
    assert [signature_checker(trust)(path) for trust, path, _ in cases] == [
        want for _, _, want in cases
    ]


def test_an_expired_certificate_is_refused_before_any_number_is_taken(
    softhsm_token: Token, register: CertificationRegister
) -> None:
    sign = SignConfig(module=softhsm_token.module, token=softhsm_token.label, key="expired")
    opened = open_certifier(sign, softhsm_token.pin, register, lambda p: p)
    assert isinstance(opened, RefusedCertifier)
    assert "the signer's certificate expired on" in opened.error.line()
    assert register.lines() == []


def test_an_unreachable_timestamp_authority_leaves_pades_b_b(
    softhsm_token: Token, register: CertificationRegister, unsigned_pdf: bytes
) -> None:
    sign = SignConfig(
        module=softhsm_token.module,
        token=softhsm_token.label,
        key="signer",
        tsa_url="http://127.0.0.1:9/tsr",  # discard port: nothing answers
    )
    opened = open_certifier(sign, softhsm_token.pin, register, lambda p: p)
    assert isinstance(opened, TokenCertifier)
    try:
        records = [opened.certify(unsigned_pdf, f"d-test-{n}").record for n in range(2)]
    finally:
        opened.close()
    assert [r["level"] for r in records] == ["PAdES-B-B", "PAdES-B-B"]
    assert all("http://127.0.0.1:9/tsr did not answer" in r["tsa_problem"] for r in records)


def test_register_numbers_copies_in_order_and_seals_each_entry(
    certifier: TokenCertifier, register: CertificationRegister, unsigned_pdf: bytes, tmp_path: Path
) -> None:
    records = [certifier.certify(unsigned_pdf, f"d-{n}").record for n in range(3)]
    assert [r["number"] for r in records] == [1, 2, 3]
    keys = load_warehouse_private(tmp_path / "wh.key")
    entries = [open_entry(line, keys) for line in register.lines()]
    assert [(e["number"], e["doc_id"], e["signer"]) for e in entries] == [
        (1, "d-0", SIGNER_NAME),
        (2, "d-1", SIGNER_NAME),
        (3, "d-2", SIGNER_NAME),
    ]
    assert all(SIGNER_NAME not in line and "d-0" not in line for line in register.lines())


@pytest.mark.parametrize(
    ("counter", "year", "expected"),
    [
        ({}, 2026, (1, {"year": 2026, "book": "01/2026-SCT/BS", "last": 1})),
        (
            {"year": 2026, "last": 41},
            2026,
            (42, {"year": 2026, "book": "01/2026-SCT/BS", "last": 42}),
        ),
        (
            {"year": 2026, "last": 41},
            2027,
            (1, {"year": 2027, "book": "01/2027-SCT/BS", "last": 1}),
        ),
    ],
)
def test_register_numbers_restart_with_each_years_book(
    counter: dict[str, int], year: int, expected: tuple[int, dict[str, object]]
) -> None:
    assert next_number(counter, year) == expected


def test_an_index_from_before_signatures_gains_the_columns_in_place(tmp_path: Path) -> None:
    path = tmp_path / "index.db"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE documents (doc_id TEXT NOT NULL, device TEXT NOT NULL,"
        " ciphertext_sha256 TEXT NOT NULL, stored_at TEXT NOT NULL, bytes INTEGER NOT NULL,"
        " pages INTEGER NOT NULL, pdf_sha256 TEXT NOT NULL, path TEXT NOT NULL,"
        " dossier_code TEXT, doc_type TEXT, PRIMARY KEY (device, doc_id))"
    )
    old.execute(
        "INSERT INTO documents VALUES ('d1', 'dev', 'c1', '2026-01-01T00:00:00Z', 10, 1,"
        " 'p1', '/a/d1.pdf', NULL, NULL)"
    )
    old.commit()
    old.close()
    index = SqliteIndex(path)
    try:
        before = index.get("dev", "d1")
        assert before is not None and before.to_json()["signed_by"] is None
        assert index.add(
            StoredDocument(
                "d2",
                "dev",
                "c2",
                "2026-01-02T00:00:00Z",
                10,
                1,
                "p2",
                "/a/d2.pdf",
                signed_by=SIGNER_NAME,
                signature_valid=True,
            )
        )
        after = index.get("dev", "d2")
        assert after is not None
        assert (after.to_json()["signed_by"], after.to_json()["signature_valid"]) == (
            SIGNER_NAME,
            True,
        )
    finally:
        index.close()


def test_a_signature_that_does_not_verify_is_never_used_and_its_number_is_voided(
    softhsm_token: Token, register: CertificationRegister, unsigned_pdf: bytes, tmp_path: Path
) -> None:
    """[sign] key names another key than the certificate's: the signature is made but
    does not verify, so the copy stays unsigned and the register says why."""
    cert = tmp_path / "signer.pem"
    cert.write_bytes(softhsm_token.certs["signer"].public_bytes(serialization.Encoding.PEM))
    sign = SignConfig(
        module=softhsm_token.module,
        token=softhsm_token.label,
        key="expired",  # a key on the token that is not the certificate's
        certificate=cert,
    )
    opened = open_certifier(sign, softhsm_token.pin, register, lambda p: p)
    assert isinstance(opened, TokenCertifier)
    try:
        with pytest.raises(SigningError, match="the signature just made does not verify"):
            opened.certify(unsigned_pdf, "d-bad")
    finally:
        opened.close()
    keys = load_warehouse_private(tmp_path / "wh.key")
    [entry] = [open_entry(line, keys) for line in register.lines()]
    assert (entry["number"], entry["doc_id"]) == (1, "d-bad")
    assert "does not verify" in entry["void"]


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"%PDF-1.7 no signature here", "no /ByteRange"),
        (b"/ByteRange [0 10 30 5] <00>" + b" " * 10, "does not cover the file"),
        (b"/ByteRange [1 10 30 100]", "does not cover the file"),
    ],
)
def test_a_broken_byte_range_is_refused(data: bytes, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        signed_ranges(data)


def test_a_reachable_timestamp_authority_makes_pades_b_t(
    softhsm_token: Token, register: CertificationRegister, unsigned_pdf: bytes, tmp_path: Path
) -> None:
    with timestamp_authority(softhsm_token) as url:
        sign = SignConfig(
            module=softhsm_token.module, token=softhsm_token.label, key="signer", tsa_url=url
        )
        opened = open_certifier(sign, softhsm_token.pin, register, lambda p: p)
        assert isinstance(opened, TokenCertifier)
        try:
            certified = opened.certify(unsigned_pdf, "d-bt")
        finally:
            opened.close()
    assert certified.record["level"] == "PAdES-B-T"
    sig = PdfFileReader(io.BytesIO(certified.pdf)).embedded_signatures[0]
    root = load_cert_from_pemder(str(softhsm_token.ca_cert))
    status = validate_pdf_signature(sig, ValidationContext(trust_roots=[root]))
    assert status.bottom_line and status.timestamp_validity is not None
    assert status.timestamp_validity.intact and status.timestamp_validity.valid
    path = archived(tmp_path, certified.pdf)
    assert signature_checker(SigningTrust((softhsm_token.ca_cert,)))(path) == SignatureCheck(
        SIGNER_NAME, True, None
    )


class Pages:
    """A feeder double: two text pages."""

    def pages(self) -> Iterator[ScannedPage]:
        for n in range(2):
            yield ScannedPage(n, text_page(300, lines=30, seed=n), 300, "feeder double")


def test_a_copy_too_large_to_sign_in_memory_is_sealed_unsigned_with_the_way_out(
    certifier: TokenCertifier,
    register: CertificationRegister,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sealing, "MAX_CERTIFY_BYTES", 1024)  # two text pages are ~30 KB
    init_device_keys(tmp_path / "device.key")
    seal = SealSettings(
        "dev-test",
        load_device_key(tmp_path / "device.key"),
        load_warehouse_public(tmp_path / "wh.pub"),
    )
    with Spool(tmp_path / "spool", reserve_bytes=0) as spool:
        result = capture_batch(
            Pages(),
            spool=spool,
            reader=ZbarReader(),
            capture=CaptureConfig(),
            seal=seal,
            certifier=certifier,
        )
        assert spool.status().by_state["queued"] == 1  # kept
    [doc] = result.documents
    assert "unsigned" in doc.flags and doc.certification is None
    assert "document too large to certify" in (doc.problem or "")
    assert "unsigned" in result.flags and any("split it" in w for w in result.warnings)
    assert register.lines() == []


def test_the_warehouse_keeps_a_pades_lta_copy_beside_the_untouched_original(
    certifier: TokenCertifier, unsigned_pdf: bytes, softhsm_token: Token, tmp_path: Path
) -> None:
    signed = certifier.certify(unsigned_pdf, "d-lta").pdf
    pdf = archived(tmp_path, signed)
    crl = softhsm_token.crl(tmp_path / "clean.crl", ())
    with timestamp_authority(softhsm_token) as url:
        check = signature_checker(SigningTrust((softhsm_token.ca_cert,), (crl,), url))
        assert check(pdf) == SignatureCheck(SIGNER_NAME, True, None)
    assert pdf.read_bytes() == signed  # the record, byte for byte
    lta = (tmp_path / "docs" / "document.lta.pdf").read_bytes()
    assert lta.startswith(signed)
    reader = PdfFileReader(io.BytesIO(lta))
    root = load_cert_from_pemder(str(softhsm_token.ca_cert))
    stamp = validate_pdf_timestamp(
        reader.embedded_signatures[-1], validation_context=ValidationContext(trust_roots=[root])
    )
    assert (stamp.intact, stamp.valid, stamp.trusted) == (True, True, True)
    assert {"/Certs", "/CRLs"} <= set(reader.root["/DSS"].keys())  # validation data kept
    original = validate_pdf_signature(
        reader.embedded_signatures[0], ValidationContext(trust_roots=[root])
    )
    assert original.bottom_line  # still valid: only long-term validation updates came after


def test_a_dead_timestamp_authority_leaves_no_lta_copy_and_the_verdict_unchanged(
    certifier: TokenCertifier, unsigned_pdf: bytes, softhsm_token: Token, tmp_path: Path
) -> None:
    pdf = archived(tmp_path, certifier.certify(unsigned_pdf, "d-nolta").pdf)
    check = signature_checker(SigningTrust((softhsm_token.ca_cert,), (), "http://127.0.0.1:9/t"))
    assert check(pdf) == SignatureCheck(SIGNER_NAME, True, None)
    assert not (tmp_path / "docs" / "document.lta.pdf").exists()
