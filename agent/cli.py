"""The ``sohoa`` command line: a thin layer over the library.

Every failure prints one line, ``error: <cause> — <what to do>``, and exits
with the documented code; tracebacks only with ``--debug``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from agent import __version__
from agent.commands import (
    cmd_agent,
    cmd_audit,
    cmd_demo,
    cmd_doctor,
    cmd_fleet,
    cmd_scan,
    cmd_sheets,
    cmd_status,
    cmd_sync,
    cmd_warehouse,
)
from agent.commands_keys import add_keys
from agent.commands_ocr import add_warehouse_ocr
from agent.commands_pki import add_broker, add_enroll, add_pki
from agent.commands_release import add_release
from agent.commands_ui import add_ui
from agent.commands_warehouse import add_warehouse_reads
from agent.config import Config, load_config
from agent.errors import FAILURES, exit_code_of
from sync.errors import ExitCode

log = logging.getLogger("sohoa")

Handler = Callable[[argparse.Namespace, Config], int]


# -- parser ----------------------------------------------------------------------------------


if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]


def _add_scan(sub: Subparsers) -> None:
    s = sub.add_parser("scan", help="capture one batch into the spool")
    src = s.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--from", dest="source_path", metavar="PATH", help="folder of page images, a TIFF or a PDF"
    )
    src.add_argument("--device", metavar="NAME", help="SANE device, e.g. test:0")
    s.add_argument(
        "--dossier-stdin",
        action="store_true",
        help="read the batch's dossier code from stdin (never the command line, which"
        " /proc/<pid>/cmdline shows to every process)",
    )
    s.add_argument("--dossier", help=argparse.SUPPRESS)  # refused with the way to do it
    s.add_argument(
        "--certify",
        action="store_true",
        help="sign each document as a certified copy (chứng thực bản sao) with the [sign] token",
    )
    s.add_argument(
        "--pin-stdin",
        action="store_true",
        help="read the token PIN from the first line of stdin (never the command line)",
    )
    s.add_argument("--json", action="store_true", help="print the result as JSON")
    s.add_argument(
        "--hashes", action="store_true", help="include each PDF's SHA-256 in --json output"
    )
    s.set_defaults(func=cmd_scan)


def _add_status(sub: Subparsers) -> None:
    s = sub.add_parser("status", help="spool counts, pending bytes, disk, last sync")
    s.add_argument("--json", action="store_true", help="print as JSON")
    s.set_defaults(func=cmd_status)


def _add_sync(sub: Subparsers) -> None:
    s = sub.add_parser("sync", help="upload the spool to the warehouse")
    s.add_argument(
        "--once", action="store_true", help="drain the queue and exit 0 when all are stored"
    )
    s.add_argument(
        "--timeout", type=float, help="give up after S seconds (default 600 with --once)"
    )
    s.set_defaults(func=cmd_sync)


def _add_warehouse(sub: Subparsers) -> None:
    s = sub.add_parser(
        "warehouse", help="provincial warehouse: ingest, listing, search, report, export"
    )
    wsub = s.add_subparsers(dest="wh_cmd", required=True, metavar="WAREHOUSE_COMMAND")
    w = wsub.add_parser("serve", help="run ingest workers")
    w.add_argument(
        "--workers",
        type=int,
        default=1,
        help="workers sharing the subscription (more than one: one process each)",
    )
    w.add_argument(
        "--threads", action="store_true", help="run the workers as threads of this process"
    )
    w.add_argument(
        "--instance",
        help="this process's name in client ids (default: the host name); one per process",
    )
    w.add_argument(
        "--no-ocr",
        action="store_true",
        help="start no OCR workers (another process runs `sohoa warehouse ocr`)",
    )
    w = wsub.add_parser("ls", help="list stored documents")
    w.add_argument("--json", action="store_true", help="print as JSON")
    s.set_defaults(func=cmd_warehouse)
    add_warehouse_reads(wsub)  # search, report, export: each sets its own handler
    add_warehouse_ocr(wsub)  # sets its own handler


def _add_fleet(sub: Subparsers) -> None:
    s = sub.add_parser(
        "fleet", help="every device's state and health (one-shot), or `fleet serve`: the service"
    )
    s.add_argument(
        "action", nargs="?", choices=["serve"], help="serve: page, /api and /metrics ([fleet])"
    )
    s.add_argument("--json", action="store_true", help="print as JSON")
    s.add_argument(
        "--wait", type=float, default=1.0, help="seconds of quiet before the view is complete"
    )
    s.set_defaults(func=cmd_fleet)


def _add_sheets(sub: Subparsers) -> None:
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


def _add_audit(sub: Subparsers) -> None:
    s = sub.add_parser("audit", help="audit log")
    asub = s.add_subparsers(dest="audit_cmd", required=True, metavar="AUDIT_COMMAND")
    asub.add_parser("verify", help="check the hash chain and say where it breaks")
    s.set_defaults(func=cmd_audit)


def _add_agent(sub: Subparsers) -> None:
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


def _add_doctor(sub: Subparsers) -> None:
    s = sub.add_parser("doctor", help="check configuration, keys, scanner, broker, disk")
    s.set_defaults(func=cmd_doctor)


def _add_demo(sub: Subparsers) -> None:
    s = sub.add_parser(
        "demo", help="run the whole path on this machine: broker, warehouse, scan, sync"
    )
    s.add_argument("--keep", metavar="DIR", help="keep the demo's files in DIR")
    s.add_argument("--no-sane", action="store_true", help="skip the SANE test scanner")
    s.set_defaults(func=cmd_demo)


_COMMANDS = (
    _add_scan,
    _add_status,
    _add_sync,
    _add_warehouse,
    _add_fleet,
    add_keys,
    add_pki,
    add_broker,
    add_enroll,
    _add_sheets,
    _add_audit,
    _add_agent,
    _add_doctor,
    _add_demo,
    add_ui,
    add_release,
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sohoa", description="sohoa edge scanning appliance")
    p.add_argument(
        "--config", help="configuration file (else $SOHOA_CONFIG, else /etc/sohoa/sohoa.toml)"
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    p.add_argument("--version", action="version", version=f"sohoa {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    for add in _COMMANDS:
        add(sub)
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
    except FAILURES as exc:
        if args.debug:
            raise
        print(exc.line(), file=sys.stderr)
        return int(exit_code_of(exc))
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
