"""A/B releases on a device: one directory per release under a prefix, an atomic
``current`` link, a trial with a deadline, and the switch back.

Layout (``Layout``): the prefix (``[release] prefix``, ``/opt/sohoa``, root's on a
device; tests use a temporary one) and the service user's health folder
(``<home>/release/health``)::

    releases/<version>/    a virtual environment holding that release
    current -> releases/<version>
    bin/sohoa-launch       what the units run (``sohoa-launch sync``)
    pending                "<version> <previous> <deadline>" while a release is on trial
    reports/<version>.json {"version", "status", "reason", "at"}: installed, healthy,
                           rolled_back, refused
    incoming/              a bundle the switch service took from the sync service
    <home>/release/health/<version>   written by that release's sync service once it
                           opened (and migrated) the spool and reached the broker

The switch makes a new link beside ``current`` and renames it over, so a power
cut leaves the old link or the new one. ``settle`` ends a trial: healthy once the
release's health mark is there, switched back once the deadline passed without
it. It runs in the waiting installer (``sohoa release install`` or, on a device,
``sohoa release apply`` in sohoa-release-switch.service) and in the launcher at
every start of a unit (its ExecStartPre, as root), so that a release that keeps
crashing is switched back even when nothing waits. The spool stays readable by
both: a release opens a spool one schema version ahead of its own
(``sync.spool.schema``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import stat
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
REQUEST = "install.json"  # in <home>/release: the sync service asks the switch service
REQUEST_MAX = 4096
BUNDLE_MAX = 1 << 30
BUNDLE_NAME = re.compile(r"sohoa-[0-9]+(\.[0-9]+){0,3}\.bundle")

LAUNCHER = """#!/bin/sh
# sohoa-launch: what the sohoa units run. A release on trial is settled first: healthy
# once its health mark is there, switched back once the deadline passed without it.
# `sohoa-launch --check` settles only (the units' ExecStartPre, as root); otherwise the
# current release runs, after settling where the prefix is writable.
set -eu
P={prefix}
H={health}
report() {{
    mkdir -p "$P/reports"
    printf '{{"version": "%s", "status": "%s", "reason": "%s", "at": "%s"}}\\n' \\
        "$1" "$2" "$3" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" > "$P/reports/.$1.json.launch"
    chmod 0644 "$P/reports/.$1.json.launch"
    mv -f "$P/reports/.$1.json.launch" "$P/reports/$1.json"
}}
settle() {{
    [ -f "$P/pending" ] || return 0
    read -r version previous deadline < "$P/pending" || return 0
    if [ -e "$H/$version" ]; then
        report "$version" healthy ""
        rm -f "$P/pending"
    elif [ "$(date +%s)" -ge "${{deadline%.*}}" ]; then
        ln -sfn "releases/$previous" "$P/.current.launch"
        mv -T "$P/.current.launch" "$P/current"
        report "$version" rolled_back "no health within the deadline"
        rm -f "$P/pending"
    fi
}}
if [ "${{1:-}}" = --check ]; then
    settle
    exit 0
fi
if [ -w "$P" ]; then settle; fi
exec "$P/current/bin/sohoa" "$@"
"""


@dataclass(frozen=True)
class Layout:
    """Where a device's releases live: the prefix (root's) and the health marks (the
    service user's)."""

    prefix: Path
    health: Path

    @classmethod
    def of(cls, home: Path, prefix: Path) -> Layout:
        return cls(prefix, home / "release" / "health")


@dataclass(frozen=True)
class Request:
    """What the sync service asks of the switch service: install this downloaded bundle."""

    bundle: Path
    allow_downgrade: bool


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


def write_launcher(layout: Layout) -> Path:
    path = layout.prefix / "bin" / "sohoa-launch"
    text = LAUNCHER.format(
        prefix=_sh_quote(str(layout.prefix)), health=_sh_quote(str(layout.health))
    )
    atomic_write(path, text.encode(), mode=0o755)
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


def read_reports(prefix: Path) -> list[dict[str, str]]:
    """Every release's last report, oldest first."""
    found = (read_report(prefix, p.stem) or {} for p in (prefix / "reports").glob("*.json"))
    return sorted(found, key=lambda d: str(d.get("at", "")))


def begin_trial(layout: Layout, version: str, deadline_s: float) -> Trial | None:
    """Switch to ``version`` with a trial to pass; None when there was no release before
    (a first install has nothing to go back to)."""
    prefix = layout.prefix
    previous = installed_version(prefix)
    (layout.health / version).unlink(missing_ok=True)
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


def mark_healthy(layout: Layout, version: str) -> bool:
    """The running release ``version`` is healthy (its health mark); True when a trial of
    it is waiting for that. Only the mark is written: the prefix is root's."""
    if installed_version(layout.prefix) != version:
        return False
    health = layout.health / version
    if not health.exists():
        atomic_write(health, iso(time.time()).encode() + b"\n")
    trial = read_trial(layout.prefix)
    return trial is not None and trial.version == version


def settle(layout: Layout, now: float, *, up: bool = True) -> str | None:
    """End the trial when it can end: "healthy" once the release's health mark is there
    (and ``up``: its services run), "rolled_back" (switched back) once its deadline
    passed without that; else None."""
    prefix = layout.prefix
    trial = read_trial(prefix)
    if trial is None:
        return None
    if up and (layout.health / trial.version).exists():
        report(prefix, trial.version, "healthy")
        (prefix / "pending").unlink(missing_ok=True)
        return "healthy"
    if now < trial.deadline:
        return None
    switch_to(prefix, trial.previous)
    marked = (layout.health / trial.version).exists()
    reason = (
        "a service was not running at the deadline" if marked else "no health within the deadline"
    )
    report(prefix, trial.version, "rolled_back", reason)
    (prefix / "pending").unlink(missing_ok=True)
    return "rolled_back"


def prune(prefix: Path, keep: set[str]) -> list[str]:
    """Remove every release but ``keep`` and the current one (a Pi's card is small);
    the versions removed."""
    current = installed_version(prefix)
    removed = []
    for path in sorted((prefix / "releases").glob("*")):
        if path.name.startswith(".") or path.name in keep or path.name == current:
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path.name)
    return removed


