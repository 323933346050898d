"""The signature of a certified copy written straight onto the PDF the pipeline wrote.

pyHanko signs any PDF: it parses the file, builds an object graph for the field,
the widget, its appearance and font, and serialises it back as an incremental
update; for a one-page copy that was most of the time spent signing. The PDFs
sohoa signs are its own (``agent.capture.pdf.PdfWriter``: a classic xref table,
catalog object 1, page tree object 2, pages in order, no form), so everything an
update needs is read from the trailer and two objects, and the update itself is
written here as text: the page again with its widget, the catalog with its
AcroForm, the signature dictionary with a fixed room for the CMS, the widget,
its appearance stream and the session's embedded font (PDF/A-2b: embedded,
widths from the font program, ToUnicode for text extraction). A PDF of any
other shape (``read_layout`` returns None) goes pyHanko's way.

Pure: bytes and values in, bytes out; the token's signature is a function passed in.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from fontTools import ttLib

FIELD = "ChungThuc"


@dataclass(frozen=True)
class PdfLayout:
    """What an incremental update needs of a PDF that ``PdfWriter`` wrote."""

    size: int  # the trailer's /Size: the next object number
    info: int
    file_id: str
    startxref: int
    catalog: str  # the catalog's dictionary, as written
    page: int  # the last page's object number
    page_dict: str
    width: float  # the last page's MediaBox width, in points


_TRAILER = re.compile(
    rb"trailer\n<< /Size (\d+) /Root 1 0 R /Info (\d+) 0 R /ID \[<([0-9a-f]{32})> <\3>\] >>\n"
    rb"startxref\n(\d+)\n%%EOF\n\Z"
)
_KIDS = re.compile(r"<< /Type /Pages /Kids \[(?:\d+ 0 R )*(\d+) 0 R\] /Count \d+ >>\Z")
_MEDIA = re.compile(r"/MediaBox \[0 0 ([0-9.]+) ([0-9.]+)\]")


def read_layout(pdf: bytes) -> PdfLayout | None:
    """The layout of ``pdf`` when ``PdfWriter`` wrote it and nothing was added since;
    None for any other PDF."""
    trailer = _TRAILER.search(pdf, max(0, len(pdf) - 256))
    if trailer is None:
        return None
    size, info, file_id, startxref = trailer.groups()
    try:
        catalog = _object_at(pdf, int(startxref), 1)
        pages = _object_at(pdf, int(startxref), 2)
        kids = _KIDS.match(pages or "")
        page = int(kids.group(1)) if kids else 0
        page_dict = _object_at(pdf, int(startxref), page) if page else None
    except (ValueError, IndexError):
        return None
    media = _MEDIA.search(page_dict or "")
    if catalog is None or page_dict is None or media is None:
        return None
    if "/AcroForm" in catalog or "/Annots" in page_dict or not page_dict.endswith(">>"):
        return None
    return PdfLayout(
        int(size), int(info), file_id.decode(), int(startxref), catalog, page, page_dict,
        float(media.group(1)),
    )  # fmt: skip


def _object_at(pdf: bytes, xref: int, number: int) -> str | None:
    """Object ``number``'s body (a dictionary, not a stream), from the xref table at
    ``xref`` (one subsection ``0 N`` of 20-byte rows)."""
    head = b"xref\n0 "
    if pdf[xref : xref + len(head)] != head:
        return None
    rows = pdf.index(b"\n", xref + len(head)) + 1
    offset = int(pdf[rows + 20 * number : rows + 20 * number + 10])
    start = f"{number} 0 obj\n".encode()
    if pdf[offset : offset + len(start)] != start:
        return None
    end = pdf.index(b"\nendobj\n", offset)
    body = pdf[offset + len(start) : end]
    return None if b"stream" in body else body.decode("ascii")


class BlockFont:
    """The session's cut of the block font (``tt``, parsed once; ``program`` its bytes
    deflated, ``program_len`` long before) as the five PDF objects a composite font
    needs (Type0, CIDFontType2, descriptor, ToUnicode, program), written once with
    ``{}`` where the first object's number goes; glyph ids are the CIDs."""

    def __init__(self, tt: ttLib.TTFont, program: bytes, program_len: int, tag: str) -> None:
        upm = int(tt["head"].unitsPerEm)
        cmap: dict[int, str] = tt.getBestCmap()
        hmtx = tt["hmtx"]
        self.gids: dict[str, int] = {chr(u): tt.getGlyphID(g) for u, g in cmap.items()}
        self.widths: dict[int, int] = {
            tt.getGlyphID(g): round(hmtx[g][0] * 1000 / upm) for g in tt.getGlyphOrder()
        }
        name = f"{tag}+{tt['name'].getDebugName(6) or 'DejaVuSans'}"
        head, hhea, os2 = tt["head"], tt["hhea"], tt["OS/2"]
        scale = 1000 / upm
        bbox = " ".join(str(round(v * scale)) for v in (head.xMin, head.yMin, head.xMax, head.yMax))
        cap = round(getattr(os2, "sCapHeight", hhea.ascent) * scale)
        widths = " ".join(f"{gid} [{w}]" for gid, w in sorted(self.widths.items()))
        to_unicode = zlib.compress(_to_unicode(self.gids), 6)
        self._objects = (
            f"<< /Type /Font /Subtype /Type0 /BaseFont /{name} /Encoding /Identity-H "
            f"/DescendantFonts [{{1}} 0 R] /ToUnicode {{3}} 0 R >>",
            f"<< /Type /Font /Subtype /CIDFontType2 /BaseFont /{name} /CIDSystemInfo "
            f"<< /Registry (Adobe) /Ordering (Identity) /Supplement 0 >> /FontDescriptor "
            f"{{2}} 0 R /DW 1000 /W [{widths}] /CIDToGIDMap /Identity >>",
            f"<< /Type /FontDescriptor /FontName /{name} /Flags 4 /FontBBox [{bbox}] "
            f"/ItalicAngle 0 /Ascent {round(hhea.ascent * scale)} /Descent "
            f"{round(hhea.descent * scale)} /CapHeight {cap} /StemV 80 /FontFile2 {{4}} 0 R >>",
        )
        self._to_unicode = to_unicode
        self._program, self._program_len = program, program_len

    def objects(self, first: int) -> list[bytes]:
        """The five objects' bodies, numbered from ``first``."""
        n = [str(first + i) for i in range(5)]
        bodies = [
            o.replace("{1}", n[1]).replace("{2}", n[2]).replace("{3}", n[3]).replace("{4}", n[4])
            for o in self._objects
        ]
        return [
            *(b.encode("ascii") for b in bodies),
            _stream("/Filter /FlateDecode", self._to_unicode),
            _stream(f"/Filter /FlateDecode /Length1 {self._program_len}", self._program),
        ]

    def line(self, text: str) -> tuple[str, int]:
        """``text`` as the hex string of its glyph ids, and its width in 1/1000 em."""
        gids = [self.gids.get(c, 0) for c in text]
        return "".join(f"{g:04x}" for g in gids), sum(self.widths.get(g, 0) for g in gids)


