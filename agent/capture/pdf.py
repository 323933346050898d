"""PDF output: each page encoded once per profile, then streamed into a PDF/A-2b file.

Profiles: ``text`` (bilevel, CCITT G4: small for weak links), ``color`` (JPEG, archival
colour), ``lossless`` (Flate with PNG predictors). The writer sends bytes to any ``.write``
target (the envelope sealer) as pages arrive and keeps only object offsets, so a 500-page
document never sits in memory. XMP uses only the schemas PDF/A-2 predefines (allowlist
validators such as pikepdf's ``pdfa.check`` refuse extension schemas); the sealed metadata
JSON carries the full Decree 30/2020 set.
"""

from __future__ import annotations

import hashlib
import io
import re
import struct
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Protocol

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageCms

from agent.capture.g4 import encode_g4
from agent.capture.ink import bilevel_rows, ink_rows
from agent.capture.pages import deskew, flat_mode
from device.errors import InputError

PROFILES = ("text", "color", "lossless")
JPEG_QUALITY = 85
_XMP_DAY = re.compile(r"[0-9]{4}(-[0-9]{2}(-[0-9]{2})?)?")


class SupportsWrite(Protocol):
    def write(self, data: bytes, /) -> object: ...


@dataclass(frozen=True)
class EncodedPage:
    width: int
    height: int
    dpi: int
    filter: str  # "CCITTFaxDecode" | "DCTDecode" | "FlateDecode"
    colorspace: str  # "DeviceGray" | "DeviceRGB"
    bits: int  # 1 or 8
    data: bytes = field(repr=False)
    decode_parms: Mapping[str, int | bool] = field(default_factory=dict)


@dataclass(frozen=True)
class PdfMetadata:
    """Decree 30/2020 document fields we know, every one optional, and where each goes."""

    file_code: str | None = None  # FileCode (dossier code): dc:identifier "<code>.<ordinal>"
    doc_ordinal: int | None = None  # DocOrdinal: in dc:identifier, as in archival file names
    type_name: str | None = None  # TypeName (document type code): dc:type
    code_number: str | None = None  # CodeNumber, CodeNotation: dc:source "123/QĐ-UBND"
    code_notation: str | None = None
    issued_date: str | None = None  # IssuedDate: dc:date, when it is an XMP date
    organ_name: str | None = None  # OrganName: dc:creator, /Author
    subject: str | None = None  # Subject: dc:subject
    language: str = "vi"  # Language: dc:language, the catalog's /Lang
    page_amount: int | None = None  # PageAmount: JSON only; the PDF counts its own pages
    description: str | None = None  # Description: dc:description
    producer: str = "sohoa"  # pdf:Producer, /Producer: what wrote the PDF
    created: datetime | None = None  # xmp:CreateDate, /CreationDate; None: now
    title: str | None = None  # dc:title, /Title; None: subject, type name, code notation
    creator_tool: str = "sohoa"  # xmp:CreatorTool, /Creator: what captured the pages


def encode_page(
    image: Image.Image,
    dpi: int,
    profile: str,
    *,
    skew_deg: float = 0.0,
    pixels: npt.NDArray[np.uint8] | None = None,
) -> EncodedPage:
    """Compress one page image for the PDF in the given profile, deskewed by ``skew_deg``
    (``pages.deskew``; the ``text`` profile turns its ink band by band, with no copy, and
    reads a grey page's ``pixels`` in place when it has them: ``ink.ink_rows``)."""
    if profile == "text" and image.mode == "1":  # already bilevel: its own bits
        return g4_page(*bilevel_rows(image.convert("L"), skew_deg), dpi)
    if profile == "text":
        return g4_page(*ink_rows(image, skew_deg, pixels=pixels), dpi)
    if skew_deg:
        image = deskew(image, skew_deg)
    if profile == "color":
        return _encode_jpeg(flat_mode(image), dpi)
    if profile == "lossless":
        return _encode_flate(image if image.mode == "1" else flat_mode(image), dpi)
    raise InputError(f"unknown PDF profile {profile!r}", f"use one of {', '.join(PROFILES)}")


def wrap_jpeg(data: bytes, dpi: int) -> EncodedPage:
    """Use a scanner's JPEG as it is: read its size from the frame header, never re-encode."""
    width, height, components, precision = _jpeg_frame(data)
    if precision != 8 or components not in (1, 3):
        raise InputError(
            f"JPEG with {components} components of {precision} bits cannot go into PDF/A as is",
            "scan in grey or colour (8-bit) or pass the decoded image to encode_page",
        )
    colorspace = "DeviceGray" if components == 1 else "DeviceRGB"
    return EncodedPage(width, height, dpi, "DCTDecode", colorspace, 8, data, {})


