"""One named validator per configuration value, in the manner of kvmd's ``valid_*``.

Each validator takes the section, the key and the raw TOML value and returns the
value to use, or raises ``ConfigError`` with one line naming ``[section] key =
value`` and a hint that says what is allowed. ``agent.config`` maps every key
of every section to one of these, so a bad value stops the program at load,
before any work starts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from sync.errors import ConfigError
from sync.protocol import valid_device_id
from sync.warehouse.index import POSTGRES_SCHEMES, redacted_dsn

Validator = Callable[[str, str, Any], Any]


def _bad(section: str, key: str, value: Any, what: str, hint: str) -> ConfigError:
    where = f"[{section}] {key}" if section else key
    return ConfigError(f"{where} = {value!r} {what}", hint)


def _default(default: Any) -> str:
    return f" (default {default!r})" if default is not None else ""


def valid_int(lo: int, hi: int, unit: str = "", default: int | None = None) -> Validator:
    """A whole number from ``lo`` to ``hi``."""
    allowed = f"use a whole number from {lo} to {hi}{' ' + unit if unit else ''}{_default(default)}"

    def check(section: str, key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _bad(section, key, value, "is not a whole number", allowed)
        if not lo <= value <= hi:
            raise _bad(section, key, value, "is out of range", allowed)
        return value

    return check


def valid_float(
    lo: float, hi: float, unit: str = "", default: float | None = None, *, above_lo: bool = False
) -> Validator:
    """A number from ``lo`` (excluded with ``above_lo``) to ``hi``."""
    low = f"more than {lo:g}" if above_lo else f"from {lo:g}"
    allowed = f"use a number {low} to {hi:g}{' ' + unit if unit else ''}{_default(default)}"

    def check(section: str, key: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _bad(section, key, value, "is not a number", allowed)
        number = float(value)
        low_ok = number > lo if above_lo else number >= lo
        if not math.isfinite(number) or not low_ok or number > hi:
            raise _bad(section, key, value, "is out of range", allowed)
        return number

    return check


def valid_bool(section: str, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _bad(section, key, value, "is not true or false", "write true or false")
    return value


def valid_choice(choices: Sequence[str]) -> Validator:
    allowed = f"use one of {', '.join(choices)}"

    def check(section: str, key: str, value: Any) -> str:
        if value not in choices:
            raise _bad(section, key, value, f"is not one of {', '.join(choices)}", allowed)
        return str(value)

    return check


def _text(section: str, key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _bad(section, key, value, "is not a string", 'write it in quotes, e.g. "value"')
    if "\0" in value or "\n" in value:
        raise _bad(section, key, value, "holds a control character", "write it on one line")
    return value


def valid_path(section: str, key: str, value: Any) -> Path:
    """A path that must be set (relative paths are relative to the home)."""
    text = _text(section, key, value)
    if not text.strip():
        raise _bad(section, key, value, "is empty", "give a file or folder path")
    return Path(text)


def valid_optional_path(section: str, key: str, value: Any) -> Path | None:
    """A path, or "" for none."""
    text = _text(section, key, value)
    return Path(text) if text else None


def valid_paths(section: str, key: str, value: Any) -> tuple[Path, ...]:
    """A list of file paths, e.g. ["keys/signing-root.pem"]; [] for none."""
    hint = 'write a list of file paths, e.g. ["keys/signing-root.pem"]'
    if not isinstance(value, list):
        raise _bad(section, key, value, "is not a list", hint)
    for item in value:
        if not isinstance(item, str) or not item.strip() or "\0" in item or "\n" in item:
            raise _bad(section, key, value, f"holds {item!r}, not a file path", hint)
    return tuple(Path(item) for item in value)


def valid_tsa_url(section: str, key: str, value: Any) -> str:
    """An http(s):// timestamp authority (RFC 3161), or "" for none."""
    text = _text(section, key, value).strip()
    if text and urlparse(text).scheme not in ("http", "https"):
        raise _bad(section, key, value, "is not an http(s):// URL", 'e.g. "http://tsa.example/tsr"')
    return text


def valid_optional_text(section: str, key: str, value: Any) -> str:
    """Free text such as a device or port name; "" means not set."""
    return _text(section, key, value).strip()


def valid_device_port(section: str, key: str, value: Any) -> str:
    """A serial device path such as /dev/ttyUSB0, or "" for none."""
    text = _text(section, key, value).strip()
    if text and not text.startswith("/dev/"):
        raise _bad(section, key, value, "is not a device path", 'use e.g. /dev/ttyUSB0, or ""')
    return text


def valid_marker(section: str, key: str, value: Any) -> str:
    """Barcode text such as PATCHT: printable, no spaces, 1 to 64 characters."""
    text = _text(section, key, value)
    if not re.fullmatch(r"[!-~]{1,64}", text):
        raise _bad(section, key, value, "is not barcode text", "use 1-64 printable characters")
    return text


def valid_type_codes(section: str, key: str, value: Any) -> tuple[str, ...]:
    """A list of document type codes, e.g. ["KQ.G15.000031"]."""
    hint = 'write a list of type codes, e.g. ["KQ.G15.000031"]'
    if not isinstance(value, list):
        raise _bad(section, key, value, "is not a list", hint)
    for item in value:
        if not isinstance(item, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", item):
            raise _bad(section, key, value, f"holds {item!r}, not a type code", hint)
    return tuple(value)


def valid_broker_url(section: str, key: str, value: Any) -> str:
    text = _text(section, key, value)
    try:
        parsed = urlparse(text)
        port_ok = parsed.port is None or 0 < parsed.port < 65536
    except ValueError:
        port_ok = False
    if parsed.scheme not in ("mqtt", "mqtts") or not parsed.hostname or not port_ok:
        raise _bad(
            section, key, value, "is not an MQTT URL", "write mqtt://host:port or mqtts://host:port"
        )
    return text


def valid_enroll_url(section: str, key: str, value: Any) -> str:
    """The broker's enrolment listener: "" (the broker's TLS port + 1) or an mqtts:// URL."""
    text = _text(section, key, value)
    if text and urlparse(valid_broker_url(section, key, text)).scheme != "mqtts":
        raise _bad(section, key, value, "is not TLS", 'write mqtts://host:port, or "" for port + 1')
    return text


def valid_listen(section: str, key: str, value: Any) -> str:
    """``host:port`` for a web page ("" turns it off); the port from 1 to 65535."""
    text = _text(section, key, value)
    if not text:
        return text
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise _bad(section, key, value, "is not host:port", 'write e.g. "0.0.0.0:8080", or ""')
    return text


def listen_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def valid_id(section: str, key: str, value: Any) -> str:
    """The device id: the broker username and topic id."""
    return valid_device_id(_text(section, key, value))


def valid_index(section: str, key: str, value: Any) -> str:
    """The warehouse index: "sqlite" (archive/index.db) or a PostgreSQL URL. The value
    is named without its password when it is refused."""
    if not isinstance(value, str):
        return _text(section, key, value)  # raises: not a string
    try:
        port = urlparse(value).port  # None when absent
    except ValueError:  # not a number from 0 to 65535
        port = 0
    url_ok = value.startswith(POSTGRES_SCHEMES) and port != 0 and value.isprintable()
    if value == "sqlite" or url_ok:
        return value
    raise _bad(
        section,
        key,
        redacted_dsn(value),
        'is not "sqlite" or a postgresql:// URL',
        'write "sqlite" or postgresql://user:password@host:port/database',
    )
