"""Barcode decoding: zbar behind a thin adapter that turns a page image into ``Barcode`` values.

Most pages carry no code, so decoding starts with a look, not a read: a ~75 dpi
copy of the page shows in a few milliseconds where ink is dense enough to be a
code (``candidate_regions``); a page without such a place is done. Otherwise a
ladder of passes stops as soon as it has what the page can give: a downscaled
coarse pass finds the usual cover-sheet QR or receipt Code 128; full resolution
on each place the coarse pass left unexplained finds small codes; binarised,
slightly rotated and zxing variants of that place find codes on noisy, faded or
crooked scans. What a page's barcodes *mean* is decided elsewhere (``agent.codes``).
"""

from __future__ import annotations

import importlib
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, Protocol

import numpy as np
import zbar
from PIL import Image, ImageFilter

from device.codefinder import Box, candidate_regions
from device.errors import BarcodeError
from device.pixels import Reduced

# Short side of an A4 page at 150 dpi: the size of the fast pass.
FAST_SHORT_SIDE = 1240
TWO_D = frozenset({"QRCODE"})
# Tilts tried on the thorough pass: long 1-D codes skewed more than their bar height allows.
TILTS = (-7.0, 7.0)
# ... and only on places whose edges run one way (``parallel_edges`` at ~150 dpi): every
# 1-D code of the test pages and the counter corpus, small, tilted, faded or noisy, scores
# 0.58 and more with the text around it; the dense text, headings and pictures of the real
# scans 0.23 and less, generated bold capitals 0.31, QR codes 0.05
BARS_COHERENCE = 0.4
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
    """``small``: the page already box-reduced (grey), for a reader that looks at it."""

    def read(
        self, image: Image.Image, page: int, *, small: Reduced | None = None
    ) -> tuple[Barcode, ...]: ...


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


