"""The services run hardened: each unit's systemd exposure is at most 2.0."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

UNITS = sorted((Path(__file__).resolve().parent.parent / "systemd").glob("*.service"))
MAX_EXPOSURE = 2.0


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
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


def test_the_three_units_are_checked() -> None:
    assert [u.name for u in UNITS] == [
        "sohoa-agent.service",
        "sohoa-sync.service",
        "sohoa-warehouse.service",
    ]


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_unit_runs_sohoa_from_the_installed_venv(unit: Path) -> None:
    text = unit.read_text()
    assert re.search(r"^ExecStart=/opt/sohoa/venv/bin/sohoa \w+", text, re.M)
    assert "Documentation=file://" not in text


def test_install_script_is_shellcheck_clean() -> None:
    script = Path(__file__).resolve().parent.parent / "install.sh"
    out = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True, check=False)
    assert (out.returncode, out.stdout) == (0, "")
