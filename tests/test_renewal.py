"""Certificate renewal, message by message: the province's enrolment desk and the device's
checks, in process (the broker path is in test_enrolment_online.py)."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from agent import renewal
from agent.config import Config, load_config
from agent.enrol_online import EnrolDesk
from sync.enrol_messages import REFUSAL_FORMAT, RENEWED_FORMAT, canonical
from sync.errors import CryptoError
from sync.keys import init_device_keys
from sync.protocol import enrol_request_topic, enrol_response_topic
from tests.support.enrol import DEVICE, Setup, allow, setup

__all__ = ["setup"]  # the fixture

NOW = dt.datetime.now(dt.UTC)


def configs(s: Setup) -> tuple[Config, Config]:
    """The province's and the device's configuration after an offline enrolment."""
    code = allow(s)
    req = s.stick / "req.json"
    s.device.run("enroll", "request", "--code", code, "--out", str(req))
    bundle = s.stick / "bundle.json"
    s.province.run("enroll", "approve", str(req), "--out", str(bundle), "--broker", "mqtts://b")
    s.device.run("enroll", "accept", str(bundle))
    return load_config(str(s.province.config), {}), load_config(str(s.device.config), {})


def answer(desk: EnrolDesk, payload: bytes, device: str = DEVICE) -> dict[str, str]:
    (msg,) = desk.handle(enrol_request_topic(device), payload)
    assert msg.topic == enrol_response_topic(device)
    parsed: dict[str, str] = json.loads(msg.payload)
    return parsed


def test_renewal_is_due_at_two_thirds_of_the_lifetime() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([])
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=300))
        .sign(key, hashes.SHA256())
    )
    assert not renewal.renewal_due(cert, start + dt.timedelta(days=199))
    assert renewal.renewal_due(cert, start + dt.timedelta(days=200))
    assert renewal.renewal_due(cert, start + dt.timedelta(days=400))  # expired: still renews


def test_a_renewal_is_answered_once_and_its_replay_is_refused(setup: Setup) -> None:
    province, device = configs(setup)
    desk = EnrolDesk(province, clock=lambda: NOW)
    req = renewal.request(device, NOW)

    first = answer(desk, req)
    replay = answer(desk, req)

    assert first["format"] == RENEWED_FORMAT
    assert replay["format"] == REFUSAL_FORMAT and "is a replay" in replay["reason"]
    renewal.install(device, json.dumps(first).encode())
    cert = x509.load_pem_x509_certificate((setup.device.home / "keys/broker.crt").read_bytes())
    assert (
        cert.public_key()
        == serialization.load_pem_private_key(
            (setup.device.home / "keys/broker.key").read_bytes(), None
        ).public_key()
    )


def test_a_renewal_signed_by_another_key_or_far_off_in_time_is_refused(setup: Setup) -> None:
    province, device = configs(setup)
    desk = EnrolDesk(province, clock=lambda: NOW)
    late = answer(desk, renewal.request(device, NOW - dt.timedelta(days=2)))
    init_device_keys(device.path(device.device.key), force=True)  # not the enrolled key

    forged = answer(desk, renewal.request(device, NOW))

    assert "clock" in late["reason"] and "NTP" in late["fix"]
    assert forged["format"] == REFUSAL_FORMAT
    assert "signature does not verify" in forged["reason"]


@pytest.mark.parametrize(
    "payload",
    [b"[" * 200_000, b"\xff\xfe", b"{}", b'{"format": 5}', b"x" * (2 << 20), b'"str"'],
)
def test_hostile_enrolment_messages_get_a_refusal_and_the_desk_goes_on(
    setup: Setup, payload: bytes
) -> None:
    province, device = configs(setup)
    desk = EnrolDesk(province, clock=lambda: NOW)

    assert answer(desk, payload)["format"] == REFUSAL_FORMAT
    assert answer(desk, renewal.request(device, NOW))["format"] == RENEWED_FORMAT


def test_a_request_for_another_device_than_its_topic_is_refused(setup: Setup) -> None:
    province, device = configs(setup)
    desk = EnrolDesk(province, clock=lambda: NOW)

    refused = answer(desk, renewal.request(device, NOW), device="H56-99999-zz")

    assert "another device than its topic" in refused["reason"]


def test_a_renewed_certificate_not_signed_by_the_pinned_ca_is_refused(setup: Setup) -> None:
    _province, device = configs(setup)
    renewal.request(device, NOW)  # makes the next key
    keys = setup.device.home / "keys"
    key = serialization.load_pem_private_key((keys / "broker.key.next").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, DEVICE)])
    fake = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(2)
        .not_valid_before(NOW)
        .not_valid_after(NOW + dt.timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    before = (keys / "broker.crt").read_bytes()
    body = {
        "format": RENEWED_FORMAT,
        "device_id": DEVICE,
        "nonce": "n",
        "certificate": fake.public_bytes(serialization.Encoding.PEM).decode(),
    }

    with pytest.raises(CryptoError, match="not signed by the pinned CA"):
        renewal.install(device, canonical(body))
    assert (keys / "broker.crt").read_bytes() == before


def test_a_switch_cut_between_key_and_certificate_is_finished_at_the_next_start(
    setup: Setup,
) -> None:
    province, device = configs(setup)
    reply = answer(EnrolDesk(province, clock=lambda: NOW), renewal.request(device, NOW))
    keys = setup.device.home / "keys"
    # the power fails after the new key is in place and before the certificate is
    (keys / "broker.crt.next").write_text(reply["certificate"])
    (keys / "broker.key.next").replace(keys / "broker.key")

    renewal.complete(device)

    cert = x509.load_pem_x509_certificate((keys / "broker.crt").read_bytes())
    key = serialization.load_pem_private_key((keys / "broker.key").read_bytes(), None)
    assert cert.public_key() == key.public_key()
    assert not (keys / "broker.crt.next").exists()