def write_pdf(pages: Iterable[EncodedPage], meta: PdfMetadata, out: SupportsWrite) -> int:
    """Write a whole PDF/A file; returns the number of bytes written."""
    writer = PdfWriter(out, meta)
    for page in pages:
        writer.add_page(page)
    return writer.close()


class PdfWriter:
    """Streams a PDF to any object with .write(bytes) (the envelope sealer): header, then one
    page at a time, then xref/trailer; keeps only offsets in memory."""

    # object 1 is the catalog and 2 the page tree, both written last; each page takes three
    CATALOG, PAGES, FIRST_PAGE = 1, 2, 3

    def __init__(self, out: SupportsWrite, meta: PdfMetadata) -> None:
        self._out = out
        self._meta = meta
        self._created = _aware(meta.created or datetime.now(UTC))
        self._offsets: list[int] = [0, 0, 0]
        self._position = 0
        self._pages = 0
        self._closed = False
        self._digest = hashlib.sha256()
        # a binary comment tells transfer tools this is not text (PDF/A 6.1.2)
        self._emit(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")

    def add_page(self, page: EncodedPage) -> None:
        if self._closed:
            raise InputError("PDF is already closed", "start a new PdfWriter for a new document")
        image, content, page_obj = self._allocate(3)
        width_pt, height_pt = _num(page.width * 72 / page.dpi), _num(page.height * 72 / page.dpi)
        # str(value).lower(): PDF's true/false for booleans, the digits for numbers
        parms = "".join(f" /{key} {str(value).lower()}" for key, value in page.decode_parms.items())
        parms = f"/DecodeParms <<{parms} >> " if parms else ""
        self._stream(
            image,
            f"/Type /XObject /Subtype /Image /Width {page.width} /Height {page.height} "
            f"/ColorSpace /{page.colorspace} /BitsPerComponent {page.bits} "
            f"/Filter /{page.filter} {parms}",
            page.data,
        )
        draw = f"q {width_pt} 0 0 {height_pt} 0 0 cm /Im0 Do Q\n".encode("ascii")
        self._stream(content, "", draw)
        self._object(
            page_obj,
            f"<< /Type /Page /Parent {self.PAGES} 0 R /MediaBox [0 0 {width_pt} {height_pt}] "
            f"/Resources << /XObject << /Im0 {image} 0 R >> >> /Contents {content} 0 R >>",
        )
        self._pages += 1

    def close(self) -> int:
        """Write page tree, metadata, catalog, xref and trailer; returns bytes written in total."""
        if self._closed:
            return self._position
        if not self._pages:
            raise InputError("PDF has no pages", "add at least one page before closing")
        self._closed = True
        kids = " ".join(f"{self.FIRST_PAGE + 3 * n + 2} 0 R" for n in range(self._pages))
        self._object(self.PAGES, f"<< /Type /Pages /Kids [{kids}] /Count {self._pages} >>")
        icc, metadata, info = self._allocate(3)
        profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
        self._stream(icc, "/N 3 /Filter /FlateDecode ", zlib.compress(profile))
        self._stream(metadata, "/Type /Metadata /Subtype /XML ", _xmp(self._meta, self._created))
        self._object(info, _info(self._meta, self._created))
        self._object(
            self.CATALOG,
            f"<< /Type /Catalog /Pages {self.PAGES} 0 R /Metadata {metadata} 0 R "
            f"/Lang {_text(self._meta.language)} /OutputIntents [<< /Type /OutputIntent "
            f"/S /GTS_PDFA1 /OutputConditionIdentifier (sRGB IEC61966-2.1) "
            f"/Info (sRGB IEC61966-2.1) /DestOutputProfile {icc} 0 R >>] >>",
        )
        file_id = self._digest.copy().hexdigest()[:32]
        start = self._position
        rows = [f"xref\n0 {len(self._offsets)}\n", "0000000000 65535 f\r\n"]
        rows += [f"{offset:010d} 00000 n\r\n" for offset in self._offsets[1:]]
        rows.append(
            f"trailer\n<< /Size {len(self._offsets)} /Root {self.CATALOG} 0 R /Info {info} 0 R "
            f"/ID [<{file_id}> <{file_id}>] >>\nstartxref\n{start}\n%%EOF\n"
        )
        self._emit("".join(rows).encode("ascii"))
        return self._position

    @property
    def sha256(self) -> str:
        """SHA-256 (hex) of every byte written so far: of the whole file once closed."""
        return self._digest.hexdigest()

    def _allocate(self, count: int) -> list[int]:
        first = len(self._offsets)
        self._offsets.extend([0] * count)
        return list(range(first, first + count))

    def _object(self, number: int, body: str) -> None:
        self._offsets[number] = self._position
        self._emit(f"{number} 0 obj\n{body}\nendobj\n".encode("ascii"))

    def _stream(self, number: int, entries: str, data: bytes) -> None:
        self._offsets[number] = self._position
        head = f"{number} 0 obj\n<< {entries}/Length {len(data)} >>\nstream\n"
        self._emit(head.encode("ascii"))
        self._emit(data)
        self._emit(b"\nendstream\nendobj\n")

    def _emit(self, data: bytes) -> None:
        self._out.write(data)
        self._digest.update(data)
        self._position += len(data)


def g4_page(rows: bytes | bytearray, size: tuple[int, int], dpi: int) -> EncodedPage:
    """CCITT G4 by libtiff (``g4.py``); the page is one strip, whose bytes are the PDF
    stream as they are."""
    w, h = size
    parms = {"K": -1, "Columns": w, "Rows": h, "BlackIs1": False}
    data = encode_g4(rows, size)
    return EncodedPage(w, h, dpi, "CCITTFaxDecode", "DeviceGray", 1, data, parms)


def _encode_jpeg(image: Image.Image, dpi: int) -> EncodedPage:
    buffer = io.BytesIO()
    # 4:4:4: red seals and blue signatures keep their edges
    image.save(buffer, "JPEG", quality=JPEG_QUALITY, subsampling=0, dpi=(dpi, dpi))
    return wrap_jpeg(buffer.getvalue(), dpi)


def _encode_flate(image: Image.Image, dpi: int) -> EncodedPage:
    """PNG's IDAT stream is zlib over predictor-tagged rows: PDF's Flate with /Predictor 15."""
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=6)
    data = _png_idat(buffer.getvalue())
    colors = 3 if image.mode == "RGB" else 1
    bits = 1 if image.mode == "1" else 8
    w, h = image.size
    parms = {"Predictor": 15, "Colors": colors, "BitsPerComponent": bits, "Columns": w}
    colorspace = "DeviceRGB" if colors == 3 else "DeviceGray"
    return EncodedPage(w, h, dpi, "FlateDecode", colorspace, bits, data, parms)


