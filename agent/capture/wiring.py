"""A capture built from the configuration in one call: spool, barcode reader, seal settings.

The command line, the capture service, the demo and the tests all start a
batch through ``Capture``, so the wiring is written once.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import TracebackType

from agent.capture.certifier import Certifier
from agent.capture.events import NO_EVENTS, CaptureEvents
from agent.capture.pipeline import CaptureResult, SealSettings, capture_batch
from agent.capture.register import CertificationRegister
from agent.config import CaptureConfig, Config
from agent.wiring import open_spool
from device.barcodes import BarcodeReader, ZbarReader
from device.scanner import PageSource, ScanSettings
from sync.keys import load_device_key, load_warehouse_public
from sync.spool.store import Spool


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


def certification_register(spool_root: Path, seal: SealSettings) -> CertificationRegister:
    """The device's certification register, beside the spool, sealed to the warehouse."""
    return CertificationRegister(spool_root / "register", seal.warehouse)


class Capture:
    """Everything one batch needs; ``run`` captures one batch into the spool."""

    def __init__(
        self,
        spool: Spool,
        seal: SealSettings,
        capture: CaptureConfig,
        reader: BarcodeReader | None = None,
    ) -> None:
        self.spool = spool
        self.seal = seal
        self.capture = capture
        self.reader: BarcodeReader = reader or ZbarReader()
        self.events: CaptureEvents = NO_EVENTS  # the counter page, when it is on

    @classmethod
    def from_config(cls, cfg: Config, *, spool: Spool | None = None) -> Capture:
        """Keys are loaded (and checked) before the spool opens, so a key problem
        is reported before any page is fed."""
        seal = seal_settings(cfg)
        return cls(spool or open_spool(cfg), seal, cfg.capture)

    def register(self) -> CertificationRegister:
        return certification_register(self.spool.root, self.seal)

    def run(
        self,
        source: PageSource,
        *,
        preset_dossier: str | None = None,
        profile: str | None = None,
        certifier: Certifier | None = None,
    ) -> CaptureResult:
        return capture_batch(
            source,
            spool=self.spool,
            reader=self.reader,
            capture=replace(self.capture, profile=profile) if profile else self.capture,
            seal=self.seal,
            preset_dossier=preset_dossier,
            events=self.events,
            certifier=certifier,
        )

    def close(self) -> None:
        self.spool.close()

    def __enter__(self) -> Capture:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
