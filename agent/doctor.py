"""``sohoa doctor``: what is wrong with this device, one line per check."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator

from agent.config import Config
from sync.errors import SohoaError

Check = tuple[bool, str]


def _guard(name: str, fn: Callable[[], str]) -> Check:
    try:
        return True, f"{name}: {fn()}"
    except SohoaError as exc:
        return False, f"{name}: {exc.message} — {exc.hint}"
    except OSError as exc:
        return False, f"{name}: {exc.strerror or exc}"


def run_checks(cfg: Config) -> Iterator[Check]:
    from sync import keys

    yield (
        True,
        f"config: {cfg.source or 'built-in defaults'}; home {cfg.home}; device {cfg.device.id}",
    )

    def home() -> str:
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

    yield _guard("data directory", home)

    def device_key() -> str:
        k = keys.load_device_key(cfg.path(cfg.device.key))
        return f"ok, fingerprint {keys.device_fingerprint(k.public_key())}"

    yield _guard("device key", device_key)

    def wh_pub() -> str:
        return f"pinned, key id {keys.load_warehouse_public(cfg.path(cfg.warehouse.public_key)).key_id}"

    yield _guard("warehouse public key", wh_pub)

    def broker() -> str:
        try:
            with socket.create_connection((cfg.broker.host, cfg.broker.port), timeout=3):
                return f"{cfg.broker.url} reachable"
        except OSError as exc:
            raise SohoaError(
                f"{cfg.broker.url} unreachable ({exc.strerror or exc})",
                "check the network and [broker] url; scanning still works offline",
            ) from None

    yield _guard("broker", broker)

    def scanner() -> str:
        from device.scanner import list_devices

        devs = list_devices()
        if not devs:
            raise SohoaError("no scanner found", "check the USB cable and power; run scanimage -L")
        return ", ".join(f"{name} ({model})" for name, model in devs)

    yield _guard("scanner", scanner)
