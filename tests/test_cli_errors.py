"""Bad input gets one clear line naming the cause and the fix, never a traceback,
and the documented exit code."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.capture.samples import make_page
from tests.support.site import SOHOA, Site


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and " — " in lines[0], lines[0]
    return lines[0]


def test_scan_of_missing_folder(site: Site) -> None:
    proc = site.run("scan", "--from", "/nonexistent/pages")
    assert proc.returncode == 2
    assert "does not exist" in one_line(proc)


def test_corrupt_page_keeps_pages_before_it(site: Site, tmp_path: Path) -> None:
    pages = tmp_path / "pages"
    pages.mkdir()
    make_page(["TRANG MỘT"], seed=1).save(pages / "p0.png", dpi=(300, 300))
    (pages / "p1.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    proc = site.run("scan", "--from", str(pages), "--json")
    assert proc.returncode == 9  # batch interrupted, not lost
    assert '"pages_in": 1' in proc.stdout and "p1.png" in proc.stdout


def one_page(site: Site) -> Path:
    pages = site.device.home / "pages"
    pages.mkdir()
    make_page(["X"]).save(pages / "p.png", dpi=(300, 300))
    return pages


@pytest.mark.parametrize(
    ("break_keys", "needle"),
    [
        (lambda s: s.device.path(s.device.warehouse.public_key).unlink(), "warehouse.pub"),
        (lambda s: os.chmod(s.device.path(s.device.device.key), 0o644), "chmod 600"),
    ],
    ids=["missing warehouse key", "device key readable by others"],
)
def test_key_problems_are_named(
    site: Site, break_keys: Callable[[Site], None], needle: str
) -> None:
    break_keys(site)
    proc = site.run("scan", "--from", str(one_page(site)))
    assert proc.returncode == 8
    assert needle in one_line(proc)


def test_sync_with_broker_down_keeps_everything_and_says_why(site: Site) -> None:
    pages = one_page(site)
    assert site.run("scan", "--from", str(pages)).returncode == 0
    site.broker.stop()
    proc = site.run("sync", "--once", "--timeout", "3")
    assert proc.returncode == 9
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 1 document(s) still without a verified warehouse receipt")
    assert "last link error: broker at" in last and "unreachable" in last
    assert len(list((site.device.home / "spool" / "env").glob("*.env"))) == 1


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ("[capture]\nprofile = 'sepia'\n", "profile"),
        ("[device]\nid = 'has space'\n", "device id"),
        ("[broker]\nurl = 'http://x'\n", "MQTT URL"),
        ("[capture]\nmin_dpi = 150\n", "min_dpi"),
        ("[nosuch]\nx = 1\n", "unknown configuration"),
        ("[capture\n", "not valid TOML"),
    ],
)
def test_bad_configuration_is_named(tmp_path: Path, toml: str, needle: str) -> None:
    cfg = tmp_path / "sohoa.toml"
    cfg.write_text(toml)
    proc = subprocess.run(
        [*SOHOA, "--config", str(cfg), "status"],
        capture_output=True,
        text=True,
        env={**os.environ, "SOHOA_HOME": str(tmp_path / "home")},
        timeout=60,
    )
    assert proc.returncode == 4
    assert needle in one_line(proc)


def test_sohoa_home_overrides_config_home(site: Site, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "SOHOA_CONFIG": str(site.device_toml),
        "SOHOA_HOME": str(tmp_path / "elsewhere"),
    }
    proc = subprocess.run(
        [*SOHOA, "keys", "init"], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "elsewhere" / "keys" / "device.key").stat().st_mode & 0o777 == 0o600
    again = subprocess.run(
        [*SOHOA, "keys", "init"], capture_output=True, text=True, env=env, timeout=60
    )
    assert again.returncode != 0 and "--force" in one_line(again)


def test_a_dossier_code_travels_on_stdin_never_on_the_command_line(
    site: Site, tmp_path: Path
) -> None:
    pages = tmp_path / "pages"
    pages.mkdir()
    make_page(["TRANG MỘT"], seed=1).save(pages / "p0.png", dpi=(300, 300))
    code = "000.00.20.H56-230512-0003"

    refused = site.run("scan", "--from", str(pages), "--dossier", code)
    env = {**os.environ, "SOHOA_CONFIG": str(site.device_toml)}
    piped = subprocess.run(
        [*SOHOA, "scan", "--from", str(pages), "--dossier-stdin", "--json"],
        input=code + "\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )

    assert "visible to every process" in one_line(refused) and "--dossier-stdin" in refused.stderr
    assert piped.returncode == 0, piped.stderr
    assert [d["dossier_code"] for d in json.loads(piped.stdout)["documents"]] == [code]
