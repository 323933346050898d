"""Enrolment without moving a private key: two commands on the device, one at the province.

Online (``sohoa enroll request --code CODE`` without ``--out``), the same two
messages travel over the broker's enrolment listener (``agent.enrol_online``).
Offline, with files on a USB stick::

    province (before the visit)  sohoa enroll allow H56-01234-a1      -> one-time code
    device                       sohoa enroll request --code CODE --out request.json
    province                     sohoa enroll approve request.json --out bundle.json
    device                       sohoa enroll accept bundle.json

The device makes its Ed25519 key and its TLS key itself and sends only public
parts and a CSR; the province checks the code, enrols the Ed25519 key, signs
the certificate and answers with a bundle that the device trusts only under
the same code. ``keys/enrol-pending.json`` (0600) keeps the request's nonce and
MAC key on the device between the two steps.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.x509.oid import NameOID

from agent.config import Config
from sync import claims, enrol_access, pki
from sync.durable import atomic_write
from sync.enrol_messages import (
    BUNDLE_FORMAT,
    REQUEST_FORMAT,
    canonical,
    code_key,
    parse,
    seal,
    verify,
)
from sync.enrolment import enroll_public
from sync.errors import CryptoError
from sync.keys import init_device_keys, load_device_key, load_warehouse_public, public_pem

PENDING = "keys/enrol-pending.json"


def tls_paths(cfg: Config) -> tuple[Path, Path, Path]:
    """Where the device keeps its broker key, certificate and the CA: ``[broker]`` or keys/."""
    b = cfg.broker
    return (
        cfg.path(b.key or Path("keys/broker.key")),
        cfg.path(b.cert or Path("keys/broker.crt")),
        cfg.path(b.ca or Path("keys/ca.crt")),
    )


def tls_key(path: Path) -> ec.EllipticCurvePrivateKey:
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CryptoError(
                f"{path} is not a broker TLS key", "remove it and run the request again"
            )
        return key
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    atomic_write(path, pem, mode=0o600, what="the broker TLS key")
    return key


def request(cfg: Config, code: str) -> bytes:
    """The device's enrolment request (its keys are made here if missing)."""
    device_id = cfg.device.id
    key_path = cfg.path(cfg.device.key)
    if not key_path.exists():
        init_device_keys(key_path)
    device_key = load_device_key(key_path)
    broker_key = tls_key(tls_paths(cfg)[0])
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
        .sign(broker_key, hashes.SHA256())
    )
    mac_key = code_key(device_id, code)
    nonce = secrets.token_hex(16)
    renew = enrol_access.mosquitto_hash(enrol_access.renew_password(device_key, device_id))
    body = {
        "format": REQUEST_FORMAT,
        "device_id": device_id,
        "device_pub": public_pem(device_key.public_key()).decode(),
        "csr": csr.public_bytes(serialization.Encoding.PEM).decode(),
        "nonce": nonce,
        "renew_hash": renew,
    }
    body["sig"] = device_key.sign(canonical(body)).hex()
    pending = {"nonce": nonce, "key": mac_key.hex()}
    atomic_write(
        cfg.path(Path(PENDING)), canonical(pending), mode=0o600, what="the enrolment state"
    )
    return seal(body, mac_key)