def _to_unicode(gids: dict[str, int]) -> bytes:
    pairs = sorted((g, c) for c, g in gids.items() if g and ord(c) < 0x10000)
    seen: dict[int, str] = {}
    for g, c in pairs:
        seen.setdefault(g, c)
    rows = [f"<{g:04x}> <{ord(c):04x}>" for g, c in seen.items()]
    chunks = [rows[i : i + 100] for i in range(0, len(rows), 100)]
    body = "".join(f"{len(c)} beginbfchar\n" + "\n".join(c) + "\nendbfchar\n" for c in chunks)
    return (
        "/CIDInit /ProcSet findresource begin\n12 dict begin\nbegincmap\n"
        "/CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def\n"
        "/CMapName /Adobe-Identity-UCS def\n/CMapType 2 def\n"
        "1 begincodespacerange\n<0000> <ffff>\nendcodespacerange\n"
        f"{body}endcmap\nCMapName currentdict /CMap defineresource pop\nend\nend\n"
    ).encode("ascii")


def _stream(entries: str, data: bytes) -> bytes:
    return f"<< {entries} /Length {len(data)} >>\nstream\n".encode() + data + b"\nendstream"


def appearance(font: BlockFont, lines: list[str], box: tuple[float, float], size: float) -> bytes:
    """The block's normal appearance: a frame and the lines, shrunk to fit the box."""
    width, height = box
    pad = 6.0
    coded = [font.line(line) for line in lines]
    widest = max((w for _, w in coded), default=1) * size / 1000
    leading = size * 1.25
    fit = min(1.0, (width - 2 * pad) / widest, (height - 2 * pad) / (leading * len(lines)))
    size, leading = size * fit, leading * fit
    shown = " T* ".join(f"<{hexed}> Tj" for hexed, _ in coded)
    content = (
        f"q 1 w 0 0 0 RG 0.5 0.5 {width - 1:.2f} {height - 1:.2f} re S Q\n"
        f"BT 0 0 0 rg /F1 {size:.2f} Tf {leading:.2f} TL {pad:.2f} {height - pad - size:.2f} Td "
        f"{shown} ET\n"
    ).encode("ascii")
    return (
        (
            f"<< /Type /XObject /Subtype /Form /BBox [0 0 {width:.2f} {height:.2f}] "
            f"/Resources << /Font << /F1 {{font}} 0 R >> >> /Length {len(content)} >>\nstream\n"
        ).encode("ascii")
        + content
        + b"\nendstream"
    )


