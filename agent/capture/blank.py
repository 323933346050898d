"""Blank or not, decided on structure: marks of ink, not a fraction of dark pixels.

A faded page (weak toner, an old fax, a pale stamp) has little dark area but
plenty of structure: strokes a few levels darker than the paper right around
them, in marks that span several millimetres. A true blank back has paper
texture, bleed-through of the front (soft and faint), dust specks (tiny,
alone) and an edge shadow (cut off with the margins). So each ~2 mm cell of
the working copy asks how much darker its few darkest pixels are than the paper
around them (local contrast: the paper is the mean of the ~6 mm around the
cell, so slow light changes and shadows do not count); cells well above the page's
own noise are inked, and 8-connected inked cells make marks. Specks make marks of a
cell or two. A page is blank only with no mark at all; a page with a mark or
two too small to be a line of text is *unsure*: kept and flagged, never
dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageChops

# the cell: about 2 mm at the 75-dpi working copy
CELL = 6
# pixels of a cell that must stand out for it to count as inked
CELL_PIXELS = 4
# the paper around a cell: the mean of the cells this many cells away each way
SURROUND = 1
# a cell is inked when CELL_PIXELS of its pixels stand this many levels below the paper ...
MIN_CONTRAST = 12
# ... and this many times further than the darkest pixel of a typical (paper) cell does
# (the page's own noise and texture)
NOISE_FACTOR = 1.5
# a mark this many cells (2 mm each) long or high is structure; a speck, even one that
# straddles the corner of four cells, spans two
MARK_CELLS = 3
# marks covering this many cells make a page content for sure (a short line of text)
CONTENT_CELLS = 12

Verdict = Literal["blank", "unsure", "content"]
Grey = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class BlankVerdict:
    verdict: Verdict
    marked_cells: int  # cells inside marks spanning at least MARK_CELLS cells


def blank_verdict(grey: Grey) -> BlankVerdict:
    """Blank, unsure or content, for the trimmed working copy of a page (~75 dpi)."""
    inked = inked_cells(grey)
    if not inked.any():
        return BlankVerdict("blank", 0)
    marked = marked_cells(inked)
    if marked >= CONTENT_CELLS:
        return BlankVerdict("content", marked)
    return BlankVerdict("unsure" if marked else "blank", marked)


def inked_cells(grey: Grey) -> npt.NDArray[np.bool_]:
    """Cells with a few pixels well below the paper around them."""
    h, w = grey.shape
    rows, cols = h // CELL, w // CELL
    if rows < 1 or cols < 1:
        return np.zeros((0, 0), dtype=np.bool_)
    grey = grey[: rows * CELL, : cols * CELL]
    page = Image.fromarray(grey)
    means = np.asarray(page.reduce(CELL), dtype=np.int16)[:rows, :cols]
    # the paper around a cell: the mean of its neighbourhood, ~6 mm across, which follows
    # slow light changes and shadows (a stroke is far darker than any mean around it)
    side = 2 * SURROUND + 1
    padded = np.pad(means, SURROUND, mode="edge")
    total = sum(padded[dy : dy + rows, dx : dx + cols] for dy in range(side) for dx in range(side))
    paper = np.asarray(total, dtype=np.int16) // (side * side)
    # ... laid smoothly under every pixel, so that a steep shadow inside a cell is no ink
    # (smooth at every second pixel each way: a quarter of the interpolation's cost)
    under = (
        Image.fromarray(np.clip(paper, 0, 255).astype(np.uint8))
        .resize((cols * CELL // 2, rows * CELL // 2), Image.Resampling.BILINEAR)
        .resize((cols * CELL, rows * CELL), Image.Resampling.NEAREST)
    )
    # below the paper, clipped at 0 (a pixel brighter than the paper is no darker than it,
    # and every cut is above 0): one byte a pixel
    darkness = np.asarray(ImageChops.subtract(under, page), dtype=np.uint8)
    # the page's own noise and texture: the darkest pixel of a typical (paper) cell
    cut = max(MIN_CONTRAST, NOISE_FACTOR * float(np.median(_per_cell(darkness, np.maximum))))
    dark = _per_cell((darkness > cut).astype(np.uint8), np.add)
    # a stroke through a cell darkens several pixels, a speck of dust one or two
    inked = np.asarray(dark >= CELL_PIXELS)
    # the outer ring of cells is where a shadow or the page's edge begins, past the margin
    inked[[0, -1], :] = False
    inked[:, [0, -1]] = False
    return inked


def _per_cell(values: npt.NDArray[np.uint8], combine: np.ufunc) -> npt.NDArray[np.uint8]:
    """``combine`` (maximum, add) over each CELL x CELL block: strided slices, a few dozen
    whole-array operations instead of numpy's slow reduction over short inner axes."""
    across = values[:, 0::CELL].copy()
    for dx in range(1, CELL):
        combine(across, values[:, dx::CELL], out=across)
    cells = across[0::CELL].copy()
    for dy in range(1, CELL):
        combine(cells, across[dy::CELL], out=cells)
    return cells


def marked_cells(inked: npt.NDArray[np.bool_], enough: int = CONTENT_CELLS) -> int:
    """Cells in 8-connected marks spanning MARK_CELLS cells or more; counting stops at
    ``enough`` (a text page has thousands: no need to follow them all)."""
    # cells with an inked neighbour: alone ones are specks, and most pages end here
    padded = np.pad(inked, 1)
    h, w = inked.shape
    neighbours = sum(
        padded[dy : dy + h, dx : dx + w].astype(np.uint8)
        for dy in (0, 1, 2)
        for dx in (0, 1, 2)
        if (dy, dx) != (1, 1)
    )
    joined = inked & (np.asarray(neighbours) > 0)
    if int(joined.sum()) < MARK_CELLS:
        return 0
    seen = np.zeros_like(inked)
    total = 0
    for r, c in zip(*np.nonzero(joined), strict=True):
        if seen[r, c]:
            continue
        size, span = _flood(inked, seen, int(r), int(c), enough)
        if span >= MARK_CELLS:
            total += size
            if total >= enough:
                return total
    return total


def _flood(
    inked: npt.NDArray[np.bool_], seen: npt.NDArray[np.bool_], r: int, c: int, enough: int
) -> tuple[int, int]:
    """The mark through cell (r, c): its size in cells and its longer side, followed no
    further than ``enough`` cells (more than four cells span three)."""
    rows, cols = inked.shape
    seen[r, c] = True
    stack, size = [(r, c)], 0
    top, left, bottom, right = r, c, r, c
    while stack and size < enough:
        y, x = stack.pop()
        size += 1
        top, left, bottom, right = min(top, y), min(left, x), max(bottom, y), max(right, x)
        for ny in (y - 1, y, y + 1):
            for nx in (x - 1, x, x + 1):
                if 0 <= ny < rows and 0 <= nx < cols and inked[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
    return size, max(bottom - top, right - left) + 1
