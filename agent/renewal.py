"""Broker certificate renewal, proved by the device's Ed25519 key.

At two thirds of its certificate's lifetime, or once it has expired (a device
that was offline for months), the device makes a new TLS key and a CSR, signs a
renewal request with its Ed25519 key and sends it over the broker's enrolment
listener as ``renew-<id>`` (``agent.enrol_online``). The province checks the
signature against the enrolled key, that the device is not revoked and that
the request is newer than the last one it accepted, and answers with a
certificate; the device uses it only if its pinned CA signed it for the new
key. The new key waits in ``keys/broker.key.next`` until then; a crash between
the two renames is finished at the next start (``complete``).
"""

from __future__ import annotations

import datetime as dt
import secrets
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from agent.config import Config
from agent.provision import check_signed, csr_key, tls_key, tls_paths
from sync import claims, pki
from sync.durable import atomic_write
from sync.enrol_messages import RENEW_FORMAT, RENEWED_FORMAT, canonical, parse
from sync.enrolment import load_enrolled
from sync.errors import CryptoError
from sync.keys import load_device_key

RENEW_AT = 2 / 3  # of the certificate's lifetime
MAX_SKEW = dt.timedelta(hours=12)  # between the device's clock and the province's


def renewal_due(cert: x509.Certificate, now: dt.datetime) -> bool:
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return now >= start + (end - start) * RENEW_AT


def _next(path: Path) -> Path:
    return path.with_name(path.name + ".next")


def current_certificate(cfg: Config) -> x509.Certificate | None:
    """The device's broker certificate, or None when it has none (not enrolled)."""
    try:
        return x509.load_pem_x509_certificate(tls_paths(cfg)[1].read_bytes())
    except (OSError, ValueError):
        return None


def request(cfg: Config, now: dt.datetime) -> bytes:
    """A renewal request for a new TLS key (made once, kept for retries)."""
    device_id = cfg.device.id
    key = tls_key(_next(tls_paths(cfg)[0]))
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
        .sign(key, hashes.SHA256())
    )
    body = {
        "format": RENEW_FORMAT,
        "device_id": device_id,
        "csr": csr.public_bytes(serialization.Encoding.PEM).decode(),
        "time": now.isoformat(),
        "nonce": secrets.token_hex(16),
    }
    device_key = load_device_key(cfg.path(cfg.device.key))
    return canonical({**body, "sig": device_key.sign(canonical(body)).hex()})


def _fresh(stamp: str, now: dt.datetime) -> str:
    try:
        when = dt.datetime.fromisoformat(stamp)
    except ValueError:
        raise CryptoError("the renewal request has no valid time", "update sohoa") from None
    if when.tzinfo is None or abs(when - now) > MAX_SKEW:
        raise CryptoError(
            f"the device's clock ({stamp[:19]}) is far from the province's ({now:%Y-%m-%dT%H:%M})",
            "set the device's clock (check its NTP access), then it asks again",
        )
    return stamp


def approve(cfg: Config, data: bytes, now: dt.datetime) -> bytes:
    """Province side: a new certificate for an enrolled, unrevoked device that signed."""
    body = parse(data, RENEW_FORMAT, "renewal request", mac=False)
    device_id = body.get("device_id", "")
    keys_dir = cfg.home / "keys"
    pub = load_enrolled(cfg.path(cfg.warehouse.devices), device_id)
    if pub is None or device_id not in pki.identities(keys_dir, "device"):
        raise CryptoError(
            f"device {device_id} is not enrolled or was revoked",
            f"enrol it again: `sohoa enroll allow {device_id}`",
        )
    check_signed(body, pub, "renewal request")
    key = csr_key(body.get("csr", ""), device_id)
    with claims.locked(keys_dir):
        claims.note_renewal(keys_dir, device_id, _fresh(body.get("time", ""), now))
        cert = pki.sign_certificate(keys_dir, device_id, "device", key)
    answer = {
        "format": RENEWED_FORMAT,
        "device_id": device_id,
        "nonce": body["nonce"],
        "certificate": cert.public_bytes(serialization.Encoding.PEM).decode(),
    }
    return canonical(answer)


def install(cfg: Config, data: bytes) -> x509.Certificate:
    """Device side: check the new certificate against the pinned CA and the new key, then
    switch to it (key first; ``complete`` finishes an interrupted switch)."""
    body = parse(data, RENEWED_FORMAT, "renewed certificate", mac=False)
    key_path, cert_path, ca_path = tls_paths(cfg)
    try:
        cert = x509.load_pem_x509_certificate(body.get("certificate", "").encode())
        ca = x509.load_pem_x509_certificate(ca_path.read_bytes())
        cert.verify_directly_issued_by(ca)
    except (OSError, ValueError, TypeError, InvalidSignature):
        raise CryptoError(
            "the renewed certificate is not signed by the pinned CA",
            "nothing was changed; the device asks again later",
        ) from None
    cn = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    new_key = _next(key_path)
    if cn != [cfg.device.id] or cert.public_key() != tls_key(new_key).public_key():
        raise CryptoError(
            "the renewed certificate is not for this device's new key",
            "nothing was changed; the device asks again later",
        )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    atomic_write(_next(cert_path), pem, mode=0o644, what="the renewed certificate")
    complete(cfg)
    return cert


def complete(cfg: Config) -> None:
    """Finish a switch to a renewed certificate that a crash interrupted."""
    key_path, cert_path, _ca = tls_paths(cfg)
    next_cert = _next(cert_path)
    if not next_cert.exists():
        return
    if _next(key_path).exists():
        _next(key_path).replace(key_path)
    next_cert.replace(cert_path)
