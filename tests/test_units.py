"""The services run hardened: each unit's systemd exposure is at most 2.0."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from agent.config import DEFAULT_HOME, ReleaseConfig
from agent.release_install import REQUEST

SYSTEMD = Path(__file__).resolve().parent.parent / "systemd"
# the device's services run the current release through the A/B launcher
DEVICE = [SYSTEMD / f"sohoa-{name}.service" for name in ("agent", "sync")]
# the province's run sohoa from the installed venv
PROVINCE = [SYSTEMD / f"sohoa-{name}.service" for name in ("warehouse", "fleet")]
SERVICES = [*DEVICE, *PROVINCE]
# the oneshot that sohoa-broker-reload.path starts: `systemctl reload-or-restart mosquitto`
RELOAD = SYSTEMD / "sohoa-broker-reload.service"
# the oneshot that sohoa-release-switch.path starts (root): `sohoa release apply`
SWITCH = SYSTEMD / "sohoa-release-switch.service"
LAUNCHER = "/opt/sohoa/bin/sohoa-launch"
MAX_EXPOSURE = 2.0


@pytest.mark.parametrize("unit", [*SERVICES, RELOAD, SWITCH], ids=lambda p: p.name)
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
    assert sorted(SYSTEMD.glob("*.service")) == sorted([*SERVICES, RELOAD, SWITCH])
    assert sorted(p.name for p in SYSTEMD.glob("*.path")) == [
        "sohoa-broker-reload.path",
        "sohoa-release-switch.path",
    ]


@pytest.mark.parametrize("unit", PROVINCE, ids=lambda p: p.name)
def test_province_unit_runs_sohoa_from_the_installed_venv(unit: Path) -> None:
    text = unit.read_text()
    assert re.search(r"^ExecStart=/opt/sohoa/venv/bin/sohoa \w+", text, re.M)
    assert "Documentation=file://" not in text


@pytest.mark.parametrize("unit", DEVICE, ids=lambda p: p.name)
def test_device_unit_runs_the_current_release_and_settles_a_trial_first_as_root(
    unit: Path,
) -> None:
    text = unit.read_text()
    assert re.findall(r"^ExecStart=(\S+) \w+$", text, re.M) == [LAUNCHER]
    assert re.findall(r"^ExecStartPre=.*", text, re.M) == [f"ExecStartPre=+{LAUNCHER} --check"]
    # the launcher writes nothing when it runs the release: the prefix stays read-only
    assert "/opt/sohoa" not in "".join(re.findall(r"^ReadWritePaths=.*", text, re.M))


def test_release_switch_watches_what_the_code_writes_and_systemd_accepts_it(
    tmp_path: Path,
) -> None:
    path = SYSTEMD / "sohoa-release-switch.path"
    watched = re.findall(r"^PathExists=(.*)", path.read_text(), re.M)
    assert watched == [
        str(DEFAULT_HOME / "release" / REQUEST),
        str(ReleaseConfig().prefix / "pending"),
    ]
    assert re.findall(r"^ExecStart=(.*)", SWITCH.read_text(), re.M) == [
        f"{LAUNCHER} release apply --release-pub /etc/sohoa/release.pub"
    ]
    # systemd-analyze verify wants the executables there: the launcher is a stand-in
    launcher = tmp_path / "sohoa-launch"
    launcher.write_text("#!/bin/sh\n")
    launcher.chmod(0o755)
    units = []
    for unit in (path, SWITCH, *DEVICE):
        copy = tmp_path / unit.name
        copy.write_text(unit.read_text().replace(LAUNCHER, str(launcher)))
        units.append(str(copy))
    out = subprocess.run(
        ["systemd-analyze", "verify", *units], capture_output=True, text=True, check=False
    )
    assert (out.returncode, out.stdout + out.stderr) == (0, "")


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
