"""SANE scanning against the real libsane test backend, and the option decisions as tables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import sane

from device.errors import ScannerError, ScannerSettingError
from device.sane_options import (
    CAP_HARD_SELECT,
    CAP_INACTIVE,
    CAP_SOFT_DETECT,
    CAP_SOFT_SELECT,
    TYPE_BOOL,
    TYPE_FIXED,
    TYPE_INT,
    TYPE_STRING,
    UNIT_MM,
    SaneOption,
    button_options,
    choose_mode,
    choose_resolution,
    choose_source,
    plan_settings,
    pressed_button,
    scan_error,
)
from device.scanner import (
    SaneScanner,
    ScannedPage,
    ScanSettings,
    list_devices,
    poll_buttons,
    wait_for_button,
)
from tests.support.sane import sane_env

ROOT = Path(__file__).resolve().parents[1]
FEEDER = "Automatic Document Feeder"


def summary(pages: list[ScannedPage]) -> list[tuple[int, int, str, tuple[int, int], str]]:
    return [(p.index, p.dpi, p.image.mode, p.image.size, p.source) for p in pages]


# --- the real test backend ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "resolution", "image_mode", "size"),
    [
        ("gray", 150, "L", (1240, 1753)),
        ("color", 150, "RGB", (1240, 1753)),
        ("gray", 300, "L", (2480, 3507)),
    ],
)
def test_feeder_run_yields_ten_a4_pages_at_requested_resolution_and_mode(
    sane_test_scanner: str, mode: str, resolution: int, image_mode: str, size: tuple[int, int]
) -> None:
    scanner = SaneScanner(sane_test_scanner, ScanSettings("adf", mode, resolution))

    pages = list(scanner.pages())

    assert summary(pages) == [
        (i, resolution, image_mode, size, f"test:0 {FEEDER}") for i in range(10)
    ]


def test_flatbed_yields_one_page(sane_test_scanner: str) -> None:
    scanner = SaneScanner(sane_test_scanner, ScanSettings("flatbed", "gray", 100))

    assert summary(list(scanner.pages())) == [(0, 100, "L", (826, 1169), "test:0 Flatbed")]


def test_each_press_of_scan_is_a_new_full_feeder_run(sane_test_scanner: str) -> None:
    scanner = SaneScanner(sane_test_scanner, ScanSettings("adf", "gray", 50))

    assert [len(list(scanner.pages())) for _ in range(2)] == [10, 10]


def test_stopping_early_releases_the_scanner_for_the_next_batch(sane_test_scanner: str) -> None:
    scanner = SaneScanner(sane_test_scanner, ScanSettings("adf", "gray", 50))
    batch = scanner.pages()
    next(batch)
    batch.close()

    assert len(list(scanner.pages())) == 10


def test_a_batch_still_open_survives_another_scanner_finishing(sane_test_scanner: str) -> None:
    first = SaneScanner(sane_test_scanner, ScanSettings("adf", "gray", 50)).pages()
    head = next(first)

    other = list(SaneScanner("test:1", ScanSettings("adf", "gray", 50)).pages())

    assert (head.index, [p.index for p in first], len(other)) == (0, list(range(1, 10)), 10)


def test_the_same_scanner_opened_twice_is_busy(sane_test_scanner: str) -> None:
    first = SaneScanner(sane_test_scanner, ScanSettings("adf", "gray", 50)).pages()
    next(first)
    try:
        with pytest.raises(ScannerError) as caught:
            list(SaneScanner(sane_test_scanner, ScanSettings("adf", "gray", 50)).pages())
    finally:
        first.close()

    assert caught.value.message == "scanner is busy (test:0)"


@pytest.mark.parametrize(
    ("status", "message", "hint"),
    [
        ("SANE_STATUS_NO_DOCS", "no paper in the feeder (test:0)", "Đặt giấy vào khay nạp"),
        ("SANE_STATUS_JAMMED", "paper jam (test:0)", "Gỡ giấy kẹt"),
        ("SANE_STATUS_COVER_OPEN", "scanner cover is open (test:0)", "Đóng nắp máy quét"),
        ("SANE_STATUS_DEVICE_BUSY", "scanner is busy (test:0)", "wait for the other job"),
        (
            "SANE_STATUS_IO_ERROR",
            "scanner I/O error (unplugged or switched off?) (test:0)",
            "cable",
        ),
        ("SANE_STATUS_INVAL", "scanner rejected a setting (invalid argument) (test:0)", "doctor"),
        ("SANE_STATUS_ACCESS_DENIED", "access to the scanner denied (test:0)", "group 'scanner'"),
    ],
)
def test_scanner_fault_on_first_page_names_the_cause_and_the_fix(
    sane_test_scanner: str, status: str, message: str, hint: str
) -> None:
    scanner = SaneScanner(
        sane_test_scanner,
        ScanSettings("adf", "gray", 50),
        backend_options={"read-return-value": status},
    )
    got: list[ScannedPage] = []

    with pytest.raises(ScannerError) as caught:
        got.extend(scanner.pages())

    assert (got, caught.value.message) == ([], message)
    assert hint in caught.value.hint


def test_jam_mid_batch_keeps_the_pages_already_scanned(sane_test_scanner: str) -> None:
    scanner = SaneScanner(sane_test_scanner, ScanSettings("adf", "gray", 50))
    got: list[ScannedPage] = []

    with pytest.raises(ScannerError) as caught:
        for page in scanner.pages():
            got.append(page)
            if len(got) == 3:  # the 4th sheet jams
                scanner.set_option("read-return-value", "SANE_STATUS_JAMMED")

    assert ([p.index for p in got], caught.value.message) == (
        [0, 1, 2],
        "paper jam after 3 pages (test:0)",
    )
    assert caught.value.hint.startswith("Gỡ giấy kẹt")


def test_feeder_running_empty_after_some_pages_is_a_normal_end(sane_test_scanner: str) -> None:
    scanner = SaneScanner(sane_test_scanner, ScanSettings("adf", "gray", 50))
    got: list[int] = []

    for page in scanner.pages():
        got.append(page.index)
        if len(got) == 4:
            scanner.set_option("read-return-value", "SANE_STATUS_NO_DOCS")

    assert got == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("settings", "message", "hint"),
    [
        (
            ScanSettings("adf-duplex", "gray", 100),
            "scanner has no adf-duplex source",
            "it offers: Flatbed, Automatic Document Feeder",
        ),
        (
            ScanSettings("adf", "lineart", 100),
            "scanner has no lineart mode",
            "it offers: Gray, Color",
        ),
    ],
)
def test_settings_the_scanner_cannot_do_list_what_it_offers(
    sane_test_scanner: str, settings: ScanSettings, message: str, hint: str
) -> None:
    with pytest.raises(ScannerError) as caught:
        list(SaneScanner(sane_test_scanner, settings).pages())

    assert caught.value.message == message
    assert caught.value.hint.startswith(hint)


def test_unknown_backend_option_is_refused_not_ignored(sane_test_scanner: str) -> None:
    scanner = SaneScanner(sane_test_scanner, ScanSettings(), backend_options={"swdeskew": True})

    with pytest.raises(ScannerError, match="has no option 'swdeskew'"):
        list(scanner.pages())


def test_unknown_scanner_is_not_found_and_the_hint_lists_the_scanners(
    sane_test_scanner: str,
) -> None:
    with pytest.raises(ScannerError) as caught:
        list(SaneScanner("nosuch:0", ScanSettings()).pages())

    assert caught.value.message == "scanner not found: nosuch:0"
    names = [name for name, _ in list_devices()]
    assert caught.value.hint.startswith(f"available: {', '.join(names) or 'none'} — ")


def test_list_devices_shows_the_configured_scanners(sane_test_scanner: str) -> None:
    # dll.conf is read once per process (at the first sane_init), so list in a fresh one.
    code = "import json; from device.scanner import list_devices; print(json.dumps(list_devices()))"
    env = sane_env(Path(os.environ["SANE_CONFIG_DIR"]))
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True
    )

    assert json.loads(done.stdout) == [
        ["test:0", "Noname frontend-tester"],
        ["test:1", "Noname frontend-tester"],
    ]


def test_button_wait_polls_the_scanner_sensors_until_stopped(sane_test_scanner: str) -> None:
    # The test backend's soft-detect bool options are read-only sensors like real buttons;
    # nobody can press them, so the wait must end only through ``stop``.
    stop = threading.Event()
    timer = threading.Timer(0.3, stop.set)
    started = time.monotonic()
    timer.start()

    pressed = wait_for_button(sane_test_scanner, poll_s=0.05, stop=stop)

    assert (pressed, 0.25 < time.monotonic() - started < 2.0) == (False, True)


def test_button_wait_on_a_scanner_without_buttons_says_so(sane_test_scanner: str) -> None:
    sane.init()
    try:
        dev = sane.open(sane_test_scanner)
        dev.enable_test_options = False
        try:
            with pytest.raises(ScannerError, match="has no buttons sohoa can read"):
                poll_buttons(dev, sane_test_scanner, poll_s=0.01, stop=threading.Event())
        finally:
            dev.close()
    finally:
        sane.exit()


# --- pure decisions over other backends' real option names ------------------------------

TEST_BACKEND = ["Flatbed", "Automatic Document Feeder"]
FUJITSU = ["ADF Front", "ADF Back", "ADF Duplex", "Card Front", "Card Back", "Card Duplex"]
CANON_DR = ["Flatbed", "ADF Front", "ADF Back", "ADF Duplex"]
HPAIO = ["Flatbed", "ADF", "Duplex"]
AIRSCAN = ["Flatbed", "ADF", "ADF Duplex"]
PIXMA = ["Flatbed", "Automatic Document Feeder", "ADF Duplex"]
EPSON_TABLE = ["Document Table", "ADF"]
AVISION = ["Normal", "ADF Front", "ADF Back", "ADF Duplex"]
BROTHER = [
    "FlatBed",
    "Automatic Document Feeder(left aligned)",
    "Automatic Document Feeder(left aligned,Duplex)",
    "Automatic Document Feeder(centrally aligned)",
    "Automatic Document Feeder(centrally aligned,Duplex)",
]


@pytest.mark.parametrize(
    ("wanted", "available", "expected"),
    [
        ("flatbed", TEST_BACKEND, "Flatbed"),
        ("adf", TEST_BACKEND, "Automatic Document Feeder"),
        ("adf", FUJITSU, "ADF Front"),
        ("adf-duplex", FUJITSU, "ADF Duplex"),
        ("flatbed", CANON_DR, "Flatbed"),
        ("adf", CANON_DR, "ADF Front"),
        ("adf-duplex", CANON_DR, "ADF Duplex"),
        ("adf", HPAIO, "ADF"),
        ("adf-duplex", HPAIO, "Duplex"),
        ("adf-duplex", AIRSCAN, "ADF Duplex"),
        ("adf", PIXMA, "Automatic Document Feeder"),
        ("adf-duplex", PIXMA, "ADF Duplex"),
        ("flatbed", EPSON_TABLE, "Document Table"),
        ("adf", EPSON_TABLE, "ADF"),
        ("flatbed", AVISION, "Normal"),
        ("adf", AVISION, "ADF Front"),
        ("flatbed", BROTHER, "FlatBed"),
        ("adf", BROTHER, "Automatic Document Feeder(left aligned)"),
        ("adf-duplex", BROTHER, "Automatic Document Feeder(left aligned,Duplex)"),
    ],
)
def test_source_names_map_onto_each_backends_names(
    wanted: str, available: list[str], expected: str
) -> None:
    assert choose_source(wanted, available) == expected


@pytest.mark.parametrize(
    ("wanted", "available", "hint"),
    [
        ("adf", ["Flatbed", "Transparency Adapter"], "it offers: Flatbed, Transparency Adapter"),
        ("flatbed", FUJITSU, f"it offers: {', '.join(FUJITSU)}"),
        ("adf-duplex", TEST_BACKEND, "it offers: Flatbed, Automatic Document Feeder"),
        ("adf", [], "it offers: none"),
    ],
)
def test_missing_source_lists_what_the_scanner_offers(
    wanted: str, available: list[str], hint: str
) -> None:
    with pytest.raises(ScannerError) as caught:
        choose_source(wanted, available)

    assert (caught.value.message, caught.value.hint.split(" — ")[0]) == (
        f"scanner has no {wanted} source",
        hint,
    )


BROTHER_MODES = [
    "Black & White",
    "Gray[Error Diffusion]",
    "True Gray",
    "24bit Color",
    "24bit Color[Fast]",
]


@pytest.mark.parametrize(
    ("available", "expected"),
    [
        (["Gray", "Color"], ("Gray", "Color", None)),
        (["Lineart", "Halftone", "Gray", "Color"], ("Gray", "Color", "Lineart")),
        (["Binary", "Gray", "Color"], ("Gray", "Color", "Binary")),
        (BROTHER_MODES, ("True Gray", "24bit Color", "Black & White")),
        (["Color", "Color (48 bits)", "Grayscale", "Lineart"], ("Grayscale", "Color", "Lineart")),
        (["Binary", "Gray8", "Color48", "Color24"], ("Gray8", "Color24", "Binary")),
        (["48bit Color", "24bit Color", "Halftone"], (None, "24bit Color", None)),
    ],
)
def test_mode_names_map_onto_each_backends_names_never_a_dithered_one(
    available: list[str], expected: tuple[str | None, str | None, str | None]
) -> None:
    def pick(wanted: str) -> str | None:
        try:
            return choose_mode(wanted, available)
        except ScannerError:
            return None

    assert (pick("gray"), pick("color"), pick("lineart")) == expected


def opt(name: str, kind: int = TYPE_FIXED, **kw: object) -> SaneOption:
    return SaneOption(name, kind, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("wanted", "option", "expected"),
    [
        (300, opt("resolution", range=(1.0, 1200.0, 1.0)), 300.0),
        (301, opt("resolution", range=(50.0, 600.0, 0.0)), 301.0),
        (310, opt("resolution", TYPE_INT, range=(75, 1200, 25)), 325.0),
        (1190, opt("resolution", TYPE_INT, range=(75, 1200, 25)), 1200.0),
        (50, opt("resolution", TYPE_INT, range=(100, 600, 1)), 100.0),
        (2400, opt("resolution", range=(50.0, 1200.0, 1.0)), 1200.0),
        (200, opt("resolution", TYPE_INT, choices=(75, 150, 300, 600)), 300.0),
        (300, opt("resolution", TYPE_INT, choices=(75, 150)), 150.0),
        (300, opt("resolution", TYPE_INT), 300.0),
    ],
)
def test_resolution_is_the_nearest_allowed_at_or_above_the_request(
    wanted: int, option: SaneOption, expected: float
) -> None:
    assert choose_resolution(wanted, option) == expected


SOFT = CAP_SOFT_SELECT | CAP_SOFT_DETECT


def test_backend_options_for_a4_gray_on_the_test_backend() -> None:
    options = {
        "mode": opt("mode", TYPE_STRING, cap=SOFT, choices=("Gray", "Color")),
        "depth": opt("depth", TYPE_INT, cap=SOFT, choices=(1, 8, 16)),
        "resolution": opt("resolution", cap=SOFT, unit=4, range=(1.0, 1200.0, 1.0)),
        "source": opt("source", TYPE_STRING, cap=SOFT, choices=tuple(TEST_BACKEND)),
        **{n: opt(n, cap=SOFT, unit=UNIT_MM, range=(0.0, 200.0, 1.0)) for n in ("tl-x", "tl-y")},
        **{n: opt(n, cap=SOFT, unit=UNIT_MM, range=(0.0, 200.0, 1.0)) for n in ("br-x", "br-y")},
    }

    plan = plan_settings("adf", "gray", 300, (210.0, 297.0), options)

    assert list(plan.items()) == [
        ("source", "Automatic Document Feeder"),
        ("mode", "Gray"),
        ("depth", 8),
        ("resolution", 300.0),
        ("tl-x", 0.0),
        ("tl-y", 0.0),
        ("br-x", 200.0),
        ("br-y", 200.0),
    ]


def test_backend_options_for_a_sheetfed_scanner_with_page_width() -> None:
    geometry = {"range": (0, 221, 1), "unit": UNIT_MM, "cap": SOFT}
    options = {
        "source": opt("source", TYPE_STRING, cap=SOFT, choices=tuple(FUJITSU)),
        "mode": opt("mode", TYPE_STRING, cap=SOFT, choices=("Lineart", "Halftone", "Gray")),
        "resolution": opt("resolution", TYPE_INT, cap=SOFT, range=(50, 600, 1)),
        "page-width": opt("page-width", TYPE_INT, **geometry),
        "page-height": opt("page-height", TYPE_INT, range=(0, 5000, 1), unit=UNIT_MM, cap=SOFT),
        "tl-x": opt("tl-x", TYPE_INT, **geometry),
        "br-x": opt("br-x", TYPE_INT, **geometry),
        "br-y": opt("br-y", TYPE_INT, cap=SOFT | CAP_INACTIVE, unit=UNIT_MM, range=(0, 355, 1)),
    }

    plan = plan_settings("adf-duplex", "lineart", 300, (210.0, 297.0), options)

    assert plan == {
        "source": "ADF Duplex",
        "mode": "Lineart",
        "resolution": 300,
        "page-width": 210,
        "page-height": 297,
        "tl-x": 0,
        "br-x": 210,
    }


def test_scanner_without_source_option_can_only_use_its_flatbed() -> None:
    options = {"mode": opt("mode", TYPE_STRING, cap=SOFT, choices=("Color",))}

    assert plan_settings("flatbed", "color", 300, None, options) == {"mode": "Color"}
    with pytest.raises(ScannerError, match="scanner has no adf source"):
        plan_settings("adf", "color", 300, None, options)


SENSOR = CAP_HARD_SELECT | CAP_SOFT_DETECT | 64


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (  # fujitsu: buttons and state sensors side by side
            [
                opt("scan", TYPE_BOOL, cap=SENSOR),
                opt("page-loaded", TYPE_BOOL, cap=SENSOR),
                opt("cover-open", TYPE_BOOL, cap=SENSOR),
                opt("email", TYPE_BOOL, cap=SENSOR),
                opt("function", TYPE_INT, cap=SENSOR),
                opt("swdeskew", TYPE_BOOL, cap=SOFT),
            ],
            ["scan", "email"],
        ),
        (  # hp5590
            [opt(n, TYPE_BOOL, cap=SENSOR) for n in ("button-scan", "button-copy", "doc-in-adf")],
            ["button-scan", "button-copy"],
        ),
        (  # the test backend with its test options on
            [
                opt("bool-soft-select-soft-detect", TYPE_BOOL, cap=SOFT | 64),
                opt("bool-hard-select-soft-detect", TYPE_BOOL, cap=SENSOR),
                opt("bool-hard-select", TYPE_BOOL, cap=CAP_HARD_SELECT | 64),
                opt("bool-soft-detect", TYPE_BOOL, cap=CAP_SOFT_DETECT | 64),
            ],
            ["bool-hard-select-soft-detect", "bool-soft-detect"],
        ),
        ([opt("scan", TYPE_BOOL, cap=SENSOR | CAP_INACTIVE)], []),
    ],
)
def test_buttons_are_read_only_bool_sensors_that_are_not_states(
    options: list[SaneOption], expected: list[str]
) -> None:
    assert button_options(options) == expected


@pytest.mark.parametrize(
    ("before", "now", "expected"),
    [
        ({"scan": False, "email": False}, {"scan": True, "email": False}, "scan"),
        ({"scan": False, "email": False}, {"scan": False, "email": True}, "email"),
        ({"scan": False}, {"scan": False}, None),
        ({"scan": True}, {"scan": True}, None),  # held down or latched since before the wait
        ({"scan": True}, {"scan": False}, None),  # released
        ({}, {"scan": True}, None),  # no earlier reading: cannot tell a press
    ],
)
def test_a_press_is_a_button_going_down_between_two_polls(
    before: dict[str, bool], now: dict[str, bool], expected: str | None
) -> None:
    assert pressed_button(before, now) == expected


@pytest.mark.parametrize(
    ("status", "pages_done", "expected"),
    [
        ("Document feeder out of documents", 0, "no paper in the feeder (d:0)"),
        ("Document feeder out of documents", 7, None),
        ("Document feeder jammed", 1, "paper jam after 1 page (d:0)"),
        ("Document feeder jammed", 12, "paper jam after 12 pages (d:0)"),
        ("Scanner cover is open", 0, "scanner cover is open (d:0)"),
        ("Lamp not ready, please retry", 0, "scanner lamp is warming up (d:0)"),
        ("Something new", 2, "scanner error: Something new after 2 pages (d:0)"),
    ],
)
def test_sane_status_becomes_a_clear_message(
    status: str, pages_done: int, expected: str | None
) -> None:
    error = scan_error(status, device="d:0", pages_done=pages_done)

    assert (error.message if error else None) == expected


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"source": "feeder"}, "scan source 'feeder' is not one of flatbed, adf, adf-duplex"),
        ({"mode": "bw"}, "scan mode 'bw' is not one of gray, color, lineart"),
        ({"resolution": 10}, "scan resolution 10 dpi is out of range"),
    ],
)
def test_impossible_scan_settings_are_a_configuration_error(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ScannerSettingError) as caught:
        ScanSettings(**kwargs)  # type: ignore[arg-type]

    assert caught.value.message == message


SCAN_THEN_WRITE = """
import socket
from device.scanner import SaneScanner, ScanSettings
pages = list(SaneScanner("test:0", ScanSettings("adf", "gray", 50)).pages())
a, b = socket.socketpair()
b.close()
try:
    a.send(b"x")
