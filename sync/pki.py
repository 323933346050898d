"""The provincial certificate authority: broker identities for devices and services.

Files under the province's ``keys/`` folder (written atomically, keys 0600):

- ``ca.key`` / ``ca.crt``: the CA's P-256 key and self-signed certificate;
- ``ca.crl``: the revocation list the broker checks (``crlfile``), re-signed on
  every issue and revocation;
- ``pki/issued.json``: the register of issued certificates (name, role,
  serial, expiry, revocation), which the broker's ACL and the CRL are built
  from.

A certificate's CN is the identity the broker uses as username
(``use_identity_as_username``); for a device it is its device id. The role
travels in the certificate's OU. Keys are P-256 so that every TLS stack on
the fleet (OpenSSL in mosquitto and in Python's ssl) accepts them.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sync.durable import atomic_write
from sync.errors import ConfigError, CryptoError
from sync.protocol import valid_device_id

ROLES = ("device", "warehouse", "fleet", "broker")
CLIENT_ROLES = ("device", "warehouse", "fleet")
LIFETIME_DAYS = {"device": 365, "warehouse": 730, "fleet": 730, "broker": 730}
CA_LIFETIME_DAYS = 20 * 365
CRL_LIFETIME_DAYS = 365
CLOCK_SKEW = dt.timedelta(minutes=10)


@dataclass(frozen=True)
class Issued:
    """One line of the register: a certificate the CA signed."""

    name: str
    role: str
    serial: int
    not_after: str
    revoked_at: str | None = None


@dataclass(frozen=True)
class CaPaths:
    key: Path
    cert: Path
    crl: Path
    register: Path

    @classmethod
    def under(cls, keys_dir: Path) -> CaPaths:
        return cls(
            keys_dir / "ca.key",
            keys_dir / "ca.crt",
            keys_dir / "ca.crl",
            keys_dir / "pki" / "issued.json",
        )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def valid_identity(name: str) -> str:
    """A certificate name: the broker username, so a device id's rules apply."""
    try:
        return valid_device_id(name)
    except ConfigError as exc:
        raise CryptoError(f"{name!r} is not a valid certificate name", exc.hint) from None


def init_ca(
    keys_dir: Path, *, name: str = "sohoa provincial CA", force: bool = False
) -> x509.Certificate:
    """Create the CA key, its certificate, an empty register and CRL."""
    paths = CaPaths.under(keys_dir)
    if paths.key.exists() and not force:
        raise CryptoError(
            f"a CA already exists at {paths.key}",
            "keep it (every device certificate depends on it), or pass --force to replace it",
        )
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=CA_LIFETIME_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    atomic_write(paths.key, _pem_key(key), mode=0o600, what="the CA key")
    atomic_write(paths.cert, _pem(cert), mode=0o644, what="the CA certificate")
    _write_register(paths, [])
    write_crl(keys_dir)
    return cert


