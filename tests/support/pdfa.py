"""PDF/A checks the tests share: pikepdf's allowlist validator, and /Info against XMP.

``pdfa_findings`` is the validator DESIGN.md names for every PDF the device writes and the
warehouse archives; an empty list means the file passes. ``info_xmp_mismatches`` checks what
PDF/A asks of the document information dictionary (each entry equals its XMP twin), which
the validator checks for PDF/A-1 only.
"""

from __future__ import annotations

import io
from datetime import datetime
from pathlib import Path

import pikepdf
import pikepdf.pdfa
from pikepdf.models.metadata import decode_pdf_date

# /Info entry -> its XMP twin (ISO 19005-1 6.7.3, table 1); other entries have none to match
INFO_TWINS = {
    "/Title": "dc:title",
    "/Author": "dc:creator",
    "/Subject": "dc:description",
    "/Keywords": "pdf:Keywords",
    "/Creator": "xmp:CreatorTool",
    "/Producer": "pdf:Producer",
    "/CreationDate": "xmp:CreateDate",
    "/ModDate": "xmp:ModifyDate",
}


def pdfa_findings(pdf: Path | str | bytes, flavour: str = "2b") -> list[str]:
    """Every finding of ``pikepdf.pdfa`` on a PDF file (path or bytes), one line each.

    Both of its checks run: ``check`` judges the document as pikepdf would save it, and
    ``validate_written`` the bytes as they are, which is what the device and the warehouse
    keep (nobody re-saves them)."""
    data = _read(pdf)
    with pikepdf.open(io.BytesIO(data)) as document:
        found = [str(f) for f in pikepdf.pdfa.check(document, flavour).findings]
    found += [str(f) for f in pikepdf.pdfa.validate_written(io.BytesIO(data), flavour).findings]
    return list(dict.fromkeys(found))


def info_xmp_mismatches(pdf: Path | str | bytes) -> list[str]:
    """Each /Info entry whose XMP twin is missing or holds another value, one line each."""
    out = []
    with pikepdf.open(io.BytesIO(_read(pdf))) as document:
        xmp = document.open_metadata()
        for key, value in document.docinfo.items():
            twin = INFO_TWINS.get(str(key))
            if twin is None:
                continue
            info, mirror = str(value), xmp.get(twin)
            if twin == "dc:creator" and isinstance(mirror, list) and len(mirror) == 1:
                mirror = mirror[0]  # PDF/A: a Seq of exactly the one /Author
            if twin.startswith("xmp:") and twin.endswith("Date"):
                same = isinstance(mirror, str) and _same_moment(info, mirror)
            else:
                same = info == mirror
            if not same:
                out.append(f"{key} {info!r} but XMP {twin} {mirror!r}")
    return out


def _read(pdf: Path | str | bytes) -> bytes:
    return pdf if isinstance(pdf, bytes) else Path(pdf).read_bytes()


def _same_moment(pdf_date: str, xmp_date: str) -> bool:
    try:
        return decode_pdf_date(pdf_date) == datetime.fromisoformat(xmp_date)
    except ValueError:
        return False
