"""The real MQTT broker for tests: a private mosquitto on a free loopback port.

``start_mosquitto`` writes a mosquitto.conf into a temporary directory (persistence
there, no queue or in-flight limits, optional TLS with a test CA) and starts it;
``Broker.stop``/``start`` restart it on the same port with its persistence kept.
The fixtures ``mosquitto`` and ``mosquitto_session`` are in ``tests/support/plugin.py``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import pwd
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sync import localbroker
from sync.errors import MissingDependencyError
from sync.localbroker import free_port
from tests.support.wait import became_true

HOST = "127.0.0.1"
START_TIMEOUT_S = 10.0


def mosquitto_binary() -> str:
    """Path of the mosquitto executable; fails the test clearly when it is missing."""
    try:
        return localbroker.mosquitto_binary()
    except MissingDependencyError as exc:
        pytest.fail(exc.line(), pytrace=False)


def port_open(port: int, host: str = HOST) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class TlsFiles:
    """A test CA, a server certificate for 127.0.0.1 and one client certificate."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    client_cn: str


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _issue(
    subject_cn: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    ip: str | None = None,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ip is not None:
        san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))])
        builder = builder.add_extension(san, critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_tls(directory: Path, client_cn: str = "dev-tls-01") -> TlsFiles:
    """Write a fresh CA, server and client certificate (PEM) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _issue("sohoa test CA", ca_key, None, ca_key, ca=True)
    files: dict[str, Path] = {}
    for role, cn, ip in (("server", "sohoa test broker", HOST), ("client", client_cn, None)):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _issue(cn, key, ca_cert.subject, ca_key, ip=ip)
        files[f"{role}_cert"] = directory / f"{role}.crt"
        files[f"{role}_key"] = directory / f"{role}.key"
        files[f"{role}_cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        files[f"{role}_key"].write_bytes(_key_pem(key))
        files[f"{role}_key"].chmod(0o600)
    ca_path = directory / "ca.crt"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    return TlsFiles(ca=ca_path, client_cn=client_cn, **files)


def mosquitto_conf(
    port: int,
    data_dir: Path,
    log: Path,
    *,
    persistence: bool,
    tls: TlsFiles | None,
    extra: str = "",
) -> str:
    lines = [
        f"listener {port} {HOST}",
        "allow_anonymous true",
        # mosquitto started as root would drop to user 'mosquitto' and lose the data dir
        f"user {pwd.getpwuid(os.getuid()).pw_name}",
        f"persistence {'true' if persistence else 'false'}",
        f"persistence_location {data_dir}/",
        "max_inflight_messages 0",
        "max_queued_messages 1000000",
        "max_queued_bytes 0",
        # the default packet limit (256 MiB) already admits 64 KiB+ segments
        f"log_dest file {log}",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
    ]
    if tls is not None:
        lines += [
            f"cafile {tls.ca}",
            f"certfile {tls.server_cert}",
            f"keyfile {tls.server_key}",
            "require_certificate true",
            "use_identity_as_username true",
        ]
    return "\n".join(lines) + "\n" + extra


@dataclass
class Broker:
    host: str
    port: int
    proc: subprocess.Popen[bytes]
    conf: Path
    data_dir: Path
    log: Path
    tls: TlsFiles | None = field(default=None)

    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        """Stop the broker (SIGTERM, so it saves its persistence file)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def start(self) -> None:
        """Start again on the same port with the same configuration and persistence."""
        self.stop()
        self.proc = _launch(self.conf, self.port, self.log)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def _launch(conf: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    stderr = log.with_suffix(".stderr")  # errors before the log file is open land here
    with stderr.open("wb") as err_file:
        proc = subprocess.Popen(
            [mosquitto_binary(), "-c", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err_file,
        )

    def listening() -> bool:
        if proc.poll() is not None:
            err = stderr.read_text(errors="replace")
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"mosquitto exited with {proc.returncode}: {err}{tail}")
        return port_open(port)

    if became_true(listening, START_TIMEOUT_S):
        return proc
    proc.kill()
    proc.wait()
    pytest.fail(f"mosquitto did not listen on {HOST}:{port} within {START_TIMEOUT_S} s")


def start_mosquitto(
    tmp: Path,
    *,
    persistence: bool = True,
    port: int | None = None,
    tls: TlsFiles | None = None,
    extra_conf: str = "",
) -> Broker:
    """Start a private mosquitto with its files under ``tmp``; it listens on loopback only.

    ``extra_conf`` is appended to mosquitto.conf (e.g. ``acl_file ...``).
    """
    tmp.mkdir(parents=True, exist_ok=True)
    data_dir = tmp / "mosquitto-data"
    data_dir.mkdir(exist_ok=True)
    conf = tmp / "mosquitto.conf"
    log = tmp / "mosquitto.log"
    attempts = 1 if port is not None else 3  # a free port can be taken before mosquitto binds
    for attempt in range(attempts):
        chosen = port if port is not None else free_port()
        conf.write_text(
            mosquitto_conf(
                chosen, data_dir, log, persistence=persistence, tls=tls, extra=extra_conf
            )
        )
        try:
            proc = _launch(conf, chosen, log)
        except RuntimeError as exc:
            if attempt + 1 == attempts:
                pytest.fail(str(exc), pytrace=False)
            continue
        return Broker(HOST, chosen, proc, conf, data_dir, log, tls)
    raise AssertionError("unreachable")


def run_generated_broker(conf: Path, port: int) -> subprocess.Popen[bytes]:
    """mosquitto on the configuration ``sohoa broker config`` wrote, once it listens."""
    proc = subprocess.Popen([mosquitto_binary(), "-c", str(conf)])
    if not became_true(lambda: port_open(port) or proc.poll() is not None, 10) or not port_open(
        port
    ):
        proc.kill()
        raise AssertionError(f"mosquitto did not start with {conf}: see its log beside it")
    return proc
