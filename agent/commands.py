"""What each ``sohoa`` command does: one handler per command, a thin layer over the library.

Handlers take the parsed arguments and the loaded configuration and return an
exit code; failures are raised as sohoa errors and printed by ``agent.cli``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
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
    from agent.commands_sign import certifying, read_pin

    pin = read_pin(args)  # first: with --dossier-stdin too, the PIN is stdin's first line
    dossier = _dossier(args)
    with Capture.from_config(cfg) as capture:
        capture.spool.recover()
        with certifying(cfg, capture, pin) as certifier:
            del pin
            result = capture.run(source, preset_dossier=dossier, certifier=certifier)
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
    kept_unsigned = "unsigned" in result.flags
    return ExitCode.ok if result.status == "complete" and not kept_unsigned else ExitCode.incomplete


# -- status / sync -------------------------------------------------------------------


def _signature_note(signed_by: str | None, valid: bool | None, problem: str | None) -> str:
    """How ``warehouse ls`` shows a signed copy: who signed and whether it holds."""
    if valid is None:
        return ""
    if valid:
        return f"  ký số hợp lệ / signed, valid: {signed_by}"
    return f"  ký số KHÔNG hợp lệ / signature NOT valid ({signed_by}): {problem}"


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


def _dossier(args: argparse.Namespace) -> str | None:
    """The batch's dossier code: from stdin only, validated like the handheld reader's."""
    from agent.errors import CodeError
    from agent.services.capture import dossier_from_reader

    if args.dossier is not None:
        raise CodeError(
            "a dossier code on the command line is visible to every process on the device",
            "pipe it instead: echo CODE | sohoa scan … --dossier-stdin",
        )
    if not args.dossier_stdin:
        return None
    code = dossier_from_reader(sys.stdin.readline())
    if code is None:
        raise CodeError("the dossier code on stdin is not valid", "check the code and try again")
    return code


def cmd_sync(args: argparse.Namespace, cfg: Config) -> int:
    from agent.services.sync import run_sync, sync_once

    if args.once:
        out = sync_once(cfg, args.timeout or 600.0)
        print(f"synced: {out.stored} document(s) stored at the warehouse, none pending")
        return ExitCode.ok
    run_sync(cfg, once=False, timeout_s=args.timeout, stop=_stop_on_sigterm(), notify=_sd_notify)
    return ExitCode.ok


def _stop_on_sigterm() -> threading.Event:
    """An event SIGTERM (systemd) or SIGINT (Ctrl-C) sets, so a service ends its loop
    and says goodbye cleanly."""
    import signal

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    return stop


def _sd_notify(state: str) -> None:
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    import socket

    # like sd_notify(3), a manager that is not listening is no reason to stop serving
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.connect("\0" + addr[1:] if addr.startswith("@") else addr)
        s.sendall(state.encode())


# -- warehouse / fleet ----------------------------------------------------------------


def cmd_warehouse(args: argparse.Namespace, cfg: Config) -> int:
    if args.wh_cmd == "serve":
        stop = _stop_on_sigterm()  # before the imports: a stop while starting ends cleanly
        from agent.services.warehouse import WarehouseWorkers
        from agent.services.warehouse_ocr import ocr_beside

        if args.workers > 1 and not args.threads:
            return _serve_processes(cfg, args, stop)
        with (
            ocr_beside(cfg, not args.no_ocr) as ocr,
            WarehouseWorkers.from_config(cfg, args.workers, name=args.instance) as workers,
        ):
            workers.wait_ready(30.0)  # subscribed (or still connecting: it carries on)
            _sd_notify("READY=1")
            try:
                while not stop.is_set():
                    workers.join(1.0)
                    _sd_notify("WATCHDOG=1")
                    workers.keep_alive()  # raises once a worker keeps dying: exit non-zero
                    ocr.keep_alive()  # never raises: ingest goes on without OCR
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
                + _signature_note(d.signed_by, d.signature_valid, d.signature_problem)
            )
        print(f"{len(docs)} document(s)")
    return ExitCode.ok


def _serve_processes(cfg: Config, args: argparse.Namespace, stop: threading.Event) -> int:
    from agent.services.warehouse import default_instance
    from agent.services.warehouse_ocr import ocr_beside
    from agent.services.warehouse_procs import WorkerProcesses

    procs = WorkerProcesses(cfg, args.workers, args.instance or default_instance()).start()
    _sd_notify("READY=1")
    try:
        with ocr_beside(cfg, not args.no_ocr) as ocr:  # here, not in each child
            while not stop.wait(1.0):
                _sd_notify("WATCHDOG=1")
                procs.keep_alive()
                ocr.keep_alive()
    except KeyboardInterrupt:
        pass
    finally:
        procs.stop()
    return ExitCode.ok


def cmd_fleet(args: argparse.Namespace, cfg: Config) -> int:
    from agent.wiring import broker_config
    from sync.fleet import fleet_snapshot, render_fleet

    if args.action == "serve":
        from agent.services.fleet import serve_fleet

        serve_fleet(cfg, stop=_stop_on_sigterm(), notify=_sd_notify)
        return ExitCode.ok
    rows = fleet_snapshot(broker_config(cfg), quiet_s=args.wait)
    if args.json:
        _print_json({"devices": [r.to_json() for r in rows]})
    else:
        print(render_fleet(rows))
    return ExitCode.ok


# -- sheets / audit / doctor / demo ------------------------------------------------


def cmd_sheets(args: argparse.Namespace, cfg: Config) -> int:
    from agent.capture.sheets import build_sheet, write_sheets_pdf

    fields = {
        "type": args.type,
        "pages": args.pages,
        "year": args.year,
        "dossier": args.dossier,
        "tthc": args.tthc,
        "documents": args.documents,
    }
    text, img = build_sheet(args.kind, fields)
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
