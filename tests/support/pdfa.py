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


# what pikepdf's allowlist validator does not judge at all: a signature's form field
# (/AcroForm), its widget annotation and the PAdES developer extension (ESIC); it
# reports each as "[unsupported]", not as a violation
_SIGNATURE_CONSTRUCTS = (
    "/AcroForm: interactive forms",
    "(Annot) /Subtype: annotation type not supported",
    "/Extensions (Extensions) /ESIC",
)
_HIDDEN = 1 | 2 | 32  # Invisible, Hidden, NoView (ISO 32000-1 12.5.3)
_PRINT = 4


def signed_pdfa_findings(pdf: Path | str | bytes) -> list[str]:
    """PDF/A-2b of a PDF signed by an incremental update, one line per finding.

    The first revision (the bytes the device wrote) must pass ``pdfa_findings`` whole;
    the signed file must have no finding beyond the signature constructs pikepdf does
    not judge; and those constructs are checked here against what PDF/A-2b asks of
    them: a printed, visible widget with a normal appearance whose fonts are embedded,
    no /NeedAppearances, and a /ByteRange covering the whole file but /Contents."""
    data = _read(pdf)
    first = data[: data.index(b"%%EOF") + len(b"%%EOF\n")]
    found = [f"first revision: {f}" for f in pdfa_findings(first)]
    found += [
        f
        for f in pdfa_findings(data)
        if not (f.startswith("[unsupported]") and any(c in f for c in _SIGNATURE_CONSTRUCTS))
    ]
    return found + _signature_rules(data)


def _signature_rules(data: bytes) -> list[str]:
    out = []
    with pikepdf.open(io.BytesIO(data)) as document:
        form = document.Root.get("/AcroForm")
        if form is None:
            return ["no /AcroForm: the file is not signed"]
        if bool(form.get("/NeedAppearances", False)):
            out.append("/AcroForm /NeedAppearances true (PDF/A-2 6.4.1)")
        for field in form.Fields:
            flags = int(field.get("/F", 0))
            if flags & _HIDDEN or not flags & _PRINT:
                out.append(f"widget {field.T} /F {flags}: not printed or hidden (6.3.2)")
            if "/AP" not in field or "/N" not in field.AP:
                out.append(f"widget {field.T} has no normal appearance (6.3.3)")
            else:
                out += _unembedded_fonts(field.AP.N, str(field.T))
            out += _byte_range(field.V, len(data), str(field.T))
    return out


def _unembedded_fonts(xobject: pikepdf.Object, where: str, depth: int = 0) -> list[str]:
    out = []
    resources = xobject.get("/Resources", pikepdf.Dictionary())
    for name, font in resources.get("/Font", pikepdf.Dictionary()).items():
        described = font.DescendantFonts[0] if "/DescendantFonts" in font else font
        descriptor = described.get("/FontDescriptor", pikepdf.Dictionary())
        if not any(k in descriptor for k in ("/FontFile", "/FontFile2", "/FontFile3")):
            out.append(f"{where}: font {name} in the appearance is not embedded (6.2.11.4)")
    if depth < 8:
        for inner in resources.get("/XObject", pikepdf.Dictionary()).values():
            out += _unembedded_fonts(inner, where, depth + 1)
    return out


def _byte_range(signature: pikepdf.Object, size: int, where: str) -> list[str]:
    start, first_len, second_start, second_len = (int(x) for x in signature.ByteRange)
    contents = len(bytes(signature.Contents)) * 2 + 2  # hex digits and the angle brackets
    if start != 0 or first_len + contents != second_start or second_start + second_len != size:
        return [f"{where}: /ByteRange does not cover the whole file but /Contents"]
    return []
