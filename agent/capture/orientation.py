"""Which way up a page is: quarter turns found from text lines and their ascenders.

``orientation_cw`` is how far a page is turned clockwise (0, 90, 180 or 270).
Measured on the same working copy as the other page checks (``pages.py``),
at twice its resolution for the ascenders.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from PIL import Image

from agent.capture.pages import (
    Mask,
    content_mask,
    near_ink,
    nonzero_cells,
    skew_search,
    working_grey,
)
from device.errors import InputError

ORIENTATION_DPI = 150
MIN_ORIENTATION_CONFIDENCE = 1.8


def estimate_orientation(image: Image.Image, dpi: int) -> int:
    """How far the page is turned clockwise: 0, 90, 180 or 270 (0 when unsure).

    Text lines run along the axis whose projection profile peaks best; which
    way is up comes from the ink just outside the core band of each line:
    Latin and Vietnamese script carry more above the x-height (ascenders,
    capitals, diacritics) than below the baseline.
    """
    mask = content_mask(working_grey(image, dpi))
    if mask.size == 0 or near_ink(mask).mean() < 0.002:
        return 0
    across, across_confidence = skew_search(mask)
    # np.rot90 turns counter-clockwise: a page turned 90 clockwise comes back upright
    down, down_confidence = skew_search(np.rot90(mask, 1))
    if max(across_confidence, down_confidence) < MIN_ORIENTATION_CONFIDENCE:
        return 0
    # ascenders are a pixel or two at 75 dpi: weigh them at twice that
    fine = content_mask(working_grey(image, dpi, ORIENTATION_DPI))
    if across_confidence >= down_confidence:
        return 0 if _ascender_balance(_line_profile(fine, across)) >= 0 else 180
    upright = np.rot90(fine, 1)
    return 90 if _ascender_balance(_line_profile(upright, down)) >= 0 else 270


def turn_upright(image: Image.Image, orientation_cw: int) -> Image.Image:
    """Undo a quarter-turn found by ``estimate_orientation``."""
    turns = {
        0: None,
        90: Image.Transpose.ROTATE_90,
        180: Image.Transpose.ROTATE_180,
        270: Image.Transpose.ROTATE_270,
    }
    if orientation_cw not in turns:
        raise InputError(
            f"orientation {orientation_cw} is not a quarter turn", "use 0, 90, 180 or 270"
        )
    method = turns[orientation_cw]
    return image if method is None else image.transpose(method)


def _line_profile(mask: Mask, angle: float) -> npt.NDArray[np.float64]:
    """Ink per text row, counted along lines at the given skew."""
    ys, xs = nonzero_cells(mask)
    shift = (xs - mask.shape[1] / 2) * math.tan(math.radians(angle))
    rows = np.round(ys + shift - shift.min()).astype(np.int64)
    return np.bincount(rows).astype(np.float64)


def _ascender_balance(profile: npt.NDArray[np.float64]) -> float:
    """Ink above the core band of text lines minus ink below it (positive = upright)."""
    core = profile > 0.5 * _line_level(profile)
    balance = 0.0
    starts = np.nonzero(core[1:] & ~core[:-1])[0] + 1
    ends = np.nonzero(core[:-1] & ~core[1:])[0] + 1
    for start in starts:
        later = ends[ends > start]
        if not later.size:
            break
        end = int(later[0])
        height = end - start
        if height < 2:
            continue
        above = profile[max(0, start - height) : start]
        below = profile[end : end + height]
        # stop at the gap between lines so that a neighbour's core does not count
        balance += _until_gap(above[::-1]) - _until_gap(below)
    return balance


def _line_level(profile: npt.NDArray[np.float64]) -> float:
    busy = profile[profile > 0]
    return float(np.percentile(busy, 75)) if busy.size else 0.0


def _until_gap(profile: npt.NDArray[np.float64]) -> float:
    gaps = np.nonzero(profile == 0)[0]
    return float(profile[: gaps[0]].sum()) if gaps.size else float(profile.sum())
