"""Page checks: blank detection, skew estimate and deskew, resolution.

Pure functions over PIL images. The checks run on a small working copy (about
75 dpi, box-averaged, which also melts scanner noise and dust specks); only
``deskew`` touches the full-resolution page (orientation: ``orientation.py``; the
ink the ``text`` profile keeps, deskewed band by band: ``ink.py``).

Angles: ``skew_deg`` is positive when the page content is turned
counter-clockwise (text lines climb to the right); ``deskew`` turns it back
clockwise by that angle. ``orientation_cw`` is how far a page is turned
clockwise (0, 90, 180 or 270).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TypedDict, Unpack

import numpy as np
import numpy.typing as npt
from PIL import Image

from agent.capture.blank import blank_verdict
from device.errors import InputError
from device.pixels import Reduced, reduced

WORK_DPI = 75
# a border this wide is cut before measuring ink: scanner shadows, punched holes, page edges
MARGIN_FRACTION = 0.05
# an edge row or column this inky starts a border band (shadow, dark scanner lid, next page),
# which is cut until rows or columns are nearly clear again, at most BAND_MAX_FRACTION deep
BAND_START = 0.2
BAND_CLEAR = 0.02
BAND_MAX_FRACTION = 0.15
# a pixel is ink when it is this much darker than the paper (fraction of the paper's level)
INK_CONTRAST = 0.3
MAX_SKEW_DEG = 10.0
MIN_SKEW_POINTS = 200
# a dense page's baseline points are thinned to this many: the same angle to 0.02 degrees on
# the real scans and the counter corpus, at a third of the cost on a page of dense text
MAX_SKEW_POINTS = 8_000
# how far the best projection must stand over the mean of the coarse search: text scores
# 2 to 3, a page of text beside a picture about 1.5, photographs and maps 1.1 to 1.4
MIN_SKEW_CONFIDENCE = 1.4

Mask = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class PageCheck:
    blank: bool
    ink_ratio: float  # fraction of the trimmed page at most one 1/75 inch from ink
    skew_deg: float  # positive = content turned counter-clockwise
    dpi: int
    flags: tuple[str, ...]  # "blank", "maybe_blank", "skewed", "deskewed", "low_dpi"


def check_page(
    image: Image.Image,
    dpi: int,
    *,
    min_dpi: int = 200,
    blank_threshold: float = 0.002,
    skew_min_deg: float = 0.3,
    small: Reduced | None = None,
) -> PageCheck:
    """Measure a page: blank or not (``blank.py``: on structure; a page with text is never
    blank, however faded, and a page the check is unsure of is flagged ``maybe_blank``
    and kept), ink ratio, skew and resolution. Never raises on content.

    ``blank_threshold`` can only keep more pages: a page with no mark of ink still is
    not blank when this fraction of it or more is near dark pixels (a photograph).
    ``small``: the page's grey working copy, when it is already made."""
    inner, mask = trimmed_page(working_grey(image, dpi, small=small))
    ink_ratio = float(near_ink(mask).mean()) if mask.size else 0.0
    verdict = blank_verdict(inner).verdict if inner.size else "blank"
    blank = verdict == "blank" and ink_ratio < blank_threshold
    skew = 0.0 if blank else _skew_of(mask)
    flags: list[str] = []
    if blank:
        flags.append("blank")
    elif verdict == "unsure":
        flags.append("maybe_blank")
    if abs(skew) >= skew_min_deg:
        flags.append("skewed")
    if dpi < min_dpi:
        flags.append("low_dpi")
    return PageCheck(
        blank=blank, ink_ratio=round(ink_ratio, 6), skew_deg=skew, dpi=dpi, flags=tuple(flags)
    )


