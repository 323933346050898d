"""Two sides of an enrolment, each a home and a configuration file driven through the CLI:
the province (warehouse ``wh-1``, CA, broker configuration) and a device with no keys."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from sync.localbroker import free_port_pair
from tests.support.mqtt import run_generated_broker
from tests.support.units import NotifySocket
from tests.support.wait import wait_until

REPO = Path(__file__).resolve().parents[2]
DEVICE = "H56-01234-a1"


@dataclass
class Side:
    home: Path
    config: Path

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "SOHOA_CONFIG": str(self.config)}
        env.pop("SOHOA_HOME", None)
        proc = subprocess.run(
            [sys.executable, "-m", "agent.cli", *args],
            env=env,
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=120,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"sohoa {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
        return proc


@dataclass
class Setup:
    province: Side
    device: Side
    port: int
    stick: Path


def side(root: Path, name: str, toml: str) -> Side:
    home = root / name
    home.mkdir()
    config = root / f"{name}.toml"
    config.write_text(f'home = "{home}"\n' + toml)
    return Side(home, config)


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    port = free_port_pair()  # the broker and its enrolment listener (port + 1)
    url = f"mqtts://127.0.0.1:{port}"
    tls = 'ca = "keys/ca.crt"\ncert = "keys/broker.crt"\nkey = "keys/broker.key"\n'
    # the warehouse's own certificate where install.sh --warehouse points: keys/<id>.crt
    wh_tls = 'ca = "keys/ca.crt"\ncert = "keys/wh-1.crt"\nkey = "keys/wh-1.key"\n'
    province = side(
        tmp_path, "province", f'[device]\nid = "wh-1"\n[broker]\nurl = "{url}"\n{wh_tls}'
    )
    device = side(
        tmp_path,
        "device",
        f'[device]\nid = "{DEVICE}"\n[broker]\nurl = "{url}"\n{tls}'
        "[spool]\nreserve_mb = 0\n[sync]\nreceipt_timeout_s = 5.0\n",
    )
    province.run("keys", "init", "--warehouse")
    province.run("pki", "init")
    stick = tmp_path / "usb"
    stick.mkdir()
    return Setup(province, device, port, stick)


def allow(setup: Setup, device: str = DEVICE) -> str:
    out = setup.province.run("enroll", "allow", device).stdout
    found = re.search(r"[A-Z0-9]{4}-[A-Z0-9]{4}-[A-Z0-9]{4}", out)
    assert found, out
    return found.group(0)


def one_line_error(proc: subprocess.CompletedProcess[str], needle: str) -> None:
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], proc.stderr


def start_broker(setup: Setup, tmp: Path) -> subprocess.Popen[bytes]:
    setup.province.run(
        "pki", "issue", "wh-1", "--role", "warehouse", "--out", str(setup.province.home / "keys")
    )
    me = pwd.getpwuid(os.getuid()).pw_name
    setup.province.run(
        "broker",
        "config",
        "--out",
        str(tmp / "broker"),
        "--port",
        str(setup.port),
        "--host",
        "127.0.0.1",
        "--listen",
        "127.0.0.1",
        "--run-as",
        me,
    )
    return run_generated_broker(tmp / "broker" / "mosquitto.conf", setup.port)


def warehouse_serve(province: Side, ready_s: float = 120.0) -> subprocess.Popen[bytes]:
    """``sohoa warehouse serve`` for the province, as a process (terminate it at the end),
    returned once it said READY=1 (its workers subscribed), as systemd would wait: a
    request published before that would find no one listening."""
    folder = Path(tempfile.mkdtemp(prefix="sohoa-notify-"))  # short: an AF_UNIX path
    notify = NotifySocket(folder / "n", os.getuid())
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "warehouse", "serve"],
        env={**os.environ, "SOHOA_CONFIG": str(province.config), "NOTIFY_SOCKET": str(notify.path)},
        cwd=REPO,
    )
    try:
        wait_until(
            lambda: notify.sent(proc.pid, "READY") or proc.poll() is not None,
            ready_s,
            "the warehouse's READY=1",
        )
    finally:
        notify.close()
        shutil.rmtree(folder, ignore_errors=True)
    return proc
