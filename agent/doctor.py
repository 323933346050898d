"""``sohoa doctor``: what is wrong with this device, one line per check."""

from __future__ import annotations

import datetime as dt
import functools
import os
from collections.abc import Callable, Iterator

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from agent.config import Config
from agent.errors import FAILURES
from sync import keys
from sync.errors import SohoaError

Check = tuple[bool, str]


def _guard(name: str, fn: Callable[[], str]) -> Check:
    try:
        return True, f"{name}: {fn()}"
    except FAILURES as exc:
        return False, f"{name}: {exc.message} — {exc.hint}"
    except OSError as exc:
        return False, f"{name}: {exc.strerror or exc}"


def _home(cfg: Config) -> str:
    cfg.home.mkdir(parents=True, exist_ok=True)
    if not os.access(cfg.home, os.W_OK):
        raise SohoaError(f"{cfg.home} is not writable", "chown it to the sohoa user")
    st = os.statvfs(cfg.home)
    free = st.f_bavail * st.f_frsize
    if free < cfg.spool.reserve_mb * 2**20:
        raise SohoaError(
            f"only {free // 2**20} MB free, reserve is {cfg.spool.reserve_mb} MB",
            "free space or let sync drain the spool",
        )
    return f"writable, {free // 2**20} MB free"


def _device_key(cfg: Config) -> str:
    k = keys.load_device_key(cfg.path(cfg.device.key))
    return f"ok, fingerprint {keys.device_fingerprint(k.public_key())}"


def _warehouse_pub(cfg: Config) -> str:
    from sync.receipt_keys import DeviceCommands, command_state_path

    path = cfg.path(cfg.warehouse.public_key)
    pub = keys.load_warehouse_public(path)
    accepted = DeviceCommands(cfg.device.id, pub, command_state_path(path)).receipt_keys.kids()
    note = (
        ""
        if pub.command
        else "; no command key pinned, so receipt-key rotations are refused"
        " (copy the warehouse's current warehouse.pub)"
    )
    return f"pinned, key id {pub.key_id}, receipt keys {', '.join(accepted)}{note}"


def _broker(cfg: Config) -> str:
    from agent.services.sync import device_link

    link = device_link(cfg)
    try:
        link.connect()
    except SohoaError as exc:
        raise SohoaError(exc.message, f"{exc.hint}; scanning still works offline") from None
    finally:
        link.close()
    return f"{cfg.broker.url} accepts this device as {cfg.device.id}"


def _scanner(cfg: Config) -> str:
    from device.scanner import list_devices

    devs = list_devices()
    if not devs:
        raise SohoaError("no scanner found", "check the USB cable and power; run scanimage -L")
    return ", ".join(f"{name} ({model})" for name, model in devs)


def _signing_token(cfg: Config) -> str:
    from device.token import token_state

    return token_state(cfg.sign.module, cfg.sign.token) + f", key {cfg.sign.key!r}"


REQUEST_STALE_S = 600


def _release(cfg: Config) -> str:
    """The A/B prefix: the current release, a trial, a request the switch unit left."""
    import time

    from agent import release_install as ab

    prefix = cfg.release.prefix
    current = ab.installed_version(prefix)
    if current is None:
        raise SohoaError(
            f"no current release in {prefix}", "run install.sh --device (it lays out releases)"
        )
    request = cfg.home / "release" / ab.REQUEST
    if request.exists() and time.time() - request.stat().st_mtime > REQUEST_STALE_S:
        raise SohoaError(
            f"a downloaded release has waited over {REQUEST_STALE_S // 60} min for the switch unit",
            "systemctl enable --now sohoa-release-switch.path (or: sudo sohoa release apply)",
        )
    line = f"{current} current in {prefix}"
    trial = ab.read_trial(prefix)
    if trial is not None:
        line += f"; {trial.version} on trial (goes back to {trial.previous} without health)"
    reports = ab.read_reports(prefix)
    last = reports[-1] if reports else None
    if last and last.get("status") in ("rolled_back", "refused"):
        line += f"; last: {last.get('version')} {last.get('status')} ({last.get('reason')})"
    return line


def run_checks(cfg: Config) -> Iterator[Check]:
    """Each check in turn: (passed, one line naming what was found or what to do)."""
    yield (
        True,
        f"config: {cfg.source or 'built-in defaults'}; home {cfg.home}; device {cfg.device.id}",
    )
    checks: list[tuple[str, Callable[[Config], str]]] = [
        ("data directory", _home),
        ("device key", _device_key),
        ("warehouse public key", _warehouse_pub),
    ]
    if cfg.broker.tls:
        checks.append(("broker certificate", certificate_check))
    if (cfg.release.prefix / "current").is_symlink() or cfg.path(cfg.release.public_key).exists():
        checks.append(("release", _release))
    checks += [("broker", _broker), ("scanner", _scanner)]
    if cfg.sign.module:
        checks.append(("signing token", _signing_token))
    for name, check in checks:
        yield _guard(name, functools.partial(check, cfg))


RENEW_WARNING = dt.timedelta(days=30)


def certificate_check(cfg: Config) -> str:
    """The device's broker certificate: readable, from the pinned CA, matching its key, in date."""
    b = cfg.broker
    if b.ca is None or b.cert is None or b.key is None:
        raise SohoaError(
            "[broker] url is mqtts:// but cert and key are not set",
            "set [broker] cert and key (install.sh does this for an mqtts:// broker)",
        )
    ca_path, cert_path, key_path = cfg.path(b.ca), cfg.path(b.cert), cfg.path(b.key)
    hint = "enrol the device again: sohoa enroll request --code CODE (README, Provisioning)"
    try:
        ca = x509.load_pem_x509_certificate(ca_path.read_bytes())
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise SohoaError(f"{exc.filename} is missing", hint) from None
    except ValueError as exc:
        raise SohoaError(f"a broker certificate file is unreadable ({exc})", hint) from None
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError) as exc:
        raise SohoaError(
            f"{cert_path} was not issued by {ca_path} ({type(exc).__name__})", hint
        ) from None
    if cert.public_key() != key.public_key():
        raise SohoaError(f"{cert_path} does not belong to the key {key_path}", hint)
    left = cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
    if left <= dt.timedelta(0):
        raise SohoaError(
            f"the broker certificate expired on {cert.not_valid_after_utc:%Y-%m-%d}", hint
        )
    if left < RENEW_WARNING:
        raise SohoaError(f"the broker certificate expires in {left.days} days", hint)
    return f"issued by the provincial CA, valid until {cert.not_valid_after_utc:%Y-%m-%d}"
