"""``sohoa warehouse search|report|export``: reading the warehouse index at the province.

A thin layer over ``sync.warehouse.search``, ``report`` and ``export``: open the
index that ``[warehouse] index`` names, ask it, print (Vietnamese first), close.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.config import Config
from sync.durable import atomic_write
from sync.errors import ExitCode, QueryError, SohoaError
from sync.fleet_model import load_register
from sync.warehouse.export import archive_link, dossier_record, export_file_name, sync_body
from sync.warehouse.index import DocumentIndex, open_index
from sync.warehouse.periods import LABELS_VI
from sync.warehouse.report import (
    Report,
    build_report,
    check_days,
    communes,
    parse_day,
    report_csv,
    stored_bounds,
)
from sync.warehouse.search import SearchHit, check_limit, with_snippets

if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, ensure_ascii=False, indent=2))


@contextmanager
def _index(cfg: Config) -> Iterator[DocumentIndex]:
    index = open_index(cfg.warehouse.index, cfg.path(cfg.warehouse.archive))
    try:
        yield index
    finally:
        index.close()


def _write(path: Path, data: bytes) -> None:
    try:
        atomic_write(path, data, what=str(path))
    except OSError as exc:
        raise SohoaError(
            f"cannot write {path} ({exc.strerror or type(exc).__name__})",
            "choose a folder that exists and that you may write to",
        ) from None


# -- search ------------------------------------------------------------------------------


def cmd_search(args: argparse.Namespace, cfg: Config) -> int:
    limit = check_limit(args.limit)
    with _index(cfg) as index:
        hits = with_snippets(args.text, index.search(args.text, limit))
    if args.json:
        _print_json({"documents": [h.to_json() for h in hits]})
        return ExitCode.ok
    for line in search_lines(hits):
        print(line)
    return ExitCode.ok


def search_lines(hits: list[SearchHit]) -> list[str]:
    if not hits:
        return ["Không tìm thấy tài liệu nào / no stored document matches"]
    lines = [
        f"{h.doc.doc_id}  {h.doc.device:<16} {h.doc.dossier_code or '-':<26}"
        f" {h.doc.doc_type or '-':<14} {h.snippet}"
        for h in hits
    ]
    return [*lines, f"{len(hits)} tài liệu / document(s)"]


# -- report ------------------------------------------------------------------------------


def _days(args: argparse.Namespace) -> tuple[date | None, date | None]:
    first = parse_day(args.date_from, "--from") if args.date_from else None
    last = parse_day(args.date_to, "--to") if args.date_to else None
    check_days(first, last)
    return first, last


def cmd_report(args: argparse.Namespace, cfg: Config) -> int:
    first, last = _days(args)
    register = load_register(cfg.path(cfg.fleet.register) if cfg.fleet.register else None)
    since, until = stored_bounds(first, last)
    with _index(cfg) as index:
        report = build_report(index.tally(since, until), register, first, last)
    if args.html:
        from agent.report_page import render_report

        _write(Path(args.html), render_report(report).encode())
    if args.json:
        _print_json(report.to_json())
    elif args.csv:
        sys.stdout.write(report_csv(report))
    else:
        for line in report_lines(report):
            print(line)
        if args.html:
            print(f"Bảng in (HTML) / printable table: {args.html}")
    return ExitCode.ok


def _span(report: Report) -> str:
    if report.first is None and report.last is None:
        return "mọi tài liệu đã lưu / everything stored"
    first = report.first.isoformat() if report.first else "…"
    last = report.last.isoformat() if report.last else "…"
    return f"lưu từ {first} đến {last} / stored {first} to {last}"


def report_lines(report: Report) -> list[str]:
    if not report.rows:
        return [
            f"Chưa có tài liệu nào được lưu ({_span(report)}) / no documents stored in that time"
        ]
    head = f"{'Mã TTHC / procedure':<26} {'Giai đoạn / period':<20} {'tài liệu':>9}"
    lines = [
        f"Tiến độ số hóa / digitization progress ({_span(report)})",
        head + "    trang  trang A4",
    ]
    for r in report.rows:
        c = r.counts
        lines.append(
            f"{r.tthc_code or '(chưa rõ / unknown)':<26} {LABELS_VI[r.period]:<20}"
            f" {c.documents:>9} {c.pages:>8} {c.a4_pages:>9}"
        )
    t = report.total
    lines.append(f"{'Tổng cộng / total':<47} {t.documents:>9} {t.pages:>8} {t.a4_pages:>9}")
    lines.append("Theo đơn vị / by commune:")
    for district, commune, c in communes(report):
        named = ", ".join(x for x in (commune, district) if x)
        where = named or "chưa đăng ký / not registered"
        lines.append(f"  {where:<45} {c.documents:>9} {c.pages:>8} {c.a4_pages:>9}")
    return lines


# -- export ------------------------------------------------------------------------------


def cmd_export(args: argparse.Namespace, cfg: Config) -> int:
    archive = cfg.path(cfg.warehouse.archive)
    link = archive_link(archive, args.base_url)
    with _index(cfg) as index:
        codes = index.dossier_codes() if args.all else [args.dossier]
        records = [dossier_record(c, docs, link) for c in codes if (docs := index.dossier(c))]
    if not records:
        raise QueryError(
            "no stored document belongs to that dossier / kho chưa có tài liệu của hồ sơ này"
            if not args.all
            else "no stored document has a dossier code / kho chưa có hồ sơ nào",
            "check the code with `sohoa warehouse search CODE`",
        )
    if args.out:
        for record in records:
            body = json.dumps(sync_body([record]), ensure_ascii=False, indent=2) + "\n"
            _write(Path(args.out) / export_file_name(record["MaHoSo"]), body.encode())
        print(f"{len(records)} hồ sơ / dossier(s) → {args.out}")
    elif args.json or args.all:
        _print_json(sync_body(records))
    else:
        for record in records:
            print(f"Hồ sơ {record['MaHoSo']}  TTHC {record['MaTTHC'] or '-'}")
            for item in record["TaiLieuNop"]:
                print(f"  {item['TenTepDinhKem']}  {item['DuongDanTaiTepTin']}")
    return ExitCode.ok


# -- parser ------------------------------------------------------------------------------


def add_warehouse_reads(wsub: Subparsers) -> None:
    w = wsub.add_parser(
        "search", help="find stored documents by words, codes or dates (with or without dấu)"
    )
    w.add_argument("text", help="words, a dossier code, an owner id, a procedure code, a date")
    w.add_argument("--json", action="store_true", help="print as JSON")
    w.add_argument("--limit", type=int, default=20, help="at most N hits (default 20)")
    w.set_defaults(func=cmd_search)
    w = wsub.add_parser(
        "report", help="documents, pages and A4 pages per procedure and period of issue"
    )
    w.add_argument(
        "--from",
        dest="date_from",
        metavar="DATE",
        help="first day stored: YYYY-MM-DD or DD/MM/YYYY (Vietnam time)",
    )
    w.add_argument(
        "--to", dest="date_to", metavar="DATE", help="last day stored, included (Vietnam time)"
    )
    fmt = w.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print as JSON")
    fmt.add_argument("--csv", action="store_true", help="print the rows as CSV")
    w.add_argument("--html", metavar="FILE", help="also write a printable table (the plan's annex)")
    w.set_defaults(func=cmd_report)
    w = wsub.add_parser(
        "export", help="dossiers as OpenCPS DongBoHoSoMC JSON for the one-stop system"
    )
    which = w.add_mutually_exclusive_group(required=True)
    which.add_argument("dossier", nargs="?", help="dossier code, e.g. 000.00.20.H56-230512-0003")
    which.add_argument("--all", action="store_true", help="every dossier the warehouse holds")
    w.add_argument("--json", action="store_true", help="print as JSON")
    w.add_argument("--out", metavar="DIR", help="write one <dossier code>.json per dossier in DIR")
    w.add_argument(
        "--base-url",
        metavar="URL",
        help="URL of the archive folder the one-stop system reads (else file: URIs)",
    )
    w.set_defaults(func=cmd_export)
