"""The work on one page that needs no batch: barcodes, checks, deskew, encoding.

A pure function of the page and the settings, so that any worker can do it and
the batch (scratch, split, seal) only takes the results, in page order. What a
page becomes is small: its barcodes, its check, its encoded image (a G4 page is
tens of KB) and a thumbnail when someone watches; the full image is let go here.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image

from agent.capture.codes import Signal, interpret
from agent.capture.events import thumbnail_jpeg
from agent.capture.ink import bilevel_rows
from agent.capture.pagememory import PageMemory
from agent.capture.pages import PageCheck, deskew, planned_check, work_factor
from agent.capture.pdf import EncodedPage, encode_page, g4_page, wrap_jpeg
from agent.config import CaptureConfig
from device.barcodes import Barcode, BarcodeReader, to_grey
from device.errors import InputError
from device.pixels import Reduced, reduced
from device.scanner import ScannedPage


@dataclass(frozen=True)
class PageWork:
    """What became of one page; ``refusal`` (one line) when it cannot be archived."""

    index: int
    barcodes: tuple[Barcode, ...]
    signals: tuple[Signal, ...]
    check: PageCheck | None
    encoded: EncodedPage | None
    sha256: str
    refusal: str | None
    thumbnail: bytes | None


def encode(
    page: ScannedPage,
    grey: Image.Image,
    check: PageCheck,
    profile: str,
    pixels: npt.NDArray[np.uint8] | None = None,
) -> EncodedPage:
    """A colour JPEG from the scanner is wrapped as it is, unless deskew changed it; the
    ``text`` profile codes the shared grey page (a bilevel scan: its own bits; ``pixels``,
    the grey page's own, are read in place), the others the page as scanned."""
    skew = check.skew_deg if "deskewed" in check.flags else 0.0
    if page.jpeg is not None and profile == "color" and not skew:
        return wrap_jpeg(page.jpeg, page.dpi)
    # a bilevel scan keeps its own bits, read from the shared grey as any page's ink
    if profile == "text" and page.image.mode == "1":
        return g4_page(*bilevel_rows(grey, skew, pixels=pixels), page.dpi)
    image = grey if profile == "text" else page.image
    return encode_page(image, page.dpi, profile, skew_deg=skew, pixels=pixels)


def shared_grey(image: Image.Image, dpi: int) -> tuple[Image.Image, Reduced | None]:
    """The page in grey, converted once for every step, and its working copy (~75 dpi,
    reduced once for the code finder and the checks). A page of another mode (16-bit,
    transparent) is grey for the barcodes only; the checks flatten it their own way."""
    grey = to_grey(image)
    if image.mode not in ("L", "RGB", "1"):
        return grey, None
    factor = work_factor(dpi)
    return grey, Reduced(factor, reduced(grey, factor))


def work_page(
    page: ScannedPage,
    index: int,
    reader: BarcodeReader,
    capture: CaptureConfig,
    *,
    thumbnail: bool = False,
    memory: PageMemory | None = None,
) -> PageWork:
    """Barcodes, checks, deskew and encoding of page ``index`` of the batch. With
    ``memory`` (the worker's), a JPEG not yet decoded is decoded into it, and the page's
    image is not to be used after this returns."""
    image = memory.decode(page.image) if memory is not None else page.image
    grey, small = shared_grey(image, page.dpi)
    barcodes = reader.read(grey, index, small=small)
    signals = tuple(interpret(b, capture.separator_text) for b in barcodes)
    try:
        check = planned_check(
            grey if small is not None else page.image,
            page.dpi,
            min_dpi=capture.min_dpi,
            blank_threshold=capture.blank_threshold,
            do_deskew=capture.deskew,
            small=small,
        )
    except InputError as exc:
        thumb = thumbnail_jpeg(grey) if thumbnail else None
        line = exc.line().removeprefix("error: ")
        return PageWork(index, barcodes, signals, None, None, "", line, thumb)
    del small  # the working copy is done with: only the page and its ink from here on
    pixels = memory.pixels(grey) if memory is not None else None
    encoded = encode(page, grey, check, capture.profile, pixels)
    thumb = page_thumbnail(grey, check) if thumbnail else None
    digest = hashlib.sha256(encoded.data).hexdigest()
    return PageWork(index, barcodes, signals, check, encoded, digest, None, thumb)


def page_thumbnail(grey: Image.Image, check: PageCheck) -> bytes:
    """The thumbnail of the page as archived: a deskewed page is turned at thumbnail size."""
    if "deskewed" not in check.flags:
        return thumbnail_jpeg(grey)
    small = Image.open(io.BytesIO(thumbnail_jpeg(grey)))
    out = io.BytesIO()
    deskew(small, check.skew_deg, smooth=True).save(out, "JPEG", quality=70)
    return out.getvalue()
