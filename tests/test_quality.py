"""The house rules that keep the code base honest: lint, types, shell, config docs."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import fields
from pathlib import Path

import pytest

from agent.config import Config

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)


def test_ruff_finds_nothing() -> None:
    proc = run(str(BIN / "ruff"), "check", "agent", "device", "sync", "tests")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_strict_is_clean() -> None:
    proc = run(str(BIN / "mypy"))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_install_script_is_shellcheck_clean() -> None:
    if shutil.which("shellcheck") is None:
        pytest.fail("shellcheck is not installed; run ./install.sh --dev")
    proc = run("shellcheck", "install.sh", ".ci/run")
    assert proc.returncode == 0, proc.stdout


def test_every_configuration_key_is_documented() -> None:
    documented = tomllib.loads((REPO / "config" / "sohoa.toml").read_text())
    text = (REPO / "config" / "sohoa.toml").read_text()
    defaults = Config()
    assert "home" in documented
    for section in ("device", "broker", "warehouse", "capture", "spool", "sync"):
        keys = {f.name for f in fields(getattr(defaults, section))}
        assert set(documented[section]) == keys, section
        for key in keys:
            # every key carries a comment line right above it
            assert re.search(rf"#[^\n]*\n{key} = ", text), f"[{section}] {key} has no comment"


def test_documented_configuration_loads() -> None:
    from agent.config import load_config

    cfg = load_config(str(REPO / "config" / "sohoa.toml"), {})
    assert cfg.device.id == "H56-01234-a1" and cfg.capture.profile == "text"