except BrokenPipeError:
    print(len(pages), "BrokenPipeError")
"""


def test_after_a_scan_a_closed_connection_is_an_error_not_the_end_of_the_process(
    sane_test_scanner: str,
) -> None:
    # libsane's reader threads set SIGPIPE back to its default when a scan starts: the
    # capture service (which also serves the counter page) would die the first time a
    # browser closed a connection early
    run = subprocess.run(
        [sys.executable, "-c", SCAN_THEN_WRITE], capture_output=True, text=True, timeout=60
    )
    assert (run.returncode, run.stdout.strip()) == (0, "10 BrokenPipeError"), run.stderr


JAM_THEN_WRITE = """
import socket
from device.errors import ScannerError
from device.scanner import SaneScanner, ScanSettings
scanner = SaneScanner("test:0", ScanSettings("adf", "gray", 50))
try:
    for page in scanner.pages():
        if page.index == 2:  # the 4th sheet jams
            scanner.set_option("read-return-value", "SANE_STATUS_JAMMED")
except ScannerError as exc:
    print(exc.message)
a, b = socket.socketpair()
b.close()
try:
    a.send(b"x")
except BrokenPipeError:
    print("BrokenPipeError")
"""


def test_after_a_jam_a_closed_connection_is_still_an_error(sane_test_scanner: str) -> None:
    run = subprocess.run(
        [sys.executable, "-c", JAM_THEN_WRITE], capture_output=True, text=True, timeout=60
    )
    assert (run.returncode, run.stdout.splitlines()) == (
        0,
        ["paper jam after 3 pages (test:0)", "BrokenPipeError"],
    ), run.stderr
