"""SANE option decisions: pure functions from scan settings and a backend's options to values.

Backends name the same thing differently ("Automatic Document Feeder", "ADF Front",
"Document Table"; "Gray", "True Gray", "Gray8"; "Lineart", "Binary", "Black & White"),
constrain resolution and geometry differently, and expose their buttons as sensor
options. Everything here takes plain values and returns plain values, so that each
backend's real option names can be tested in tables without the hardware.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from device.errors import PaperJamError, ScannerError

# SANE constants (sane/sane.h); python-sane hands them out as plain ints.
TYPE_BOOL, TYPE_INT, TYPE_FIXED, TYPE_STRING, TYPE_BUTTON, TYPE_GROUP = range(6)
CAP_SOFT_SELECT, CAP_HARD_SELECT, CAP_SOFT_DETECT = 1, 2, 4
CAP_INACTIVE = 32
UNIT_PIXEL, UNIT_MM = 1, 3

OptionValue = str | int | float | bool

SOURCES = ("flatbed", "adf", "adf-duplex")
MODES = ("gray", "color", "lineart")

# Option names in the order they must be set: a source or mode change can reload the
# other options' constraints, and fujitsu-like backends bound br-x by page-width.
SETTING_ORDER = (
    "source",
    "mode",
    "depth",
    "resolution",
    "page-width",
    "page-height",
    "tl-x",
    "tl-y",
    "br-x",
    "br-y",
)


@dataclass(frozen=True)
class SaneOption:
    """One backend option as the backend describes it (no current value)."""

    name: str
    type: int
    unit: int = 0
    cap: int = CAP_SOFT_SELECT | CAP_SOFT_DETECT
    range: tuple[float, float, float] | None = None  # (min, max, quant)
    choices: tuple[OptionValue, ...] | None = None

    @classmethod
    def from_sane(cls, raw: Sequence[Any]) -> SaneOption:
        """Build from python-sane's ``(index, name, title, desc, type, unit, size, cap,
        constraint)`` tuple; a tuple constraint is a range, a list is a choice list."""
        constraint = raw[8]
        if isinstance(constraint, tuple):
            low, high, quant = constraint
            return cls(raw[1], raw[4], raw[5], raw[7], range=(low, high, quant))
        if isinstance(constraint, list):
            return cls(raw[1], raw[4], raw[5], raw[7], choices=tuple(constraint))
        return cls(raw[1], raw[4], raw[5], raw[7])

    @property
    def active(self) -> bool:
        return not self.cap & CAP_INACTIVE

    @property
    def settable(self) -> bool:
        return self.active and bool(self.cap & CAP_SOFT_SELECT)


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


# For each wanted value: tiers of (exact normalized names, required substrings, forbidden
# substrings). The first tier with a match wins; within a tier the backend's order wins.
_Tier = tuple[frozenset[str], tuple[str, ...], tuple[str, ...]]
_NOT_PAPER = ("transparency", "film", "slide", "negative", "tma", "positive")
_SOURCE_TIERS: dict[str, tuple[_Tier, ...]] = {
    "flatbed": (
        (frozenset({"flatbed", "documenttable", "platen", "normal", "glass"}), (), ()),
        (frozenset(), ("flatbed", "documenttable", "platen"), _NOT_PAPER),
    ),
    "adf": (
        (
            frozenset(
                {"adf", "automaticdocumentfeeder", "adffront", "adfsimplex", "feeder"}
                | {"documentfeeder", "simplex", "adffrontside"}
            ),
            (),
            (),
        ),
        (frozenset(), ("adf",), ("duplex", "back", "rear", "card")),
        (frozenset(), ("feeder",), ("duplex", "back", "rear", "card")),
    ),
    "adf-duplex": (
        (frozenset({"adfduplex", "duplex", "automaticdocumentfeederduplex"}), (), ()),
        (frozenset(), ("duplex",), ("card",)),
    ),
}
_DITHER = ("halftone", "diffusion", "dither")
_MODE_TIERS: dict[str, tuple[_Tier, ...]] = {
    "gray": (
        (
            frozenset({"gray", "grey", "grayscale", "greyscale", "gray8", "truegray"})
            | frozenset({"8bitgray", "gray8bit", "8bitgrayscale"}),
            (),
            (),
        ),
        (frozenset(), ("gray",), _DITHER),
        (frozenset(), ("grey",), _DITHER),
    ),
    "color": (
        (frozenset({"color", "colour", "24bitcolor", "color24", "truecolor", "rgb"}), (), ()),
        (frozenset(), ("color",), (*_DITHER, "lineart", "fast", "48", "16")),
        (frozenset(), ("colour",), (*_DITHER, "lineart", "fast", "48", "16")),
        (frozenset(), ("color",), (*_DITHER, "lineart")),
    ),
    "lineart": (
        (
            frozenset({"lineart", "binary", "blackwhite", "blackandwhite", "bw", "monochrome"})
            | frozenset({"1bit", "bilevel", "mono"}),
            (),
            (),
        ),
        (frozenset(), ("lineart",), ("color",)),
        (frozenset(), ("binary",), ("color",)),
    ),
}


def _choose(wanted: str, available: Sequence[str], tiers: tuple[_Tier, ...]) -> str | None:
    for exact, needed, forbidden in tiers:
        for name in available:
            key = _norm(name)
            if key in exact or (
                needed
                and all(part in key for part in needed)
                and not any(bad in key for bad in forbidden)
            ):
                return name
    return None


def choose_source(wanted: str, available: Sequence[str]) -> str:
    """Map ``flatbed`` / ``adf`` / ``adf-duplex`` onto the backend's source name."""
    if wanted not in _SOURCE_TIERS:
        raise ScannerError(
            f"unknown scan source {wanted!r}",
            f"set [capture] scanner_source to one of {', '.join(SOURCES)}",
        )
    chosen = _choose(wanted, available, _SOURCE_TIERS[wanted])
    if chosen is None:
        raise ScannerError(
            f"scanner has no {wanted} source",
            f"it offers: {', '.join(available) or 'none'} — "
            "set [capture] scanner_source to one it has",
        )
    return chosen


