"""Page sources: the ScannedPage value, the PageSource protocol, and SANE scanners.

``SaneScanner`` is the thin adapter over python-sane: it opens the device for one
batch, applies ``ScanSettings`` through the pure decisions in ``device.sane_options``,
and yields pages one at a time, mapping SANE status texts to ScannerError. Pages
captured before an error are yielded before the error is raised, so the caller keeps
them. Each batch runs inside its own ``sane.init()``/``sane.exit()``: libsane re-reads
the backends' configuration at every init, and a device unplugged between batches is
found again (sessions that overlap share one init).
"""

from __future__ import annotations

import ctypes
import logging
import signal
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, Protocol

import sane
from PIL import Image

from device.errors import ScannerError, ScannerSettingError
from device.sane_options import (
    MODES,
    SETTING_ORDER,
    SOURCES,
    TYPE_GROUP,
    OptionValue,
    SaneOption,
    button_options,
    plan_settings,
    pressed_button,
    scan_error,
)

log = logging.getLogger(__name__)

SANE_ERROR: type[Exception] = sane._sane.error


@dataclass(frozen=True)
class ScannedPage:
    index: int  # 0-based in the batch
    image: Image.Image
    dpi: int
    source: str  # e.g. "test:0 ADF front" or a file name
    jpeg: bytes | None = None  # original JPEG bytes when the source delivered JPEG


class PageSource(Protocol):
    def pages(self) -> Iterator[ScannedPage]: ...


@dataclass(frozen=True)
class ScanSettings:
    source: str = "adf"  # "flatbed" | "adf" | "adf-duplex"
    mode: str = "gray"  # "gray" | "color" | "lineart"
    resolution: int = 300
    page_size_mm: tuple[float, float] | None = (210.0, 297.0)

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ScannerSettingError(
                f"scan source {self.source!r} is not one of {', '.join(SOURCES)}",
                f"set [capture] scanner_source to one of {', '.join(SOURCES)}",
            )
        if self.mode not in MODES:
            raise ScannerSettingError(
                f"scan mode {self.mode!r} is not one of {', '.join(MODES)}",
                f"set [capture] scanner_mode to one of {', '.join(MODES)}",
            )
        if not 50 <= self.resolution <= 4800:
            raise ScannerSettingError(
                f"scan resolution {self.resolution} dpi is out of range",
                "set [capture] scanner_resolution between 50 and 4800 (300 for documents)",
            )


