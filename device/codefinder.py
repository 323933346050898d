"""The code finder: where on a page a barcode can be, found in a few milliseconds.

Most pages carry no code, so barcode decoding starts with a look, not a read.
Bars and QR modules cover half of the area they span; text, even bold
capitals, much less. The darkness of ~4 mm windows of a ~75 dpi copy, against
the paper around them and relative to the page's ink-to-paper contrast, tells
them apart. The paper level is local (the brightest nearby, ~16 mm around), so
the slow darkening of a phone photo's vignette, a curled page's fold or a lid's
shadow is no code; and no code is printed in the outer ~5 mm of a sheet,
where those shadows are deepest.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from PIL import Image

from device.pixels import Reduced, max_filter, reduced

Box = tuple[int, int, int, int]  # left, top, right, bottom (exclusive), in pixels

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
# The paper level around a window: the brightest ~2.7 mm block within this fraction of
# the page's short side (about 16 mm on A4) ...
FINDER_PAPER_REACH = 1 / 13
# ... and no window within this fraction of the short side (about 5 mm) of the edge
FINDER_EDGE = 1 / 42


def finder_factor(size: tuple[int, int]) -> int:
    """How much the code finder reduces a page of this size (~75 dpi for A4)."""
    return max(1, round(min(size) / FINDER_SHORT_SIDE))


def candidate_regions(
    grey: Image.Image, decoded: Sequence[Box] = (), *, small: Reduced | None = None
) -> list[Box]:
    """Places on the page (boxes in its pixels) dense enough in ink to be a code
    that none of the ``decoded`` boxes explains; none on most text pages. ``small``:
    the page already reduced (the checks' working copy), used when its factor fits.

    Bars and QR modules cover half of the area they span; text, even bold capitals,
    much less. The darkness of ~4 mm windows below the paper around them, relative to
    the page's ink-to-paper contrast, tells them apart at ~75 dpi in a few milliseconds.
    """
    factor = finder_factor(grey.size)
    tiny = reduced(grey, factor, small)
    cumulative = np.cumsum(tiny.histogram())
    paper = int(np.searchsorted(cumulative, 0.9 * cumulative[-1]))
    ink = int(np.searchsorted(cumulative, 0.01 * cumulative[-1]))
    contrast = max(paper - ink, FINDER_MIN_CONTRAST)
    # windows of 3 x 3 cells, a cell apart: the darkness of each cell below the paper
    # around it, as a fraction of the contrast (0..255), then sums
    step = max(1, round(min(tiny.size) * FINDER_WINDOW / 3))
    window = 3 * step
    cells = _cell_darkness(tiny, step, max(0, paper - contrast), contrast)
    if min(cells.shape) < 3:
        return []
    rows, cols = cells.shape[0] - 2, cells.shape[1] - 2
    total = sum(cells[dy : dy + rows, dx : dx + cols] for dy in range(3) for dx in range(3))
    dense = np.asarray(total >= FINDER_DENSITY * 255 * 9)
    edge = max(1, round(min(tiny.size) * FINDER_EDGE / step))
    dense[:edge], dense[-edge:], dense[:, :edge], dense[:, -edge:] = False, False, False, False
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


def _cell_darkness(
    tiny: Image.Image, step: int, full: int, contrast: int
) -> npt.NDArray[np.uint16]:
    """How much darker than the paper around it each ``step`` x ``step`` cell of the
    page is, 255 for the page's full ink-to-paper ``contrast``: the cells' means against
    the paper level laid under the cells (not under every pixel: a sixteenth of the
    work). No pixel counts darker than ``full`` (the page's paper level less the
    contrast): a bold black stroke on a page of grey ink is no more than full darkness,
    as a code's bars are."""
    floored = tiny.point([max(level, full) for level in range(256)])
    means = np.asarray(floored.reduce(step) if step > 1 else floored, dtype=np.int32)
    paper = np.asarray(_local_paper(tiny, (means.shape[1], means.shape[0])), dtype=np.int32)
    darkness: npt.NDArray[np.uint16] = np.clip((paper - means) * 255 // contrast, 0, 255).astype(
        np.uint16
    )
    return darkness


def _local_paper(tiny: Image.Image, size: tuple[int, int]) -> Image.Image:
    """The paper level under each place, ``size`` places across and down: the brightest
    ~2.7 mm block within reach."""
    block = max(1, round(min(tiny.size) / 78))
    blocks = tiny.reduce(block) if block > 1 else tiny
    reach = max(1, round(min(blocks.size) * FINDER_PAPER_REACH))
    brightest = max_filter(blocks, 2 * (reach // 2) + 1)
    return brightest.resize(size, Image.Resampling.BILINEAR)


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