def choose_mode(wanted: str, available: Sequence[str]) -> str:
    """Map ``gray`` / ``color`` / ``lineart`` onto the backend's mode name (never a
    dithered or halftone mode, and 24-bit colour before 48-bit or "fast" variants)."""
    if wanted not in _MODE_TIERS:
        raise ScannerError(
            f"unknown scan mode {wanted!r}",
            f"set [capture] scanner_mode to one of {', '.join(MODES)}",
        )
    chosen = _choose(wanted, available, _MODE_TIERS[wanted])
    if chosen is None:
        raise ScannerError(
            f"scanner has no {wanted} mode",
            f"it offers: {', '.join(available) or 'none'} — "
            "set [capture] scanner_mode to one it has",
        )
    return chosen


def choose_resolution(wanted: int, option: SaneOption) -> float:
    """The smallest resolution the option allows that is at least ``wanted``; the
    largest allowed when none reaches it (the page checks then judge the dpi)."""
    if option.choices is not None:
        values = sorted(float(v) for v in option.choices if not isinstance(v, str))
        if not values:
            return float(wanted)
        return next((v for v in values if v >= wanted), values[-1])
    if option.range is not None:
        low, high, quant = option.range
        value = min(max(float(wanted), low), high)
        if quant > 0:
            value = low + math.ceil((value - low) / quant - 1e-9) * quant
            if value > high:
                value = low + math.floor((high - low) / quant + 1e-9) * quant
        return value
    return float(wanted)


def clamp(value: float, option: SaneOption) -> float:
    """``value`` held inside the option's range and snapped to its quantization."""
    if option.range is None:
        return value
    low, high, quant = option.range
    value = min(max(value, low), high)
    if quant > 0:
        value = low + round((value - low) / quant) * quant
        value = min(value, high)
    return value


def _typed(value: float, option: SaneOption) -> OptionValue:
    return int(round(value)) if option.type == TYPE_INT else float(value)


def _string_choices(option: SaneOption) -> list[str]:
    return [str(v) for v in option.choices or ()]


def plan_settings(
    source: str,
    mode: str,
    resolution: int,
    page_size_mm: tuple[float, float] | None,
    options: Mapping[str, SaneOption],
) -> dict[str, OptionValue]:
    """The backend option values (by SANE name, in ``SETTING_ORDER``) for these settings.

    Options the backend lacks or cannot set are left out; a source or mode it cannot
    provide raises ScannerError listing what it offers.
    """
    plan: dict[str, OptionValue] = {}

    def usable(name: str) -> SaneOption | None:
        option = options.get(name)
        return option if option is not None and option.settable else None

    if (opt := usable("source")) is not None:
        plan["source"] = choose_source(source, _string_choices(opt))
    elif source != "flatbed":
        raise ScannerError(
            f"scanner has no {source} source",
            "it offers only its default source — set [capture] scanner_source = 'flatbed'",
        )
    if (opt := usable("mode")) is not None:
        plan["mode"] = choose_mode(mode, _string_choices(opt))
    depth = usable("depth")
    if depth is not None and mode != "lineart" and 8 in (depth.choices or ()):
        plan["depth"] = 8
    if (opt := usable("resolution")) is not None:
        plan["resolution"] = _typed(choose_resolution(resolution, opt), opt)
    if page_size_mm is not None:
        width, height = page_size_mm
        for name, size in (("page-width", width), ("page-height", height)):
            if (opt := usable(name)) is not None and opt.unit == UNIT_MM:
                plan[name] = _typed(clamp(size, opt), opt)
        origin: dict[str, float] = {}
        for name in ("tl-x", "tl-y"):
            if (opt := usable(name)) is not None and opt.unit == UNIT_MM:
                origin[name] = opt.range[0] if opt.range else 0.0
                plan[name] = _typed(origin[name], opt)
        for name, start, size in (("br-x", "tl-x", width), ("br-y", "tl-y", height)):
            if (opt := usable(name)) is not None and opt.unit == UNIT_MM:
                plan[name] = _typed(clamp(origin.get(start, 0.0) + size, opt), opt)
    return plan


