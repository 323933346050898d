"""Blank or not, decided on structure: marks of ink, not a fraction of dark pixels.

A faded page (weak toner, an old fax, a pale stamp) has little dark area but
plenty of structure: strokes a few levels darker than the paper right around
them, in marks that span several millimetres. A true blank back has paper
texture, bleed-through of the front (soft and faint), dust specks (tiny,
alone) and an edge shadow (cut off with the margins). So each ~2 mm cell of
the working copy asks how much darker its few darkest pixels are than the paper
around them (local contrast, measured against a blur a few millimetres wide, so
slow light changes and shadows do not count); cells well above the page's own
noise are inked, and 8-connected inked cells make marks. Specks make marks of a
cell or two. A page is blank only with no mark at all; a page with a mark or
two too small to be a line of text is *unsure*: kept and flagged, never
dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageFilter

# the cell: about 2 mm at the 75-dpi working copy
CELL = 6
# pixels of a cell that must stand out for it to count as inked
CELL_PIXELS = 4
# the paper around a pixel: a box blur about 3 mm each way
SURROUND_RADIUS = 9
# a cell is inked when its CELL_PIXELS darkest pixels stand this many levels below its surround ...
MIN_CONTRAST = 12
# ... and this many times above the page's typical cell (its own noise and texture)
NOISE_FACTOR = 2.2
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
    image = Image.fromarray(grey)
    surround = np.asarray(image.filter(ImageFilter.BoxBlur(SURROUND_RADIUS)), dtype=np.int16)
    darkness = np.clip(surround - grey.astype(np.int16), 0, 255)
    blocks = darkness[: rows * CELL, : cols * CELL].reshape(rows, CELL, cols, CELL)
    flat = blocks.transpose(0, 2, 1, 3).reshape(rows, cols, CELL * CELL)
    # the cell's CELL_PIXELS-th darkest pixel: a stroke through a cell darkens several, a
    # speck of dust one or two
    cells = np.partition(flat, -CELL_PIXELS, axis=2)[:, :, -CELL_PIXELS]
    typical = float(np.median(cells))
    return np.asarray(cells > max(MIN_CONTRAST, NOISE_FACTOR * typical))


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
        size, span = _flood(inked, seen, int(r), int(c))
        if span >= MARK_CELLS:
            total += size
            if total >= enough:
                return total
    return total


def _flood(
    inked: npt.NDArray[np.bool_], seen: npt.NDArray[np.bool_], r: int, c: int
) -> tuple[int, int]:
    """The mark through cell (r, c): its size in cells and its longer side."""
    rows, cols = inked.shape
    seen[r, c] = True
    stack, size = [(r, c)], 0
    top, left, bottom, right = r, c, r, c
    while stack:
        y, x = stack.pop()
        size += 1
        top, left, bottom, right = min(top, y), min(left, x), max(bottom, y), max(right, x)
        for ny in (y - 1, y, y + 1):
            for nx in (x - 1, x, x + 1):
                if 0 <= ny < rows and 0 <= nx < cols and inked[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
    return size, max(bottom - top, right - left) + 1
