"""The certification block's font, cut and compressed once per signing session.

pyHanko's glyph accumulator subsets and re-encodes its font for every signature
(fontTools' save and a deflate, most of the cost of signing a short document).
A session's blocks can only print the letters of its own wording, the signer's
name, title and place, and ASCII (numbers, dates, ids), so that cut of DejaVu
Sans is made once, when the officer opens the session, and every document
embeds those same bytes: the accumulator still shapes each block's text and
writes the widths of the glyphs it used, but no longer cuts the font again.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Iterable
from typing import Any

import uharfbuzz as hb
from fontTools import subset, ttLib
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.font.api import FontEngine, FontEngineFactory
from pyhanko.pdf_utils.font.opentype import CIDFontType2, GlyphAccumulator, _read_ps_name
from pyhanko.pdf_utils.generic import pdf_name
from pyhanko.pdf_utils.writer import BasePdfFileWriter

ASCII = range(0x20, 0x7F)


def cut_font(font: bytes, texts: Iterable[str]) -> bytes:
    """The font reduced to ASCII and the characters of ``texts``, layout tables
    dropped (Vietnamese letters are precomposed in DejaVu: nothing to shape)."""
    tt = ttLib.TTFont(io.BytesIO(font))
    options = subset.Options()
    options.drop_tables += ["FFTM", "GSUB", "GPOS", "GDEF", "kern"]
    subsetter = subset.Subsetter(options)
    subsetter.populate(unicodes=sorted(set(ASCII) | {ord(c) for t in texts for c in t}))
    subsetter.subset(tt)
    out = io.BytesIO()
    tt.save(out)
    return out.getvalue()


class _PrebuiltProgram(CIDFontType2):
    """A TrueType CID font whose program is the session's bytes, already deflated."""

    def __init__(self, tt: ttLib.TTFont, ps_name: str, prefix: str, program: bytes) -> None:
        super().__init__(tt, ps_name, prefix)
        self._program = program

    def set_font_file(self, writer: BasePdfFileWriter) -> generic.IndirectObject:
        stream = generic.StreamObject(
            {pdf_name("/Filter"): pdf_name("/FlateDecode")}, encoded_data=self._program
        )
        ref: generic.IndirectObject = writer.add_object(stream)
        self._font_descriptor[pdf_name("/FontFile2")] = ref
        return ref


class _SessionGlyphs(GlyphAccumulator):
    """pyHanko's accumulator over the session's font, parsed once (``SessionFont``) and
    embedded as it is. pyHanko's own ``__init__`` parses the font file again for every
    signature; this one takes the session's parsed font, which nothing changes (no
    subset is cut from it), and sets what that ``__init__`` sets."""

    def __init__(self, writer: BasePdfFileWriter, font: SessionFont, stream: Any) -> None:
        FontEngine.__init__(
            self, writer, font.ps_name, True, obj_stream=stream, font_size=font.size
        )
        self.hb_font, self.tt = font.hb_font, font.tt
        self._font_ref = writer.allocate_placeholder()
        self.cff_charset = None
        self.use_raw_gids = True
        self.cidfont_obj = _PrebuiltProgram(font.tt, font.ps_name, self.subset_prefix, font.program)
        self.features = None
        self.units_per_em = font.units_per_em
        self._glyphs: dict[int, tuple[int, int]] = {}
        self._glyph_set = font.glyph_set
        self._cid_to_unicode: dict[int, str] = {}
        self._GlyphAccumulator__reverse_cmap = None
        self.ot_language_tag = self.ot_script_tag = None
        self.writing_direction = self.bcp47_lang_code = None
        self._subset_created = self._write_prepared = False

    def _extract_subset(self, options: subset.Options | None = None) -> None:
        """Nothing: the session's font is already the cut."""


class SessionFont(FontEngineFactory):
    """The font engine for a session's blocks: ``font`` is already cut (``cut_font``)."""

    def __init__(self, font: bytes, size: int) -> None:
        self.font, self.size = font, size
        self.program = zlib.compress(font, 6)
        self.tt = ttLib.TTFont(io.BytesIO(font))
        if "glyf" not in self.tt:
            raise ValueError("the certification block's font must be TrueType")
        self.hb_font = hb.Font(hb.Face(font))
        self.ps_name = _read_ps_name(self.tt)
        self.units_per_em = int(self.tt["head"].unitsPerEm)
        self.glyph_set = self.tt.getGlyphSet(preferCFF=True)
        for tag in ("head", "hhea", "hmtx", "OS/2", "post", "cmap", "glyf", "loca"):
            _ = self.tt[tag]  # parsed now, once: every document reads them

    def create_font_engine(
        self, writer: BasePdfFileWriter, obj_stream: Any = None
    ) -> GlyphAccumulator:
        if obj_stream is None and writer.stream_xrefs:
            obj_stream = writer.prepare_object_stream()  # type: ignore[no-untyped-call]
        return _SessionGlyphs(writer, self, obj_stream)