def _png_idat(png: bytes) -> bytes:
    chunks = []
    position = 8
    while position < len(png):
        (length,) = struct.unpack(">I", png[position : position + 4])
        kind = png[position + 4 : position + 8]
        if kind == b"IDAT":
            chunks.append(png[position + 8 : position + 8 + length])
        position += 12 + length
    return b"".join(chunks)


def _jpeg_frame(data: bytes) -> tuple[int, int, int, int]:
    """Width, height, components and precision from a JPEG's SOF segment."""
    if data[:2] != b"\xff\xd8":
        raise InputError("data is not a JPEG image", "pass JPEG bytes or use encode_page")
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            position += 1
            continue
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if 0xD0 <= marker <= 0xD9 or marker == 0x01:  # markers without a length
            position += 2
            continue
        (length,) = struct.unpack(">H", data[position + 2 : position + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            precision, height, width, components = struct.unpack(
                ">BHHB", data[position + 4 : position + 10]
            )
            if height == 0:
                break
            return width, height, components, precision
        position += 2 + length
    raise InputError("JPEG has no readable frame header", "rescan the page or re-save the image")


def _xmp(meta: PdfMetadata, created: datetime) -> bytes:
    """The XMP packet (UTF-8): PDF/A identification, then PdfMetadata in standard properties."""
    when = created.isoformat(timespec="seconds")
    properties = "".join(
        _property(name, form, value)
        for name, form, value in (
            ("dc:format", "", "application/pdf"),
            ("dc:identifier", "", _identifier(meta)),
            ("dc:title", "Alt", _title(meta)),
            ("dc:subject", "Bag", meta.subject),
            ("dc:description", "Alt", meta.description),
            ("dc:type", "Bag", meta.type_name),
            ("dc:source", "", _reference(meta)),
            ("dc:creator", "Seq", meta.organ_name),
            ("dc:date", "Seq", _xmp_date(meta.issued_date)),
            ("dc:language", "Bag", meta.language),
            *((f"xmp:{name}", "", when) for name in ("CreateDate", "ModifyDate", "MetadataDate")),
            ("xmp:CreatorTool", "", meta.creator_tool),
            ("pdf:Producer", "", meta.producer),
        )
    )
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n<x:xmpmeta xmlns:x="adobe:ns:'
        'meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
        '<rdf:Description rdf:about="" xmlns:pdfaid="http://www.aiim.org/pdfa/ns/id/" xmlns:dc='
        '"http://purl.org/dc/elements/1.1/" xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmlns:pdf='
        '"http://ns.adobe.com/pdf/1.3/"><pdfaid:part>2</pdfaid:part><pdfaid:conformance>B'
        f"</pdfaid:conformance>{properties}</rdf:Description>\n</rdf:RDF></x:xmpmeta>\n"
        '<?xpacket end="w"?>'
    ).encode()


def _property(name: str, form: str, value: str | None) -> str:
    """One XMP property: a simple value, or an array (Bag, Seq, Alt) of that one value."""
    text = _xml(value or "")
    if form == "Alt":
        text = f'<rdf:Alt><rdf:li xml:lang="x-default">{text}</rdf:li></rdf:Alt>'
    elif form:
        text = f"<rdf:{form}><rdf:li>{text}</rdf:li></rdf:{form}>"
    return f"<{name}>{text}</{name}>" if value else ""


def _info(meta: PdfMetadata, created: datetime) -> str:
    """The /Info dictionary: entries whose XMP twin holds the same value, as PDF/A asks; no
    /Subject, whose twin dc:description holds sealing's document code (an owner id in it)."""
    stamp = created.strftime("D:%Y%m%d%H%M%S")
    offset = created.strftime("%z") or "+0000"
    stamp += f"{offset[0]}{offset[1:3]}'{offset[3:5]}'"
    keys = ("Title", "Author", "Creator", "Producer")
    values = (_title(meta), meta.organ_name, meta.creator_tool, meta.producer)
    text = "".join(f"/{k} {_text(v)} " for k, v in zip(keys, values, strict=True) if v)
    return f"<< {text}/CreationDate ({stamp}) /ModDate ({stamp}) >>"


def _identifier(meta: PdfMetadata) -> str | None:
    """FileCode, and DocOrdinal when known: ``<dossier code>.<document seq>``, the archival name."""
    ordinal = "" if meta.doc_ordinal is None else f".{meta.doc_ordinal}"
    return f"{meta.file_code}{ordinal}" if meta.file_code else None


def _reference(meta: PdfMetadata) -> str | None:
    """CodeNumber and CodeNotation as the paper prints them (``123/QĐ-UBND``)."""
    number, notation = meta.code_number, meta.code_notation
    joined = number and notation and not notation.startswith(f"{number}/")
    return f"{number}/{notation}" if joined else notation or number


def _xmp_date(value: str | None) -> str | None:
    """IssuedDate when it is an XMP date of a real day, month or year; else only the JSON has it."""
    if value is None or not _XMP_DAY.fullmatch(value):
        return None
    try:  # "2023" and "2023-05" stand for their first day
        date.fromisoformat((value + "-01-01")[:10])
        return value
    except ValueError:
        return None


def _title(meta: PdfMetadata) -> str:
    return meta.title or meta.subject or meta.type_name or meta.code_notation or "Document"


def _aware(moment: datetime) -> datetime:
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).replace(microsecond=0)


def _text(value: str) -> str:
    """A PDF text string: UTF-16BE with its byte order mark, as hex (nothing to escape)."""
    return "<" + ("\ufeff" + _clean(value)).encode("utf-16-be").hex().upper() + ">"


def _clean(value: str) -> str:
    """Drop what XML 1.0 and UTF-16 cannot carry (controls, lone surrogates) rather than fail."""
    return "".join(
        ch
        for ch in value
        if (ch in "\t\n\r" or ord(ch) >= 0x20)
        and not 0xD800 <= ord(ch) <= 0xDFFF
        and ch not in "\ufffe\uffff"
    )


def _xml(value: str) -> str:
    """Element text; a carriage return as a reference, which XML parsers would turn into \\n."""
    text = _clean(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("\r", "&#13;")


def _num(value: float) -> str:
    return f"{value:.4f}".rstrip("0").rstrip(".")
