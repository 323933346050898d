"""Warehouse workers as processes: ``sohoa warehouse serve --workers N`` (N > 1).

Worker threads in one process share Python's interpreter lock, so a second
thread adds little (measured: 1.3× one worker on PostgreSQL, 2 processes 1.9×).
This supervisor starts N single-worker ``warehouse serve`` children, each
with its own instance name (``<instance>-p<k>``, so client ids never clash),
restarts one that dies, and gives up (non-zero exit for systemd) when one
keeps dying. The children die with the supervisor (``PR_SET_PDEATHSIG``), so a
killed supervisor never leaves workers behind to fight its successor.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable

from agent.config import Config
from agent.services.warehouse import MAX_RESTARTS, RESTART_WINDOW_S
from sync.errors import SohoaError

log = logging.getLogger("sohoa.warehouse")
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class WorkerProcesses:
    def __init__(self, cfg: Config, count: int, instance: str) -> None:
        self.cfg, self.count, self.instance = cfg, count, instance
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.restarts: dict[int, list[float]] = {k: [] for k in range(1, count + 1)}

    def _command(self, k: int) -> list[str]:
        config = ["--config", str(self.cfg.source)] if self.cfg.source else []
        serve = ["warehouse", "serve", "--workers", "1", "--instance", f"{self.instance}-p{k}"]
        serve.append("--no-ocr")  # the supervisor runs the OCR workers
        return [sys.executable, "-m", "agent.cli", *config, *serve]

    def _spawn(self, k: int) -> None:
        env = {key: v for key, v in os.environ.items() if key != "NOTIFY_SOCKET"}
        self.procs[k] = subprocess.Popen(self._command(k), env=env, preexec_fn=_die_with_parent)  # noqa: PLW1509

    def start(self) -> WorkerProcesses:
        for k in range(1, self.count + 1):
            self._spawn(k)
        return self

    def keep_alive(self) -> None:
        """Restart children that ended; raise once one keeps failing."""
        now = time.monotonic()
        for k, proc in list(self.procs.items()):
            if proc.poll() is None:
                continue
            recent = [t for t in self.restarts[k] if now - t < RESTART_WINDOW_S] + [now]
            self.restarts[k] = recent
            if len(recent) > MAX_RESTARTS:
                raise SohoaError(
                    f"warehouse worker process {self.instance}-p{k} keeps failing"
                    f" (exit {proc.returncode})",
                    "fix the cause named in its log above; systemd restarts the service",
                )
            log.warning(
                "warehouse worker process restarted worker=%s-p%d exit=%s",
                self.instance,
                k,
                proc.returncode,
            )
            self._spawn(k)

    def stop(self, timeout_s: float = 15.0) -> None:
        stop_children(self.procs.values(), timeout_s)


def stop_children(procs: Iterable[subprocess.Popen[bytes]], timeout_s: float = 15.0) -> None:
    """SIGTERM to every child, then wait; one that outlives ``timeout_s`` is killed."""
    procs = list(procs)
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
