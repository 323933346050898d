"""``sohoa agent``: the capture service beside the counter.

It waits for work — the scanner's button (SANE sensor options) or a complete
file in the hot folder a network scanner writes to — and runs one batch each
time. A handheld barcode reader on a serial port can set the dossier code for
the next batch. A failing batch is reported and the service carries on; no
error ends it except a spool that can no longer be trusted.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from agent.capture.codes import parse_dossier_code, parse_lookup_url
from agent.capture.events import NO_EVENTS, CaptureEvents
from agent.capture.pipeline import CaptureResult, record_scanner_failure
from agent.capture.signdesk import Opened, SigningDesk
from agent.capture.wiring import Capture, certification_register, scan_settings, seal_settings
from agent.config import Config
from agent.errors import FAILURES, CodeError, Failure
from agent.wiring import open_spool, spool_root
from device.errors import ScannerError
from device.scanner import PageSource, ScannedPage
from sync.errors import SpoolError

log = logging.getLogger("sohoa.agent")

HOT_FOLDER_POLL_S = 0.25  # with a 0.5 s settle, a page shows within a second
SCANNER_RETRY_S = 5.0
WATCHDOG_S = 5.0
NOTHING_TO_CAPTURE = ScannerError(
    "no scanner or hot folder configured",
    "set [capture] scanner_device or [capture] hot_folder, then restart sohoa-agent",
)


def dossier_from_reader(code: str) -> str | None:
    """The dossier code a handheld reader's line sets, or None (with the reason logged)."""
    text = code.strip()
    if "MHS=" in text:
        text = parse_lookup_url(text)[0] or ""
    try:
        return parse_dossier_code(text).text
    except CodeError as exc:
        log.warning("handheld reader code ignored reason=%s", exc.message)
        return None


@dataclass(frozen=True)
class _FileSource:
    pages_of: Callable[[], Iterator[ScannedPage]]

    def pages(self) -> Iterator[ScannedPage]:
        return self.pages_of()


