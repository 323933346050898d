"""install.sh on a real machine, as a technician sees it: a device installed twice, its
id changed, bad arguments, a warehouse whose mosquitto (started the Debian way) admits
the warehouse's certificate and no anonymous client. It runs as root with the real paths
(CI machines are fresh and disposable); whatever it would replace is moved aside and put
back. Each scenario starts from a wiped /etc/sohoa and /var/lib/sohoa (the venv stays).
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import shutil
import stat
import subprocess
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from sync.localbroker import free_port
from tests.support.mqtt import port_open
from tests.support.release import GOOD, Bundles
from tests.support.wait import became_true, wait_until

# six runs of install.sh, each building and installing the wheel: about 100 s
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
CONFIG = Path("/etc/sohoa/sohoa.toml")
HOME = Path("/var/lib/sohoa")
KEYS = HOME / "keys"
PREFIX = Path("/opt/sohoa")
# a device runs releases/<version> through the current link; a warehouse the venv
RELEASE = PREFIX / "releases" / VERSION
VENV = PREFIX / "venv"
BROKER_DIR = Path("/etc/sohoa/broker")
CONF_D = Path("/etc/mosquitto/conf.d/sohoa.conf")
SYSTEMD = Path("/etc/systemd/system")
RELOAD_UNITS = ("sohoa-broker-reload.path", "sohoa-broker-reload.service")
# everything install.sh writes outside the checkout (the sohoa user and group stay)
FILES = (Path("/etc/sohoa"), HOME, Path("/opt/sohoa"), Path("/usr/local/bin/sohoa"), CONF_D)
TOUCHED = (*FILES, *(SYSTEMD / unit.name for unit in (REPO / "systemd").iterdir()))
BACKUP = ".before-test_install"
DEVICE = ("--device", "--id", "T1", "--broker", "mqtts://broker.example:8883")
ERROR_LINE = re.compile(r"^error: .+ — .+$")


@dataclass(frozen=True)
class Run:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def error_lines(self) -> list[str]:
        text = self.stdout + self.stderr
        return [line for line in text.splitlines() if line.startswith("error")]

    def explain(self) -> str:
        return f"install.sh {' '.join(self.args)} -> {self.returncode}\n{self.stdout}{self.stderr}"


def install(*args: str) -> Run:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOHOA_")}
    cmd = [str(REPO / "install.sh"), *args]
    proc = subprocess.run(cmd, cwd="/", env=env, capture_output=True, text=True, timeout=600)
    # pip on some machines warns about its configured file:// indexes; not ours
    stderr = "".join(
        line for line in proc.stderr.splitlines(keepends=True) if "WARNING: Location" not in line
    )
    return Run(args, proc.returncode, proc.stdout, stderr)


def here(*cmd: str) -> subprocess.CompletedProcess[str]:  # from /, far from the checkout
    return subprocess.run(cmd, cwd="/", capture_output=True, text=True, timeout=60)


def present(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif present(path):
        path.unlink()


def owner(path: Path) -> tuple[str, str, int]:
    st = path.stat()
    user, group = pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name
    return user, group, stat.S_IMODE(st.st_mode)


@pytest.fixture(scope="module")
def machine() -> Iterator[None]:
    """This machine with nothing of sohoa installed; put back as it was afterwards."""
    if os.geteuid() != 0:
        pytest.skip("install.sh provisions this machine: run the tests as root (CI does)")
    if Path("/run/systemd/system").exists():
        pytest.skip(
            "systemd runs here: install.sh would start the services and restart mosquitto;"
            " this test runs where systemd is not PID 1 (the CI container)"
        )
    stale = [str(p) + BACKUP for p in TOUCHED if present(Path(str(p) + BACKUP))]
    if stale:
        pytest.fail(f"an interrupted run left {', '.join(stale)}: move them back by hand")
    moved = [p for p in TOUCHED if present(p)]
    for path in moved:
        path.rename(str(path) + BACKUP)
    try:
        yield
    finally:
        for path in TOUCHED:
            remove(path)
        for path in moved:
            Path(str(path) + BACKUP).rename(path)


def fresh_site() -> None:
    """A machine that was never provisioned, except for the venv (saves a minute)."""
    for path in (Path("/etc/sohoa"), HOME, CONF_D):
        remove(path)


@dataclass(frozen=True)
class DeviceFiles:
    config: bytes
    key: bytes
    key_owner: tuple[str, str, int]


def device_files() -> DeviceFiles:
    return DeviceFiles(
        CONFIG.read_bytes(), (KEYS / "device.key").read_bytes(), owner(KEYS / "device.key")
    )


@dataclass(frozen=True)
class Twice:
    first: Run
    second: Run
    after_first: DeviceFiles
    after_second: DeviceFiles


@pytest.fixture(scope="module")
def device_twice(machine: None) -> Twice:
    fresh_site()
    first = install(*DEVICE)
    assert first.returncode == 0, first.explain()
    after_first = device_files()
    second = install(*DEVICE)
    return Twice(first, second, after_first, device_files())


def test_device_installs_twice_exit_0_the_second_printing_no_error(device_twice: Twice) -> None:
    assert device_twice.first.returncode == 0, device_twice.first.explain()
    assert device_twice.second.returncode == 0, device_twice.second.explain()
    assert device_twice.second.error_lines() == []
    assert "Traceback" not in device_twice.second.stderr


def test_second_run_leaves_config_and_device_key_as_they_were(device_twice: Twice) -> None:
    assert device_twice.after_second == device_twice.after_first
    assert device_twice.after_second.key_owner == ("sohoa", "sohoa", 0o600)
    assert tomllib.loads(device_twice.after_second.config.decode())["device"]["id"] == "T1"


def test_installed_sohoa_runs_from_outside_the_checkout_with_its_version_recorded(
    device_twice: Twice,
) -> None:
    assert Path("/opt/sohoa/VERSION").read_text() == f"sohoa {VERSION}\n"
    out = here("/usr/local/bin/sohoa", "--version")
    assert (out.returncode, out.stdout.strip()) == (0, f"sohoa {VERSION}")


def test_device_runs_its_release_through_the_launcher_the_units_name(
    device_twice: Twice,
) -> None:
    assert (PREFIX / "current").readlink() == Path("releases") / VERSION
    assert not present(VENV)
    assert Path("/usr/local/bin/sohoa").readlink() == PREFIX / "current" / "bin" / "sohoa"
    out = here(str(PREFIX / "bin" / "sohoa-launch"), "--version")
    assert (out.returncode, out.stdout.strip()) == (0, f"sohoa {VERSION}")
    assert owner(PREFIX / "current" / "bin" / "sohoa")[0] == "root"
    for unit in ("sohoa-sync.service", "sohoa-release-switch.path", "sohoa-release-switch.service"):
        assert (SYSTEMD / unit).read_bytes() == (REPO / "systemd" / unit).read_bytes(), unit
    status = here("/usr/local/bin/sohoa", "release", "status", "--json")
    assert json.loads(status.stdout)["current"] == VERSION, status.stderr


def test_installed_release_is_a_real_install_not_a_link_to_the_checkout(
    device_twice: Twice,
) -> None:
    site = next(RELEASE.glob("lib/python3*/site-packages"))
    assert [p.name for p in site.glob("*.pth") if str(REPO) in p.read_text()] == []
    assert list(site.glob("__editable__*")) == []
    direct_url = json.loads(next(site.glob("sohoa-*.dist-info/direct_url.json")).read_text())
    assert not direct_url.get("dir_info", {}).get("editable")
    assert str(REPO) not in direct_url["url"]
    where = here(
        str(RELEASE / "bin/python"),
        "-c",
        "import agent, sync; print(agent.__file__, sync.__file__)",
    )
    assert where.returncode == 0, where.stderr
    assert all(p.startswith(f"{site}/") for p in where.stdout.split()), where.stdout


@dataclass(frozen=True)
class Renamed:
    run: Run
    before: dict[str, Any]
    after: dict[str, Any]
    hot_folder: tuple[str, str, int]


@pytest.fixture(scope="module")
def device_renamed(device_twice: Twice) -> Renamed:
    """A hand edit ([sync] health_interval_s, [capture] hot_folder), then --id T2."""
    text = CONFIG.read_text()
    edited = text.replace("health_interval_s = 60", "health_interval_s = 17")
    edited = edited.replace('hot_folder = ""', 'hot_folder = "hot"')
    assert edited.count("= 17") == 1 and 'hot_folder = "hot"' in edited
    CONFIG.write_text(edited)
    run = install("--device", "--id", "T2", "--broker", "mqtts://broker.example:8883")
    assert run.returncode == 0, run.explain()
    after = tomllib.loads(CONFIG.read_text())
    return Renamed(run, tomllib.loads(edited), after, owner(HOME / "hot"))


def test_new_id_is_written_with_a_line_to_enrol_again_and_the_rest_kept(
    device_renamed: Renamed,
) -> None:
    assert device_renamed.after["device"]["id"] == "T2"
    expected = {**device_renamed.before, "device": {**device_renamed.before["device"], "id": "T2"}}
    assert device_renamed.after == expected
    told = [line for line in device_renamed.run.stdout.splitlines() if "T2" in line]
    assert any("T1" in line and "enrol" in line for line in told), device_renamed.run.stdout


def test_hand_edit_survives_a_rerun(device_renamed: Renamed) -> None:
    assert device_renamed.after["sync"]["health_interval_s"] == 17
    assert device_renamed.after["capture"]["hot_folder"] == "hot"


def test_hot_folder_is_created_for_the_service_user_only(device_renamed: Renamed) -> None:
    assert device_renamed.hot_folder == ("sohoa", "sohoa", 0o700)


@pytest.mark.parametrize(
    "args",
    [
        ("--device", "--id", "T3", "--warehouse-pub", "/nonexistent"),
        ("--device", "--id", "no/slash"),
        ("--device", "--broker", "http://broker.example"),
        ("--warehouse", "--index"),
        ("--device", "--index", "postgresql://db/x"),
        ("--bogus",),
        (),
        ("--device", "--bundle", "/nonexistent.bundle", "--release-pub", "/etc/hostname"),
        ("--device", "--bundle", "/etc/hostname"),
        ("--warehouse", "--release-pub", "/etc/hostname"),
    ],
    ids=[
        "missing-pub",
        "bad-id",
        "bad-broker",
        "no-value",
        "index-on-device",
        "unknown",
        "none",
        "missing-bundle",
        "bundle-without-release-pub",
        "release-pub-on-warehouse",
    ],
)
def test_bad_argument_ends_with_one_error_line_and_changes_nothing(
    machine: None, args: tuple[str, ...]
) -> None:
    before = CONFIG.read_bytes() if CONFIG.exists() else None
    run = install(*args)
    assert run.returncode != 0
    assert len(run.error_lines()) == 1, run.explain()
    assert ERROR_LINE.match(run.stderr.splitlines()[-1]), run.explain()
    assert (CONFIG.read_bytes() if CONFIG.exists() else None) == before


@dataclass(frozen=True)
class Offline:
    refused: Run
    refused_current: Path
    refused_unpacked: bool
    installed: Run
    rerun: Run


@pytest.fixture(scope="module")
def device_offline(
    device_renamed: Renamed, release_bundles: Bundles, tmp_path_factory: pytest.TempPathFactory
) -> Offline:
    """A technician's USB stick: a tampered bundle, then the good one, then a re-run from
    the (older) checkout."""
    stick = tmp_path_factory.mktemp("stick")
    tampered = stick / f"sohoa-{GOOD}.bundle"
    data = bytearray(release_bundles.of(GOOD).read_bytes())
    at = data.rindex(f"wheels/sohoa-{GOOD}-py3-none-any.whl".encode()) + 512 + 1000
    data[at] ^= 0xFF
    tampered.write_bytes(bytes(data))
    pub = ("--release-pub", str(release_bundles.pub))
    refused = install(*DEVICE, "--bundle", str(tampered), *pub)
    current = (PREFIX / "current").readlink()
    unpacked = present(PREFIX / "releases" / GOOD)
    installed = install(*DEVICE, "--bundle", str(release_bundles.of(GOOD)), *pub)
    return Offline(refused, current, unpacked, installed, install(*DEVICE))


def test_offline_bundle_is_checked_before_anything_from_it_runs(device_offline: Offline) -> None:
    run = device_offline.refused
    assert run.returncode != 0
    assert run.error_lines() == [
        f'error: step "bundle" failed — tampered wheel: wheels/sohoa-{GOOD}-py3-none-any.whl'
        " does not match its hash: get the bundle again from the province; never install an"
        " unsigned release"
    ], run.explain()
    assert device_offline.refused_current == Path("releases") / VERSION
    assert not device_offline.refused_unpacked


def test_offline_bundle_installs_its_release_and_pins_root_s_copy_of_the_key(
    device_offline: Offline, release_bundles: Bundles
) -> None:
    assert device_offline.installed.returncode == 0, device_offline.installed.explain()
    assert (PREFIX / "current").readlink() == Path("releases") / GOOD
    out = here("/usr/local/bin/sohoa", "--version")
    assert (out.returncode, out.stdout.strip()) == (0, f"sohoa {GOOD}")
    assert owner(Path("/etc/sohoa/release.pub")) == ("root", "root", 0o644)
    assert Path("/etc/sohoa/release.pub").read_bytes() == release_bundles.pub.read_bytes()
    assert owner(KEYS / "release.pub")[0] == "sohoa"


def test_rerun_from_an_older_checkout_keeps_the_newer_release(device_offline: Offline) -> None:
    run = device_offline.rerun
    assert run.returncode == 0, run.explain()
    assert f"keeping release {GOOD} (newer than {VERSION})" in run.stdout
    assert (PREFIX / "current").readlink() == Path("releases") / GOOD


def two_free_ports() -> int:
    """A port P with P + 1 free as well (the enrolment listener)."""
    ports = (free_port() for _ in range(50))
    return next(p for p in ports if p < 65535 and not port_open(p) and not port_open(p + 1))


@dataclass(frozen=True)
class Warehouse:
    port: int
    first: Run
    second: Run
    ca: tuple[bytes, bytes]  # keys/ca.crt after each run
    cert: tuple[bytes, bytes]  # keys/wh-1.crt after each run
    tls: Path  # copies of ca.crt, wh-1.crt, wh-1.key for the client


@pytest.fixture(scope="module")
def warehouse(machine: None, tmp_path_factory: pytest.TempPathFactory) -> Warehouse:
    fresh_site()
    port = two_free_ports()
    args = ("--warehouse", "--id", "wh-1", "--broker", f"mqtts://127.0.0.1:{port}")
    first = install(*args)
    assert first.returncode == 0, first.explain()
    ca, cert = (KEYS / "ca.crt").read_bytes(), (KEYS / "wh-1.crt").read_bytes()
    second = install(*args)
    tls = tmp_path_factory.mktemp("tls")
    for name in ("ca.crt", "wh-1.crt", "wh-1.key"):
        shutil.copy(KEYS / name, tls / name)
    after = (KEYS / "ca.crt").read_bytes(), (KEYS / "wh-1.crt").read_bytes()
    return Warehouse(port, first, second, (ca, after[0]), (cert, after[1]), tls)


def test_warehouse_rerun_keeps_its_ca_and_certificate(warehouse: Warehouse) -> None:
    assert warehouse.second.returncode == 0, warehouse.second.explain()
    assert warehouse.second.error_lines() == []
    assert warehouse.ca[0] == warehouse.ca[1]
    assert warehouse.cert[0] == warehouse.cert[1]


def test_broker_configuration_is_installed_for_debians_mosquitto(warehouse: Warehouse) -> None:
    assert owner(BROKER_DIR) == ("sohoa", "mosquitto", 0o2750)
    assert owner(CONF_D) == ("root", "root", 0o644)
    conf = CONF_D.read_text()
    assert conf == (BROKER_DIR / "mosquitto.conf").read_text()
    assert f"listener {warehouse.port}\n" in conf
    # Debian's main file sets these; a second one would be refused or fight it
    for option in ("user", "persistence", "persistence_location", "log_dest", "log_type"):
        assert not re.search(rf"^{option} ", conf, re.M), option
    restart = [line for line in warehouse.first.stdout.splitlines() if "restart mosquitto" in line]
    assert len(restart) == 1, warehouse.first.stdout


def test_warehouse_units_include_the_broker_reload_on_enrolment(warehouse: Warehouse) -> None:
    for unit in ("sohoa-warehouse.service", *RELOAD_UNITS):
        assert (SYSTEMD / unit).read_bytes() == (REPO / "systemd" / unit).read_bytes(), unit


@pytest.fixture(scope="module")
def debian_mosquitto(
    warehouse: Warehouse, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[int]:
    """mosquitto as Debian's mosquitto.service starts it: as root, dropping to mosquitto."""
    pid_file = Path("/run/mosquitto/mosquitto.pid")
    if pid_file.exists() and Path(f"/proc/{pid_file.read_text().strip()}").exists():
        pytest.skip("Debian's mosquitto already runs here (its pid file and persistence)")
    for folder in ("/run/mosquitto", "/var/log/mosquitto"):  # its ExecStartPre lines
        Path(folder).mkdir(mode=0o740, exist_ok=True)
        shutil.chown(folder, "mosquitto")
    log = tmp_path_factory.mktemp("mosquitto") / "out.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["mosquitto", "-c", "/etc/mosquitto/mosquitto.conf"], stdout=out, stderr=out, cwd="/"
        )
    try:
        up = became_true(lambda: proc.poll() is not None or port_open(warehouse.port), 15)
        assert up and proc.poll() is None, f"mosquitto did not start:\n{log.read_text()}"
        yield warehouse.port
    finally:
        proc.terminate()
        if not became_true(lambda: proc.poll() is not None, 10):
            proc.kill()


