"""A real PKCS#11 token for the tests: SoftHSM2 initialised in a temporary directory
(``SOFTHSM2_CONF`` pointing at its own configuration), with signing keys and
certificates issued by a test CA made here with ``cryptography``, imported with
``softhsm2-util`` (keys) and OpenSC's ``pkcs11-tool`` (certificates).

Keys on the token: ``signer`` (valid for a year) and ``expired`` (expired yesterday).
SoftHSM reads its configuration once per process, so one token serves the session.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
SIGNER_NAME = "Nguyễn Thị Thu Hà"
SIGNER_TITLE = "Phó Chủ tịch UBND xã"
ONE_DAY = dt.timedelta(days=1)
CRL_URL = x509.UniformResourceIdentifier("http://ca.sohoa.test/signing.crl")


@dataclass(frozen=True)
class Token:
    conf: Path  # SOFTHSM2_CONF
    label: str
    pin: str
    ca_cert: Path  # the test CA (the warehouse's signing root)
    ca_key: rsa.RSAPrivateKey
    certs: dict[str, x509.Certificate]  # key label -> its certificate
    module: str = MODULE

    def sign_section(self) -> dict[str, str]:
        """The device's [sign] section for the ``signer`` key."""
        return {"module": self.module, "token": self.label, "key": "signer"}

    def crl(self, path: Path, revoked: tuple[str, ...]) -> Path:
        """A CRL (PEM) from the test CA revoking the certificates of ``revoked`` keys."""
        now = dt.datetime.now(dt.UTC)
        builder = x509.CertificateRevocationListBuilder().issuer_name(_ca_name())
        builder = builder.last_update(now - ONE_DAY).next_update(now + ONE_DAY)
        for label in revoked:
            entry = x509.RevokedCertificateBuilder().serial_number(self.certs[label].serial_number)
            builder = builder.add_revoked_certificate(entry.revocation_date(now - ONE_DAY).build())
        crl = builder.sign(self.ca_key, hashes.SHA256())
        path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
        return path


def _ca_name() -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sohoa test signing CA")])


def self_signed(name: x509.Name, days: float) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    """An RSA-2048 key and its self-signed CA certificate, valid from a day ago."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - ONE_DAY)
        .not_valid_after(now + days * ONE_DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def common_name(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


def make_ca() -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    return self_signed(_ca_name(), 3650)


def issue(
    ca_key: rsa.RSAPrivateKey, key: rsa.RSAPrivateKey, *, not_before: dt.datetime, days: float
) -> x509.Certificate:
    """A signer's certificate: name and title as the national signing service writes them."""
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, SIGNER_NAME),
            x509.NameAttribute(NameOID.TITLE, SIGNER_TITLE),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "UBND xã Tân Lập"),
        ]
    )
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(_ca_name())
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + dt.timedelta(days=days))
        .add_extension(
            x509.KeyUsage(True, True, False, False, False, False, False, False, False),
            critical=True,
        )
        .add_extension(  # where the CRL is published, as real certificates say
            x509.CRLDistributionPoints([x509.DistributionPoint([CRL_URL], None, None, None)]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )


def _put_on_token(
    token: Token, env: dict[str, str], folder: Path, label: str, n: int, key: rsa.RSAPrivateKey
) -> None:
    pem, der = folder / f"{label}.key.pem", folder / f"{label}.crt.der"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    der.write_bytes(token.certs[label].public_bytes(serialization.Encoding.DER))
    key_id = f"{n:02x}"
    run = {"env": env, "check": True, "capture_output": True}
    subprocess.run(
        ["softhsm2-util", "--import", str(pem), "--token", token.label, "--label", label]
        + ["--id", key_id, "--pin", token.pin],
        **run,  # type: ignore[call-overload]
    )
    pem.unlink()  # the key now lives on the token only
    subprocess.run(
        ["pkcs11-tool", "--module", token.module, "--token-label", token.label, "--login"]
        + ["--pin", token.pin, "--write-object", str(der), "--type", "cert"]
        + ["--label", label, "--id", key_id],
        **run,  # type: ignore[call-overload]
    )


def make_token(folder: Path, label: str = "sohoa-test", pin: str = "sohoa-PIN-8812") -> Token:
    (folder / "tokens").mkdir(parents=True)
    conf = folder / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {folder / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", label]
        + ["--pin", pin, "--so-pin", "sohoa-SO-4471"],
        env=env,
        check=True,
        capture_output=True,
    )
    ca_key, ca_cert = make_ca()
    (folder / "ca.pem").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    now = dt.datetime.now(dt.UTC)
    keys = {
        label: rsa.generate_private_key(public_exponent=65537, key_size=2048)
        for label in ("signer", "expired")
    }
    certs = {
        "signer": issue(ca_key, keys["signer"], not_before=now - ONE_DAY, days=365),
        "expired": issue(ca_key, keys["expired"], not_before=now - 30 * ONE_DAY, days=29),
    }
    token = Token(conf, label, pin, folder / "ca.pem", ca_key, certs)
    for n, (key_label, key) in enumerate(keys.items(), start=1):
        _put_on_token(token, env, folder, key_label, n, key)
    return token


@pytest.fixture(scope="session")
def softhsm_token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Token]:
    """The session's SoftHSM2 token; ``SOFTHSM2_CONF`` names it for this process and the
    ``sohoa`` commands the tests start."""
    token = make_token(tmp_path_factory.mktemp("softhsm"))
    previous = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(token.conf)
    yield token
    if previous is None:
        os.environ.pop("SOFTHSM2_CONF", None)
    else:
        os.environ["SOFTHSM2_CONF"] = previous