class PresetDossier:
    """The dossier code waiting for the next batch, set from the reader thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._code: str | None = None

    def set(self, code: str) -> None:
        with self._lock:
            self._code = code

    def take(self) -> str | None:
        with self._lock:
            code, self._code = self._code, None
            return code


def _reader_loop(port: str, preset: PresetDossier, stop: threading.Event) -> None:
    from device.serial import SerialCodeReader

    while not stop.is_set():
        try:
            reader = SerialCodeReader(port)
        except ScannerError as exc:
            log.warning("barcode reader unavailable reason=%s", exc.message)
            stop.wait(10)
            continue
        try:
            while not stop.is_set():
                line = reader.read_code(0.5)
                if line:
                    code = dossier_from_reader(line)
                    if code:
                        preset.set(code)
                        log.info("dossier set for the next batch from the handheld reader")
        except ScannerError as exc:
            log.warning("barcode reader lost reason=%s", exc.message)
        finally:
            reader.close()


@dataclass
class _Service:
    """The capture service's shared parts: configuration, preset dossier, stop flag, and
    what the counter page asks for (``Actions``: a batch from the scanner, a dossier)."""

    cfg: Config
    stop: threading.Event
    on_batch: Callable[[CaptureResult], None]
    preset: PresetDossier = field(default_factory=PresetDossier)
    events: CaptureEvents = NO_EVENTS
    device: str | None = None
    wake: threading.Event = field(default_factory=threading.Event)  # stop, or a request
    requests: queue.Queue[str] = field(default_factory=queue.Queue)
    desk: SigningDesk = field(default_factory=lambda: SigningDesk(None))

    def start_batch(self, profile: str | None) -> str | None:
        if not self.device:
            return "Thiết bị này không có máy quét / no scanner on this device (hot folder only)"
        self.requests.put(profile or "")
        self.wake.set()
        return None

    def preset_dossier(self, code: str) -> str | None:
        dossier = dossier_from_reader(code)
        if dossier is None:
            return "Mã hồ sơ không hợp lệ / not a valid dossier code"
        self.preset.set(dossier)
        return None

    def open_signing(self, pin: str) -> str | None:
        return self.desk.open(pin)

    def close_signing(self) -> str | None:
        self.desk.close()
        return None

    def certify_next(self, on: bool) -> str | None:
        return self.desk.mark_next(on)

    def signing(self) -> dict[str, object]:
        return self.desk.status()

    def _requested(self) -> str | None:
        try:
            return self.requests.get_nowait()
        except queue.Empty:
            return None

    def batch(
        self, capture: Capture, source: PageSource, profile: str | None = None
    ) -> CaptureResult | None:
        """One batch; a failing batch is logged and the service carries on."""
        capture.events = self.events
        try:
            with self.desk.for_batch() as certifier:
                result = capture.run(
                    source, preset_dossier=self.preset.take(), profile=profile, certifier=certifier
                )
        except SpoolError:
            raise
        except FAILURES as exc:
            log.error("batch failed reason=%s", exc.message)
            return None
        log.info(
            "batch captured batch=%s pages=%d documents=%d status=%s",
            result.batch_id,
            result.pages_in,
            len(result.documents),
            result.status,
        )
        self.on_batch(result)
        return result

    def hot_loop(self, folder: Path) -> None:
        from device.files import HotFolder

        hot = HotFolder(folder, keep_originals=self.cfg.capture.keep_originals)
        with Capture.from_config(self.cfg) as capture:
            while not self.stop.is_set():
                for path in hot.ready_files(time.time()):
                    result = self.batch(capture, _FileSource(functools.partial(hot.take, path)))
                    if result is not None and result.status == "complete":
                        hot.finish(path)  # only once every document of it is in the spool
                self.stop.wait(HOT_FOLDER_POLL_S)

    def button_loop(self, name: str) -> None:
        from device.scanner import SaneScanner, wait_for_button

        settings = scan_settings(self.cfg)
        with Capture.from_config(self.cfg) as capture:
            while not self.stop.is_set():
                requested = self._requested()
                if requested is None:
                    self.wake.clear()
                    try:  # the button, or the page's "start a batch" (it sets wake)
                        pressed = wait_for_button(name, stop=self.wake)
                    except ScannerError as exc:
                        log.warning("scanner unavailable reason=%s", exc.message)
                        record_scanner_failure(capture.spool, exc)
                        self.wake.wait(SCANNER_RETRY_S)
                        continue
                    requested = self._requested() if not pressed else ""
                if requested is not None and not self.stop.is_set():
                    self.batch(capture, SaneScanner(name, settings), requested or None)


def signing_opener(cfg: Config) -> Callable[[str], Opened] | None:
    """How the counter page opens the officer's token session (None without [sign]);
    pyHanko is imported only then."""
    if not cfg.sign.module:
        return None
    register = certification_register(spool_root(cfg), seal_settings(cfg))

    def open_session(pin: str) -> Opened:
        from agent.capture.signing import RefusedCertifier, open_certifier

        certifier = open_certifier(cfg.sign, pin, register, cfg.path)
        if isinstance(certifier, RefusedCertifier):
            log.warning("signing session refused reason=%s", certifier.error.message)
            return Opened(None, certifier.error.line())
        log.info("signing session opened signer=%s", certifier.info.name)
        return Opened(certifier)

    return open_session


def _start(target: Callable[[], None], failures: list[Failure]) -> threading.Thread:
    def guarded() -> None:
        try:
            target()
        except FAILURES as exc:  # a spool that cannot be trusted stops the service
            failures.append(exc)

    thread = threading.Thread(target=guarded, daemon=True)
    thread.start()
    return thread


def run_agent(
    cfg: Config,
    *,
    device: str | None,
    hot_folder: Path | None,
    reader_port: str | None,
    stop: threading.Event,
    notify: Callable[[str], None] = lambda _s: None,
    on_batch: Callable[[CaptureResult], None] = lambda _r: None,
) -> None:
    """Capture batches until ``stop`` is set. With nothing to capture from, it says
    which settings to fill and waits (under systemd a crash loop would help nobody)."""
    seal_settings(cfg)  # a missing or wrong key is reported before the service says READY
    service = _Service(cfg, stop, on_batch, device=device, desk=SigningDesk(signing_opener(cfg)))
    page = None
    if cfg.ui.listen:  # the page's libraries load only when it is on
        from agent.counter.state import CounterState
        from agent.counter.wiring import start_counter

        state = CounterState(keep_minutes=cfg.ui.keep_minutes, review_mode=cfg.ui.review)
        page = start_counter(cfg, service, state)
        if page is not None:
            service.events = state
    if reader_port:
        threading.Thread(
            target=_reader_loop, args=(reader_port, service.preset, stop), daemon=True
        ).start()
    with open_spool(cfg) as spool:
        spool.recover()
        if not device and not hot_folder:
            log.error(
                "nothing to capture from — set [capture] scanner_device (see `sohoa doctor`)"
                " or [capture] hot_folder in the configuration, then restart sohoa-agent"
            )
            record_scanner_failure(spool, NOTHING_TO_CAPTURE)
    failures: list[Failure] = []
    workers = []
    if hot_folder:
        workers.append(_start(functools.partial(service.hot_loop, hot_folder), failures))
    if device:
        workers.append(_start(functools.partial(service.button_loop, device), failures))
    notify("READY=1")
    while not stop.is_set() and all(w.is_alive() for w in workers):  # none: wait for stop
        notify("WATCHDOG=1")
        service.desk.expire()
        stop.wait(WATCHDOG_S)
    stop.set()
    service.wake.set()
    if page is not None:
        state.release()  # a batch waiting for review is sealed, not lost
    for w in workers:
        w.join(10)
    service.desk.close()  # the token session ends with the agent
    if page is not None:
        page.stop()
    if failures:
        raise failures[0]