def mqtt_connect(port: int, tls: Path, identity: str | None) -> str:
    """'connected', or how the broker refused the client."""
    outcome: list[str] = []

    def on_connect(_c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        outcome.append("refused: " + str(reason) if reason.is_failure else "connected")

    def on_disconnect(_c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        outcome.append(f"disconnected: {reason}")

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-install-{identity}")
    cert = str(tls / f"{identity}.crt") if identity else None
    key = str(tls / f"{identity}.key") if identity else None
    client.tls_set(ca_certs=str(tls / "ca.crt"), certfile=cert, keyfile=key)
    client.on_connect, client.on_disconnect = on_connect, on_disconnect
    try:
        client.connect("127.0.0.1", port, keepalive=10)
    except OSError as exc:  # ssl.SSLError too: the handshake refused
        return f"refused: {exc}"
    client.loop_start()
    try:
        became_true(lambda: outcome, 10)
    finally:
        client.disconnect()
        client.loop_stop()
    return outcome[0] if outcome else "no answer in 10 s"


@pytest.mark.parametrize(
    ("identity", "admitted"), [("wh-1", True), (None, False)], ids=["wh-1", "anonymous"]
)
def test_mosquitto_admits_the_warehouse_certificate_and_no_anonymous_client(
    debian_mosquitto: int, warehouse: Warehouse, identity: str | None, admitted: bool
) -> None:
    outcome = mqtt_connect(debian_mosquitto, warehouse.tls, identity)
    expected = ("connected",) if admitted else ("refused", "disconnected")
    assert outcome.startswith(expected), outcome


def test_enrolment_listener_is_on_the_next_port(debian_mosquitto: int) -> None:
    wait_until(lambda: port_open(debian_mosquitto + 1), 5, "the enrolment listener")


def test_index_url_is_written_verbatim_and_the_config_closed(warehouse: Warehouse) -> None:
    # '|', '&' and '\' are special to sed, '\' to TOML
    url = r"postgresql://sohoa:p|a&s\s%2Fw@db.example:5432/sohoa?sslmode=require"
    run = install("--warehouse", "--index", url)
    assert run.returncode == 0, run.explain()
    assert tomllib.loads(CONFIG.read_text())["warehouse"]["index"] == url
    assert owner(CONFIG) == ("root", "sohoa", 0o640)
    assert url not in run.stdout + run.stderr  # the password is never printed
    assert here(str(VENV / "bin/python"), "-c", "import psycopg").returncode == 0
