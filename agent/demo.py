"""``sohoa demo``: the whole path on this machine with real parts.

A private mosquitto on a free loopback port, a warehouse in a temporary
directory, fresh keys, a generated batch of pages carrying receipt barcodes and
a citizen-ID QR, the SANE test scanner, sync, and what the warehouse holds.
Exit 0 only if every captured document arrived and verified.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from agent.config import Config, DeviceConfig
from sync.errors import ExitCode, SohoaError
from sync.mqtt.settings import BrokerConfig

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from sync.keys import WarehousePublic

DEMO_DEVICE = "demo-H56-0001"


def demo_pages(folder: Path) -> int:
    """Write a small counter batch: two dossiers, an ID card QR, a separator."""
    from agent.capture.samples import blank_page, make_page, receipt_page

    folder.mkdir(parents=True, exist_ok=True)
    pages = [
        receipt_page("000.00.20.H56-230512-0003"),
        make_page(
            [
                "TỜ KHAI ĐĂNG KÝ KHAI SINH",
                "Kính gửi: UBND xã ...",
                "Họ, chữ đệm, tên người yêu cầu: ...",
            ],
            seed=1,
        ),
        make_page(
            ["CĂN CƯỚC CÔNG DÂN (bản sao)"],
            codes=[("QRCODE", "001090012345||Nguyen Van An|01011990|Nam|Ha Noi|01012021")],
            seed=2,
        ),
        make_page([], codes=[("CODE128", "PATCHT")], seed=3),
        make_page(["GIẤY CHỨNG SINH", "Số: 123/GCS"], seed=4),
        blank_page(seed=5),
        receipt_page("000.00.20.H56-230512-0004"),
        make_page(["ĐƠN ĐỀ NGHỊ CẤP BẢN SAO", "Kính gửi: ..."], seed=6),
    ]
    for i, img in enumerate(pages):
        img.save(folder / f"page-{i:03d}.png", dpi=(300, 300))
    return len(pages)


def provision_pair(
    device: Config, warehouse: Config, *, force: bool = False
) -> tuple[WarehousePublic, Ed25519PublicKey]:
    """Keys for a warehouse and one device, as a technician would set them up:
    both key sets created (with the warehouse's command key), warehouse.pub copied
    to the device, the device enrolled."""
    from sync import command_key, enrolment, keys

    private = warehouse.path(warehouse.warehouse.private_key)
    wpub = command_key.init_warehouse(
        private,
        warehouse.path(warehouse.warehouse.public_key),
        command_key.command_key_path(private),
        force=force,
    )
    dpub = keys.init_device_keys(device.path(device.device.key), force=force)
    shutil.copy(
        warehouse.path(warehouse.warehouse.public_key), device.path(device.warehouse.public_key)
    )
    enrolment.enroll_device(
        keys.device_public_path(device.path(device.device.key)),
        device.device.id,
        warehouse.path(warehouse.warehouse.devices),
    )
    return wpub, dpub


def _scan_demo_batches(dev: Config, base: Path, sane: bool) -> dict[str, str]:
    """The generated counter batch and (with ``sane``) SANE's test scanner; doc id -> PDF hash."""
    from agent.capture.wiring import Capture
    from device.files import PathSource
    from device.sane_testbed import write_sane_config
    from device.scanner import SaneScanner, ScanSettings
    from sync.spool.store import Spool

    captured: dict[str, str] = {}
    with Capture.from_config(dev, spool=Spool(dev.home / "spool", reserve_bytes=0)) as capture:
        n = demo_pages(base / "pages")
        res = capture.run(PathSource(base / "pages"))
        print(
            f"scan --from pages/: {n} pages -> {len(res.documents)} documents,"
            f" separators {list(res.separators)}"
        )
        for d in res.documents:
            print(
                f"  {d.doc_id}  pages={d.pages} dossier={'yes' if d.dossier_code else 'no'}"
                f" owner={'yes' if d.owner_id else 'no'} flags={list(d.flags)}"
            )
            captured[d.doc_id] = d.pdf_sha256
        for w in res.warnings:
            print(f"  ! {w}")
        if sane:
            os.environ["SANE_CONFIG_DIR"] = str(write_sane_config(base / "sane"))
            scanner = SaneScanner("test:0", ScanSettings(source="adf", mode="gray", resolution=300))
            res2 = capture.run(scanner)
            print(f"scan --device test:0: {res2.pages_in} pages -> {len(res2.documents)} documents")
            captured.update({d.doc_id: d.pdf_sha256 for d in res2.documents})
    return captured


def _report(wh: Config, broker: BrokerConfig, captured: dict[str, str]) -> bool:
    """Print what the warehouse holds and the fleet view; True when all arrived intact."""
    from sync.fleet import fleet_snapshot, render_fleet
    from sync.warehouse.index import open_index

    index = open_index(wh.warehouse.index, wh.path(wh.warehouse.archive))
    stored = {d.doc_id: d for d in index.all()}
    index.close()
    print("\nwarehouse ls:")
    for rec in stored.values():
        ok = captured.get(rec.doc_id) == rec.pdf_sha256
        print(
            f"  {rec.doc_id}  {rec.device}  {rec.pages} p  {rec.bytes // 1024} KB"
            f"  sha256 {'verified' if ok else 'MISMATCH'}"
        )
    print("\nfleet:")
    print(render_fleet(fleet_snapshot(broker, quiet_s=0.5)))
    return set(captured) == set(stored) and all(
        captured[k] == stored[k].pdf_sha256 for k in captured
    )


def run_demo(keep: Path | None = None, sane: bool = True) -> int:
    from agent.services.sync import run_sync
    from agent.services.warehouse import WarehouseWorkers
    from sync import keys
    from sync.localbroker import start_local_broker

    base = keep or Path(tempfile.mkdtemp(prefix="sohoa-demo-"))
    base.mkdir(parents=True, exist_ok=True)
    print(f"demo directory: {base}")
    broker = start_local_broker(base / "broker")
    print(f"broker: mosquitto at {broker.url}")
    try:
        bcfg = BrokerConfig(url=broker.url)
        wh = Config(home=base / "warehouse", broker=bcfg)
        dev = Config(home=base / "device", broker=bcfg, device=DeviceConfig(id=DEMO_DEVICE))
        dev = replace(dev, sync=replace(dev.sync, receipt_timeout_s=10.0))
        wpub, dpub = provision_pair(dev, wh, force=True)
        print(
            f"keys: warehouse {wpub.key_id}, device {keys.device_fingerprint(dpub)}"
            f" enrolled as {DEMO_DEVICE}"
        )
        with WarehouseWorkers.from_config(wh, name="demo") as workers:
            if not workers.wait_ready(15):
                raise SohoaError(
                    "the demo warehouse did not connect to the broker", f"see {broker.directory}"
                )
            captured = _scan_demo_batches(dev, base, sane)
            out = run_sync(dev, once=True, timeout_s=120)
            print(f"sync: {out.stored} stored, {out.pending} pending, {out.rejected} rejected")
            good = _report(wh, bcfg, captured)
        print(
            "\ndemo: "
            + (
                "every captured document arrived and verified"
                if good
                else "FAILED: documents missing or altered"
            )
        )
        return ExitCode.ok if good else ExitCode.incomplete
    finally:
        broker.stop()
        if keep is None:
            shutil.rmtree(base, ignore_errors=True)
