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
import threading
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from agent.config import BrokerConfig, Config, DeviceConfig
from agent.errors import ExitCode, SohoaError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from agent.keys import WarehousePublic

DEMO_DEVICE = "demo-H56-0001"


def demo_pages(folder: Path) -> int:
    """Write a small counter batch: two dossiers, an ID card QR, a separator."""
    from agent.samples import blank_page, make_page, receipt_page

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
    both key sets created, warehouse.pub copied to the device, the device enrolled."""
    from agent import keys

    wpub = keys.init_warehouse_keys(
        warehouse.path(warehouse.warehouse.private_key),
        warehouse.path(warehouse.warehouse.public_key),
        force=force,
    )
    dpub = keys.init_device_keys(device.path(device.device.key), force=force)
    shutil.copy(
        warehouse.path(warehouse.warehouse.public_key), device.path(device.warehouse.public_key)
    )
    keys.enroll_device(
        keys.device_public_path(device.path(device.device.key)),
        device.device.id,
        warehouse.path(warehouse.warehouse.devices),
    )
    return wpub, dpub


def run_demo(keep: Path | None = None, sane: bool = True) -> int:
    from agent import keys
    from agent.capture import capture_batch
    from agent.service import seal_settings
    from agent.spool import Spool
    from device.barcodes import ZbarReader
    from device.files import PathSource
    from device.sane_testbed import write_sane_config
    from sync.daemons import run_sync, serve_warehouse
    from sync.fleet import fleet_snapshot, render_fleet
    from sync.index import SqliteIndex
    from sync.localbroker import start_local_broker

    base = keep or Path(tempfile.mkdtemp(prefix="sohoa-demo-"))
    base.mkdir(parents=True, exist_ok=True)
    print(f"demo directory: {base}")
    broker = start_local_broker(base / "broker")
    print(f"broker: mosquitto at {broker.url}")
    stop = threading.Event()
    try:
        bcfg = BrokerConfig(url=broker.url)
        wh = Config(home=base / "warehouse", broker=bcfg)
        dev = Config(home=base / "device", broker=bcfg, device=DeviceConfig(id=DEMO_DEVICE))
        dev = replace(dev, sync=replace(dev.sync, receipt_timeout_s=10.0))
        wpub, dpub = provision_pair(dev, wh, force=True)
        print(
            f"keys: warehouse {wpub.key_id}, device {keys.device_fingerprint(dpub)} enrolled as {DEMO_DEVICE}"
        )

        ready = threading.Event()
        worker = threading.Thread(
            target=serve_warehouse,
            args=(wh,),
            kwargs={"worker": "demo", "stop": stop, "ready": ready},
            daemon=True,
        )
        worker.start()
        if not ready.wait(15):
            raise SohoaError(
                "the demo warehouse did not connect to the broker", f"see {broker.directory}"
            )

        seal = seal_settings(dev)
        captured: dict[str, str] = {}
        with Spool(dev.home / "spool", reserve_bytes=0) as spool:
            n = demo_pages(base / "pages")

            res = capture_batch(
                PathSource(base / "pages"),
                spool=spool,
                reader=ZbarReader(),
                capture=dev.capture,
                seal=seal,
            )
            print(
                f"scan --from pages/: {n} pages -> {len(res.documents)} documents, separators {list(res.separators)}"
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
                from device.scanner import SaneScanner, ScanSettings

                res2 = capture_batch(
                    SaneScanner("test:0", ScanSettings(source="adf", mode="gray", resolution=300)),
                    spool=spool,
                    reader=ZbarReader(),
                    capture=dev.capture,
                    seal=seal,
                )
                print(
                    f"scan --device test:0: {res2.pages_in} pages -> {len(res2.documents)} documents"
                )
                for d in res2.documents:
                    captured[d.doc_id] = d.pdf_sha256

        out = run_sync(dev, once=True, timeout_s=120)
        print(f"sync: {out.stored} stored, {out.pending} pending, {out.rejected} rejected")

        index = SqliteIndex(wh.path(wh.warehouse.archive) / "index.db")
        stored = {d.doc_id: d for d in index.all()}
        index.close()
        print("\nwarehouse ls:")
        for rec in stored.values():
            ok = captured.get(rec.doc_id) == rec.pdf_sha256
            print(
                f"  {rec.doc_id}  {rec.device}  {rec.pages} p  {rec.bytes // 1024} KB"
                f"  sha256 {'verified' if ok else 'MISMATCH'}"
            )

        rows = fleet_snapshot(bcfg, quiet_s=0.5)
        print("\nfleet:")
        print(render_fleet(rows))

        good = set(captured) == set(stored) and all(
            captured[k] == stored[k].pdf_sha256 for k in captured
        )
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
        stop.set()
        broker.stop()
        if keep is None:
            shutil.rmtree(base, ignore_errors=True)
