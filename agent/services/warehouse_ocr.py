"""The warehouse's OCR service: ``sohoa warehouse ocr`` (one worker, this process) and
``OcrProcesses``, the ``[warehouse] ocr_workers`` worker processes that ``sohoa
warehouse serve`` runs beside its ingest workers.

OCR never delays a receipt: it runs in processes of its own, at lower CPU priority
(``os.nice``), each on one document at a time with Tesseract held to
``[warehouse] ocr_threads`` threads, and reads only what ingest has already stored
(``sync.warehouse.ocr``). A worker that dies is restarted; when one keeps dying, or the
OCR tools are missing, OCR stops with one error line and ingest carries on.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from agent.config import Config
from agent.services.warehouse import MAX_RESTARTS, RESTART_WINDOW_S
from agent.services.warehouse_procs import _die_with_parent, stop_children
from sync.errors import ExitCode
from sync.warehouse.index import open_index
from sync.warehouse.ocr import Liveness, OcrSettings, OcrTally, run_ocr
from sync.warehouse.ocr_jobs import process_started, this_holder, this_host
from sync.warehouse.ocr_queue import open_ocr_queue
from sync.warehouse.ocr_tool import OcrTool, check_tools

log = logging.getLogger("sohoa.warehouse.ocr")

OCR_NICE = 10  # below ingest, which keeps the default 0


def ocr_settings(cfg: Config, env: Mapping[str, str]) -> OcrSettings:
    """The OCR stage from ``[warehouse]``; OCRmyPDF from this Python's environment."""
    tool = OcrTool(
        command=(sys.executable, "-m", "ocrmypdf"),
        env={k: v for k, v in env.items() if k != "NOTIFY_SOCKET"},
        threads=cfg.warehouse.ocr_threads,
    )
    return OcrSettings(archive=cfg.path(cfg.warehouse.archive), tool=tool)


def lower_priority(increment: int = OCR_NICE) -> None:
    """Nice this process (and so OCRmyPDF and Tesseract); a sandbox that forbids it
    (systemd's ``SystemCallFilter=~@resources``) costs a warning, not the OCR."""
    try:
        os.nice(increment)
    except OSError as exc:
        log.warning("cannot lower the OCR worker's CPU priority (%s)", exc.strerror)


def serve_ocr(
    cfg: Config, env: Mapping[str, str], stop: threading.Event, *, once: bool = False
) -> OcrTally:
    """One OCR worker in this process until ``stop`` (with ``once``: until nothing is
    left to take now)."""
    lower_priority()
    settings = ocr_settings(cfg, env)
    check_tools(settings.tool)
    index = open_index(cfg.warehouse.index, settings.archive)
    try:
        queue = open_ocr_queue(cfg.warehouse.index, settings.archive)
        try:
            me = Liveness(this_holder(), this_host(), process_started)
            return run_ocr(queue, index, settings, me, stop, once=once)
        finally:
            queue.close()
    finally:
        index.close()


class OcrProcesses:
    """``count`` ``sohoa warehouse ocr`` children, restarted when they end, which die
    with this process (``PR_SET_PDEATHSIG``)."""

    def __init__(self, cfg: Config, count: int) -> None:
        self.cfg, self.count = cfg, count
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.restarts: dict[int, list[float]] = {k: [] for k in range(1, count + 1)}

    def _command(self) -> list[str]:
        config = ["--config", str(self.cfg.source)] if self.cfg.source else []
        return [sys.executable, "-m", "agent.cli", *config, "warehouse", "ocr"]

    def _spawn(self, k: int) -> None:
        env = {key: v for key, v in os.environ.items() if key != "NOTIFY_SOCKET"}
        self.procs[k] = subprocess.Popen(
            self._command(), env=env, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent
        )

    def start(self) -> OcrProcesses:
        for k in range(1, self.count + 1):
            self._spawn(k)
        return self

    def keep_alive(self) -> None:
        """Restart workers that ended; leave OCR off (one error line) once a worker
        lacks its tools or keeps failing. Never raises: ingest goes on without OCR."""
        now = time.monotonic()
        for k, proc in list(self.procs.items()):
            code = proc.poll()
            if code is None:
                continue
            recent = [t for t in self.restarts[k] if now - t < RESTART_WINDOW_S] + [now]
            self.restarts[k] = recent
            if code == ExitCode.missing_dependency or len(recent) > MAX_RESTARTS:
                del self.procs[k]
                log.error(
                    "OCR worker %d stopped for good (exit %s); ingest goes on without OCR"
                    " — fix the cause in its error line above and restart the service",
                    k,
                    code,
                )
                continue
            log.warning("OCR worker restarted worker=%d exit=%s", k, code)
            self._spawn(k)

    def stop(self, timeout_s: float = 15.0) -> None:
        stop_children(self.procs.values(), timeout_s)


@contextmanager
def ocr_beside(cfg: Config, wanted: bool) -> Iterator[OcrProcesses]:
    """The OCR workers for ``sohoa warehouse serve``: ``[warehouse] ocr_workers`` of
    them when ``[warehouse] ocr`` is on and ``wanted`` (not a child of a supervisor
    that runs its own), else none."""
    count = cfg.warehouse.ocr_workers if cfg.warehouse.ocr and wanted else 0
    procs = OcrProcesses(cfg, count).start()
    try:
        yield procs
    finally:
        procs.stop()
