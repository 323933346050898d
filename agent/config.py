"""Configuration: one TOML file read once into a frozen object that is passed down.

Lookup order for the file: ``--config FILE``, ``$SOHOA_CONFIG``,
``/etc/sohoa/sohoa.toml``, built-in defaults. ``$SOHOA_HOME`` overrides ``home``.
Relative paths are relative to the home directory. Every key is documented in
``config/sohoa.toml``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

from sync.errors import ConfigError
from sync.mqtt.settings import BrokerConfig
from sync.protocol import valid_device_id

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
    max_segments: int = 65536


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
class Config:
    home: Path = DEFAULT_HOME
    device: DeviceConfig = field(default_factory=DeviceConfig)
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    warehouse: WarehouseConfig = field(default_factory=WarehouseConfig)
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    spool: SpoolConfig = field(default_factory=SpoolConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)
    source: Path | None = None

    def path(self, p: Path) -> Path:
        """Resolve a configured path against the home directory."""
        return p if p.is_absolute() else self.home / p


T = TypeVar("T")


def _want(section: str, key: str, value: Any, kind: type[T]) -> T:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(
            f"[{section}] {key} = {value!r} is not a {kind.__name__}",
            f"fix {key} in the [{section}] section of the configuration file",
        )
    return value


def valid_broker_url(value: str) -> str:
    parsed = urlparse(value)
    if parsed.scheme not in ("mqtt", "mqtts") or not parsed.hostname:
        raise ConfigError(
            f"[broker] url = {value!r} is not an MQTT URL",
            "write it as mqtt://host:port or mqtts://host:port",
        )
    return value


def _choice(section: str, key: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(
            f"[{section}] {key} = {value!r} is not one of {', '.join(choices)}",
            f"set {key} to one of {', '.join(choices)}",
        )
    return value


def _positive(section: str, key: str, value: int) -> int:
    if value < 0:
        raise ConfigError(f"[{section}] {key} = {value} is negative", f"set {key} to 0 or more")
    return value


def _opt_path(value: Any, section: str, key: str) -> Path | None:
    text = _want(section, key, value, str)
    return Path(text) if text else None


_SECTIONS: dict[str, type[Any]] = {
    "device": DeviceConfig,
    "broker": BrokerConfig,
    "warehouse": WarehouseConfig,
    "capture": CaptureConfig,
    "spool": SpoolConfig,
    "sync": SyncConfig,
}


def _section(name: str, raw: Mapping[str, Any]) -> Any:
    cls = _SECTIONS[name]
    defaults = cls()
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if not hasattr(defaults, key):
            raise ConfigError(
                f"unknown key [{name}] {key}",
                "remove it or check its spelling against config/sohoa.toml",
            )
        current = getattr(defaults, key)
        conv: Callable[[Any], Any]
        if key in ("ca", "cert") or (name == "broker" and key == "key"):
            values[key] = _opt_path(value, name, key)
            continue
        if isinstance(current, Path):
            values[key] = Path(_want(name, key, value, str))
        elif isinstance(current, bool):
            values[key] = _want(name, key, value, bool)
        elif isinstance(current, tuple):
            items = _want(name, key, value, list)
            values[key] = tuple(_want(name, key, v, str) for v in items)
        else:
            conv = type(current)
            values[key] = _want(name, key, value, conv)
    section = cls(**values)
    return section


def parse_config(raw: Mapping[str, Any], env: Mapping[str, str], source: Path | None) -> Config:
    """Build a validated ``Config`` from parsed TOML and the environment."""
    unknown = set(raw) - set(_SECTIONS) - {"home"}
    if unknown:
        raise ConfigError(
            f"unknown configuration section or key: {', '.join(sorted(unknown))}",
            "remove it or check its spelling against config/sohoa.toml",
        )
    sections = {}
    for name in _SECTIONS:
        value = raw.get(name, {})
        if not isinstance(value, dict):
            raise ConfigError(f"[{name}] must be a table", f"write it as a [{name}] section")
        sections[name] = _section(name, value)
    home_text = env.get("SOHOA_HOME") or _want("", "home", raw.get("home", str(DEFAULT_HOME)), str)
    home = Path(home_text).expanduser()
    if not home.is_absolute():
        base = source.parent if source is not None else Path.cwd()
        home = (base / home).resolve()
    valid_device_id(sections["device"].id)
    valid_broker_url(sections["broker"].url)
    _choice("capture", "profile", sections["capture"].profile, PROFILES)
    _positive("sync", "bandwidth_kbps", sections["sync"].bandwidth_kbps)
    if sections["spool"].segment_size < 1024 or sections["spool"].segment_size > 1 << 22:
        raise ConfigError(
            f"[spool] segment_size = {sections['spool'].segment_size} is out of range",
            "use a size between 1024 and 4194304 bytes (default 65536)",
        )
    if sections["capture"].min_dpi < 200:
        raise ConfigError(
            f"[capture] min_dpi = {sections['capture'].min_dpi} is below the archival minimum",
            "archival rules require at least 200 dpi; set min_dpi to 200 or more",
        )
    return Config(home=home, source=source, **sections)


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
