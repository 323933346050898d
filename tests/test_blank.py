"""Blank detection on structure, over the harder counter corpus: faded print is never
blank, true duplex backs are, and a page the check is unsure of is kept and flagged."""

from __future__ import annotations

import io
from functools import cache

import pytest
from PIL import Image, ImageDraw

from agent.capture.events import page_badges
from agent.capture.pages import check_page
from tests.support.counter_pages import make
from tests.support.pages import blank_page


@cache
def counter_page(kind: str, seed: int) -> Image.Image:
    image = Image.open(io.BytesIO(make(kind, seed).jpeg))
    image.load()
    return image


@pytest.mark.parametrize(
    ("kind", "seed", "blank", "flags"),
    [
        ("faded", 1, False, ()),
        ("faded", 2, False, ()),
        ("faded_note", 3, False, ()),
        ("blank_back", 4, True, ("blank",)),
        ("blank_back", 5, True, ("blank",)),
        ("grime", 6, False, ()),
    ],
)
def test_faded_print_is_never_blank_and_true_backs_are(
    kind: str, seed: int, blank: bool, flags: tuple[str, ...]
) -> None:
    check = check_page(counter_page(kind, seed), 300)
    assert (check.blank, tuple(f for f in check.flags if f != "skewed")) == (blank, flags)


def test_a_page_with_one_small_mark_is_kept_and_flagged_maybe_blank() -> None:
    page = blank_page()
    ImageDraw.Draw(page).rectangle((1200, 1700, 1260, 1712), fill=60)  # a 5 mm dash
    check = check_page(page, 300)
    assert (check.blank, check.flags) == (False, ("maybe_blank",))
    # and the counter page says so on the thumbnail
    badges = page_badges((), blank=check.blank, flags=check.flags, refused=False)
    assert badges == ("maybe_blank",)
