"""Configuration: one TOML file read once into a frozen object that is passed down.

Lookup order for the file: ``--config FILE``, ``$SOHOA_CONFIG``,
``/etc/sohoa/sohoa.toml``, built-in defaults. ``$SOHOA_HOME`` overrides ``home``.
Relative paths are relative to the home directory. Every key is documented in
``config/sohoa.toml``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.validators import (
    Validator,
    valid_bool,
    valid_broker_url,
    valid_choice,
    valid_device_port,
    valid_enroll_url,
    valid_float,
    valid_id,
    valid_index,
    valid_int,
    valid_listen,
    valid_marker,
    valid_optional_path,
    valid_optional_text,
    valid_path,
    valid_paths,
    valid_tsa_url,
    valid_type_codes,
)
from device.sane_options import MODES, SOURCES
from sync.errors import ConfigError
from sync.mqtt.settings import BrokerConfig, check_broker

SYSTEM_CONFIG = Path("/etc/sohoa/sohoa.toml")
DEFAULT_HOME = Path("/var/lib/sohoa")
PROFILES = ("text", "color", "lossless")


@dataclass(frozen=True)
class DeviceConfig:
    id: str = "dev-0001"
    key: Path = Path("keys/device.key")


@dataclass(frozen=True)
class WarehouseConfig:
    public_key: Path = Path("keys/warehouse.pub")
    private_key: Path = Path("keys/warehouse.key")
    devices: Path = Path("devices")
    archive: Path = Path("archive")
    index: str = "sqlite"  # or a postgresql:// URL
    max_segments: int = 65536
    max_envelope_mb: int = 512
    staging_device_mb: int = 2048
    staging_total_mb: int = 32768
    staging_ttl_h: int = 72
    ocr: bool = True  # a searchable PDF/A-2b beside each original (never on a device)
    ocr_workers: int = 1  # OCR processes beside ingest, at lower CPU priority
    ocr_threads: int = 1  # Tesseract threads per OCR process (OMP_THREAD_LIMIT)
    # PAdES signatures on arriving documents are validated against these (PEM files)
    signing_roots: tuple[Path, ...] = ()
    signing_crls: tuple[Path, ...] = ()  # CRLs (PEM or DER); revocation is checked when given
    tsa_url: str = ""  # RFC 3161: a PAdES-B-LTA copy beside each validly signed original


@dataclass(frozen=True)
class CaptureConfig:
    profile: str = "text"
    separator_text: str = "PATCHT"
    drop_blank: bool = False
    min_dpi: int = 200
    deskew: bool = True
    blank_threshold: float = 0.002
    scanner_source: str = "adf"
    scanner_mode: str = "gray"
    scanner_resolution: int = 300
    scanner_device: str = ""
    hot_folder: str = ""
    reader_port: str = ""
    keep_originals: bool = False
    # threads doing page work (barcodes, checks, encoding); 0 = one per core, at most 4
    workers: int = 0
    # document type codes whose envelopes use the post-quantum hybrid suite
    permanent_types: tuple[str, ...] = ()


@dataclass(frozen=True)
class SpoolConfig:
    segment_size: int = 64 * 1024
    reserve_mb: int = 200
    retention_days: int = 30


@dataclass(frozen=True)
class SyncConfig:
    bandwidth_kbps: int = 0
    window: int = 64
    health_interval_s: int = 60
    receipt_timeout_s: float = 30.0
    modem_port: str = ""


@dataclass(frozen=True)
class SignConfig:
    """The PKCS#11 token that signs certified copies; ``module`` "" = no signing."""

    module: str = ""
    token: str = ""
    key: str = ""
    certificate: Path | None = None  # the signer's certificate (PEM), if not on the token
    chain: Path | None = None  # intermediate certificates (PEM bundle)
    tsa_url: str = ""  # RFC 3161 timestamp authority: PAdES-B-T when reachable, else B-B
    location: str = ""  # the place printed in the certification block, e.g. "UBND xã Tân Lập"


@dataclass(frozen=True)
class UiConfig:
    listen: str = "0.0.0.0:8080"
    keep_minutes: int = 30
    review: bool = False
    tls_cert: Path | None = None
    tls_key: Path | None = None


