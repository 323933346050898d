"""Enrolment and renewal over the broker's enrolment listener, with the real mosquitto
configuration ``sohoa broker config`` writes and ``sohoa warehouse serve`` answering."""

from __future__ import annotations

import datetime as dt
import json
import signal
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from sync import pki
from sync.enrol_access import claim_password
from sync.enrol_messages import code_key
from tests.support.enrol import (
    DEVICE,
    Setup,
    allow,
    one_line_error,
    setup,
    start_broker,
    warehouse_serve,
)
from tests.support.pages import text_page
from tests.support.wait import wait_until

__all__ = ["setup"]  # the fixture


@dataclass
class Province:
    setup: Setup
    broker: subprocess.Popen[bytes]

    def reload(self, passwd: Path) -> None:
        """What ``sohoa-broker-reload.path`` does when enrol.passwd changes: SIGHUP."""
        self.broker.send_signal(signal.SIGHUP)

    @property
    def passwd(self) -> Path:
        return self.setup.province.home.parent / "broker" / "enrol.passwd"


@pytest.fixture
def province(setup: Setup, tmp_path: Path) -> Iterator[Province]:
    broker = start_broker(setup, tmp_path)
    worker = warehouse_serve(setup.province)
    try:
        yield Province(setup, broker)
    finally:
        worker.terminate()
        worker.wait(15)
        broker.terminate()
        broker.wait(10)


def connects(port: int, username: str, password: str) -> bool:
    """Whether the enrolment listener admits ``username`` (TLS, no client certificate)."""
    result: list[bool] = []
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=username, protocol=MQTTProtocolVersion.MQTTv5
    )
    client.tls_set(cert_reqs=ssl.CERT_NONE)
    client.tls_insecure_set(True)
    client.username_pw_set(username, password)
    client.on_connect = lambda _c, _u, _f, code, _p: result.append(not code.is_failure)
    client.on_disconnect = lambda *_a: result.append(False)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        wait_until(lambda: bool(result), 10, "an answer from the enrolment listener")
    finally:
        client.disconnect()
        client.loop_stop()
    return result[0]


def enrol_online(p: Province, code: str) -> subprocess.CompletedProcess[str]:
    p.reload(p.passwd)  # the new claim identity, as the path unit would
    port = p.setup.port + 1
    password = claim_password(code_key(DEVICE, code))
    wait_until(lambda: connects(port, f"claim-{DEVICE}", password), 10, "the claim identity")
    return p.setup.device.run("enroll", "request", "--code", code, "--timeout", "30")


def scan_and_sync(s: Setup, tmp: Path) -> str:
    pages = tmp / "pages"
    pages.mkdir(exist_ok=True)
    text_page().save(pages / "p0.png", dpi=(300, 300))
    scan = json.loads(s.device.run("scan", "--from", str(pages), "--json").stdout)
    s.device.run("sync", "--once", "--timeout", "60")
    return str(scan["documents"][0]["doc_id"])


def test_a_device_with_no_keys_enrols_over_the_broker_and_syncs(
    province: Province, tmp_path: Path
) -> None:
    s = province.setup
    code = allow(s)

    out = enrol_online(province, code).stdout

    assert f"enrolled as {DEVICE} over the broker" in out
    keys = s.device.home / "keys"
    assert (keys / "broker.crt").exists() and (keys / "warehouse.pub").exists()
    doc = scan_and_sync(s, tmp_path)
    listed = json.loads(s.province.run("warehouse", "ls", "--json").stdout)["documents"]
    assert [(d["doc_id"], d["device"]) for d in listed] == [(doc, DEVICE)]
    # the code is spent: its claim identity is gone from the broker once it reloads
    assert f"claim-{DEVICE}:" not in province.passwd.read_text()
    assert f"renew-{DEVICE}:" in province.passwd.read_text()
    province.reload(province.passwd)
    password = claim_password(code_key(DEVICE, code))
    wait_until(
        lambda: not connects(s.port + 1, f"claim-{DEVICE}", password), 10, "the claim shut out"
    )


def test_a_wrong_code_online_is_refused_by_the_broker_and_changes_nothing(
    province: Province,
) -> None:
    s = province.setup
    allow(s)
    province.reload(province.passwd)

    proc = s.device.run("enroll", "request", "--code", "AAAA-BBBB-CCCC", check=False)

    one_line_error(proc, "the enrolment listener refused or is unreachable")
    assert "sohoa enroll allow" in proc.stderr
    assert not (s.device.home / "keys" / "broker.crt").exists()
    assert not (s.province.home / "devices").exists()


def expire_certificate(s: Setup) -> None:
    """Replace the device's certificate by one for the same key that expired yesterday."""
    keys = s.device.home / "keys"
    ca_key, ca_cert = pki.load_ca(s.province.home / "keys")
    old = x509.load_pem_x509_certificate((keys / "broker.crt").read_bytes())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(old.subject)
        .issuer_name(ca_cert.subject)
        .public_key(old.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=400))
        .not_valid_after(now - dt.timedelta(days=1))
        .sign(ca_key, hashes.SHA256())
    )
    (keys / "broker.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def test_a_device_offline_past_expiry_renews_with_its_key_and_syncs(
    province: Province, tmp_path: Path
) -> None:
    s = province.setup
    enrol_online(province, allow(s))
    province.reload(province.passwd)  # the renewal identity, after enrolment
    expire_certificate(s)
    keys = s.device.home / "keys"
    old_key = (keys / "broker.key").read_bytes()

    doc = scan_and_sync(s, tmp_path)  # sync renews first, then connects as itself

    cert = x509.load_pem_x509_certificate((keys / "broker.crt").read_bytes())
    assert cert.not_valid_after_utc > dt.datetime.now(dt.UTC) + dt.timedelta(days=300)
    assert (keys / "broker.key").read_bytes() != old_key  # a fresh TLS key
    assert not (keys / "broker.key.next").exists()
    listed = json.loads(s.province.run("warehouse", "ls", "--json").stdout)["documents"]
    assert [d["doc_id"] for d in listed] == [doc]


def test_a_revoked_device_cannot_renew(province: Province) -> None:
    s = province.setup
    enrol_online(province, allow(s))
    s.province.run("pki", "revoke", DEVICE)
    province.reload(province.passwd)

    proc = s.device.run("enroll", "renew", "--timeout", "10", check=False)

    one_line_error(proc, "the enrolment listener refused or is unreachable")
    assert f"renew-{DEVICE}:" not in province.passwd.read_text()
    # the CRL reached the broker with the same reload: the device's certificate is refused
    doctor = s.device.run("doctor", check=False).stdout
    assert f"accepts this device as {DEVICE}" not in doctor, doctor
