"""A technician enrols a device with files on a USB stick: two commands on the device,
one at the province; the device ends up syncing through TLS as itself."""

from __future__ import annotations

import json
import os
import pwd
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from sync.localbroker import free_port
from tests.support.mqtt import run_generated_broker
from tests.support.pages import text_page

REPO = Path(__file__).resolve().parent.parent
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
    port = free_port()
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


def request(setup: Setup, code: str) -> Path:
    setup.device.run("enroll", "request", "--code", code, "--out", str(setup.stick / "req.json"))
    return setup.stick / "req.json"


def approve(setup: Setup, req: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    url = f"mqtts://127.0.0.1:{setup.port}"
    bundle = str(setup.stick / "bundle.json")
    return setup.province.run(
        "enroll", "approve", str(req), "--out", bundle, "--broker", url, check=check
    )


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


def test_a_device_with_no_keys_is_enrolled_offline_and_syncs_as_itself(
    setup: Setup, tmp_path: Path
) -> None:
    code = allow(setup)
    req = request(setup, code)
    assert "PRIVATE" not in req.read_text()  # nothing secret leaves the device
    approve(setup, req)
    out = setup.device.run("enroll", "accept", str(setup.stick / "bundle.json")).stdout
    assert f"enrolled as {DEVICE}" in out
    assert (setup.province.home / "devices" / f"{DEVICE}.pub").exists()

    broker = start_broker(setup, tmp_path)
    try:
        doctor = setup.device.run("doctor", check=False).stdout
        assert "ok    broker certificate: issued by the provincial CA, valid until" in doctor
        assert (
            f"ok    broker: mqtts://127.0.0.1:{setup.port} accepts this device as {DEVICE}"
            in doctor
        )
        pages = tmp_path / "pages"
        pages.mkdir()
        text_page().save(pages / "p0.png", dpi=(300, 300))
        scan = json.loads(setup.device.run("scan", "--from", str(pages), "--json").stdout)
        worker = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "warehouse", "serve"],
            env={**os.environ, "SOHOA_CONFIG": str(setup.province.config)},
            cwd=REPO,
        )
        try:
            setup.device.run("sync", "--once", "--timeout", "60")
        finally:
            worker.terminate()
            worker.wait(15)
    finally:
        broker.terminate()
        broker.wait(10)
    listed = json.loads(setup.province.run("warehouse", "ls", "--json").stdout)["documents"]
    assert [(d["doc_id"], d["device"]) for d in listed] == [
        (scan["documents"][0]["doc_id"], DEVICE)
    ]


def test_a_wrong_code_is_refused_and_changes_nothing(setup: Setup) -> None:
    allow(setup)
    req = request(setup, "AAAA-BBBB-CCCC")

    one_line_error(approve(setup, req, check=False), "does not match the one-time code")
    assert not (setup.province.home / "devices").exists()
    assert not (setup.stick / "bundle.json").exists()


def test_a_replayed_request_is_refused(setup: Setup) -> None:
    req = request(setup, allow(setup))
    approve(setup, req)

    one_line_error(approve(setup, req, check=False), "was already used")


def test_a_device_not_on_the_list_is_refused(setup: Setup) -> None:
    allow(setup, "H56-99999-zz")
    req = request(setup, "AAAA-BBBB-CCCC")

    one_line_error(
        approve(setup, req, check=False), f"device {DEVICE} is not on the enrolment list"
    )


def test_a_tampered_bundle_is_refused_and_installs_nothing(setup: Setup) -> None:
    approve(setup, request(setup, allow(setup)))
    bundle = setup.stick / "bundle.json"
    doc = json.loads(bundle.read_text())
    doc["broker_url"] = "mqtts://evil.example:8883"
    bundle.write_text(json.dumps(doc))

    one_line_error(
        setup.device.run("enroll", "accept", str(bundle), check=False),
        "does not match the one-time code",
    )
    keys = setup.device.home / "keys"
    assert not (keys / "broker.crt").exists() and not (keys / "warehouse.pub").exists()


def test_doctor_before_enrolment_names_the_missing_certificate_and_the_fix(setup: Setup) -> None:
    doctor = setup.device.run("doctor", check=False)

    keys = setup.device.home / "keys"
    assert doctor.returncode != 0
    assert (
        f"FAIL  broker certificate: {keys / 'ca.crt'} is missing — enrol the device again:"
        " sohoa enroll request --code CODE (README, Provisioning)"
    ) in doctor.stdout