def adopt(layout: Layout, running: Path, version: str) -> None:
    """Make the release installed at ``running`` (``releases/<version>``, by install.sh)
    the current one, with the launcher beside it."""
    if running.resolve() != release_dir(layout.prefix, version).resolve():
        raise InstallError(
            f"this sohoa runs from {running}, not from {release_dir(layout.prefix, version)}",
            "run the sohoa of that release (install.sh --device does)",
        )
    atomic_write(running / COMPLETE, f"{version}\n".encode())
    write_launcher(layout)
    trial = read_trial(layout.prefix)
    if trial is not None and trial.version == version:
        (layout.prefix / "pending").unlink(missing_ok=True)  # a technician installed it anew
    switch_to(layout.prefix, version)


# -- the sync service asks, the switch service (root) takes ------------------------------


def write_request(home: Path, bundle: Path, *, allow_downgrade: bool) -> Path:
    """Ask sohoa-release-switch.service to install ``bundle`` (in ``<home>/release``)."""
    doc = {"bundle": bundle.name, "allow_downgrade": allow_downgrade}
    path = home / "release" / REQUEST
    atomic_write(path, json.dumps(doc).encode() + b"\n", mode=0o600)
    return path


def _open_plain(path: Path) -> int:
    """A regular file opened without following a link (the folder is another user's)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise InstallError(
            f"{path} is not a plain file",
            "nothing installed; the sync service asks again once it restarts",
        )
    return fd


def take_request(home: Path, prefix: Path) -> Request | None:
    """The sync service's request, taken (removed) and its bundle copied into the root's
    ``incoming/``, so that nothing the service user can change is read twice."""
    path = home / "release" / REQUEST
    try:
        fd = _open_plain(path)
    except FileNotFoundError:
        return None
    except (OSError, InstallError):  # a link or a folder: taken away, else it comes back
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
        raise InstallError(
            f"the install request {path} is not a plain file",
            "nothing installed; the sync service asks again once it restarts",
        ) from None
    try:
        with os.fdopen(fd, "rb") as f:
            raw = f.read(REQUEST_MAX + 1)
    finally:
        path.unlink(missing_ok=True)
    try:
        doc = json.loads(raw) if len(raw) <= REQUEST_MAX else None
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        doc = {}
    name = doc.get("bundle")
    if not isinstance(name, str) or not BUNDLE_NAME.fullmatch(name):
        raise InstallError(
            f"the install request {path} names no bundle (sohoa-<version>.bundle)",
            "nothing installed; the sync service asks again once it restarts",
        )
    incoming = prefix / "incoming"
    shutil.rmtree(incoming, ignore_errors=True)
    incoming.mkdir(parents=True, mode=0o700)
    copy = incoming / name
    try:
        fd = _open_plain(home / "release" / name)
    except OSError as exc:
        raise InstallError(
            f"the requested bundle {home / 'release' / name} cannot be read"
            f" ({exc.strerror or 'not a plain file'})",
            "nothing installed; the sync service asks again once it restarts",
        ) from None
    with os.fdopen(fd, "rb") as src, copy.open("wb") as dst:
        copied = 0
        while chunk := src.read(1 << 20):
            copied += len(chunk)
            if copied > BUNDLE_MAX:
                raise InstallError(f"{name} is larger than {BUNDLE_MAX >> 20} MiB", "not a release")
            dst.write(chunk)
    return Request(copy, doc.get("allow_downgrade") is True)
