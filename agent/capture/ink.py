"""The ink of a page: what the ``text`` profile keeps, as packed rows of bits for G4.

The page is thresholded against its own paper level and packed INK_BAND rows at
a time into one reused buffer; a crooked page is turned band by band on the way
(``pages.deskew``'s rotation, the same pixels), so neither a deskewed copy nor
a full-size mask of the page is ever made.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageChops

from agent.capture.pages import Mask, deskew, flat_mode
from device.pixels import max_filter

# ink_mask: darkness below the local paper level that counts as ink, whatever Otsu says
INK_MIN_DARKNESS = 40
INK_MAX_DARKNESS = 160
BACKGROUND_BLOCK = 32
# paper levels (5th to 95th percentile of blocks) this close count as even: one threshold
EVEN_PAPER_SPREAD = 24
# rows of a page thresholded and packed at a time (three bands of buffers per worker)
INK_BAND = 128


def ink_mask(image: Image.Image) -> Image.Image:
    """Ink of a page as a mode "1" image, ink = 1 (white in Pillow's view of "1")."""
    rows, size = ink_rows(image)
    return Image.frombytes("1", size, rows)


def ink_rows(
    image: Image.Image, skew_deg: float = 0.0, *, pixels: npt.NDArray[np.uint8] | None = None
) -> tuple[bytearray, tuple[int, int]]:
    """Ink of a page as packed rows of bits (most significant first, ink = 1, each row
    padded to a byte) and the page's size: what CCITT G4 codes, ink as black runs.
    With ``skew_deg``, the ink of the page deskewed (as ``deskew`` turns it), band by
    band: no deskewed copy of the whole page is ever made. ``pixels``: the grey page's
    own pixels as an array (``PageMemory.pixels``), read in place instead of copied.

    Otsu on darkness below the paper level decides what is ink. The paper level
    comes from ~2.7 mm blocks, each taking the brightest block nearby so that a
    paragraph, a barcode or a shadow does not pull it down. Even paper (the usual
    sheet-fed scan) gets one threshold for the page in a single pass; uneven paper
    (shadow, stain, yellowed edge) a threshold per place. The bits are packed by
    numpy: Pillow's packing of a "1" image costs more than the G4 coding itself.
    """
    grey = image if image.mode == "L" else flat_mode(image).convert("L")
    w, h = grey.size
    limit = ink_limit(grey, skew_deg)
    bands = _Bands(grey, skew_deg, pixels if grey is image else None)
    if isinstance(limit, int):
        return bands.packed(lambda _top, pixels, ink: np.less(pixels, limit, out=ink)), (w, h)
    # the quarter-size limits laid under the rows as a nearest-pixel resize would lay them:
    # each limit repeated over the columns and rows it covers (the indices only grow)
    ys = _nearest(h, limit.shape[0])
    across = np.bincount(_nearest(w, limit.shape[1]), minlength=limit.shape[1])
    under = np.empty((min(h, INK_BAND), w), dtype=np.uint8)

    def darker(top: int, pixels: npt.NDArray[np.uint8], ink: Mask) -> None:
        rows = ys[top : top + len(pixels)]
        wide = np.repeat(limit[rows[0] : rows[-1] + 1], across, axis=1)
        np.take(wide, rows - rows[0], axis=0, out=under[: len(pixels)])
        np.less(pixels, under[: len(pixels)], out=ink)

    return bands.packed(darker), (w, h)


def bilevel_rows(
    grey: Image.Image, skew_deg: float = 0.0, *, pixels: npt.NDArray[np.uint8] | None = None
) -> tuple[bytearray, tuple[int, int]]:
    """A bilevel scan's own bits as ``ink_rows`` gives a page's ink (black = ink = 1),
    from the scan in grey (0 and 255, as ``to_grey`` makes it), turned by ``skew_deg``
    band by band: neither a turned copy nor Pillow's slow packing of a "1" image."""
    bands = _Bands(grey, skew_deg, pixels)
    return bands.packed(lambda _top, rows, ink: np.less(rows, 128, out=ink)), grey.size


def ink_limit(grey: Image.Image, skew_deg: float = 0.0) -> int | npt.NDArray[np.uint8]:
    """The grey level below which a pixel of the page (deskewed by ``skew_deg``) is ink:
    one level for even paper, else one per pixel of a quarter-size copy of the page."""
    w, h = grey.size
    # every 4th pixel each way: the histogram of a scan, at a sixteenth of the cost
    quarter = (max(1, w // 4), max(1, h // 4))
    sample = grey.resize(quarter, Image.Resampling.NEAREST)
    if skew_deg:
        sample = deskew(sample, skew_deg)
    blocks = max_filter(sample.reduce(BACKGROUND_BLOCK // 4), 5)
    levels = blocks.histogram()
    if _percentile(levels, 0.95) - _percentile(levels, 0.05) <= EVEN_PAPER_SPREAD:
        paper = _percentile(levels, 0.5)
        counts = [0] * 256
        for level, count in enumerate(sample.histogram()):
            counts[max(0, paper - level)] += count
        # darker than the paper by more than the cut
        return max(0, paper - _otsu(counts))
    near = blocks.resize(quarter, Image.Resampling.BILINEAR)
    cut = _otsu(ImageChops.subtract(near, sample).histogram())
    # darker than the paper under it by more than the cut (a table: no wider copies)
    return grey_pixels(near.point([max(0, level - cut) for level in range(256)]))


def _nearest(size: int, smaller: int) -> npt.NDArray[np.intp]:
    """For each of ``size`` pixels, the pixel of a ``smaller`` copy that Pillow's
    nearest-pixel resize takes (its centre's)."""
    centres = (np.arange(size) + 0.5) * (smaller / size)
    index: npt.NDArray[np.intp] = np.minimum(centres, smaller - 1).astype(np.intp)
    return index


class _Bands:
    """The page (deskewed by ``skew_deg``) INK_BAND rows at a time, read into one band
    buffer that every band reuses (or straight from the page's ``pixels``), thresholded
    into one reused mask: besides the page, a page's ink costs three bands of memory and
    no allocation per band."""

    def __init__(
        self, grey: Image.Image, skew_deg: float, pixels: npt.NDArray[np.uint8] | None
    ) -> None:
        self._grey = grey
        w, h = grey.size
        self.height = h
        self._pixels = pixels if pixels is not None and pixels.shape == (h, w) else None
        self._buffer = np.empty((min(h, INK_BAND), w), dtype=np.uint8)
        self._mask = np.empty((min(h, INK_BAND), w), dtype=np.bool_)
        self._view = Image.frombuffer("L", (w, len(self._buffer)), self._buffer, "raw", "L", 0, 1)
        self._view.readonly = 0
        self._matrix = _rotation(grey.size, skew_deg) if skew_deg else None

    def pixels(self, top: int) -> npt.NDArray[np.uint8]:
        """Rows ``top`` to ``top + INK_BAND`` (fewer at the bottom)."""
        rows = min(self.height, top + INK_BAND) - top
        if self._matrix is None and self._pixels is not None:
            return self._pixels[top : top + rows]
        if self._matrix is None:
            # pasted at a negative offset: only the band's rows are copied, no crop made
            self._view.paste(self._grey, (0, -top))
        else:
            a, b, c, d, e, f = self._matrix
            band = self._grey.transform(
                (self._grey.width, rows),
                Image.Transform.AFFINE,
                (a, b, c + b * top, d, e, f + e * top),
                Image.Resampling.NEAREST,
                fillcolor=255,
            )
            self._view.paste(band, (0, 0))
        return self._buffer[:rows]

    def packed(self, ink: Callable[[int, npt.NDArray[np.uint8], Mask], object]) -> bytearray:
        """``ink(top, pixels, out)`` of each band of rows, packed into bits, straight into
        the page's rows (one buffer, no parts joined)."""
        w = self._grey.width
        out = bytearray(self.height * ((w + 7) // 8))
        rows = np.frombuffer(out, dtype=np.uint8).reshape(self.height, (w + 7) // 8)
        for top in range(0, self.height, INK_BAND):
            pixels = self.pixels(top)
            mask = self._mask[: len(pixels)]
            ink(top, pixels, mask)
            rows[top : top + len(pixels)] = np.packbits(mask, axis=1)
        return out


def _rotation(size: tuple[int, int], skew_deg: float) -> tuple[float, ...]:
    """The affine matrix (output pixel -> page pixel) of ``deskew``: Pillow's ``rotate``
    by ``-skew_deg`` about the centre, without expansion."""
    w, h = size
    angle = math.radians(skew_deg)
    cos, sin = round(math.cos(angle), 15), round(math.sin(angle), 15)
    cx, cy = w / 2, h / 2
    return (cos, sin, cos * -cx + sin * -cy + cx, -sin, cos, -sin * -cx + cos * -cy + cy)


def grey_pixels(grey: Image.Image) -> npt.NDArray[np.uint8]:
    """The pixels of an "L" image as a numpy array, copied in C (~1 ms a page): numpy's own
    path goes through ``tobytes`` in 64 KB chunks, 8-20 ms for a 300-dpi page.

    Pillow's ``frombuffer`` image shares the array's memory; it is marked read-only only
    so that Pillow copies before writing, which is exactly what is not wanted here."""
    w, h = grey.size
    out = np.empty((h, w), dtype=np.uint8)
    view = Image.frombuffer("L", (w, h), out, "raw", "L", 0, 1)
    view.readonly = 0
    view.paste(grey, (0, 0))
    return out


def _percentile(histogram: list[int], fraction: float) -> int:
    goal = fraction * sum(histogram)
    seen = 0
    for level, count in enumerate(histogram):
        seen += count
        if seen >= goal:
            return level
    return len(histogram) - 1


def _otsu(histogram: list[int]) -> int:
    total = sum(histogram)
    weighted = sum(level * count for level, count in enumerate(histogram))
    below = below_weighted = 0.0
    best, best_level = -1.0, INK_MIN_DARKNESS
    for level, count in enumerate(histogram):
        below += count
        below_weighted += level * count
        above = total - below
        if below == 0 or above == 0:
            continue
        mean_below = below_weighted / below
        mean_above = (weighted - below_weighted) / above
        spread = below * above * (mean_below - mean_above) ** 2
        if spread > best:
            best, best_level = spread, level
    return min(max(best_level, INK_MIN_DARKNESS), INK_MAX_DARKNESS)
