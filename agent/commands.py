"""What each ``sohoa`` command does: one handler per command, a thin layer over the library.

Handlers take the parsed arguments and the loaded configuration and return an
exit code; failures are raised as sohoa errors and printed by ``agent.cli``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from agent.config import Config
from device.errors import InputError
from sync.errors import ExitCode, SohoaError


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, ensure_ascii=False, indent=2))


# -- scan ----------------------------------------------------------------------------


def cmd_scan(args: argparse.Namespace, cfg: Config) -> int:
    from agent.capture.wiring import Capture, scan_settings
    from device.scanner import PageSource, SaneScanner

    source: PageSource
    if args.source_path:
        from device.files import PathSource

        path = Path(args.source_path)
        if not path.exists():
            raise InputError(
                f"{path} does not exist", "give a folder of page images, a TIFF or a PDF"
            )
        source = PathSource(path)
    else:
        source = SaneScanner(args.device, scan_settings(cfg))
    with Capture.from_config(cfg) as capture:
        capture.spool.recover()
        result = capture.run(source, preset_dossier=args.dossier)
    if args.json:
        out = result.to_json()
        for d in out["documents"]:
            if not args.hashes:
                d.pop("pdf_sha256", None)
        _print_json(out)
    else:
        print(
            f"Lô {result.batch_id}: {result.pages_in} trang, {len(result.documents)} tài liệu"
            f" / batch {result.batch_id}: {result.pages_in} pages, {len(result.documents)} documents"
        )
        for d in result.documents:
            print(
                f"  {d.doc_id}  {d.pages:>3} p  {d.bytes // 1024:>6} KB  {d.doc_type or '-'}"
                + (f"  [{', '.join(d.flags)}]" if d.flags else "")
            )
        for w in result.warnings:
            print(f"  ! {w}")
    return ExitCode.ok if result.status == "complete" else ExitCode.incomplete


# -- status / sync -------------------------------------------------------------------


def cmd_status(args: argparse.Namespace, cfg: Config) -> int:
    from sync.spool.store import Spool

    with Spool(cfg.home / "spool") as spool:
        st = spool.status()
    if args.json:
        _print_json(st.to_json())
    else:
        states = ", ".join(f"{k} {v}" for k, v in st.by_state.items() if v)
        print(f"documents: {states or 'none'}")
        print(
            f"pending: {st.pending_docs} ({st.pending_bytes / 2**20:.1f} MB),"
            f" oldest {st.oldest_pending_age_s if st.oldest_pending_age_s is not None else '-'} s"
        )
        print(
            f"disk free: {st.disk_free_bytes / 2**30:.1f} GB; last sync: {st.last_sync or 'never'}"
        )
    return ExitCode.ok


def cmd_sync(args: argparse.Namespace, cfg: Config) -> int:
    from agent.services.sync import run_sync, sync_once

    if args.once:
        out = sync_once(cfg, args.timeout or 600.0)
        print(f"synced: {out.stored} document(s) stored at the warehouse, none pending")
        return ExitCode.ok
    run_sync(cfg, once=False, timeout_s=args.timeout, notify=_sd_notify)
    return ExitCode.ok


def _sd_notify(state: str) -> None:
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.connect("\0" + addr[1:] if addr.startswith("@") else addr)
        s.sendall(state.encode())


# -- warehouse / fleet ----------------------------------------------------------------


def cmd_warehouse(args: argparse.Namespace, cfg: Config) -> int:
    if args.wh_cmd == "serve":
        from agent.services.warehouse import WarehouseWorkers

        with WarehouseWorkers.from_config(cfg, args.workers, name=args.instance) as workers:
            _sd_notify("READY=1")
            try:
                while True:
                    workers.join(1.0)
                    workers.keep_alive()  # raises once a worker keeps dying: exit non-zero
            except KeyboardInterrupt:
                pass
        return ExitCode.ok
    from sync.warehouse.index import open_index

    index = open_index(cfg.warehouse.index, cfg.path(cfg.warehouse.archive))
    docs = index.all()
    index.close()
    if args.json:
        _print_json({"documents": [d.to_json() for d in docs]})
    else:
        for d in docs:
            print(
                f"{d.doc_id}  {d.device:<16} {d.stored_at}  {d.pages:>3} p  {d.bytes // 1024:>6} KB"
            )
        print(f"{len(docs)} document(s)")
    return ExitCode.ok


def cmd_fleet(args: argparse.Namespace, cfg: Config) -> int:
    from agent.wiring import broker_config
    from sync.fleet import fleet_snapshot, render_fleet

    rows = fleet_snapshot(broker_config(cfg), quiet_s=args.wait)
    if args.json:
        _print_json({"devices": [r.to_json() for r in rows]})
    else:
        print(render_fleet(rows))
    return ExitCode.ok


# -- keys / sheets / audit / doctor / demo ------------------------------------------------


def cmd_keys(args: argparse.Namespace, cfg: Config) -> int:
    from sync import enrolment, keys

    if args.keys_cmd == "init":
        if args.warehouse:
            pub = keys.init_warehouse_keys(
                cfg.path(cfg.warehouse.private_key),
                cfg.path(cfg.warehouse.public_key),
                force=args.force,
            )
            print(
                f"warehouse keys created (key id {pub.key_id}); copy {cfg.path(cfg.warehouse.public_key)}"
                " to every device's keys/warehouse.pub"
            )
        else:
            dpub = keys.init_device_keys(cfg.path(cfg.device.key), force=args.force)
            print(
                f"device key created, fingerprint {keys.device_fingerprint(dpub)}; enrol"
                f" {cfg.path(cfg.device.key).with_suffix('.pub')} at the warehouse:"
                f" sohoa keys enroll device.pub --id {cfg.device.id}"
            )
        return ExitCode.ok
    if args.keys_cmd == "enroll":
        path = enrolment.enroll_device(
            Path(args.device_pub), args.id, cfg.path(cfg.warehouse.devices)
        )
        print(f"device {args.id} enrolled ({path})")
        return ExitCode.ok
    if args.keys_cmd == "rotate":
        wpub = keys.rotate_warehouse_keys(
            cfg.path(cfg.warehouse.private_key), cfg.path(cfg.warehouse.public_key)
        )
        print(f"new warehouse key {wpub.key_id}; old keys kept so that old envelopes still open")
        return ExitCode.ok
    raise InputError("unknown keys command", "see sohoa keys --help")


def cmd_sheets(args: argparse.Namespace, cfg: Config) -> int:
    from agent.capture.sheets import cover_sheet_text, render_sheet, write_sheets_pdf

    fields: dict[str, Any] = {}
    if args.kind == "DOC":
        fields = {"T": args.type, "P": args.pages, "Y": args.year}
        title, sub = "TÀI LIỆU TIẾP THEO", [f"Loại: {args.type}"]
    elif args.kind == "DOSSIER":
        fields = {"H": args.dossier, "TT": args.tthc, "N": args.documents}
        title, sub = "HỒ SƠ", [f"Mã hồ sơ: {args.dossier}", f"Thủ tục: {args.tthc or '-'}"]
    else:
        title, sub = "TRANG PHÂN CÁCH", ["Separator sheet"]
    text = cover_sheet_text(args.kind, **{k: v for k, v in fields.items() if v is not None})
    img = render_sheet(text, title, sub)
    with Path(args.out).open("wb") as fh:
        write_sheets_pdf([img] * args.copies, fh)
    print(f"{args.out}: {args.copies} sheet(s) {text}")
    return ExitCode.ok


def cmd_audit(args: argparse.Namespace, cfg: Config) -> int:
    from sync.spool.audit import verify_against_index, verify_chain
    from sync.spool.store import Spool

    with Spool(cfg.home / "spool") as spool:
        entries = spool.audit_entries()
        states = {d.doc_id: d.state for d in spool.documents()}
    problems = verify_chain(entries) + verify_against_index(entries, states)
    if problems:
        for p in problems:
            print(f"entry {p.seq}: {p.reason}")
        raise SohoaError(
            f"audit chain broken at entry {problems[0].seq}: {problems[0].reason}",
            "keep the device as it is and report it to provincial IT",
        )
    print(f"audit log intact: {len(entries)} entries")
    return ExitCode.ok


def cmd_agent(args: argparse.Namespace, cfg: Config) -> int:
    import signal
    import threading

    from agent.services.capture import run_agent

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        run_agent(
            cfg,
            device=args.device or cfg.capture.scanner_device or None,
            hot_folder=Path(args.hot_folder)
            if args.hot_folder
            else (cfg.path(Path(cfg.capture.hot_folder)) if cfg.capture.hot_folder else None),
            reader_port=args.reader or cfg.capture.reader_port or None,
            stop=stop,
            notify=_sd_notify,
        )
    except KeyboardInterrupt:
        stop.set()
    return ExitCode.ok


def cmd_doctor(args: argparse.Namespace, cfg: Config) -> int:
    from agent.doctor import run_checks

    failures = 0
    for ok, line in run_checks(cfg):
        print(("ok    " if ok else "FAIL  ") + line)
        failures += not ok
    return ExitCode.ok if failures == 0 else ExitCode.other


def cmd_demo(args: argparse.Namespace, cfg: Config) -> int:
    from agent.demo import run_demo

    return run_demo(keep=Path(args.keep) if args.keep else None, sane=not args.no_sane)