def deskew(image: Image.Image, skew_deg: float, *, smooth: bool = False) -> Image.Image:
    """Turn the page so that text lines are horizontal; corners are filled with white.

    Nearest-pixel by default: ~10x faster than bilinear on a full page (it is the only
    full-resolution step of the checks), keeps bilevel scans bilevel and adds no new
    grey levels; ``smooth`` interpolates, for photographs kept in colour.
    """
    image = image if image.mode == "1" else flat_mode(image)
    resample = (
        Image.Resampling.BILINEAR if smooth and image.mode != "1" else Image.Resampling.NEAREST
    )
    return image.rotate(-skew_deg, resample=resample, expand=False, fillcolor=_white(image.mode))


class CheckOptions(TypedDict, total=False):
    """``planned_check``'s settings, as ``prepare_page`` passes them on."""

    min_dpi: int
    blank_threshold: float
    do_deskew: bool
    skew_min_deg: float


def prepare_page(
    image: Image.Image,
    dpi: int,
    *,
    smooth_deskew: bool = False,
    **options: Unpack[CheckOptions],
) -> tuple[Image.Image, PageCheck]:
    """Refuse a low resolution, check the page, deskew it when it is visibly skewed
    (the whole page at once; capture turns it band by band, ``ink.ink_rows``)."""
    check = planned_check(image, dpi, **options)
    if "deskewed" in check.flags:
        return deskew(image, check.skew_deg, smooth=smooth_deskew), check
    return image, check


def planned_check(
    image: Image.Image,
    dpi: int,
    *,
    min_dpi: int = 200,
    blank_threshold: float = 0.002,
    do_deskew: bool = True,
    skew_min_deg: float = 0.3,
    small: Reduced | None = None,
) -> PageCheck:
    """``prepare_page``'s check without turning the page: flagged ``deskewed`` when it
    is to be turned by ``skew_deg`` (``deskew``, or ``ink_rows`` band by band)."""
    if dpi < min_dpi:
        raise InputError(
            f"độ phân giải {dpi} dpi thấp hơn mức tối thiểu {min_dpi} dpi"
            f" (page resolution {dpi} dpi is below the {min_dpi} dpi minimum)",
            f"quét lại ở 300 dpi (rescan at 300 dpi; archival copies need at least {min_dpi} dpi)",
        )
    check = check_page(
        image,
        dpi,
        min_dpi=min_dpi,
        blank_threshold=blank_threshold,
        skew_min_deg=skew_min_deg,
        small=small,
    )
    if do_deskew and not check.blank and abs(check.skew_deg) >= skew_min_deg:
        return replace(check, flags=(*check.flags, "deskewed"))
    return check


def estimate_skew(image: Image.Image, dpi: int) -> float:
    """Skew of the text lines in degrees (positive = counter-clockwise); 0.0 when unsure."""
    return _skew_of(content_mask(working_grey(image, dpi)))


def flat_mode(image: Image.Image) -> Image.Image:
    """The page as 8-bit grey ("L") or colour ("RGB"): grey stays grey, 16-bit becomes 8-bit,
    transparency is laid on white paper."""
    mode = image.mode
    if mode in ("L", "RGB"):
        return image
    if mode.startswith("I;16"):
        return Image.fromarray((np.asarray(image, dtype=np.uint16) >> 8).astype(np.uint8), "L")
    if "A" in mode or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        flat = Image.alpha_composite(paper, rgba).convert("RGB")
        return flat.convert("L") if mode == "LA" else flat
    if mode == "P":
        palette = image.getpalette() or []
        grey = palette[0::3] == palette[1::3] == palette[2::3]
        return image.convert("L" if grey else "RGB")
    return image.convert("L" if mode in ("1", "I", "F") else "RGB")


def _skew_of(mask: Mask) -> float:
    """Skew of the text lines in an ink mask, in degrees; 0.0 when no lines stand out."""
    angle, confidence = skew_search(mask)
    return angle if confidence >= MIN_SKEW_CONFIDENCE else 0.0


