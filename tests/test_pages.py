"""Page checks on generated 300-dpi A4 scans: blank pages, skew, deskew, resolution, orientation."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image

from agent.capture.ink import ink_mask
from agent.capture.orientation import estimate_orientation, turn_upright
from agent.capture.pages import (
    PageCheck,
    check_page,
    deskew,
    estimate_skew,
    flat_mode,
    prepare_page,
)
from agent.errors import exit_code_of
from device.errors import InputError
from sync.errors import ExitCode
from tests.support.pages import (
    blank_page,
    noisy_blank_page,
    photo_page,
    short_lines_page,
    text_page,
    turned,
)


@pytest.mark.parametrize(
    ("make_page", "dpi", "blank", "flags"),
    [
        (text_page, 300, False, ()),
        (short_lines_page, 300, False, ()),
        (short_lines_page, 200, False, ()),
        (noisy_blank_page, 300, True, ("blank",)),
        (noisy_blank_page, 200, True, ("blank",)),
        (blank_page, 300, True, ("blank",)),
        (photo_page, 300, False, ()),
    ],
    ids=[
        "text",
        "three-short-lines",
        "three-short-lines-200dpi",
        "noisy-back",
        "noisy-back-200dpi",
        "clean-blank",
        "photograph",
    ],
)
def test_blank_pages_are_told_from_pages_with_little_ink(
    make_page: Callable[[int], Image.Image], dpi: int, blank: bool, flags: tuple[str, ...]
) -> None:
    check = check_page(make_page(dpi), dpi)
    assert (check.blank, check.flags, check.dpi) == (blank, flags, dpi)


def test_blank_threshold_can_keep_pages_but_never_blanks_a_page_with_text() -> None:
    assert check_page(short_lines_page(), 300, blank_threshold=0.05).blank is False
    assert check_page(blank_page(), 300).blank is True
    assert check_page(blank_page(), 300, blank_threshold=0.0).blank is False


def test_ink_ratio_orders_pages_by_how_much_is_written() -> None:
    ratios = [
        check_page(page, 300).ink_ratio
        for page in (
            blank_page(),
            noisy_blank_page(),
            short_lines_page(),
            text_page(lines=10),
            text_page(),
        )
    ]
    assert ratios == sorted(ratios)
    assert ratios[0] == 0.0


@pytest.mark.parametrize("degrees", [-7, -3, -1, 1, 3, 7])
def test_skew_is_estimated_within_a_third_of_a_degree(degrees: float) -> None:
    check = check_page(turned(text_page(), degrees), 300)
    assert check.skew_deg == pytest.approx(degrees, abs=0.3)
    assert check.flags == ("skewed",)


@pytest.mark.parametrize("degrees", [0.0, 0.15, -0.15])
def test_straight_pages_are_not_flagged_skewed(degrees: float) -> None:
    check = check_page(turned(text_page(), degrees), 300)
    assert abs(check.skew_deg) < 0.3
    assert check.flags == ()


def test_photograph_has_no_text_lines_to_measure_skew_by() -> None:
    assert check_page(photo_page(), 300).skew_deg == 0.0


@pytest.mark.parametrize("smooth", [False, True])
def test_deskew_of_a_3_degree_page_leaves_at_most_half_a_degree(smooth: bool) -> None:
    skewed = turned(text_page(), 3)
    straight, check = prepare_page(skewed, 300, smooth_deskew=smooth)
    assert check.flags == ("skewed", "deskewed")
    assert check.skew_deg == pytest.approx(3, abs=0.3)
    assert straight.size == skewed.size
    assert abs(estimate_skew(straight, 300)) <= 0.5


def test_deskew_of_a_3_degree_page_matches_the_straight_original() -> None:
    original = text_page()
    straight, _ = prepare_page(turned(original, 3), 300)
    ink_before = np.asarray(original) < 128
    ink_after = np.asarray(straight) < 128
    overlap = (ink_before & ink_after).sum() / (ink_before | ink_after).sum()
    assert overlap > 0.6


@pytest.mark.parametrize(
    ("mode", "white"), [("L", 255), ("RGB", (255, 255, 255)), ("1", 255), ("P", 255)]
)
def test_deskew_fills_the_uncovered_corners_with_white(mode: str, white: object) -> None:
    page = Image.new("L", (400, 600), 0).convert(mode)
    turned_back = deskew(page, 5)
    assert turned_back.size == page.size
    assert turned_back.getpixel((0, 0)) == white
    assert turned_back.getpixel((200, 300)) != white


@pytest.mark.parametrize(("smooth", "new_levels"), [(False, False), (True, True)])
def test_plain_deskew_adds_no_grey_levels(smooth: bool, new_levels: bool) -> None:
    two_tone = Image.new("L", (300, 300), 250)
    two_tone.paste(20, (50, 140, 250, 160))
    levels = {level for level, count in enumerate(deskew(two_tone, 3, smooth=smooth).histogram())
              if count}  # fmt: skip
    assert (levels - {20, 250, 255} != set()) == new_levels


def test_small_skew_is_left_alone() -> None:
    page = turned(text_page(), 0.15)
    kept, check = prepare_page(page, 300)
    assert kept is page
    assert "deskewed" not in check.flags


def test_deskew_can_be_switched_off() -> None:
    page = turned(text_page(), 3)
    kept, check = prepare_page(page, 300, do_deskew=False)
    assert kept is page
    assert check.flags == ("skewed",)


def test_blank_page_passes_prepare_untouched() -> None:
    page = noisy_blank_page()
    kept, check = prepare_page(page, 300)
    assert kept is page
    assert check == PageCheck(
        blank=True, ink_ratio=check.ink_ratio, skew_deg=0.0, dpi=300, flags=("blank",)
    )


def test_page_below_200_dpi_is_refused_with_its_resolution_and_the_fix() -> None:
    with pytest.raises(InputError, match="150 dpi") as caught:
        prepare_page(text_page(150), 150)
    assert "200 dpi" in caught.value.message
    assert "300 dpi" in caught.value.hint
    assert exit_code_of(caught.value) == ExitCode.input_file


def test_check_alone_flags_low_resolution_without_refusing() -> None:
    check = check_page(text_page(150), 150)
    assert (check.blank, check.flags) == (False, ("low_dpi",))


def test_minimum_resolution_is_a_setting() -> None:
    _, check = prepare_page(text_page(150), 150, min_dpi=150)
    assert check.flags == ()


QUARTER_TURNS = [
    (0, None),
    (90, Image.Transpose.ROTATE_270),  # Pillow's ROTATE_270 turns clockwise by 90
    (180, Image.Transpose.ROTATE_180),
    (270, Image.Transpose.ROTATE_90),
]


@pytest.mark.parametrize(("orientation", "transpose"), QUARTER_TURNS)
@pytest.mark.parametrize("skew", [0, 2, -4])
def test_orientation_of_a_turned_page_is_found(
    orientation: int, transpose: Image.Transpose | None, skew: float
) -> None:
    page = text_page()
    if transpose is not None:
        page = page.transpose(transpose)
    assert estimate_orientation(turned(page, skew), 300) == orientation


@pytest.mark.parametrize("make_page", [blank_page, photo_page])
def test_orientation_is_upright_when_there_is_no_text_to_tell(
    make_page: Callable[[int], Image.Image],
) -> None:
    assert estimate_orientation(make_page(300), 300) == 0


@pytest.mark.parametrize(("orientation", "transpose"), QUARTER_TURNS)
def test_turn_upright_undoes_a_quarter_turn(
    orientation: int, transpose: Image.Transpose | None
) -> None:
    page = text_page()
    turned_page = page if transpose is None else page.transpose(transpose)
    assert np.array_equal(np.asarray(turn_upright(turned_page, orientation)), np.asarray(page))


def test_turn_upright_refuses_other_angles() -> None:
    with pytest.raises(InputError, match="45"):
        turn_upright(text_page(), 45)


@pytest.mark.parametrize(
    ("source", "mode"),
    [
        (Image.new("1", (8, 8), 1), "L"),
        (Image.new("L", (8, 8), 200), "L"),
        (Image.new("P", (8, 8), 3), "L"),
        (Image.new("RGBA", (8, 8), (255, 0, 0, 0)), "RGB"),
        (Image.new("LA", (8, 8), (0, 0)), "L"),
        (Image.new("CMYK", (8, 8), (0, 0, 0, 0)), "RGB"),
        (Image.new("I;16", (8, 8), 65535), "L"),
    ],
)
def test_flat_mode_gives_8_bit_grey_or_colour(source: Image.Image, mode: str) -> None:
    flat = flat_mode(source)
    assert flat.mode == mode
    if source.mode in ("RGBA", "LA", "I;16", "1"):
        # transparent pixels sit on white paper; 16-bit white stays white
        assert flat.convert("L").getpixel((0, 0)) == 255


def test_ink_mask_keeps_text_under_a_shadow() -> None:
    page = np.asarray(text_page()).astype(np.int16)
    shadow = np.linspace(0, 140, page.shape[1])[None, :].astype(np.int16)
    shaded = Image.fromarray(np.clip(page - shadow, 0, 255).astype(np.uint8))
    clean_ink = np.asarray(ink_mask(text_page()))
    shaded_ink = np.asarray(ink_mask(shaded))
    # the darkest third, where paper is greyer than faint ink, comes out as on clean paper
    assert (clean_ink != shaded_ink).mean() < 0.01
    assert clean_ink.mean() == pytest.approx((np.asarray(text_page()) < 128).mean(), rel=0.25)
