"""Every configuration value is checked at load: one line naming the key, the value
and what is allowed, before any work starts."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent.config import _SECTIONS, FIELDS, parse_config
from sync.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent

# one bad value per key: (section, key, value, the exact message, a piece of the hint)
BAD = [
    ("device", "id", "has space", "[device] id = 'has space' is not a valid device id", "letters"),
    ("device", "key", "", "[device] key = '' is empty", "path"),
    ("broker", "url", "http://x", "[broker] url = 'http://x' is not an MQTT URL", "mqtt://"),
    ("broker", "ca", 5, "[broker] ca = 5 is not a string", "quotes"),
    ("broker", "cert", ["a"], "[broker] cert = ['a'] is not a string", "quotes"),
    ("broker", "key", True, "[broker] key = True is not a string", "quotes"),
    ("broker", "keepalive_s", 2, "[broker] keepalive_s = 2 is out of range", "5 to 3600"),
    ("broker", "session_expiry_s", 0, "[broker] session_expiry_s = 0 is out of range", "60 to"),
    (
        "broker",
        "enroll_url",
        "mqtt://b:8884",
        "[broker] enroll_url = 'mqtt://b:8884' is not TLS",
        "mqtts://",
    ),
    ("warehouse", "public_key", "", "[warehouse] public_key = '' is empty", "path"),
    ("warehouse", "private_key", 1, "[warehouse] private_key = 1 is not a string", "quotes"),
    ("warehouse", "devices", " ", "[warehouse] devices = ' ' is empty", "path"),
    ("warehouse", "archive", "", "[warehouse] archive = '' is empty", "path"),
    (
        "warehouse",
        "index",
        "mysql://u:s3cret@db/x",
        "[warehouse] index = 'mysql://db/x' is not \"sqlite\" or a postgresql:// URL",
        "postgresql://user:password@host",
    ),
    ("warehouse", "max_segments", 0, "[warehouse] max_segments = 0 is out of range", "1 to"),
    (
        "warehouse",
        "max_envelope_mb",
        0,
        "[warehouse] max_envelope_mb = 0 is out of range",
        "1 to 65536",
    ),
    (
        "warehouse",
        "staging_device_mb",
        0,
        "[warehouse] staging_device_mb = 0 is out of range",
        "1 to",
    ),
    (
        "warehouse",
        "staging_total_mb",
        -1,
        "[warehouse] staging_total_mb = -1 is out of range",
        "1 to",
    ),
    ("warehouse", "staging_ttl_h", 0, "[warehouse] staging_ttl_h = 0 is out of range", "hours"),
    ("warehouse", "ocr", "yes", "[warehouse] ocr = 'yes' is not true or false", "true or false"),
    ("warehouse", "ocr_workers", 0, "[warehouse] ocr_workers = 0 is out of range", "1 to 64"),
    ("warehouse", "ocr_threads", 17, "[warehouse] ocr_threads = 17 is out of range", "1 to 16"),
    (
        "capture",
        "profile",
        "sepia",
        "[capture] profile = 'sepia' is not one of text, color, lossless",
        "text",
    ),
    (
        "capture",
        "separator_text",
        "PATCH T",
        "[capture] separator_text = 'PATCH T' is not barcode text",
        "printable",
    ),
    (
        "capture",
        "drop_blank",
        "yes",
        "[capture] drop_blank = 'yes' is not true or false",
        "true or false",
    ),
    ("capture", "min_dpi", 150, "[capture] min_dpi = 150 is out of range", "at least 200"),
    ("capture", "deskew", 1, "[capture] deskew = 1 is not true or false", "true or false"),
    (
        "capture",
        "blank_threshold",
        1.5,
        "[capture] blank_threshold = 1.5 is out of range",
        "0 to 1",
    ),
    (
        "capture",
        "scanner_source",
        "feeder",
        "[capture] scanner_source = 'feeder' is not one of flatbed, adf, adf-duplex",
        "adf",
    ),
    (
        "capture",
        "scanner_mode",
        "bw",
        "[capture] scanner_mode = 'bw' is not one of gray, color, lineart",
        "gray",
    ),
    (
        "capture",
        "scanner_resolution",
        100,
        "[capture] scanner_resolution = 100 is out of range",
        "200 to 1200",
    ),
    ("capture", "scanner_device", 3, "[capture] scanner_device = 3 is not a string", "quotes"),
    (
        "capture",
        "hot_folder",
        "a\nb",
        "[capture] hot_folder = 'a\\nb' holds a control character",
        "one line",
    ),
    (
        "capture",
        "reader_port",
        "COM3",
        "[capture] reader_port = 'COM3' is not a device path",
        "/dev/ttyUSB0",
    ),
    (
        "capture",
        "permanent_types",
        "KQ.G15",
        "[capture] permanent_types = 'KQ.G15' is not a list",
        "list",
    ),
    (
        "capture",
        "keep_originals",
        "no",
        "[capture] keep_originals = 'no' is not true or false",
        "true or false",
    ),
    ("capture", "workers", 17, "[capture] workers = 17 is out of range", "0 = one per core"),
    ("spool", "segment_size", 512, "[spool] segment_size = 512 is out of range", "1024 to 4194304"),
    ("spool", "reserve_mb", -5, "[spool] reserve_mb = -5 is out of range", "0 to"),
    ("spool", "retention_days", -1, "[spool] retention_days = -1 is out of range", "0 to 3650"),
    ("sync", "bandwidth_kbps", -1, "[sync] bandwidth_kbps = -1 is out of range", "0 = automatic"),
    ("sync", "window", -3, "[sync] window = -3 is out of range", "1 to 4096"),
    ("sync", "health_interval_s", 0, "[sync] health_interval_s = 0 is out of range", "2 to 86400"),
    ("sync", "receipt_timeout_s", 0, "[sync] receipt_timeout_s = 0 is out of range", "more than 0"),
    (
        "sync",
        "modem_port",
        "ttyUSB2",
        "[sync] modem_port = 'ttyUSB2' is not a device path",
        "/dev/",
    ),
    ("ui", "listen", "8080", "[ui] listen = '8080' is not host:port", "0.0.0.0:8080"),
    ("ui", "keep_minutes", 0, "[ui] keep_minutes = 0 is out of range", "1 to 1440"),
    ("ui", "review", "yes", "[ui] review = 'yes' is not true or false", "true"),
    ("ui", "tls_cert", 1, "[ui] tls_cert = 1 is not a string", "quotes"),
    ("ui", "tls_key", [], "[ui] tls_key = [] is not a string", "quotes"),
    (
        "warehouse",
        "signing_roots",
        "keys/root.pem",
        "[warehouse] signing_roots = 'keys/root.pem' is not a list",
        "list of file paths",
    ),
    (
        "warehouse",
        "signing_crls",
        ["ok.crl", ""],
        "[warehouse] signing_crls = ['ok.crl', ''] holds '', not a file path",
        "list of file paths",
    ),
    (
        "warehouse",
        "tsa_url",
        "ftp://tsa",
        "[warehouse] tsa_url = 'ftp://tsa' is not an http(s):// URL",
        "http://",
    ),
    ("sign", "module", 3, "[sign] module = 3 is not a string", "quotes"),
    ("sign", "token", ["x"], "[sign] token = ['x'] is not a string", "quotes"),
    ("sign", "key", 1, "[sign] key = 1 is not a string", "quotes"),
    ("sign", "certificate", 1, "[sign] certificate = 1 is not a string", "quotes"),
    ("sign", "chain", "a\nb", "[sign] chain = 'a\\nb' holds a control character", "one line"),
    (
        "sign",
        "tsa_url",
        "tsa.example:318",
        "[sign] tsa_url = 'tsa.example:318' is not an http(s):// URL",
        "http://tsa.example/tsr",
    ),
    ("sign", "location", 7, "[sign] location = 7 is not a string", "quotes"),
    ("fleet", "listen", "x:y", "[fleet] listen = 'x:y' is not host:port", "e.g."),
    ("fleet", "register", 3, "[fleet] register = 3 is not a string", "quotes"),
    ("fleet", "cert", 3, "[fleet] cert = 3 is not a string", "quotes"),
    ("fleet", "key", 3, "[fleet] key = 3 is not a string", "quotes"),
    ("fleet", "offline_alert_s", 1, "[fleet] offline_alert_s = 1 is out of range", "10 to"),
    ("release", "prefix", 3, "[release] prefix = 3 is not a string", "quotes"),
    ("release", "public_key", 3, "[release] public_key = 3 is not a string", "quotes"),
    ("release", "key", 3, "[release] key = 3 is not a string", "quotes"),
    (
        "release",
        "health_deadline_s",
        1,
        "[release] health_deadline_s = 1 is out of range",
        "10 to",
    ),
    (
        "release",
        "max_rollback_fraction",
        1.5,
        "[release] max_rollback_fraction = 1.5 is out of range",
        "0",
    ),
]

# values at the edge of what is allowed, which small sites and the tests need
GOOD = [
    ("sync", "health_interval_s", 2),
    ("broker", "keepalive_s", 5),
    ("spool", "reserve_mb", 0),
    ("spool", "retention_days", 0),
    ("sync", "receipt_timeout_s", 2),
    ("sync", "window", 1),
    ("capture", "blank_threshold", 0),
    ("capture", "min_dpi", 200),
    ("capture", "permanent_types", ["KQ.G15.000031"]),
    ("sync", "modem_port", "/dev/ttyUSB2"),
    ("broker", "url", "mqtts://broker.lan:8883"),
    ("warehouse", "index", "postgresql://sohoa:pw@db.lan:5432/sohoa"),
    ("warehouse", "index", "postgres:///sohoa"),
    ("sign", "module", "/usr/lib/softhsm/libsofthsm2.so"),
    ("sign", "tsa_url", "http://tsa.ca.gov.vn"),
]


def test_every_key_of_every_section_has_a_validator() -> None:
    fields = {name: {f.name for f in dataclasses.fields(cls)} for name, cls in _SECTIONS.items()}
    assert {name: set(v) for name, v in FIELDS.items()} == fields


def test_the_bad_value_table_covers_every_key() -> None:
    assert {(s, k) for s, k, *_ in BAD} == {(s, k) for s in FIELDS for k in FIELDS[s]}


@pytest.mark.parametrize(("section", "key", "value", "message", "hint"), BAD)
def test_a_bad_value_is_named_in_one_line(
    section: str, key: str, value: Any, message: str, hint: str
) -> None:
    raw: dict[str, Any] = {section: {key: value}}
    if section == "broker" and key in ("ca", "cert", "key"):
        raw["broker"]["url"] = "mqtts://broker.lan:8883"
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, {}, None)

    assert (caught.value.message, "\n" in caught.value.line()) == (message, False)
    assert hint in caught.value.hint


@pytest.mark.parametrize(("section", "key", "value"), GOOD)
def test_edge_values_that_small_sites_need_are_accepted(section: str, key: str, value: Any) -> None:
    raw: dict[str, Any] = {section: {key: value}}
    if section == "broker" and key == "url":
        raw["broker"]["ca"] = "keys/ca.crt"
    cfg = parse_config(raw, {}, None)

    got = getattr(getattr(cfg, section), key)
    assert got == (tuple(value) if isinstance(value, list) else value)


@pytest.mark.parametrize(
    ("broker", "message"),
    [
        (
            {"url": "mqtts://b:8883"},
            "[broker] url = 'mqtts://b:8883' asks for TLS but [broker] ca is empty",
        ),
        (
            {"url": "mqtt://b", "ca": "ca.crt"},
            "[broker] url = 'mqtt://b' is plain MQTT but ca/cert/key are set",
        ),
        (
            {"url": "mqtts://b", "ca": "ca.crt", "cert": "d.crt"},
            "[broker] cert and key must be set together",
        ),
    ],
)
def test_broker_values_that_only_work_together(broker: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"broker": broker}, {}, None)
    assert caught.value.message == message


def test_empty_home_from_the_environment_is_named() -> None:
    with pytest.raises(ConfigError, match=r"^home = '' is empty$"):
        parse_config({"home": ""}, {}, None)


def test_the_command_line_stops_before_any_work_with_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "sohoa.toml"
    cfg.write_text("[sync]\nhealth_interval_s = 0\n")
    proc = subprocess.run(
        [sys.executable, "-m", "agent.cli", "--config", str(cfg), "status"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "SOHOA_HOME": str(tmp_path / "home")},
        timeout=60,
    )
    assert (proc.returncode, proc.stdout) == (4, "")
    assert proc.stderr == (
        "error: [sync] health_interval_s = 0 is out of range"
        " — use a whole number from 2 to 86400 seconds (default 60)\n"
    )
    assert not (tmp_path / "home").exists()


def test_signing_roots_and_crls_are_paths_resolved_against_the_home() -> None:
    raw = {"warehouse": {"signing_roots": ["keys/root.pem", "/etc/ssl/vn-root.pem"]}}
    cfg = parse_config(raw | {"home": "/var/lib/sohoa"}, {}, None)
    assert [cfg.path(p) for p in cfg.warehouse.signing_roots] == [
        Path("/var/lib/sohoa/keys/root.pem"),
        Path("/etc/ssl/vn-root.pem"),
    ]
    assert cfg.warehouse.signing_crls == () and cfg.sign.module == ""  # no signing by default