def skew_search(mask: Mask) -> tuple[float, float]:
    """Projection-profile search: coarse 0.5° steps, then 0.1° and 0.02° around the best.

    Returns the angle and how far its projection peak stands over the average of
    the coarse search (about 1 for a picture or noise, 2 and more for text).
    """
    # bottom edges of ink runs: baselines line up sharply, solid areas add few points
    edges = mask[:-1] & ~mask[1:]
    ys, xs = nonzero_cells(edges)
    if ys.size < MIN_SKEW_POINTS:
        return 0.0, 0.0
    if ys.size > MAX_SKEW_POINTS:
        stride = ys.size // MAX_SKEW_POINTS + 1
        ys, xs = ys[::stride], xs[::stride]
    offset = np.float32(mask.shape[1] * math.tan(math.radians(MAX_SKEW_DEG + 1)) / 2 + 1)
    y = ys.astype(np.float32) + offset
    x = (xs - mask.shape[1] / 2).astype(np.float32)
    size = int(mask.shape[0] + 2 * offset + 2)

    coarse = np.arange(-MAX_SKEW_DEG, MAX_SKEW_DEG + 0.25, 0.5)
    scores = _energies(y, x, coarse, size, smooth=False)
    confidence = float(scores.max() / scores.mean())
    best: float = float(coarse[int(scores.argmax())])
    for span, step in ((0.5, 0.1), (0.1, 0.02)):
        angles = np.arange(best - span, best + span + step / 2, step)
        fine = _energies(y, x, angles, size, smooth=True)
        best = float(angles[int(np.argmax(fine))])
    return round(best, 2), confidence


# angles whose projections are counted in one bincount (a few MB of points at most)
ANGLES_AT_ONCE = 8


def _energies(
    y: npt.NDArray[np.float32],
    x: npt.NDArray[np.float32],
    angles: npt.NDArray[np.float64],
    size: int,
    *,
    smooth: bool,
) -> npt.NDArray[np.float64]:
    """The energy of the projection of the points at each angle, ANGLES_AT_ONCE angles
    in one bincount (each angle's rows offset past the last's): the same counts as one
    bincount an angle, with a tenth of the calls. ``smooth``: each point split between
    its two rows, so that sub-pixel shifts change the score smoothly."""
    energies: list[float] = []
    width = size + 1
    for start in range(0, len(angles), ANGLES_AT_ONCE):
        group = angles[start : start + ANGLES_AT_ONCE]
        tans = np.array([math.tan(math.radians(a)) for a in group], dtype=np.float32)
        shifted = y + x * tans[:, None]
        rows = shifted.astype(np.int32)
        rows += (np.arange(len(group), dtype=np.int32) * width)[:, None]
        if not smooth:
            counts = np.bincount(rows.ravel(), minlength=len(group) * width)
            energies += [_energy(c) for c in counts.reshape(len(group), width)]
            continue
        part = shifted - (shifted.astype(np.int32))
        low = np.bincount(rows.ravel(), weights=(1 - part).ravel(), minlength=len(group) * width)
        high = np.bincount((rows + 1).ravel(), weights=part.ravel(), minlength=len(group) * width)
        both = (low + high).reshape(len(group), width)
        energies += [_energy(profile) for profile in both]
    return np.array(energies)