class _SaneLibrary:
    """libsane is process-wide state: init for the first user, exit after the last, so
    that a batch still open elsewhere (say, a generator not yet closed) is never cut off
    by another one's ``sane.exit()``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0

    @contextmanager
    def session(self) -> Iterator[None]:
        with self._lock:
            if self._users == 0:
                try:
                    sane.init()
                except SANE_ERROR as exc:
                    raise ScannerError(
                        f"the SANE scanner library failed to start: {exc}",
                        "reinstall libsane1 and check /etc/sane.d (run install.sh again)",
                    ) from exc
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0:
                    sane.exit()
            ignore_sigpipe()  # whatever libsane did to it while the session lasted


SIG_IGN = 1  # the C value of SIG_IGN


def ignore_sigpipe() -> None:
    """SIGPIPE ignored again, process-wide, as Python has it.

    libsane's reader (sanei_thread) sets SIGPIPE back to its default while it reads
    a page; in one process with the counter page, a browser that closes a
    connection early would then kill the whole service instead of raising an
    error in one request. Called through libc, as the Python-level handler is
    still recorded as ignored and may only be set from the main thread."""
    libc = ctypes.CDLL(None)
    libc.signal.restype = ctypes.c_void_p
    libc.signal.argtypes = (ctypes.c_int, ctypes.c_void_p)
    libc.signal(signal.SIGPIPE, SIG_IGN)


_LIBRARY = _SaneLibrary()
_sane_session = _LIBRARY.session


def _devices() -> list[tuple[str, str]]:
    try:
        found = sane.get_devices()
    except SANE_ERROR as exc:
        raise ScannerError(f"cannot list scanners: {exc}", "check libsane's configuration") from exc
    return [(name, f"{vendor} {model}") for name, vendor, model, _kind in found]


def list_devices() -> list[tuple[str, str]]:
    """The scanners SANE can see: (device name, "vendor model")."""
    with _sane_session():
        return _devices()


def _open(device_name: str) -> Any:
    try:
        return sane.open(device_name)
    except SANE_ERROR as exc:
        status = str(exc)
        if status in ("Invalid argument", "Operation not supported"):
            names = ", ".join(name for name, _ in _devices()) or "none"
            raise ScannerError(
                f"scanner not found: {device_name}",
                f"available: {names} — Kiểm tra cáp và nguồn máy quét / "
                "check the scanner's cable and power, or fix the device name",
            ) from exc
        error = scan_error(status, device=device_name, pages_done=0)
        assert error is not None
        raise error from exc
    except RuntimeError as exc:  # python-sane: a name SANE opened but does not list
        raise ScannerError(f"scanner not found: {device_name}", "run `sohoa doctor`") from exc


def _options(dev: Any) -> dict[str, SaneOption]:
    options = (SaneOption.from_sane(raw) for raw in dev.get_options())
    return {o.name: o for o in options if o.type != TYPE_GROUP and o.name}


def _set(dev: Any, device_name: str, name: str, value: OptionValue) -> None:
    if name not in _options(dev):  # python-sane would silently store an unknown name
        raise ScannerError(
            f"scanner {device_name} has no option {name!r}",
            "remove it from the backend options; `scanimage -A` lists the scanner's options",
        )
    try:
        setattr(dev, name.replace("-", "_"), value)
    except SANE_ERROR as exc:
        raise ScannerError(
            f"scanner {device_name} rejected {name} = {value!r}: {exc}",
            "check [capture] scanner settings; `sohoa doctor` shows what the scanner offers",
        ) from exc
    except AttributeError as exc:  # inactive or read-only after an earlier option changed
        log.info("scanner option skipped device=%s option=%s reason=%s", device_name, name, exc)


def _apply(dev: Any, device_name: str, settings: ScanSettings) -> str:
    """Set every planned option in order, re-planning after each (a change can reload
    the others' constraints). Returns the backend's source name."""
    chosen = "default source"
    for name in SETTING_ORDER:
        plan = plan_settings(
            settings.source,
            settings.mode,
            settings.resolution,
            settings.page_size_mm,
            _options(dev),
        )
        if name in plan:
            _set(dev, device_name, name, plan[name])
            if name == "source":
                chosen = str(plan[name])
    return chosen


def _dpi(dev: Any, fallback: int) -> int:
    try:
        return int(round(float(dev.resolution)))
    except (AttributeError, TypeError, ValueError):
        return fallback


class SaneScanner:
    """One scanner; each ``pages()`` call is one batch (a feeder run or one flatbed page)."""

    def __init__(
        self,
        device_name: str,
        settings: ScanSettings,
        *,
        backend_options: Mapping[str, OptionValue] | None = None,
    ) -> None:
        self.device_name = device_name
        self.settings = settings
        self._backend_options: dict[str, OptionValue] = dict(backend_options or {})
        self._live: Any = None

    def set_option(self, name: str, value: OptionValue) -> None:
        """Set a backend-specific option (SANE name, e.g. "swdeskew"): at once when a
        batch is running (between pages), and for every later batch."""
        self._backend_options[name] = value
        if self._live is not None:
            _set(self._live, self.device_name, name, value)

    def pages(self) -> Iterator[ScannedPage]:
        with _sane_session():
            dev = _open(self.device_name)
            try:
                source = _apply(dev, self.device_name, self.settings)
                for name, value in self._backend_options.items():
                    _set(dev, self.device_name, name, value)
                self._live = dev
                yield from self._capture(dev, source, _dpi(dev, self.settings.resolution))
            finally:
                self._live = None
                with suppress(SANE_ERROR):
                    dev.cancel()
                dev.close()
                ignore_sigpipe()  # cancelling a reader that was cut short resets it too

    def _capture(self, dev: Any, source: str, dpi: int) -> Iterator[ScannedPage]:
        feeder = self.settings.source != "flatbed"
        duplex = self.settings.source == "adf-duplex"
        index = 0
        while True:
            try:
                dev.start()
                image: Image.Image = dev.snap(True) if feeder else dev.snap()
            except SANE_ERROR as exc:
                error = scan_error(str(exc), device=self.device_name, pages_done=index)
                if error is None:
                    return
                raise error from exc
            except RuntimeError as exc:  # python-sane: "Scanner returned no data"
                raise ScannerError(
                    f"scanner {self.device_name} returned an empty page after {index} pages",
                    "Bấm quét lại / scan again; if it repeats, restart the scanner",
                ) from exc
            finally:
                ignore_sigpipe()  # reading a page put SIGPIPE back to its default
            if self.settings.mode == "lineart" and image.mode != "1":
                image = image.convert("1", dither=Image.Dither.NONE)
            side = (" front" if index % 2 == 0 else " back") if duplex else ""
            yield ScannedPage(index, image, dpi, f"{self.device_name} {source}{side}")
            index += 1
            if not feeder:
                return


def _read_buttons(dev: Any, names: list[str]) -> dict[str, bool]:
    return {name: bool(getattr(dev, name.replace("-", "_"))) for name in names}


def poll_buttons(
    dev: Any, device_name: str, *, poll_s: float, stop: threading.Event | None
) -> bool:
    """Poll an open python-sane device's button sensors until one is pressed (True) or
    ``stop`` is set (False)."""
    names = button_options(list(_options(dev).values()))
    if not names:
        raise ScannerError(
            f"scanner {device_name} has no buttons sohoa can read",
            "start scans from the screen or with `sohoa scan` instead",
        )
    try:
        before = _read_buttons(dev, names)
        while not (stop is not None and stop.is_set()):
            if stop is not None:
                stop.wait(poll_s)
            else:
                time.sleep(poll_s)
            now = _read_buttons(dev, names)
            button = pressed_button(before, now)
            if button is not None:
                log.info("scanner button pressed device=%s button=%s", device_name, button)
                return True
            before = now
    except SANE_ERROR as exc:
        error = scan_error(str(exc), device=device_name, pages_done=0)
        assert error is not None
        raise error from exc
    return False


def wait_for_button(
    device_name: str, *, poll_s: float = 0.2, stop: threading.Event | None = None
) -> bool:
    """Block until a button on the scanner is pressed (True) or ``stop`` is set (False)."""
    with _sane_session():
        dev = _open(device_name)
        try:
            return poll_buttons(dev, device_name, poll_s=poll_s, stop=stop)
        finally:
            dev.close()