def load_ca(keys_dir: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    paths = CaPaths.under(keys_dir)
    try:
        key = serialization.load_pem_private_key(paths.key.read_bytes(), password=None)
        cert = x509.load_pem_x509_certificate(paths.cert.read_bytes())
    except FileNotFoundError:
        raise CryptoError(
            f"no CA at {paths.key}", "run `sohoa pki init` at the province first"
        ) from None
    except ValueError as exc:
        raise CryptoError(
            f"the CA at {paths.key} is unreadable ({exc})", "restore it from backup"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CryptoError(f"{paths.key} is not a sohoa CA key", "restore it from backup")
    return key, cert


def load_register(keys_dir: Path) -> list[Issued]:
    path = CaPaths.under(keys_dir).register
    try:
        raw: Any = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except ValueError:
        raise CryptoError(
            f"the certificate register {path} is damaged", "restore it from backup"
        ) from None
    return [Issued(**entry) for entry in raw["issued"]]


def _write_register(paths: CaPaths, issued: list[Issued]) -> None:
    body = json.dumps({"issued": [asdict(i) for i in issued]}, indent=1, sort_keys=True)
    atomic_write(paths.register, body.encode() + b"\n", mode=0o644, what="the certificate register")


def _san(hosts: tuple[str, ...]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def sign_certificate(
    keys_dir: Path,
    name: str,
    role: str,
    public_key: ec.EllipticCurvePublicKey,
    *,
    days: int | None = None,
    hosts: tuple[str, ...] = (),
) -> x509.Certificate:
    """Sign ``public_key`` as ``name`` in ``role`` and record it in the register."""
    if role not in ROLES:
        raise CryptoError(f"unknown role {role!r}", f"use one of {', '.join(ROLES)}")
    valid_identity(name)
    ca_key, ca_cert = load_ca(keys_dir)
    now = _now()
    lifetime = dt.timedelta(days=days if days is not None else LIFETIME_DAYS[role])
    usage = ExtendedKeyUsageOID.SERVER_AUTH if role == "broker" else ExtendedKeyUsageOID.CLIENT_AUTH
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, name),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
        ]
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if hosts:
        builder = builder.add_extension(_san(hosts), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    paths = CaPaths.under(keys_dir)
    entry = Issued(name, role, cert.serial_number, cert.not_valid_after_utc.isoformat())
    _write_register(paths, [*load_register(keys_dir), entry])
    return cert


def issue(
    keys_dir: Path,
    name: str,
    role: str,
    out_dir: Path,
    *,
    days: int | None = None,
    hosts: tuple[str, ...] = (),
) -> tuple[Path, Path]:
    """A new key and certificate for ``name``: ``out_dir/NAME.crt`` and ``NAME.key`` (0600)."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = sign_certificate(keys_dir, name, role, key.public_key(), days=days, hosts=hosts)
    cert_path, key_path = out_dir / f"{name}.crt", out_dir / f"{name}.key"
    atomic_write(key_path, _pem_key(key), mode=0o600, what="a certificate key")
    atomic_write(cert_path, _pem(cert), mode=0o644, what="a certificate")
    return cert_path, key_path


def revoke(keys_dir: Path, name: str) -> int:
    """Revoke every live certificate of ``name``; how many. The CRL is re-signed."""
    issued = load_register(keys_dir)
    stamp = _now().isoformat()
    live = [i for i in issued if i.name == name and i.revoked_at is None]
    if not live:
        raise CryptoError(
            f"no live certificate named {name!r} in the register",
            "check the name with `sohoa pki ls`",
        )
    _write_register(
        CaPaths.under(keys_dir),
        [replace(i, revoked_at=stamp) if i in live else i for i in issued],
    )
    write_crl(keys_dir)
    return len(live)


def write_crl(keys_dir: Path) -> Path:
    """Sign the revocation list from the register (valid for a year; re-signed on change)."""
    ca_key, ca_cert = load_ca(keys_dir)
    now = _now()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - CLOCK_SKEW)
        .next_update(now + dt.timedelta(days=CRL_LIFETIME_DAYS))
    )
    for entry in load_register(keys_dir):
        if entry.revoked_at is not None:
            revoked = (
                x509.RevokedCertificateBuilder()
                .serial_number(entry.serial)
                .revocation_date(dt.datetime.fromisoformat(entry.revoked_at))
                .build()
            )
            builder = builder.add_revoked_certificate(revoked)
    crl = builder.sign(ca_key, hashes.SHA256())
    path = CaPaths.under(keys_dir).crl
    atomic_write(path, crl.public_bytes(serialization.Encoding.PEM), mode=0o644, what="the CRL")
    return path


def identities(keys_dir: Path, role: str) -> list[str]:
    """Names with a live certificate in ``role``, for the broker's ACL."""
    return sorted(
        {i.name for i in load_register(keys_dir) if i.role == role and i.revoked_at is None}
    )