def csr_key(pem: str, device_id: str) -> ec.EllipticCurvePublicKey:
    """The P-256 key of a CSR that is signed and names ``device_id``, or the line why not."""
    try:
        csr = x509.load_pem_x509_csr(pem.encode())
    except ValueError:
        raise CryptoError(
            "the request's CSR is malformed", "make a new request on the device"
        ) from None
    key = csr.public_key()
    cn = [a.value for a in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if (
        not isinstance(key, ec.EllipticCurvePublicKey)
        or not csr.is_signature_valid
        or cn != [device_id]
    ):
        raise CryptoError(
            "the request's CSR is not a P-256 key for its device id",
            "make a new request on the device",
        )
    return key


def check_signed(body: dict[str, str], pub: Ed25519PublicKey, what: str) -> None:
    """``body['sig']`` is ``pub``'s signature over the rest of ``body``."""
    unsigned = {k: v for k, v in body.items() if k not in ("sig", "mac")}
    try:
        pub.verify(bytes.fromhex(body.get("sig", "")), canonical(unsigned))
    except (InvalidSignature, ValueError):
        raise CryptoError(
            f"the {what}'s signature does not verify", "make a new request on the device"
        ) from None


def _check_request(body: dict[str, str]) -> tuple[Ed25519PublicKey, ec.EllipticCurvePublicKey]:
    """The request's own proofs (its Ed25519 signature, a CSR for its device id); the
    device's signing key and the TLS key its certificate is for."""
    try:
        pub = serialization.load_pem_public_key(body["device_pub"].encode())
    except (KeyError, ValueError):
        raise CryptoError(
            "the request's keys are malformed", "make a new request on the device"
        ) from None
    if not isinstance(pub, Ed25519PublicKey):
        raise CryptoError(
            "the request carries keys of the wrong kind", "make a new request on the device"
        )
    check_signed(body, pub, "request")
    return pub, csr_key(body.get("csr", ""), body["device_id"])


def approve(cfg: Config, data: bytes, broker_url: str) -> bytes:
    """Province side: check a request against its one-time code; the signed-up bundle.

    Everything from reading the claim to spending it happens under the claims
    lock, so a code is good for exactly one request even with several workers."""
    obj = parse(data, REQUEST_FORMAT, "enrolment request")
    device_id = obj.get("device_id", "")
    keys_dir = cfg.home / "keys"
    with claims.locked(keys_dir):
        mac_key = claims.open_claim(keys_dir, device_id)
        body = verify(obj, mac_key, "enrolment request")
        pub, csr_pub = _check_request(body)
        renew = enrol_access.valid_hash(body.get("renew_hash", ""))
        cert = pki.sign_certificate(keys_dir, device_id, "device", csr_pub)
        enroll_public(pub, device_id, cfg.path(cfg.warehouse.devices), force=True)
        claims.spend(keys_dir, device_id, renew)
        enrol_access.refresh(keys_dir)  # the claim identity is shut out of the broker
    bundle = {
        "format": BUNDLE_FORMAT,
        "device_id": device_id,
        "nonce": body["nonce"],
        "certificate": cert.public_bytes(serialization.Encoding.PEM).decode(),
        "ca": pki.load_ca(keys_dir)[1].public_bytes(serialization.Encoding.PEM).decode(),
        "broker_url": broker_url,
        "warehouse_pub": cfg.path(cfg.warehouse.public_key).read_text(encoding="utf-8"),
    }
    return seal(bundle, mac_key)


def _pending(cfg: Config) -> dict[str, str]:
    try:
        raw = json.loads(cfg.path(Path(PENDING)).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CryptoError(
            "no enrolment request is pending on this device",
            "run `sohoa enroll request --code CODE` first",
        ) from None
    return {"nonce": str(raw["nonce"]), "key": str(raw["key"])}


def accept(cfg: Config, data: bytes) -> str:
    """Device side: check the bundle, then install certificate, CA and warehouse key."""
    pending = _pending(cfg)
    body = verify(
        parse(data, BUNDLE_FORMAT, "enrolment bundle"),
        bytes.fromhex(pending["key"]),
        "enrolment bundle",
    )
    if (body["device_id"], body["nonce"]) != (cfg.device.id, pending["nonce"]):
        raise CryptoError(
            "the bundle answers another request or another device",
            "use the bundle the province made from this device's last request",
        )
    key_path, cert_path, ca_path = tls_paths(cfg)
    try:
        cert = x509.load_pem_x509_certificate(body["certificate"].encode())
        ca = x509.load_pem_x509_certificate(body["ca"].encode())
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise CryptoError(
            "the bundle's certificate does not check out", "ask the province for a new bundle"
        ) from None
    tls_pub = tls_key(key_path).public_key()
    if cert.public_key() != tls_pub:
        raise CryptoError(
            "the bundle's certificate is not for this device's key", "make a new request"
        )
    wpub_path = cfg.path(cfg.warehouse.public_key)
    candidate = wpub_path.with_name(f".{wpub_path.name}.enrol")
    atomic_write(candidate, body["warehouse_pub"].encode(), mode=0o644, what="warehouse.pub")
    load_warehouse_public(candidate)  # a broken warehouse key is named before anything changes
    atomic_write(ca_path, body["ca"].encode(), mode=0o644, what="the CA certificate")
    atomic_write(cert_path, body["certificate"].encode(), mode=0o644, what="the broker certificate")
    candidate.replace(wpub_path)
    cfg.path(Path(PENDING)).unlink()
    return body["broker_url"]