@dataclass(frozen=True)
class FleetConfig:
    listen: str = "127.0.0.1:9310"
    register: Path | None = None
    offline_alert_s: int = 900
    cert: Path | None = None  # the fleet identity's certificate and key (mqtts://)
    key: Path | None = None


@dataclass(frozen=True)
class ReleaseConfig:
    """Software releases: the A/B prefix and pinned key on a device, the signing key and
    rollout limit at the province."""

    prefix: Path = Path("/opt/sohoa")
    public_key: Path = Path("keys/release.pub")
    key: Path = Path("keys/release.key")
    health_deadline_s: int = 180
    max_rollback_fraction: float = 0.1


@dataclass(frozen=True)
class Config:
    home: Path = DEFAULT_HOME
    device: DeviceConfig = field(default_factory=DeviceConfig)
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    warehouse: WarehouseConfig = field(default_factory=WarehouseConfig)
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    spool: SpoolConfig = field(default_factory=SpoolConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)
    ui: UiConfig = field(default_factory=UiConfig)
    sign: SignConfig = field(default_factory=SignConfig)
    fleet: FleetConfig = field(default_factory=FleetConfig)
    release: ReleaseConfig = field(default_factory=ReleaseConfig)
    source: Path | None = None

    def path(self, p: Path) -> Path:
        """Resolve a configured path against the home directory."""
        return p if p.is_absolute() else self.home / p


# every key of every section and the validator its value passes at load
FIELDS: dict[str, dict[str, Validator]] = {
    "device": {"id": valid_id, "key": valid_path},
    "broker": {
        "url": valid_broker_url,
        "ca": valid_optional_path,
        "cert": valid_optional_path,
        "key": valid_optional_path,
        "keepalive_s": valid_int(5, 3600, "seconds", 30),
        "session_expiry_s": valid_int(60, 90 * 86400, "seconds", 604800),
        "enroll_url": valid_enroll_url,
    },
    "warehouse": {
        "public_key": valid_path,
        "private_key": valid_path,
        "devices": valid_path,
        "archive": valid_path,
        "index": valid_index,
        "max_segments": valid_int(1, 1_000_000, "segments", 65536),
        "max_envelope_mb": valid_int(1, 65536, "MB", 512),
        "staging_device_mb": valid_int(1, 1 << 20, "MB", 2048),
        "staging_total_mb": valid_int(1, 1 << 24, "MB", 32768),
        "staging_ttl_h": valid_int(1, 24 * 90, "hours", 72),
        "ocr": valid_bool,
        "ocr_workers": valid_int(1, 64, "processes", 1),
        "ocr_threads": valid_int(1, 16, "threads", 1),
        "signing_roots": valid_paths,
        "signing_crls": valid_paths,
        "tsa_url": valid_tsa_url,
    },
    "capture": {
        "profile": valid_choice(PROFILES),
        "separator_text": valid_marker,
        "drop_blank": valid_bool,
        "min_dpi": valid_int(200, 1200, "dpi; archival copies need at least 200", 200),
        "deskew": valid_bool,
        "blank_threshold": valid_float(0.0, 1.0, "(fraction of the page)", 0.002),
        "scanner_source": valid_choice(SOURCES),
        "scanner_mode": valid_choice(MODES),
        "scanner_resolution": valid_int(200, 1200, "dpi", 300),
        "scanner_device": valid_optional_text,
        "hot_folder": valid_optional_text,
        "reader_port": valid_device_port,
        "permanent_types": valid_type_codes,
        "keep_originals": valid_bool,
        "workers": valid_int(0, 16, "threads; 0 = one per core, at most 4", 0),
    },
    "spool": {
        "segment_size": valid_int(1024, 1 << 22, "bytes", 65536),
        "reserve_mb": valid_int(0, 1 << 20, "MB", 200),
        "retention_days": valid_int(0, 3650, "days", 30),
    },
    "sync": {
        "bandwidth_kbps": valid_int(0, 10_000_000, "kbit/s; 0 = automatic", 0),
        "window": valid_int(1, 4096, "messages in flight, at most", 64),
        "health_interval_s": valid_int(2, 86400, "seconds", 60),
        "receipt_timeout_s": valid_float(0.0, 3600.0, "seconds", 30.0, above_lo=True),
        "modem_port": valid_device_port,
    },
    "sign": {
        "module": valid_optional_text,
        "token": valid_optional_text,
        "key": valid_optional_text,
        "certificate": valid_optional_path,
        "chain": valid_optional_path,
        "tsa_url": valid_tsa_url,
        "location": valid_optional_text,
    },
    "ui": {
        "listen": valid_listen,
        "keep_minutes": valid_int(1, 24 * 60, "minutes", 30),
        "review": valid_bool,
        "tls_cert": valid_optional_path,
        "tls_key": valid_optional_path,
    },
    "fleet": {
        "listen": valid_listen,
        "register": valid_optional_path,
        "offline_alert_s": valid_int(10, 7 * 86400, "seconds", 900),
        "cert": valid_optional_path,
        "key": valid_optional_path,
    },
    "release": {
        "prefix": valid_path,
        "public_key": valid_path,
        "key": valid_path,
        "health_deadline_s": valid_int(10, 86400, "seconds", 180),
        "max_rollback_fraction": valid_float(0.0, 1.0, "(fraction of the targets)", 0.1),
    },
}

