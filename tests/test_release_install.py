"""Releases installed from bundles into a temporary A/B prefix, run as plain processes
through the launcher the units use: a release that fails to start is rolled back, and
bundles are refused with one clear line. (A healthy switch that keeps syncing, delivered
over MQTT: tests/test_release_delivery.py.)"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.support.release import BROKEN, GOOD, NEXT, Bundles
from tests.support.site import REPO, SOHOA, Site
from tests.support.wait import wait_until


def sohoa(*args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **({"SOHOA_CONFIG": str(config)} if config else {})}
    return subprocess.run(
        [*SOHOA, *args], env=env, capture_output=True, text=True, timeout=180, cwd=REPO
    )


def launch(prefix: Path, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """What a unit runs: ``sohoa-launch`` with the service's arguments."""
    env = {**os.environ, "SOHOA_CONFIG": str(config)}
    return subprocess.run(
        [str(prefix / "bin" / "sohoa-launch"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/",
    )


def launch_background(prefix: Path, config: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SOHOA_CONFIG": str(config)}
    cmd = [str(prefix / "bin" / "sohoa-launch"), *args]
    return subprocess.Popen(cmd, env=env, cwd="/", stderr=subprocess.DEVNULL)


def install(
    bundles: Bundles, prefix: Path, version: str, *extra: str, config: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return sohoa(
        "release",
        "install",
        str(bundles.of(version)),
        "--prefix",
        str(prefix),
        "--release-pub",
        str(bundles.pub),
        "--no-restart",
        *extra,
        config=config,
    )


def device_config(site: Site, prefix: Path) -> Path:
    with site.device_toml.open("a") as f:
        f.write(f'[release]\nprefix = "{prefix}"\n')
    return site.device_toml


def status(prefix: Path) -> dict[str, object]:
    proc = sohoa("release", "status", "--prefix", str(prefix), "--json")
    assert proc.returncode == 0, proc.stderr
    doc: dict[str, object] = json.loads(proc.stdout)
    return doc


def test_release_that_fails_to_start_is_rolled_back_and_reported(
    site: Site, release_bundles: Bundles, tmp_path: Path
) -> None:
    prefix = tmp_path / "opt"
    config = device_config(site, prefix)
    assert install(release_bundles, prefix, GOOD, config=config).returncode == 0
    proc = install(release_bundles, prefix, BROKEN, "--no-wait", "--deadline", "3", config=config)
    assert proc.returncode == 0, proc.stderr
    crashed = launch(prefix, config, "sync", "--once", "--timeout", "10")
    assert crashed.returncode != 0
    assert "internal error (RuntimeError)" in crashed.stderr
    # the unit's restarts go on until the deadline passes and the launcher switches back
    wait_until(
        lambda: launch(prefix, config, "--version").stdout.strip() == f"sohoa {GOOD}",
        30,
        "the launcher switching back once the deadline passed",
        poll_s=0.5,
    )
    doc = status(prefix)
    assert (doc["current"], doc["trial"]) == (GOOD, None)
    reports = [(r["version"], r["status"], r["reason"]) for r in doc["reports"]]  # type: ignore[attr-defined]
    assert (BROKEN, "rolled_back", "no health within the deadline") in reports
    doctor = sohoa("doctor", config=config).stdout
    assert (
        f"release: {GOOD} current in {prefix}; last: {BROKEN} rolled_back"
        " (no health within the deadline)"
    ) in doctor, doctor

    # offered again, the unpacked release is reused; install itself waits and switches back
    proc = install(release_bundles, prefix, BROKEN, "--deadline", "1", config=config)
    assert proc.returncode == 9
    assert proc.stderr.strip().splitlines() == [
        f"error: release {BROKEN} rolled back to {GOOD}: no health within the deadline — read"
        " the new release's service log (journalctl -u sohoa-sync); the device runs the"
        " previous release"
    ]
    assert (prefix / "current").readlink() == Path("releases") / GOOD


def _tampered(bundles: Bundles, tmp_path: Path) -> Path:
    data = bytearray(bundles.of(GOOD).read_bytes())
    # the wheel's tar header is the name's last occurrence (the manifest names it first)
    at = data.rindex(f"wheels/sohoa-{GOOD}-py3-none-any.whl".encode()) + 512 + 1000
    data[at] ^= 0xFF
    path = tmp_path / f"sohoa-{GOOD}.bundle"
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(
    ("case", "line"),
    [
        ("bad-signature", "error: bad signature: the bundle is signed by release key"),
        ("tampered", f"error: tampered wheel: wheels/sohoa-{GOOD}-py3-none-any.whl"),
        ("older", f"error: release {GOOD} is older than the installed 0.9.9"),
        ("not-a-bundle", "x.bundle is not a sohoa release bundle"),
    ],
)
def test_bad_bundles_are_refused_with_one_clear_line(
    case: str, line: str, release_bundles: Bundles, tmp_path: Path
) -> None:
    prefix = tmp_path / "opt"
    installed = "0.9.9" if case == "older" else NEXT
    (prefix / "releases" / installed).mkdir(parents=True)
    (prefix / "current").symlink_to(Path("releases") / installed)  # all a refusal reads
    pub, bundle = release_bundles.pub, release_bundles.of(GOOD)
    if case == "bad-signature":
        other = tmp_path / "other" / "release.key"
        assert sohoa("release", "keygen", "--key", str(other)).returncode == 0
        pub = other.with_suffix(".pub")
    elif case == "tampered":
        bundle = _tampered(release_bundles, tmp_path)
    elif case == "older":
        pass  # the bundle of 0.9.1 against an installed 0.9.9
    else:
        bundle = tmp_path / "x.bundle"
        bundle.write_bytes(b"\0" * 2048)
    where = () if case == "tampered" else ("--prefix", str(prefix))
    verb = "verify" if case == "tampered" else "install"
    proc = sohoa("release", verb, str(bundle), "--release-pub", str(pub), *where)
    assert proc.returncode == 8, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert line in proc.stderr
    assert (prefix / "current").readlink() == Path("releases") / installed


def test_build_names_its_target_platforms_and_refuses_others() -> None:
    """The index path (aarch64, armhf) needs the network: only its arguments are tested."""
    help_text = sohoa("release", "build", "--help").stdout
    assert "--platform {aarch64,amd64,armhf}" in help_text
    proc = sohoa("release", "build", "--out", "/nonexistent", "--platform", "sparc")
    assert proc.returncode == 2
    assert "invalid choice: 'sparc'" in proc.stderr


def test_a_trial_left_by_a_power_cut_is_waited_out_by_apply_and_switched_back(
    site: Site, release_bundles: Bundles, tmp_path: Path
) -> None:
    """sohoa-release-switch.path starts ``apply`` at boot while ``pending`` exists: with
    no request it waits for the release on trial and, with no health, switches back."""
    prefix = tmp_path / "opt"
    config = device_config(site, prefix)
    assert install(release_bundles, prefix, GOOD, config=config).returncode == 0
    proc = install(release_bundles, prefix, NEXT, "--no-wait", "--deadline", "2", config=config)
    assert proc.returncode == 0, proc.stderr
    assert (prefix / "pending").exists()  # the power went while the trial ran
    applied = sohoa(
        "release",
        "apply",
        "--prefix",
        str(prefix),
        "--restart-pidfile",
        "/nonexistent",
        config=config,
    )
    assert applied.returncode == 9
    assert applied.stderr.startswith(
        f"error: release {NEXT} rolled back to {GOOD}: no health within the deadline"
    )
    assert (prefix / "current").readlink() == Path("releases") / GOOD
    assert not (prefix / "pending").exists()
    again = sohoa("release", "apply", "--prefix", str(prefix), config=config)
    assert (again.returncode, again.stdout) == (0, "nothing to install and no release on trial\n")


def _request(home: Path, text: str) -> Path:
    path = home / "release" / "install.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "case",
    ["not-json", "path-in-name", "bundle-is-a-link", "request-is-a-link", "no-such-bundle"],
)
def test_a_hostile_install_request_installs_nothing_and_is_taken_away(
    case: str, tmp_path: Path
) -> None:
    """The request and the bundle are in the service user's folder; apply runs as root."""
    home, prefix = tmp_path / "home", tmp_path / "opt"
    secret = tmp_path / "root-only"
    secret.write_text("not for the sohoa user\n")
    name = "sohoa-0.9.2.bundle"
    text = json.dumps({"bundle": name})
    if case == "not-json":
        text = "{"
    elif case == "path-in-name":
        text = json.dumps({"bundle": f"../../{secret.name}"})
    request = _request(home, text)
    if case == "bundle-is-a-link":
        (home / "release" / name).symlink_to(secret)
    elif case == "request-is-a-link":
        request.unlink()
        request.symlink_to(secret)
    config = tmp_path / "device.toml"
    config.write_text(f'home = "{home}"\n[release]\nprefix = "{prefix}"\n')
    proc = sohoa("release", "apply", "--prefix", str(prefix), config=config)
    assert proc.returncode != 0
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "internal error" not in proc.stderr and "not for the sohoa user" not in proc.stderr
    assert "nothing installed" in proc.stderr
    assert not request.exists() and not request.is_symlink()  # else the path unit loops
    assert not (prefix / "current").exists()
    assert secret.read_text() == "not for the sohoa user\n"
