"""The work on one page that needs no batch: barcodes, checks, deskew, encoding.

A pure function of the page and the settings, so that any worker can do it and
the batch (scratch, split, seal) only takes the results, in page order. What a
page becomes is small: its barcodes, its check, its encoded image (a G4 page is
tens of KB) and a thumbnail when someone watches; the full image is let go here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from agent.capture.codes import Signal, interpret
from agent.capture.events import thumbnail_jpeg
from agent.capture.pages import PageCheck, prepare_page
from agent.capture.pdf import EncodedPage, encode_page, wrap_jpeg
from agent.config import CaptureConfig
from device.barcodes import Barcode, BarcodeReader
from device.errors import InputError
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


def encode(page: ScannedPage, image: Any, check: PageCheck, profile: str) -> EncodedPage:
    """A colour JPEG from the scanner is wrapped as it is, unless deskew changed it."""
    if page.jpeg is not None and profile == "color" and "deskewed" not in check.flags:
        return wrap_jpeg(page.jpeg, page.dpi)
    return encode_page(image, page.dpi, profile)


def work_page(
    page: ScannedPage,
    index: int,
    reader: BarcodeReader,
    capture: CaptureConfig,
    *,
    thumbnail: bool = False,
) -> PageWork:
    """Barcodes, checks, deskew and encoding of page ``index`` of the batch."""
    barcodes = reader.read(page.image, index)
    signals = tuple(interpret(b, capture.separator_text) for b in barcodes)
    try:
        image, check = prepare_page(
            page.image,
            page.dpi,
            min_dpi=capture.min_dpi,
            blank_threshold=capture.blank_threshold,
            do_deskew=capture.deskew,
        )
    except InputError as exc:
        thumb = thumbnail_jpeg(page.image) if thumbnail else None
        line = exc.line().removeprefix("error: ")
        return PageWork(index, barcodes, signals, None, None, "", line, thumb)
    encoded = encode(page, image, check, capture.profile)
    thumb = thumbnail_jpeg(image) if thumbnail else None
    digest = hashlib.sha256(encoded.data).hexdigest()
    return PageWork(index, barcodes, signals, check, encoded, digest, None, thumb)
