"""Every PAdES signature on an arriving document, validated with pyHanko: integrity
(the signed bytes are unchanged and cover the whole file), the chain to ``[warehouse]
signing_roots``, the certificate's validity and, when CRLs are given, revocation.

The archived PDF is only read: the signed original stays byte-identical. The result
is a ``SignatureCheck`` (who signed, valid or not, and the reason in one line), which
the index stores and ``warehouse ls --json`` shows.
"""

from __future__ import annotations

import logging
import mmap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from pyhanko.keys import load_certs_from_pemder
from pyhanko.pdf_utils.misc import PdfError
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation import validate_pdf_signature
from pyhanko.sign.validation.status import SignatureCoverageLevel
from pyhanko_certvalidator import ValidationContext

from sync.errors import ConfigError
from sync.warehouse.ltv import write_lta_copy

log = logging.getLogger("sohoa.warehouse")
TSA_RETRY_S = 300.0  # after a failed archival timestamp, documents are stored without one


@dataclass(frozen=True)
class SigningTrust:
    """The roots signatures must chain to, and the CRLs that say who is revoked."""

    roots: tuple[Path, ...] = ()
    crls: tuple[Path, ...] = ()
    tsa_url: str = ""  # with it, a PAdES-B-LTA copy beside each validly signed original


@dataclass(frozen=True)
class SignatureCheck:
    """What the index keeps: None, None, None for a document with no signature."""

    signed_by: str | None = None
    valid: bool | None = None
    problem: str | None = None


_TRUST_PROBLEMS = {
    "REVOKED": "the signer's certificate is revoked",
    "REVOKED_NO_POE": "the signer's certificate is revoked",
    "REVOKED_CA_NO_POE": "a certificate of the signer's chain is revoked",
    "EXPIRED": "the signer's certificate has expired",
    "OUT_OF_BOUNDS_NO_POE": "the signer's certificate was not valid at signing time",
    "NOT_YET_VALID": "the signer's certificate was not yet valid",
    "NO_CERTIFICATE_CHAIN_FOUND": "the signer's certificate does not chain to"
    " [warehouse] signing_roots",
    "TRY_LATER": "no revocation information for the signer's certificate in"
    " [warehouse] signing_crls",
    "REVOCATION_OUT_OF_BOUNDS_NO_POE": "the signer's certificate is revoked",
}


def _crl_der(path: Path) -> bytes:
    data = path.read_bytes()
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_crl(data).public_bytes(Encoding.DER)
    return data


def signature_checker(trust: SigningTrust) -> Callable[[Path], SignatureCheck]:
    """``check_signatures`` against ``trust``, its files read once (``ConfigError`` if they
    cannot be), with a fresh context for each document: it validates at the time of use.
    With ``trust.tsa_url``, a validly signed document also gets its LTA copy."""
    roots, crls = _trust_material(trust)
    tsa_down_until = [0.0]  # a dead timestamp authority must not hold up every ingest

    def check(pdf: Path) -> SignatureCheck:
        context = ValidationContext(
            trust_roots=roots,
            crls=crls,
            allow_fetching=False,
            revocation_mode="hard-fail" if crls else "soft-fail",
        )
        verdict = check_signatures(pdf, context)
        asks = verdict.valid and trust.tsa_url and time.monotonic() >= tsa_down_until[0]
        if asks and write_lta_copy(pdf, context, trust.tsa_url) is None:
            tsa_down_until[0] = time.monotonic() + TSA_RETRY_S
        return verdict

    return check


def _trust_material(trust: SigningTrust) -> tuple[list[Any], list[bytes]]:
    try:
        roots = [c for p in trust.roots for c in load_certs_from_pemder([str(p)])]  # type: ignore[no-untyped-call]
        crls = [_crl_der(p) for p in trust.crls]
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"[warehouse] signing_roots / signing_crls cannot be read ({exc})",
            "give PEM certificates and PEM or DER CRLs that the warehouse user can read",
        ) from None
    return roots, crls


def has_signature(pdf: Path) -> bool:
    """A cheap look before parsing: a signed PDF has a signature dictionary's /ByteRange."""
    with pdf.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
        return data.find(b"/ByteRange") >= 0


def problem_of(status: Any, last: bool) -> str | None:
    """One line saying why a signature is not valid, or None when it is."""
    if not status.intact:
        return "the document was changed after it was signed"
    if not status.valid:
        return "the signature does not verify"
    if last and status.coverage != SignatureCoverageLevel.ENTIRE_FILE:
        return "content was added after the last signature"
    if not status.trusted:
        indic = getattr(status.trust_problem_indic, "name", "")
        return _TRUST_PROBLEMS.get(indic, f"the signer's certificate is not trusted ({indic})")
    return None


def check_signatures(pdf: Path, context: ValidationContext) -> SignatureCheck:
    """Validate every signature of ``pdf``; the first problem found decides."""
    if not has_signature(pdf):
        return SignatureCheck()
    try:
        with pdf.open("rb") as fh:
            sigs = PdfFileReader(fh).embedded_signatures
            names, problems = [], []
            for n, sig in enumerate(sigs):
                status = validate_pdf_signature(sig, context)
                names.append(str(status.signing_cert.subject.native.get("common_name", "")))
                problems.append(problem_of(status, n == len(sigs) - 1))
    except (PdfError, ValueError, KeyError, OSError) as exc:
        log.warning("signature unreadable doc=%s reason=%s", pdf.parent.name, type(exc).__name__)
        return SignatureCheck(None, False, f"the signature cannot be read ({type(exc).__name__})")
    if not sigs:
        return SignatureCheck()
    problem = next((p for p in problems if p), None)
    return SignatureCheck(", ".join(names), problem is None, problem)
