"""The ``sohoa`` command line: a thin layer over the library.

Every failure prints one line, ``error: <cause> — <what to do>``, and exits
with the documented code; tracebacks only with ``--debug``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from agent import __version__
from agent.config import Config, load_config
from agent.errors import ExitCode, InputError, SohoaError

log = logging.getLogger("sohoa")

Handler = Callable[[argparse.Namespace, Config], int]


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, ensure_ascii=False, indent=2))


# -- scan ----------------------------------------------------------------------------


def cmd_scan(args: argparse.Namespace, cfg: Config) -> int:
    from agent.capture import capture_batch
    from agent.service import scan_settings, seal_settings
    from agent.spool import open_spool
    from device.barcodes import ZbarReader
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
    seal = seal_settings(cfg)
    with open_spool(cfg) as spool:
        spool.recover()
        result = capture_batch(
            source,
            spool=spool,
            reader=ZbarReader(),
            capture=cfg.capture,
            seal=seal,
            preset_dossier=args.dossier,
        )
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
    from agent.spool import Spool

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
    from sync.daemons import run_sync, sync_once

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
        import threading

        from sync.daemons import serve_warehouse

        stop = threading.Event()
        threads = [
            threading.Thread(
                target=serve_warehouse,
                args=(cfg,),
                kwargs={"worker": f"w{i + 1}", "stop": stop},
                daemon=True,
            )
            for i in range(args.workers)
        ]
        for t in threads:
            t.start()
        _sd_notify("READY=1")
        try:
            while any(t.is_alive() for t in threads):
                for t in threads:
                    t.join(1.0)
        except KeyboardInterrupt:
            stop.set()
        return ExitCode.ok
    from sync.index import SqliteIndex

    index = SqliteIndex(cfg.path(cfg.warehouse.archive) / "index.db")
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
    from sync.daemons import broker_config
    from sync.fleet import fleet_snapshot, render_fleet

    rows = fleet_snapshot(broker_config(cfg), quiet_s=args.wait)
    if args.json:
        _print_json({"devices": [r.to_json() for r in rows]})
    else:
        print(render_fleet(rows))
    return ExitCode.ok


# -- keys / sheets / audit / doctor / demo ------------------------------------------------


def cmd_keys(args: argparse.Namespace, cfg: Config) -> int:
    from agent import keys

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
        path = keys.enroll_device(Path(args.device_pub), args.id, cfg.path(cfg.warehouse.devices))
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
    from agent.sheets import cover_sheet_text, render_sheet, write_sheets_pdf

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
    from agent.audit import verify_against_index, verify_chain
    from agent.spool import Spool

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

    from agent.service import run_agent

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


# -- parser ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sohoa", description="sohoa edge scanning appliance")
    p.add_argument(
        "--config", help="configuration file (else $SOHOA_CONFIG, else /etc/sohoa/sohoa.toml)"
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    p.add_argument("--version", action="version", version=f"sohoa {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    s = sub.add_parser("scan", help="capture one batch into the spool")
    src = s.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--from", dest="source_path", metavar="PATH", help="folder of page images, a TIFF or a PDF"
    )
    src.add_argument("--device", metavar="NAME", help="SANE device, e.g. test:0")
    s.add_argument("--dossier", help="dossier code for the batch (e.g. from the handheld reader)")
    s.add_argument("--json", action="store_true", help="print the result as JSON")
    s.add_argument(
        "--hashes", action="store_true", help="include each PDF's SHA-256 in --json output"
    )
    s.set_defaults(func=cmd_scan)

    s = sub.add_parser("status", help="spool counts, pending bytes, disk, last sync")
    s.add_argument("--json", action="store_true", help="print as JSON")
    s.set_defaults(func=cmd_status)

    s = sub.add_parser("sync", help="upload the spool to the warehouse")
    s.add_argument(
        "--once", action="store_true", help="drain the queue and exit 0 when all are stored"
    )
    s.add_argument(
        "--timeout", type=float, help="give up after S seconds (default 600 with --once)"
    )
    s.set_defaults(func=cmd_sync)

    s = sub.add_parser("warehouse", help="provincial warehouse: ingest and listing")
    wsub = s.add_subparsers(dest="wh_cmd", required=True, metavar="WAREHOUSE_COMMAND")
    w = wsub.add_parser("serve", help="run ingest workers")
    w.add_argument(
        "--workers", type=int, default=1, help="number of workers sharing the subscription"
    )
    w = wsub.add_parser("ls", help="list stored documents")
    w.add_argument("--json", action="store_true", help="print as JSON")
    s.set_defaults(func=cmd_warehouse)

    s = sub.add_parser("fleet", help="every device's state and health from the broker")
    s.add_argument("--json", action="store_true", help="print as JSON")
    s.add_argument(
        "--wait", type=float, default=1.0, help="seconds of quiet before the view is complete"
    )
    s.set_defaults(func=cmd_fleet)

    s = sub.add_parser("keys", help="device and warehouse keys")
    ksub = s.add_subparsers(dest="keys_cmd", required=True, metavar="KEYS_COMMAND")
    k = ksub.add_parser(
        "init", help="create this device's (or, with --warehouse, the warehouse's) keys"
    )
    k.add_argument("--warehouse", action="store_true", help="create warehouse keys")
    k.add_argument("--force", action="store_true", help="replace existing keys")
    k = ksub.add_parser("enroll", help="warehouse side: enrol a device's public key")
    k.add_argument("device_pub", metavar="DEVICE_PUB", help="the device's keys/device.pub")
    k.add_argument("--id", required=True, help="the device id")
    ksub.add_parser("rotate", help="warehouse side: new key generation, old ones kept")
    s.set_defaults(func=cmd_keys)

    s = sub.add_parser("sheets", help="print cover and separator sheets (PDF)")
    s.add_argument("kind", choices=["SEP", "DOC", "DOSSIER"], help="sheet kind")
    s.add_argument("--type", help="document type code, e.g. KQ.G15.000031 (DOC)")
    s.add_argument("--pages", type=int, help="expected pages (DOC)")
    s.add_argument("--year", type=int, help="issue year (DOC)")
    s.add_argument("--dossier", help="dossier code (DOSSIER)")
    s.add_argument("--tthc", help="procedure code (DOSSIER)")
    s.add_argument("--documents", type=int, help="expected documents (DOSSIER)")
    s.add_argument("--copies", type=int, default=1, help="number of sheets")
    s.add_argument("--out", required=True, help="output PDF")
    s.set_defaults(func=cmd_sheets)

    s = sub.add_parser("audit", help="audit log")
    asub = s.add_subparsers(dest="audit_cmd", required=True, metavar="AUDIT_COMMAND")
    asub.add_parser("verify", help="check the hash chain and say where it breaks")
    s.set_defaults(func=cmd_audit)

    s = sub.add_parser("agent", help="capture service: scanner button, hot folder, handheld reader")
    s.add_argument(
        "--device", help="SANE device whose button starts a batch (else [capture] scanner_device)"
    )
    s.add_argument(
        "--hot-folder", help="folder a network scanner writes to (else [capture] hot_folder)"
    )
    s.add_argument(
        "--reader", help="serial port of a handheld barcode reader (else [capture] reader_port)"
    )
    s.set_defaults(func=cmd_agent)

    s = sub.add_parser("doctor", help="check configuration, keys, scanner, broker, disk")
    s.set_defaults(func=cmd_doctor)

    s = sub.add_parser(
        "demo", help="run the whole path on this machine: broker, warehouse, scan, sync"
    )
    s.add_argument("--keep", metavar="DIR", help="keep the demo's files in DIR")
    s.add_argument("--no-sane", action="store_true", help="skip the SANE test scanner")
    s.set_defaults(func=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    try:
        cfg = load_config(args.config, env)
        code: int = args.func(args, cfg)
        return code
    except SohoaError as exc:
        if args.debug:
            raise
        print(exc.line(), file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        print("error: interrupted — nothing was lost; run the command again", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        print(
            f"error: internal error ({type(exc).__name__}) — run again with --debug and report it",
            file=sys.stderr,
        )
        return int(ExitCode.other)


if __name__ == "__main__":
    sys.exit(main())