# Bool sensors that report a state rather than a press; they must never start a scan.
STATE_SENSORS = frozenset(
    {
        "page-loaded",
        "cover-open",
        "adf-loaded",
        "card-loaded",
        "hopper",
        "top-edge",
        "double-feed",
        "power-save",
        "need-calibration",
        "doc-in-adf",
        "paper-in",
        "lamp-on",
        "sleep",
        "omr-df",
    }
)


def button_options(options: Sequence[SaneOption]) -> list[str]:
    """Names of the options that look like front-panel buttons: active bool sensors the
    backend detects but software cannot set, other than known state sensors. Backends
    name them freely ("scan", "email", "copy", "file", "button-1", "start"...)."""
    return [
        o.name
        for o in options
        if o.type == TYPE_BOOL
        and o.active
        and o.cap & CAP_SOFT_DETECT
        and not o.cap & CAP_SOFT_SELECT
        and o.name not in STATE_SENSORS
    ]


def pressed_button(before: Mapping[str, bool], now: Mapping[str, bool]) -> str | None:
    """The first button that went from released to pressed between two polls. A button
    already down at the first poll is a stale latch, not a press."""
    return next((name for name, down in now.items() if down and not before.get(name, True)), None)


_PAPER = "Đặt giấy vào khay nạp rồi bấm lại / put paper in the feeder and press scan again"
# SANE status text (sane_strstatus) -> (message, hint)
_STATUS: dict[str, tuple[str, str]] = {
    "Document feeder out of documents": ("no paper in the feeder", _PAPER),
    "Document feeder jammed": (
        "paper jam",
        "Gỡ giấy kẹt, đặt lại các trang chưa quét rồi bấm lại / "
        "clear the jam, reload the pages not yet scanned and scan again",
    ),
    "Scanner cover is open": (
        "scanner cover is open",
        "Đóng nắp máy quét rồi bấm lại / close the scanner cover and scan again",
    ),
    "Device busy": (
        "scanner is busy",
        "Chờ máy quét xong việc khác rồi thử lại / "
        "wait for the other job or close other scanning programs, then retry",
    ),
    "Error during device I/O": (
        "scanner I/O error (unplugged or switched off?)",
        "Kiểm tra cáp USB và nguồn máy quét / check the scanner's cable and power, then retry",
    ),
    "Invalid argument": (
        "scanner rejected a setting (invalid argument)",
        "check [capture] scanner_source, scanner_mode and scanner_resolution; "
        "`sohoa doctor` shows what the scanner offers",
    ),
    "Access to resource has been denied": (
        "access to the scanner denied",
        "add the service user to group 'scanner' and re-plug the scanner",
    ),
    "Out of memory": (
        "scanner driver ran out of memory",
        "lower [capture] scanner_resolution or restart the service",
    ),
    "Operation was canceled": (
        "scan cancelled",
        "Bấm quét lại / press scan again",
    ),
    "Operation was cancelled": ("scan cancelled", "Bấm quét lại / press scan again"),
    "Operation not supported": (
        "scanner does not support this operation",
        "check the scanner settings with `sohoa doctor`",
    ),
    "Lamp not ready, please retry": (
        "scanner lamp is warming up",
        "Chờ vài giây rồi bấm lại / wait a few seconds and scan again",
    ),
    "Scanner mechanism locked for transport": (
        "scanner carriage is locked for transport",
        "Mở khóa vận chuyển của máy quét / release the scanner's transport lock",
    ),
}


def scan_error(status: str, *, device: str, pages_done: int) -> ScannerError | None:
    """The error for a SANE status met while scanning, or None when it is the normal end
    of a feeder run (out of documents after at least one page)."""
    if status == "Document feeder out of documents" and pages_done > 0:
        return None
    message, hint = _STATUS.get(
        status, (f"scanner error: {status}", "check the scanner, then `sohoa doctor`")
    )
    where = f" after {pages_done} page{'s' if pages_done != 1 else ''}" if pages_done else ""
    cls = PaperJamError if status == "Document feeder jammed" else ScannerError
    return cls(f"{message}{where} ({device})", hint)