def nonzero_cells(mask: Mask) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Rows and columns of a 2-D mask's True cells, in reading order: ``np.nonzero``'s
    result, ten times faster (numpy's flat path for booleans; 1.8 -> 0.2 ms a page)."""
    rows, cols = np.divmod(np.flatnonzero(mask), mask.shape[1])
    return rows, cols


def _energy(profile: npt.NDArray[np.float64] | npt.NDArray[np.intp]) -> float:
    return float(np.dot(profile, profile))


def working_grey(
    image: Image.Image, dpi: int, work_dpi: int = WORK_DPI, *, small: Reduced | None = None
) -> npt.NDArray[np.uint8]:
    """The page box-averaged to about ``work_dpi``, grey; ``small`` when it is that one."""
    factor = work_factor(dpi, work_dpi)
    if small is not None and small.factor == factor:
        return np.asarray(small.image, dtype=np.uint8)
    if image.mode in ("1", "P"):
        image = image.convert("L")
    elif image.mode not in ("L", "RGB"):
        image = flat_mode(image)
    little = reduced(image, factor)
    if little.mode != "L":
        little = little.convert("L")
    return np.asarray(little, dtype=np.uint8)


def work_factor(dpi: int, work_dpi: int = WORK_DPI) -> int:
    """How much the checks reduce a page of ``dpi`` for their working copy."""
    return max(1, round(dpi / work_dpi))


def content_mask(grey: npt.NDArray[np.uint8]) -> Mask:
    """Ink pixels inside the trimmed page: margins, edge bands and lone specks removed."""
    return trimmed_page(grey)[1]


def trimmed_page(grey: npt.NDArray[np.uint8]) -> tuple[npt.NDArray[np.uint8], Mask]:
    """The page without margins and edge bands, and its ink (lone specks removed)."""
    h, w = grey.shape
    my, mx = round(h * MARGIN_FRACTION), round(w * MARGIN_FRACTION)
    inner = grey[my : h - my, mx : w - mx]
    if inner.size == 0:
        return inner, np.zeros((0, 0), dtype=np.bool_)
    paper = _paper_level(inner)
    # a whole level: the pixels (integers) below it are those below the fraction, and
    # numpy compares bytes with bytes instead of widening every pixel to a float
    ink = inner < math.ceil(paper * (1.0 - INK_CONTRAST))
    top, bottom, left, right = _band_bounds(ink)
    return inner[top:bottom, left:right], _despeckle(ink[top:bottom, left:right])


def _paper_level(grey: npt.NDArray[np.uint8]) -> float:
    # Pillow's histogram counts in C; numpy's bincount first widens every pixel to 8 bytes
    counts = Image.fromarray(np.ascontiguousarray(grey)).histogram()
    cumulative = np.cumsum(counts)
    # the 80th percentile: paper on any page that is mostly paper
    return float(np.searchsorted(cumulative, 0.8 * cumulative[-1]))


def _band_bounds(ink: Mask) -> tuple[int, int, int, int]:
    """Rows and columns (top, bottom, left, right; ends exclusive) inside the dark bands
    that run along an edge (scanner lid shadow, a neighbouring page)."""
    h, w = ink.shape
    # sums of the bytes into 32-bit counts: twice as fast as a mean over booleans
    pixels = ink.view(np.uint8)
    rows = pixels.sum(axis=1, dtype=np.int32) / max(w, 1)
    cols = pixels.sum(axis=0, dtype=np.int32) / max(h, 1)
    top = _band_depth(rows, round(h * BAND_MAX_FRACTION))
    bottom = _band_depth(rows[::-1], round(h * BAND_MAX_FRACTION))
    left = _band_depth(cols, round(w * BAND_MAX_FRACTION))
    right = _band_depth(cols[::-1], round(w * BAND_MAX_FRACTION))
    return top, h - bottom, left, w - right


def _band_depth(profile: npt.NDArray[np.floating], limit: int) -> int:
    if not profile.size or profile[0] <= BAND_START:
        return 0
    clear = np.nonzero(profile[:limit] <= BAND_CLEAR)[0]
    return int(clear[0]) if clear.size else limit


def _despeckle(ink: Mask) -> Mask:
    """Drop ink pixels with no ink among their 8 neighbours (dust, noise)."""
    # an ink pixel counts itself in its 3 x 3 window: it needs one more
    return ink & (_window_counts(ink) >= 2)


def near_ink(ink: Mask) -> Mask:
    """Ink grown by one pixel: a thin text stroke weighs like its ~1 mm footprint on paper."""
    return _window_counts(ink) > 0


def _window_counts(ink: Mask) -> npt.NDArray[np.uint8]:
    """Ink pixels in the 3 x 3 window around each pixel, summed across then down."""
    padded = np.pad(ink, 1).view(np.uint8)
    h, w = ink.shape
    across = padded[:, 0:w] + padded[:, 1 : w + 1]
    across += padded[:, 2 : w + 2]
    counts = across[0:h] + across[1 : h + 1]
    counts += across[2 : h + 2]
    return counts


def _white(mode: str) -> int | tuple[int, int, int]:
    return (255, 255, 255) if mode == "RGB" else 255
