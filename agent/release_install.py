"""A/B releases on a device: one directory per release under a prefix, an atomic
``current`` link, a trial with a deadline, and the switch back.

Layout under ``[release] prefix`` (``/opt/sohoa``; tests use a temporary one)::

    releases/<version>/    a virtual environment holding that release
    current -> releases/<version>
    bin/sohoa-launch       what the units run (``sohoa-launch sync``)
    pending                "<version> <previous> <deadline>" while a release is on trial
    health/<version>       written by that release once it is healthy
    reports/<version>.json {"version", "status", "reason", "at"}: installed, healthy,
                           rolled_back, refused

The switch makes a new link beside ``current`` and renames it over, so a power
cut leaves the old link or the new one. A release on trial becomes healthy when
its sync service has opened (and migrated) the spool and reached the broker;
when the deadline passes first, ``check_trial`` (run by the launcher at every
start and by ``sohoa release install`` while it waits) switches back and
reports ``rolled_back``. The spool stays readable by both: a release opens a
spool one schema version ahead of its own (``sync.spool.schema``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from sync.durable import atomic_write, fsync_dir, iso
from sync.errors import SohoaError
from sync.release.bundle import Bundle, extract_wheels
from sync.release.manifest import parse_version

COMPLETE = ".complete"

LAUNCHER = """#!/bin/sh
# sohoa-launch: what the sohoa units run. A release on trial whose deadline passed
# without health is switched back first; then the current release runs.
set -eu
P={prefix}
if [ -f "$P/pending" ]; then
    read -r version previous deadline < "$P/pending" || true
    if [ ! -e "$P/health/$version" ] && [ "$(date +%s)" -ge "${{deadline%.*}}" ]; then
        ln -sfn "releases/$previous" "$P/.current.launch"
        mv -T "$P/.current.launch" "$P/current"
        mkdir -p "$P/reports"
        printf '{{"version": "%s", "status": "rolled_back", "reason": "%s", "at": "%s"}}\\n' \\
            "$version" "no health within the deadline" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \\
            > "$P/reports/$version.json"
        rm -f "$P/pending"
    fi
fi
exec "$P/current/bin/sohoa" "$@"
"""


class InstallError(SohoaError):
    """A release could not be put in place; nothing was switched."""


@dataclass(frozen=True)
class Trial:
    version: str
    previous: str
    deadline: float


def installed_version(prefix: Path) -> str | None:
    """The release ``current`` points at, or None on a device without releases."""
    try:
        target = (prefix / "current").readlink()
    except OSError:
        return None
    return Path(target).name


def release_dir(prefix: Path, version: str) -> Path:
    parse_version(version)
    return prefix / "releases" / version


def write_launcher(prefix: Path) -> Path:
    path = prefix / "bin" / "sohoa-launch"
    atomic_write(path, LAUNCHER.format(prefix=_sh_quote(str(prefix))).encode(), mode=0o755)
    return path


def _sh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
        last = lines[-1].strip()[:300] if lines else f"exit status {proc.returncode}"
        raise InstallError(
            f"{what} failed: {last}", "free disk space or read the message, then retry"
        )


def unpack_release(bundle: Bundle, prefix: Path, python: str = sys.executable) -> Path:
    """``releases/<version>``: a virtual environment with the bundle's wheels, installed
    with no network. An earlier complete unpack of the same version is kept."""
    version = bundle.manifest.version
    target = release_dir(prefix, version)
    if (target / COMPLETE).exists():
        return target
    shutil.rmtree(target, ignore_errors=True)
    wheels = prefix / "releases" / f".{version}.wheels"
    shutil.rmtree(wheels, ignore_errors=True)
    try:
        extract_wheels(bundle, wheels)
        _run([python, "-m", "venv", "--without-pip", str(target)], "creating the release's venv")
        pip = [python, "-m", "pip", "--python", str(target / "bin" / "python")]
        _run(
            [
                *pip,
                "install",
                "-q",
                "--no-index",
                "--no-compile",
                "--find-links",
                str(wheels),
                f"sohoa=={version}",
            ],
            f"installing release {version} from the bundle",
        )
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(wheels, ignore_errors=True)
    atomic_write(target / COMPLETE, f"{version}\n".encode())
    return target


def switch_to(prefix: Path, version: str) -> None:
    """Point ``current`` at ``releases/<version>`` in one rename."""
    if not (release_dir(prefix, version) / COMPLETE).exists():
        raise InstallError(f"release {version} is not unpacked in {prefix}", "install it first")
    tmp = prefix / f".current.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(Path("releases") / version)
    tmp.replace(prefix / "current")
    fsync_dir(prefix, "the release prefix")


def report(prefix: Path, version: str, status: str, reason: str = "") -> dict[str, str]:
    doc = {"version": version, "status": status, "reason": reason, "at": iso(time.time())}
    atomic_write(prefix / "reports" / f"{version}.json", json.dumps(doc).encode() + b"\n")
    return doc


def read_report(prefix: Path, version: str) -> dict[str, str] | None:
    try:
        doc = json.loads((prefix / "reports" / f"{version}.json").read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def begin_trial(prefix: Path, version: str, deadline_s: float) -> Trial | None:
    """Switch to ``version`` with a trial to pass; None when there was no release before
    (a first install has nothing to go back to)."""
    previous = installed_version(prefix)
    (prefix / "health" / version).unlink(missing_ok=True)
    if previous is None or previous == version:
        switch_to(prefix, version)
        report(prefix, version, "healthy" if previous == version else "installed")
        return None
    trial = Trial(version, previous, time.time() + deadline_s)
    atomic_write(prefix / "pending", f"{version} {previous} {trial.deadline:.0f}\n".encode())
    switch_to(prefix, version)
    report(prefix, version, "installed")
    return trial


def read_trial(prefix: Path) -> Trial | None:
    try:
        version, previous, deadline = (prefix / "pending").read_text().split()
        return Trial(version, previous, float(deadline))
    except (OSError, ValueError):
        return None


def mark_healthy(prefix: Path, version: str) -> bool:
    """The running release ``version`` is healthy; True when that ended its trial."""
    if installed_version(prefix) != version:
        return False
    health = prefix / "health" / version
    if not health.exists():
        atomic_write(health, iso(time.time()).encode() + b"\n")
    trial = read_trial(prefix)
    if trial is None or trial.version != version:
        return False
    report(prefix, version, "healthy")
    (prefix / "pending").unlink(missing_ok=True)
    return True


def check_trial(prefix: Path, now: float) -> str | None:
    """Switch back when the release on trial missed its deadline; the version rolled back."""
    trial = read_trial(prefix)
    if trial is None or (prefix / "health" / trial.version).exists() or now < trial.deadline:
        return None
    switch_to(prefix, trial.previous)
    report(prefix, trial.version, "rolled_back", "no health within the deadline")
    (prefix / "pending").unlink(missing_ok=True)
    return trial.version
