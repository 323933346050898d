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
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from agent.capture import CaptureResult, SealSettings, capture_batch
from agent.codes import parse_dossier_code, parse_lookup_url
from agent.config import Config
from agent.errors import CodeError, ScannerError, SohoaError, SpoolError
from agent.keys import load_device_key, load_warehouse_public
from agent.spool import Spool, open_spool
from device.barcodes import ZbarReader
from device.scanner import PageSource, ScannedPage, ScanSettings

log = logging.getLogger("sohoa.agent")


def seal_settings(cfg: Config) -> SealSettings:
    """What sealing needs from the configuration: device key and pinned warehouse key."""
    return SealSettings(
        device_id=cfg.device.id,
        device_key=load_device_key(cfg.path(cfg.device.key)),
        warehouse=load_warehouse_public(cfg.path(cfg.warehouse.public_key)),
        segment_size=cfg.spool.segment_size,
        permanent_types=cfg.capture.permanent_types,
    )


def scan_settings(cfg: Config) -> ScanSettings:
    return ScanSettings(
        source=cfg.capture.scanner_source,
        mode=cfg.capture.scanner_mode,
        resolution=cfg.capture.scanner_resolution,
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
    """Capture batches until ``stop`` is set."""
    if not device and not hot_folder:
        raise SohoaError("nothing to capture from", "give --device NAME or --hot-folder DIR")
    seal = seal_settings(cfg)
    preset = PresetDossier()
    if reader_port:
        threading.Thread(target=_reader_loop, args=(reader_port, preset, stop), daemon=True).start()

    def batch(source: PageSource, spool: Spool, reader: ZbarReader) -> None:
        try:
            result = capture_batch(
                source,
                spool=spool,
                reader=reader,
                capture=cfg.capture,
                seal=seal,
                preset_dossier=preset.take(),
            )
        except SpoolError:
            raise
        except SohoaError as exc:
            log.error("batch failed reason=%s", exc.message)
            return
        log.info(
            "batch captured batch=%s pages=%d documents=%d status=%s",
            result.batch_id,
            result.pages_in,
            len(result.documents),
            result.status,
        )
        on_batch(result)

    def hot_loop(folder: Path) -> None:
        from device.files import HotFolder

        hot = HotFolder(folder, done_dir=folder / "done", failed_dir=folder / "failed")
        with open_spool(cfg) as spool:
            reader = ZbarReader()
            while not stop.is_set():
                for path in hot.ready_files(time.time()):
                    batch(_FileSource(functools.partial(hot.take, path)), spool, reader)
                stop.wait(1.0)

    def button_loop(name: str) -> None:
        from device.scanner import SaneScanner, wait_for_button

        settings = scan_settings(cfg)
        with open_spool(cfg) as spool:
            reader = ZbarReader()
            while not stop.is_set():
                try:
                    pressed = wait_for_button(name, stop=stop)
                except ScannerError as exc:
                    log.warning("scanner unavailable reason=%s", exc.message)
                    stop.wait(5)
                    continue
                if pressed:
                    batch(SaneScanner(name, settings), spool, reader)

    with Spool(cfg.home / "spool") as spool:
        spool.recover()
    failures: list[SohoaError] = []

    def guarded(fn: Callable[[str], None] | Callable[[Path], None], arg: object) -> None:
        try:
            fn(arg)  # type: ignore[arg-type]
        except SohoaError as exc:  # a spool that cannot be trusted stops the service
            failures.append(exc)

    workers = []
    if hot_folder:
        workers.append(threading.Thread(target=guarded, args=(hot_loop, hot_folder), daemon=True))
    if device:
        workers.append(threading.Thread(target=guarded, args=(button_loop, device), daemon=True))
    for w in workers:
        w.start()
    notify("READY=1")
    while not stop.is_set() and all(w.is_alive() for w in workers):
        notify("WATCHDOG=1")
        stop.wait(5.0)
    stop.set()
    for w in workers:
        w.join(10)
    if failures:
        raise failures[0]
