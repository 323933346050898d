"""The warehouse's own proof of when it received a certified copy: a PAdES-B-LTA copy
beside the original (``document.lta.pdf``), made of the original's bytes, the
validation data of its signatures (certificates and CRLs, in a DSS) and a document
timestamp from ``[warehouse] tsa_url``.

The original stays byte-identical and remains the record; the LTA copy starts with
it byte for byte, so either proves the other. A timestamp authority that does not
answer leaves the original alone and is said in one log line; for the next five
minutes documents are then stored without asking it (no LTA copy for them yet).
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.misc import PdfError
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.signers import PdfTimeStamper
from pyhanko.sign.timestamps import HTTPTimeStamper
from pyhanko.sign.timestamps.common_utils import TimestampRequestError
from pyhanko.sign.validation import add_validation_info
from pyhanko_certvalidator import ValidationContext

from sync.durable import atomic_write

log = logging.getLogger("sohoa.warehouse")

LTA_NAME = "document.lta.pdf"


def lta_bytes(pdf: bytes, context: ValidationContext, tsa_url: str) -> bytes:
    """``pdf`` with its signatures' validation data and a document timestamp."""
    with_dss = io.BytesIO(pdf)
    for sig in PdfFileReader(io.BytesIO(pdf)).embedded_signatures:
        with_dss = add_validation_info(sig, context, output=io.BytesIO(with_dss.getvalue()))
    stamper = PdfTimeStamper(HTTPTimeStamper(tsa_url, timeout=5))
    out = stamper.timestamp_pdf(
        IncrementalPdfFileWriter(io.BytesIO(with_dss.getvalue())),
        "sha256",
        validation_context=context,
    )
    return bytes(out.getbuffer())


def write_lta_copy(pdf: Path, context: ValidationContext, tsa_url: str) -> Path | None:
    """``document.lta.pdf`` beside ``pdf`` (0600, whole or not at all); None, with one
    log line, when the timestamp authority or the validation data fails."""
    try:
        data = lta_bytes(pdf.read_bytes(), context, tsa_url)
    except (TimestampRequestError, OSError, PdfError, ValueError) as exc:
        log.warning(
            "no archival timestamp doc=%s reason=%s: %s", pdf.parent.name, type(exc).__name__, exc
        )
        return None
    out = pdf.with_name(LTA_NAME)
    atomic_write(out, data, mode=0o600, what="the archive")
    return out