def parallel_edges(grey: Image.Image) -> float:
    """How much the edges of a place run one way, 0 to 1: the coherence of its gradients'
    structure tensor. The bars of a 1-D code, however tilted, score high; text, a seal, a
    photograph or a QR code's modules (edges both ways) low."""
    pixels = np.asarray(grey, dtype=np.float32)
    if min(pixels.shape) < 3:
        return 0.0
    across = pixels[1:-1, 2:] - pixels[1:-1, :-2]
    down = pixels[2:, 1:-1] - pixels[:-2, 1:-1]
    xx, yy = float(np.vdot(across, across)), float(np.vdot(down, down))
    xy = float(np.vdot(across, down))
    total = xx + yy
    return math.sqrt((xx - yy) ** 2 + 4 * xy * xy) / total if total else 0.0


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
Found = tuple[str, str, Box]  # symbology, value, where on the scanned image
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

    The ladder, only when ``candidate_regions`` finds a place dense enough to be a
    code: (1) a coarse pass over the page box-averaged to ~150 dpi, enough when it
    finds a 2-D code; (2) full resolution on each candidate place that no decoded
    code explains (small codes, a 2-D code beside a 1-D one); then, with
    ``thorough`` and while that place gave nothing, (3) the place binarised (noise,
    JPEG, faded print), (4) tilted by a few degrees (long 1-D codes on a crooked
    sheet) and (5) zxing on it. A ``fallback`` decoder passed in by the caller runs
    instead on the whole page, whenever the page gave no code at all.

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
        # zbar's image scanner keeps state between calls: one per thread, so that page
        # workers can share a reader (zbar's C calls, through ctypes, release the GIL)
        self._scanners = threading.local()
        self._fallback = zxing_decoder(wanted) if fallback == "auto" else fallback
        # a caller's own decoder sees the whole page; zxing (~80 ms a page) only candidate crops
        self._fallback_whole_page = fallback != "auto"

    @property
    def has_fallback(self) -> bool:
        return self._fallback is not None

    @property
    def _zbar(self) -> Any:  # every second scan line: as good as every line, twice as fast
        if (scanner := getattr(self._scanners, "zbar", None)) is None:
            scanner = self._scanners.zbar = _scanner(self.symbologies, 2)
        return scanner

    def _scan(self, scanner: Any, grey: Image.Image) -> list[tuple[str, str]]:
        return [(kind, value) for kind, value, _ in self._locate(scanner, grey)]

    def _locate(self, scanner: Any, grey: Image.Image) -> list[Found]:
        symbols = scanner.scan(np.asarray(grey))
        return [
            (normalise_symbology(s.type), decode_text(s.data), _bounds(s.position)) for s in symbols
        ]

    def _variants(
        self, crop: Image.Image, small_crop: Image.Image
    ) -> Iterator[Callable[[], list[tuple[str, str]]]]:
        yield partial(self._scan, self._zbar, binarise(crop))
        if parallel_edges(small_crop) >= BARS_COHERENCE:
            for tilt in TILTS:
                yield partial(self._scan, self._zbar, _tilted(small_crop, tilt))
        if self._fallback is not None and not self._fallback_whole_page:
            yield partial(self._fallback, crop)

    def quick(self, image: Image.Image, page: int) -> tuple[Barcode, ...]:
        """The fast pass alone (for benchmarks and previews): the page at ~150 dpi, coarse."""
        return self._collect(page, self._scan(self._zbar, shrink(to_grey(image))))

    def read(
        self, image: Image.Image, page: int, *, small: Reduced | None = None
    ) -> tuple[Barcode, ...]:
        grey = to_grey(image)
        regions = candidate_regions(grey, small=small)
        results: list[tuple[str, str]] = []
        if regions:
            # the coarse pass, on the suspected places only: most of a page is text
            factor = max(1, round(min(grey.size) / FAST_SHORT_SIDE))
            smalls = [_reduced(grey.crop(box), factor) for box in regions]
            found = [
                (kind, value, _shifted(_scaled(where, factor), box))
                for box, coarse in zip(regions, smalls, strict=True)
                for kind, value, where in self._locate(self._zbar, coarse)
            ]
            results = [(kind, value) for kind, value, _ in found]
            if any(symbology in TWO_D for symbology, _ in results):
                return self._collect(page, results)
            if found:
                regions = candidate_regions(grey, [where for _, _, where in found], small=small)
                smalls = [_reduced(grey.crop(box), factor) for box in regions]
            for box, coarse in zip(regions, smalls, strict=True):
                results += self._read_region(grey.crop(box), coarse)
        if not results and self.thorough and self._fallback_whole_page and self._fallback:
            results = self._fallback(grey)
        return self._collect(page, results)

    def _read_region(self, crop: Image.Image, small_crop: Image.Image) -> list[tuple[str, str]]:
        """A suspected code: full resolution, then (thorough) the variants until one reads."""
        results = self._scan(self._zbar, crop)
        if not results and self.thorough:
            for attempt in self._variants(crop, small_crop):
                results = attempt()
                if results:
                    break
        return results

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

    def read(
        self, image: Image.Image, page: int, *, small: Reduced | None = None
    ) -> tuple[Barcode, ...]:
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


def _bounds(points: Sequence[tuple[int, int]]) -> Box:
    xs = [x for x, _ in points] or [0]
    ys = [y for _, y in points] or [0]
    return min(xs), min(ys), max(xs) + 1, max(ys) + 1


def _scaled(box: Box, scale: float) -> Box:
    left, top, right, bottom = box
    return int(left * scale), int(top * scale), int(right * scale + 0.5), int(bottom * scale + 0.5)


def _reduced(grey: Image.Image, factor: int) -> Image.Image:
    return grey.reduce(factor) if factor > 1 else grey


def _shifted(box: Box, origin: Box) -> Box:
    left, top = origin[0], origin[1]
    return box[0] + left, box[1] + top, box[2] + left, box[3] + top


def _tilted(grey: Image.Image, degrees: float) -> Image.Image:
    return grey.rotate(degrees, resample=Image.Resampling.BILINEAR, expand=True, fillcolor=255)
