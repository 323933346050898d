"""A private mosquitto on a free loopback port (demo and tests)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from sync.errors import MissingDependencyError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_port_pair() -> int:
    """A port P with P + 1 free too: a broker's TLS port and its enrolment listener."""
    for _ in range(50):
        port = free_port()
        if port < 65535:
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return port
    raise OSError("no two free ports in a row on 127.0.0.1")


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if found is None:
        raise MissingDependencyError(
            "mosquitto is not installed", "run ./install.sh --dev (apt-get install mosquitto)"
        )
    return found


@dataclass
class LocalBroker:
    directory: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 10.0) -> LocalBroker:
        self.directory.mkdir(parents=True, exist_ok=True)
        conf = self.directory / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {self.directory}/\n"
            "max_inflight_messages 0\n"
            "max_queued_messages 100000\n"
            "max_queued_bytes 0\n"
            "message_size_limit 0\n"
            f"log_dest file {self.directory}/mosquitto.log\n"
        )
        self.proc = subprocess.Popen(
            [mosquitto_binary(), "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise MissingDependencyError(
                    f"mosquitto exited at start (code {self.proc.returncode})",
                    f"read {self.directory}/mosquitto.log",
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise MissingDependencyError(
            "mosquitto did not start listening in time", f"read {self.directory}/mosquitto.log"
        )

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def start_local_broker(directory: Path, port: int | None = None) -> LocalBroker:
    return LocalBroker(directory, port or free_port()).start()
