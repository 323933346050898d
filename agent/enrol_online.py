"""Enrolment and renewal over the broker's enrolment listener.

The device connects as ``claim-<id>`` (first enrolment: password from the
one-time code) or ``renew-<id>`` (renewal: password from its Ed25519 key),
publishes its request on ``sohoa/v1/enroll/<id>/req`` and waits for the
province's answer on ``…/resp``. At the province, every warehouse worker takes
requests from the shared subscription ``$share/enrol/sohoa/v1/enroll/+/req``
(``EnrolDesk``). A refusal names its reason and changes nothing on either side.

First enrolment connects without checking the broker's certificate (the device
has no CA yet): both messages are authenticated by the code, and the claim
password gives the code away no more than the request does. Renewal checks the
broker against the pinned CA.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

from agent import provision, renewal
from agent.config import Config
from agent.wiring import broker_config
from sync.enrol_access import CLAIM_PREFIX, RENEW_PREFIX, claim_password, renew_password
from sync.enrol_messages import (
    BUNDLE_FORMAT,
    REFUSAL_FORMAT,
    RENEW_FORMAT,
    RENEWED_FORMAT,
    REQUEST_FORMAT,
    canonical,
    code_key,
    load_flat,
)
from sync.errors import BrokerError, CryptoError, SohoaError
from sync.keys import load_device_key
from sync.mqtt.link import Link
from sync.mqtt.settings import LinkSettings, Message
from sync.protocol import enrol_request_topic, enrol_response_topic, parse_enrol_topic

log = logging.getLogger("sohoa.enrol")

ANSWER_TIMEOUT_S = 60.0


def _settings(cfg: Config, username: str, password: str, ca: Path | None) -> LinkSettings:
    host, port = broker_config(cfg).enroll_endpoint
    return LinkSettings(
        host=host,
        port=port,
        client_id=username,  # the listener uses the username as client id anyway
        username=username,
        password=password,
        tls_ca=ca,
        tls_unverified=ca is None,
        clean_start=True,
        session_expiry_s=0,
    )


def _answer(payload: bytes, nonce: str, formats: tuple[str, str]) -> bytes | None:
    """The answer to our request (``payload`` itself), a refusal raised, or None for
    anything else on the topic (an answer to an earlier request)."""
    try:
        obj = load_flat(payload, "answer")
    except CryptoError:
        return None
    if obj.get("nonce") != nonce:
        return None
    if obj.get("format") == REFUSAL_FORMAT:
        raise CryptoError(
            f"the province refused: {obj.get('reason', 'no reason given')}",
            obj.get("fix", "ask the province"),
        )
    return payload if obj.get("format") in formats else None


def exchange(
    settings: LinkSettings, device: str, request: bytes, nonce: str, timeout_s: float
) -> bytes:
    """Publish ``request`` and wait for the answer that carries ``nonce``."""
    where = f"{settings.host}:{settings.port}"
    link = Link(settings)
    try:
        try:
            link.connect()
        except BrokerError as exc:
            raise BrokerError(
                f"the enrolment listener refused or is unreachable ({exc.message})",
                f"check that the province ran `sohoa enroll allow {device}` (codes are good "
                f"once, for 7 days), the code, and that {where} is reachable; "
                "or enrol offline with --out",
            ) from None
        link.subscribe(enrol_response_topic(device), qos=1)
        link.publish(enrol_request_topic(device), request, qos=1)
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            msg = link.get(left)
            if msg is not None and msg.topic == enrol_response_topic(device):
                answer = _answer(msg.payload, nonce, (BUNDLE_FORMAT, RENEWED_FORMAT))
                if answer is not None:
                    return answer
    finally:
        link.close()
    raise BrokerError(
        f"the province did not answer within {timeout_s:g} s",
        "check that `sohoa warehouse serve` runs at the province, or enrol offline with --out",
    )


def enroll(cfg: Config, code: str, timeout_s: float = ANSWER_TIMEOUT_S) -> str:
    """First enrolment online: request, answer, accept; the broker URL in the bundle."""
    data = provision.request(cfg, code)
    nonce = json.loads(data)["nonce"]
    password = claim_password(code_key(cfg.device.id, code))
    ca = provision.tls_paths(cfg)[2]
    settings = _settings(cfg, CLAIM_PREFIX + cfg.device.id, password, ca if ca.exists() else None)
    bundle = exchange(settings, cfg.device.id, data, nonce, timeout_s)
    return provision.accept(cfg, bundle)


def renew(cfg: Config, now: dt.datetime, timeout_s: float = ANSWER_TIMEOUT_S) -> None:
    """Renew the broker certificate online; raises with the reason when it cannot."""
    renewal.complete(cfg)
    data = renewal.request(cfg, now)
    device_key = load_device_key(cfg.path(cfg.device.key))
    password = renew_password(device_key, cfg.device.id)
    settings = _settings(cfg, RENEW_PREFIX + cfg.device.id, password, provision.tls_paths(cfg)[2])
    answer = exchange(settings, cfg.device.id, data, json.loads(data)["nonce"], timeout_s)
    cert = renewal.install(cfg, answer)
    log.info("broker certificate renewed until=%s", cert.not_valid_after_utc.isoformat())


def renew_if_due(cfg: Config, now: dt.datetime, timeout_s: float = 20.0) -> bool:
    """Renew when two thirds of the certificate's lifetime have passed; True if renewed.
    A failure is logged in one line and tried again at the next call."""
    cert = renewal.current_certificate(cfg)
    if cert is None or not renewal.renewal_due(cert, now):
        return False
    try:
        renew(cfg, now, timeout_s)
    except SohoaError as exc:
        log.warning("certificate renewal failed reason=%s fix=%s", exc.message, exc.hint)
        return False
    return True


class EnrolDesk:
    """Province side: answers enrolment and renewal requests (one ``handle`` per message)."""

    def __init__(self, cfg: Config, clock: Callable[[], dt.datetime] | None = None) -> None:
        self.cfg = cfg
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))

    def handle(self, topic: str, payload: bytes) -> list[Message]:
        device = parse_enrol_topic(topic)
        if device is None:
            return []
        nonce = ""
        try:
            obj = load_flat(payload, "enrolment request")
            nonce = str(obj.get("nonce", ""))
            if obj.get("device_id") != device:
                raise CryptoError(
                    "the request names another device than its topic", "make a new request"
                )
            answer = self._answer(obj.get("format"), payload)
        except SohoaError as exc:
            log.warning("enrolment refused device=%s reason=%s", device, exc.message)
            refusal = {"format": REFUSAL_FORMAT, "nonce": nonce, "reason": exc.message}
            answer = canonical({**refusal, "fix": exc.hint})
        return [Message(enrol_response_topic(device), answer, qos=1)]

    def _answer(self, fmt: object, payload: bytes) -> bytes:
        if fmt == REQUEST_FORMAT:
            # online, the device keeps the broker URL it already uses
            return provision.approve(self.cfg, payload, "")
        if fmt == RENEW_FORMAT:
            return renewal.approve(self.cfg, payload, self.clock())
        raise CryptoError("not an enrolment or renewal request", "update sohoa on the device")