_SECTIONS: dict[str, type[Any]] = {
    "device": DeviceConfig,
    "broker": BrokerConfig,
    "warehouse": WarehouseConfig,
    "capture": CaptureConfig,
    "spool": SpoolConfig,
    "sync": SyncConfig,
    "ui": UiConfig,
    "sign": SignConfig,
    "fleet": FleetConfig,
    "release": ReleaseConfig,
}


def _section(name: str, raw: Mapping[str, Any]) -> Any:
    """One section's dataclass from its TOML table, every value validated."""
    if not isinstance(raw, dict):
        raise ConfigError(f"[{name}] must be a table", f"write it as a [{name}] section")
    validators = FIELDS[name]
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in validators:
            raise ConfigError(
                f"unknown key [{name}] {key}",
                "remove it or check its spelling against config/sohoa.toml",
            )
        values[key] = validators[key](name, key, value)
    return _SECTIONS[name](**values)


def _home(raw: Mapping[str, Any], env: Mapping[str, str], source: Path | None) -> Path:
    home_text = env.get("SOHOA_HOME") or raw.get("home", str(DEFAULT_HOME))
    home = valid_path("", "home" if "SOHOA_HOME" not in env else "$SOHOA_HOME", home_text)
    home = home.expanduser()
    if not home.is_absolute():
        base = source.parent if source is not None else Path.cwd()
        home = (base / home).resolve()
    return home


def parse_config(raw: Mapping[str, Any], env: Mapping[str, str], source: Path | None) -> Config:
    """Build a validated ``Config`` from parsed TOML and the environment."""
    unknown = set(raw) - set(_SECTIONS) - {"home"}
    if unknown:
        raise ConfigError(
            f"unknown configuration section or key: {', '.join(sorted(unknown))}",
            "remove it or check its spelling against config/sohoa.toml",
        )
    sections = {name: _section(name, raw.get(name, {})) for name in _SECTIONS}
    check_broker(sections["broker"])
    return Config(home=_home(raw, env, source), source=source, **sections)


def config_path(cli_path: str | None, env: Mapping[str, str]) -> Path | None:
    """Which configuration file applies, or None for the built-in defaults."""
    if cli_path:
        return Path(cli_path)
    if env.get("SOHOA_CONFIG"):
        return Path(env["SOHOA_CONFIG"])
    return SYSTEM_CONFIG if SYSTEM_CONFIG.exists() else None


def load_config(cli_path: str | None, env: Mapping[str, str]) -> Config:
    path = config_path(cli_path, env)
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(
                f"configuration file {path} does not exist",
                "check --config / $SOHOA_CONFIG, or run install.sh to create it",
            ) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(
                f"configuration file {path} is not valid TOML ({exc})",
                "fix the syntax at the position named",
            ) from None
    return parse_config(raw, env, path)
