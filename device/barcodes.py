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
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt
import zbar
from PIL import Image, ImageFilter

from device.errors import BarcodeError

# Short side of an A4 page at 150 dpi: the size of the fast pass.
FAST_SHORT_SIDE = 1240
TWO_D = frozenset({"QRCODE"})
# Short side of the image the code finder looks at (~75 dpi for A4).
FINDER_SHORT_SIDE = 620
# The finder's window: this fraction of the page's short side (about 4 mm on A4) ...
FINDER_WINDOW = 1 / 52
# ... and how much of a window must be dark for a code to be suspected there: every
# generated code, however small, faded or noisy, fills 0.68 of it and more; body text
# at most 0.37 (the darkness is scaled to the page's own ink-to-paper contrast).
FINDER_DENSITY = 0.5
# Contrast below this (grey levels) is noise on blank paper, not ink.
FINDER_MIN_CONTRAST = 48
# Margin around a suspected code, in finder windows: the quiet zone and a skewed corner.
FINDER_MARGIN = 2
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
Box = tuple[int, int, int, int]  # left, top, right, bottom (exclusive), in pixels
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
        for tilt in TILTS:
            yield partial(self._scan, self._zbar, _tilted(small_crop, tilt))
        if self._fallback is not None and not self._fallback_whole_page:
            yield partial(self._fallback, crop)

    def quick(self, image: Image.Image, page: int) -> tuple[Barcode, ...]:
        """The fast pass alone (for benchmarks and previews): the page at ~150 dpi, coarse."""
        return self._collect(page, self._scan(self._zbar, shrink(to_grey(image))))

    def read(self, image: Image.Image, page: int) -> tuple[Barcode, ...]:
        grey = to_grey(image)
        regions = candidate_regions(grey)
        results: list[tuple[str, str]] = []
        if regions:
            small = shrink(grey)
            scale = grey.width / small.width
            found = self._locate(self._zbar, small)
            results = [(kind, value) for kind, value, _ in found]
            if any(symbology in TWO_D for symbology, _ in results):
                return self._collect(page, results)
            if found:
                regions = candidate_regions(grey, [_scaled(b, scale) for _, _, b in found])
            for box in regions:
                results += self._read_region(grey.crop(box), small.crop(_scaled(box, 1 / scale)))
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


def candidate_regions(grey: Image.Image, decoded: Sequence[Box] = ()) -> list[Box]:
    """Places on the page (boxes in its pixels) dense enough in ink to be a code
    that none of the ``decoded`` boxes explains; none on most text pages.

    Bars and QR modules cover half of the area they span; text, even bold capitals,
    much less. The darkness of ~4 mm windows, relative to the page's ink-to-paper
    contrast, tells them apart at ~75 dpi in a few milliseconds.
    """
    factor = max(1, round(min(grey.size) / FINDER_SHORT_SIDE))
    tiny = grey.reduce(factor) if factor > 1 else grey
    cumulative = np.cumsum(tiny.histogram())
    paper = int(np.searchsorted(cumulative, 0.9 * cumulative[-1]))
    ink = int(np.searchsorted(cumulative, 0.01 * cumulative[-1]))
    contrast = max(paper - ink, FINDER_MIN_CONTRAST)
    # darkness below paper as a fraction of the contrast, 0..255
    dark = tiny.point([min(255, max(0, (paper - v) * 255 // contrast)) for v in range(256)])
    # windows of 3 x 3 cells, a cell apart: the mean darkness of each cell, then sums
    step = max(1, round(min(tiny.size) * FINDER_WINDOW / 3))
    window = 3 * step
    cells = np.asarray(dark.reduce(step) if step > 1 else dark, dtype=np.uint16)
    if min(cells.shape) < 3:
        return []
    rows, cols = cells.shape[0] - 2, cells.shape[1] - 2
    total = sum(cells[dy : dy + rows, dx : dx + cols] for dy in range(3) for dx in range(3))
    dense = np.asarray(total >= FINDER_DENSITY * 255 * 9)
    if not dense.any():
        return []
    for left, top, right, bottom in decoded:
        # a decoded code explains every window that overlaps it
        c0 = max(0, (left // factor - window) // step + 1)
        r0 = max(0, (top // factor - window) // step + 1)
        dense[r0 : bottom // factor // step + 1, c0 : right // factor // step + 1] = False
    margin = FINDER_MARGIN * window
    boxes = [
        (
            max(0, (c0 * step - margin) * factor),
            max(0, (r0 * step - margin) * factor),
            min(grey.width, ((c1 - 1) * step + window + margin) * factor),
            min(grey.height, ((r1 - 1) * step + window + margin) * factor),
        )
        for r0, c0, r1, c1 in _components(dense)
    ]
    return _merged(boxes)


def _merged(boxes: list[Box]) -> list[Box]:
    """Overlapping boxes joined: the wide spaces of a 1-D code can cut it into pieces."""
    merged: list[Box] = []
    for box in boxes:
        while True:
            for n, other in enumerate(merged):
                if (
                    box[0] < other[2]
                    and other[0] < box[2]
                    and box[1] < other[3]
                    and other[1] < box[3]
                ):
                    del merged[n]
                    box = (
                        min(box[0], other[0]),
                        min(box[1], other[1]),
                        max(box[2], other[2]),
                        max(box[3], other[3]),
                    )
                    break
            else:
                break
        merged.append(box)
    return merged


def _components(mask: npt.NDArray[np.bool_]) -> list[Box]:
    """Bounding boxes (row0, col0, row1, col1; exclusive ends) of 8-connected True cells."""
    seen = np.zeros_like(mask)
    rows, cols = mask.shape
    boxes = []
    for r, c in zip(*np.nonzero(mask), strict=True):
        if seen[r, c]:
            continue
        seen[r, c] = True
        stack = [(int(r), int(c))]
        r0, c0, r1, c1 = int(r), int(c), int(r) + 1, int(c) + 1
        while stack:
            y, x = stack.pop()
            r0, c0, r1, c1 = min(r0, y), min(c0, x), max(r1, y + 1), max(c1, x + 1)
            for ny in (y - 1, y, y + 1):
                for nx in (x - 1, x, x + 1):
                    if 0 <= ny < rows and 0 <= nx < cols and mask[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        stack.append((ny, nx))
        boxes.append((r0, c0, r1, c1))
    return boxes


def _bounds(points: Sequence[tuple[int, int]]) -> Box:
    xs = [x for x, _ in points] or [0]
    ys = [y for _, y in points] or [0]
    return min(xs), min(ys), max(xs) + 1, max(ys) + 1


def _scaled(box: Box, scale: float) -> Box:
    left, top, right, bottom = box
    return int(left * scale), int(top * scale), int(right * scale + 0.5), int(bottom * scale + 0.5)


def _tilted(grey: Image.Image, degrees: float) -> Image.Image:
    return grey.rotate(degrees, resample=Image.Resampling.BILINEAR, expand=True, fillcolor=255)