@dataclass(frozen=True)
class SignatureText:
    """What the signature dictionary says: who, why, where, when."""

    name: str
    reason: str
    location: str
    when: datetime


def pdf_text(value: str) -> str:
    """A PDF text string in UTF-16BE, as a hex string (any letter, no escaping)."""
    return "<feff" + value.encode("utf-16-be").hex() + ">"


def pdf_date(when: datetime) -> str:
    offset = when.strftime("%z") or "+0000"
    return f"(D:{when:%Y%m%d%H%M%S}{offset[:3]}'{offset[3:]}')"


PLACEHOLDER = "/ByteRange [0 0000000000 0000000000 0000000000]"


def update_objects(
    layout: PdfLayout,
    font: BlockFont,
    block: tuple[list[str], tuple[int, int, int, int], float],
    text: SignatureText,
    reserved: int,
) -> list[tuple[int, bytes]]:
    """The update's objects (number, body): catalog with its form, last page with its
    widget, signature dictionary (``PLACEHOLDER`` and zeroed /Contents), widget,
    appearance and font."""
    lines, rect, size = block
    sig, widget, ap, first_font = layout.size, layout.size + 1, layout.size + 2, layout.size + 3
    meta = f" /Location {pdf_text(text.location)}" if text.location else ""
    look = appearance(font, lines, (rect[2] - rect[0], rect[3] - rect[1]), size)
    return [
        (1, f"{layout.catalog[:-2]}/AcroForm << /Fields [{widget} 0 R] /SigFlags 3 >> >>".encode()),
        (layout.page, f"{layout.page_dict[:-2]}/Annots [{widget} 0 R] >>".encode()),
        (
            sig,
            (
                f"<< /Type /Sig /Filter /Adobe.PPKLite /SubFilter /ETSI.CAdES.detached "
                f"/Name {pdf_text(text.name)} /Reason {pdf_text(text.reason)}{meta} "
                f"/M {pdf_date(text.when)} {PLACEHOLDER} /Contents <{'0' * (2 * reserved)}> >>"
            ).encode(),
        ),
        (
            widget,
            (
                f"<< /Type /Annot /Subtype /Widget /FT /Sig /T ({FIELD}) /V {sig} 0 R /F 132 "
                f"/P {layout.page} 0 R /Rect [{' '.join(map(str, rect))}] /AP << /N {ap} 0 R >> >>"
            ).encode(),
        ),
        (ap, look.replace(b"{font}", str(first_font).encode())),
        *enumerate(font.objects(first_font), start=first_font),
    ]  # fmt: skip


def appended(pdf: bytes, layout: PdfLayout, objects: list[tuple[int, bytes]]) -> bytearray:
    """``pdf`` with ``objects`` appended as an incremental update (xref and trailer)."""
    out = bytearray(pdf)
    offsets: dict[int, int] = {}
    for number, body in objects:
        offsets[number] = len(out)
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    rows = ["xref\n"]
    rows += [f"{n} 1\n{offsets[n]:010d} 00000 n\r\n" for n in sorted(offsets)]
    new_id = hashlib.sha256(bytes(out[-4096:])).hexdigest()[:32]
    rows.append(
        f"trailer\n<< /Size {max(offsets) + 1} /Root 1 0 R /Info {layout.info} 0 R "
        f"/ID [<{layout.file_id}> <{new_id}>] /Prev {layout.startxref} >>\n"
        f"startxref\n{xref}\n%%EOF\n"
    )
    out += "".join(rows).encode("ascii")
    return out


def signed_update(
    pdf: bytes,
    layout: PdfLayout,
    font: BlockFont,
    block: tuple[list[str], tuple[int, int, int, int], float],
    text: SignatureText,
    reserved: int,
    sign: Callable[[bytes], bytes],
) -> bytes:
    """``pdf`` with the update that signs it: ``sign`` takes the SHA-256 digest of the
    signed byte ranges and returns the CMS (DER), at most ``reserved`` bytes."""
    out = appended(pdf, layout, update_objects(layout, font, block, text, reserved))
    at = out.index(PLACEHOLDER.encode(), len(pdf))
    start = out.index(b"/Contents <", at) + len(b"/Contents ")
    end = start + 2 * reserved + 2
    ranges = f"/ByteRange [0 {start:010d} {end:010d} {len(out) - end:010d}]".encode()
    out[at : at + len(ranges)] = ranges
    view = memoryview(out)
    digest = hashlib.sha256(view[:start])
    digest.update(view[end:])
    view.release()
    der = sign(digest.digest())
    if len(der) > reserved:
        raise ValueError(f"the signature ({len(der)} bytes) is larger than its room ({reserved})")
    out[start + 1 : start + 1 + 2 * len(der)] = der.hex().encode("ascii")
    return bytes(out)
