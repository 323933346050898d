"""Small pixel operations shared by the code finder and the page checks.

A page is reduced to its ~75 dpi working copy once, and every look at the page
(the code finder, blank detection, skew) takes that copy instead of reducing the
8.7 MB page again. Pillow's rank filters sort every window (5 ms for a 7 x 7
maximum over a 77 x 109 image); a maximum is separable, so numpy does it in two
passes of whole-array maxima, with the same result at the edges (Pillow repeats
the edge pixels).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Reduced:
    """A grey page box-averaged by ``factor`` each way (Pillow's ``reduce``)."""

    factor: int
    image: Image.Image


def reduced(grey: Image.Image, factor: int, known: Reduced | None = None) -> Image.Image:
    """``grey`` box-averaged by ``factor``: the ``known`` reduction when it is that one."""
    if known is not None and known.factor == factor:
        return known.image
    return grey.reduce(factor) if factor > 1 else grey


def max_filter(image: Image.Image, size: int) -> Image.Image:
    """The brightest pixel of the ``size`` x ``size`` window around each pixel of an "L"
    image: ``image.filter(ImageFilter.MaxFilter(size))``, pixel for pixel."""
    reach = size // 2
    pixels = np.asarray(image, dtype=np.uint8)
    h, w = pixels.shape
    padded = np.pad(pixels, reach, mode="edge")
    across = padded[:, :w].copy()
    for dx in range(1, size):
        np.maximum(across, padded[:, dx : dx + w], out=across)
    out = across[:h].copy()
    for dy in range(1, size):
        np.maximum(out, across[dy : dy + h], out=out)
    return Image.fromarray(out)
