"""``sohoa warehouse ocr``: run an OCR worker by hand, see the OCR queue, try failed
documents again. A thin layer over ``agent.services.warehouse_ocr``."""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
from collections import Counter
from typing import TYPE_CHECKING, Any

from agent.config import Config
from sync.errors import ExitCode
from sync.warehouse.index import open_index
from sync.warehouse.ocr_jobs import STATES
from sync.warehouse.ocr_queue import open_ocr_queue

if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]


def add_warehouse_ocr(wsub: Subparsers) -> None:
    w = wsub.add_parser(
        "ocr",
        help="OCR stored documents into searchable PDF/A-2b copies (serve runs it itself"
        " unless [warehouse] ocr = false)",
    )
    what = w.add_mutually_exclusive_group()
    what.add_argument(
        "--once", action="store_true", help="OCR what is waiting now, then exit (0: all done)"
    )
    what.add_argument(
        "--status", action="store_true", help="documents waiting, running, done and failed"
    )
    what.add_argument(
        "--retry-failed", action="store_true", help="queue the failed documents again"
    )
    w.add_argument("--json", action="store_true", help="print --status as JSON")
    w.set_defaults(func=cmd_warehouse_ocr)


def _status(cfg: Config, as_json: bool) -> int:
    archive = cfg.path(cfg.warehouse.archive)
    index = open_index(cfg.warehouse.index, archive)
    try:
        queue = open_ocr_queue(cfg.warehouse.index, archive)
        try:
            records, waiting = queue.records(), queue.waiting()
        finally:
            queue.close()
    finally:
        index.close()
    counts = Counter(r.state for r in records)
    by_state = {state: counts.get(state, 0) for state in STATES}
    failed = [r for r in records if r.state == "failed"]
    if as_json:
        body: dict[str, Any] = {
            "waiting": waiting,
            "by_state": by_state,
            "failed": [r.to_json() for r in failed],
        }
        print(json.dumps(body, ensure_ascii=False, indent=2))
        return ExitCode.ok
    print(f"waiting {waiting}  " + "  ".join(f"{k} {v}" for k, v in by_state.items()))
    for r in failed:
        print(f"failed  {r.device}/{r.doc_id}  after {r.attempts} attempt(s): {r.error}")
    return ExitCode.ok


def _retry_failed(cfg: Config) -> int:
    archive = cfg.path(cfg.warehouse.archive)
    index = open_index(cfg.warehouse.index, archive)
    try:
        queue = open_ocr_queue(cfg.warehouse.index, archive)
        try:
            count = queue.requeue_failed()
        finally:
            queue.close()
    finally:
        index.close()
    print(f"{count} failed document(s) queued for OCR again")
    return ExitCode.ok


def cmd_warehouse_ocr(args: argparse.Namespace, cfg: Config) -> int:
    if args.status:
        return _status(cfg, args.json)
    if args.retry_failed:
        return _retry_failed(cfg)
    from agent.services.warehouse_ocr import serve_ocr

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    tally = serve_ocr(cfg, os.environ, stop, once=args.once)
    if args.once:
        print(f"OCR: {tally.done} done, {tally.retried} to try again later, {tally.failed} failed")
        return ExitCode.ok if tally.retried + tally.failed == 0 else ExitCode.incomplete
    return ExitCode.ok
