"""The services run hardened: each unit's systemd exposure is at most 2.0."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

SYSTEMD = Path(__file__).resolve().parent.parent / "systemd"
# the long-running services, each running sohoa from the installed venv
SERVICES = [SYSTEMD / f"sohoa-{name}.service" for name in ("agent", "sync", "warehouse", "fleet")]
# the oneshot that sohoa-broker-reload.path starts: `systemctl reload-or-restart mosquitto`
RELOAD = SYSTEMD / "sohoa-broker-reload.service"
MAX_EXPOSURE = 2.0


@pytest.mark.parametrize("unit", [*SERVICES, RELOAD], ids=lambda p: p.name)
def test_unit_exposure_is_at_most_2(unit: Path) -> None:
    out = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out.stdout + out.stderr)
    assert found, out.stdout + out.stderr
    assert float(found.group(1)) <= MAX_EXPOSURE


def test_every_unit_is_checked() -> None:
    assert sorted(SYSTEMD.glob("*.service")) == sorted([*SERVICES, RELOAD])
    assert [p.name for p in SYSTEMD.glob("*.path")] == ["sohoa-broker-reload.path"]


@pytest.mark.parametrize("unit", SERVICES, ids=lambda p: p.name)
def test_unit_runs_sohoa_from_the_installed_venv(unit: Path) -> None:
    text = unit.read_text()
    assert re.search(r"^ExecStart=/opt/sohoa/venv/bin/sohoa \w+", text, re.M)
    assert "Documentation=file://" not in text


def test_broker_reload_only_reloads_mosquitto_and_systemd_accepts_it() -> None:
    assert re.findall(r"^ExecStart=.*", RELOAD.read_text(), re.M) == [
        "ExecStart=/usr/bin/systemctl reload-or-restart mosquitto.service"
    ]
    path = SYSTEMD / "sohoa-broker-reload.path"
    out = subprocess.run(
        ["systemd-analyze", "verify", str(path), str(RELOAD)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (out.returncode, out.stdout + out.stderr) == (0, "")


def test_install_script_is_shellcheck_clean() -> None:
    script = Path(__file__).resolve().parent.parent / "install.sh"
    out = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True, check=False)
    assert (out.returncode, out.stdout) == (0, "")
