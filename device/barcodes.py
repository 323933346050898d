"""Barcode decoding: zbar behind a thin adapter that turns a page image into ``Barcode`` values.

Decoding is a ladder of passes that stops as soon as it has what a page can
give: a downscaled coarse pass finds the usual cover-sheet QR or receipt Code 128
in a few milliseconds; full resolution finds small codes; cleaned-up, binarised
and slightly rotated variants find codes on noisy, faded or crooked scans. What a
page's barcodes *mean* is decided elsewhere (``agent.codes``).
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, Protocol

import numpy as np
import zbar
from PIL import Image, ImageFilter

from agent.errors import BarcodeError

# Short side of an A4 page at 150 dpi: the size of the fast pass.
FAST_SHORT_SIDE = 1240
TWO_D = frozenset({"QRCODE"})
# Tilts tried on the thorough pass: long 1-D codes skewed more than their bar height allows.
TILTS = (-7.0, 7.0)
DEFAULT_SYMBOLOGIES = frozenset({"QRCODE", "CODE128", "CODE39"})
ZBAR_SYMBOLOGIES = frozenset(
    {"QRCODE", "CODE128", "CODE39", "EAN13", "EAN8", "UPCA", "UPCE", "ISBN10", "ISBN13", "I25"}
)


@dataclass(frozen=True)
class Barcode:
    page: int  # 0-based page index in the batch
    symbology: str  # normalised: "QRCODE", "CODE128", "CODE39", "EAN13", "I25", ...
    value: str  # decoded text (utf-8, else latin-1)


class BarcodeReader(Protocol):
    def read(self, image: Image.Image, page: int) -> tuple[Barcode, ...]: ...


def normalise_symbology(name: str) -> str:
    """zbar's "QR-Code", "CODE-128", "I2/5" and zxing's "QRCode", "Code128" -> "QRCODE", ..."""
    return "".join(ch for ch in name.upper() if ch.isalnum())


def decode_text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def to_grey(image: Image.Image) -> Image.Image:
    """Any page image as 8-bit grey; transparency is laid over white paper."""
    mode = image.mode
    if mode == "L":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") else max(float(arr.max()), 1.0)
        return Image.fromarray(np.clip(arr * (255.0 / top), 0, 255).astype(np.uint8))
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(paper, rgba).convert("L")
    return image.convert("L")


def binarise(grey: Image.Image) -> Image.Image:
    """Otsu threshold after a 3x3 blur: scanner noise and JPEG ringing become clean bars."""
    smooth = grey.filter(ImageFilter.BoxBlur(1))
    hist = np.asarray(smooth.histogram(), dtype=np.float64)
    levels = np.arange(256, dtype=np.float64)
    weight = np.cumsum(hist)
    mass = np.cumsum(hist * levels)
    total, total_mass = weight[-1], mass[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (total_mass * weight - total * mass) ** 2 / (weight * (total - weight))
    if not np.isfinite(between).any():
        return smooth  # one grey level: nothing to separate
    threshold = int(np.nanargmax(between))
    return smooth.point([0 if v <= threshold else 255 for v in range(256)])


def shrink(grey: Image.Image, short_side: int = FAST_SHORT_SIDE) -> Image.Image:
    """Box-average down to about ``short_side`` pixels (also averages away scanner noise)."""
    factor = round(min(grey.size) / short_side)
    return grey.reduce(factor) if factor >= 2 else grey


def _scanner(symbologies: frozenset[str], density: int) -> Any:
    config = [("ZBAR_NONE", "ZBAR_CFG_ENABLE", 0)]
    config += [(f"ZBAR_{name}", "ZBAR_CFG_ENABLE", 1) for name in sorted(symbologies)]
    config += [
        ("ZBAR_NONE", "ZBAR_CFG_X_DENSITY", density),
        ("ZBAR_NONE", "ZBAR_CFG_Y_DENSITY", density),
    ]
    return zbar.Scanner(config)


Decoder = Callable[[Image.Image], list[tuple[str, str]]]
# zxing-cpp's names for the symbologies zbar can read
ZXING_FORMATS = {
    "QRCODE": "QRCode",
    "CODE128": "Code128",
    "CODE39": "Code39",
    "EAN13": "EAN13",
    "EAN8": "EAN8",
    "I25": "ITF",
    "UPCA": "UPCA",
    "UPCE": "UPCE",
}


def zxing_decoder(symbologies: Iterable[str] = DEFAULT_SYMBOLOGIES) -> Decoder | None:
    """zxing-cpp as a last resort, or None when the optional ``zxing-cpp`` is not installed."""
    try:
        zxingcpp: Any = importlib.import_module("zxingcpp")
    except ImportError:
        return None
    names = {ZXING_FORMATS[name]: name for name in symbologies if name in ZXING_FORMATS}
    formats = zxingcpp.BarcodeFormats([getattr(zxingcpp.BarcodeFormat, zx) for zx in names])

    def decode(grey: Image.Image) -> list[tuple[str, str]]:
        found = zxingcpp.read_barcodes(np.asarray(grey), formats=formats)
        return [(names.get(b.format.name, b.format.name.upper()), b.text) for b in found]

    return decode


class ZbarReader:
    """Reads every barcode on a page; implements ``BarcodeReader``.

    The ladder: (1) a coarse pass over the page box-averaged to ~150 dpi, enough
    when it finds a 2-D code; (2) full resolution, for small codes and for 2-D
    codes beside a 1-D one; then, with ``thorough`` and only while nothing at all
    was found, (3) a binarised page (noise, JPEG, faded print), (4) the page tilted
    by a few degrees (long 1-D codes on a crooked sheet) and (5) ``fallback``.

    ``symbologies`` are zbar's names without ``ZBAR_``; EAN/UPC are off by
    default because scanner noise makes zbar invent them. ``fallback="auto"`` uses
    zxing-cpp when that optional package is installed; ``None`` does without.
    """

    def __init__(
        self,
        *,
        thorough: bool = True,
        symbologies: Iterable[str] = DEFAULT_SYMBOLOGIES,
        fallback: Decoder | Literal["auto"] | None = "auto",
    ) -> None:
        wanted = frozenset(symbologies)
        unknown = wanted - ZBAR_SYMBOLOGIES
        if unknown:
            raise BarcodeError(
                f"zbar cannot read symbology {', '.join(sorted(unknown))}",
                f"use some of {', '.join(sorted(ZBAR_SYMBOLOGIES))}",
            )
        self.thorough = thorough
        self.symbologies = wanted
        # Every second scan line: as good as every line on our pages, twice as fast.
        self._zbar = _scanner(wanted, 2)
        self._fallback = zxing_decoder(wanted) if fallback == "auto" else fallback

    @property
    def has_fallback(self) -> bool:
        return self._fallback is not None

    def _scan(self, scanner: Any, grey: Image.Image) -> list[tuple[str, str]]:
        symbols = scanner.scan(np.asarray(grey))
        return [(normalise_symbology(s.type), decode_text(s.data)) for s in symbols]

    def _variants(self, grey: Image.Image) -> Iterator[Callable[[], list[tuple[str, str]]]]:
        yield partial(self._scan, self._zbar, binarise(grey))
        small = shrink(grey)
        for tilt in TILTS:
            yield partial(self._scan, self._zbar, _tilted(small, tilt))
        if self._fallback is not None:
            yield partial(self._fallback, grey)

    def quick(self, image: Image.Image, page: int) -> tuple[Barcode, ...]:
        """The fast pass alone (for benchmarks and previews): the page at ~150 dpi, coarse."""
        return self._collect(page, self._scan(self._zbar, shrink(to_grey(image))))

    def read(self, image: Image.Image, page: int) -> tuple[Barcode, ...]:
        grey = to_grey(image)
        small = shrink(grey)
        results = self._scan(self._zbar, small)
        if any(symbology in TWO_D for symbology, _ in results):
            return self._collect(page, results)
        if small is not grey or not results:
            results += self._scan(self._zbar, grey)
        if results or not self.thorough:
            return self._collect(page, results)
        for attempt in self._variants(grey):
            results = attempt()
            if results:
                break
        return self._collect(page, results)

    def _collect(self, page: int, results: list[tuple[str, str]]) -> tuple[Barcode, ...]:
        found: dict[tuple[str, str], Barcode] = {}
        for symbology, value in results:
            if symbology in self.symbologies:
                found.setdefault((symbology, value), Barcode(page, symbology, value))
        return tuple(found.values())


class NaiveZbarReader:
    """Benchmark baseline: one zbar pass over the full-resolution page, every symbology."""

    def __init__(self) -> None:
        self._zbar = zbar.Scanner()

    def read(self, image: Image.Image, page: int) -> tuple[Barcode, ...]:
        symbols = self._zbar.scan(np.asarray(to_grey(image)))
        found = {(normalise_symbology(s.type), decode_text(s.data)): None for s in symbols}
        return tuple(Barcode(page, symbology, value) for symbology, value in found)


def time_reads(
    reader: BarcodeReader, images: Sequence[Image.Image], repeat: int = 3
) -> list[float]:
    """Seconds per ``reader.read`` for each image, best of ``repeat`` (after a warm-up read)."""
    if images:
        reader.read(images[0], 0)
    times = []
    for page, image in enumerate(images):
        best = float("inf")
        for _ in range(repeat):
            start = time.perf_counter()
            reader.read(image, page)
            best = min(best, time.perf_counter() - start)
        times.append(best)
    return times


def _tilted(grey: Image.Image, degrees: float) -> Image.Image:
    return grey.rotate(degrees, resample=Image.Resampling.BILINEAR, expand=True, fillcolor=255)
