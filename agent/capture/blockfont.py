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

from fontTools import subset, ttLib
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.font.api import FontEngineFactory
from pyhanko.pdf_utils.font.opentype import CIDFontType2, GlyphAccumulator
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
    """pyHanko's accumulator over the session's font, embedding it as it is."""

    def __init__(
        self, writer: BasePdfFileWriter, font: bytes, program: bytes, size: int, stream: Any
    ) -> None:
        super().__init__(writer, io.BytesIO(font), size, obj_stream=stream)
        if not isinstance(self.cidfont_obj, CIDFontType2):
            raise ValueError("the certification block's font must be TrueType")
        self.cidfont_obj = _PrebuiltProgram(
            self.tt, self.cidfont_obj.name.partition("+")[2], self.subset_prefix, program
        )

    def _extract_subset(self, options: subset.Options | None = None) -> None:
        """Nothing: the session's font is already the cut."""


class SessionFont(FontEngineFactory):
    """The font engine for a session's blocks: ``font`` is already cut (``cut_font``)."""

    def __init__(self, font: bytes, size: int) -> None:
        self.font, self.size = font, size
        self.program = zlib.compress(font, 6)

    def create_font_engine(
        self, writer: BasePdfFileWriter, obj_stream: Any = None
    ) -> GlyphAccumulator:
        if obj_stream is None and writer.stream_xrefs:
            obj_stream = writer.prepare_object_stream()  # type: ignore[no-untyped-call]
        return _SessionGlyphs(writer, self.font, self.program, self.size, obj_stream)
