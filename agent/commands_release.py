"""``sohoa release``: build, sign, check and install software releases.

- ``release keygen``: the province's release key (``[release] key``, 0600) and
  ``release.pub`` beside it, which every device pins.
- ``release build --out DIR [--version V]``: one signed bundle
  (``agent.release_build``).
- ``release verify FILE``: signature and every wheel's hash, nothing installed.
- ``release install FILE [--prefix P]``: unpack into ``P/releases/<version>``,
  switch ``current``, restart the services and wait for the new release to
  report healthy, else switch back (``agent.release_install``).
- ``release status [--json]``: the installed release, a trial, the last reports.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from agent import release_install as ab
from agent.commands_rollout import add_rollout
from agent.config import Config
from agent.release_build import PLATFORMS, build_release, default_source
from sync import __version__
from sync.errors import IncompleteError, InputFileError, SohoaError
from sync.release.bundle import Bundle, extract_wheels, open_bundle
from sync.release.manifest import ReleaseRefused, check_install
from sync.release.release_key import init_release_key, load_release_key, load_release_public
from sync.spool.schema import SCHEMA_VERSION

if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

DEFAULT_UNITS = ("sohoa-sync", "sohoa-agent")


def _pinned(args: argparse.Namespace, cfg: Config) -> Bundle:
    pub = Path(args.release_pub) if args.release_pub else cfg.path(cfg.release.public_key)
    return open_bundle(Path(args.file), load_release_public(pub))


def _keygen(args: argparse.Namespace, cfg: Config) -> int:
    path = Path(args.key) if args.key else cfg.path(cfg.release.key)
    init_release_key(path, force=args.force)
    print(
        f"release key created ({path}, keep it off the serving hosts);"
        f" give {path.with_suffix('.pub')} to every device (install.sh --release-pub FILE)"
    )
    return 0


def _build(args: argparse.Namespace, cfg: Config) -> int:
    key = load_release_key(Path(args.key) if args.key else cfg.path(cfg.release.key))
    source = Path(args.source) if args.source else default_source()
    if source is None:
        raise InputFileError(
            "no sohoa checkout to build from", "run from the checkout or give --source DIR"
        )
    with tempfile.TemporaryDirectory(prefix="sohoa-build-") as work:
        out, manifest = build_release(
            source,
            args.version or __version__,
            Path(args.out),
            key,
            platforms=args.platform or list(PLATFORMS)[:2],
            wheels_dir=Path(args.wheels) if args.wheels else None,
            work=Path(work),
        )
    print(f"{out}: release {manifest.version}, {len(manifest.files)} wheels, signed")
    return 0


def _verify(args: argparse.Namespace, cfg: Config) -> int:
    bundle = _pinned(args, cfg)
    with tempfile.TemporaryDirectory(prefix="sohoa-verify-") as tmp:
        extract_wheels(bundle, Path(tmp))
    m = bundle.manifest
    print(f"{args.file}: release {m.version}, {len(m.files)} wheels, signature and hashes good")
    return 0


def _restart(units: list[str], pidfile: str | None) -> None:
    """Restart the services on the release ``current`` now names."""
    if units:
        subprocess.run(["systemctl", "restart", *units], check=False)
    if pidfile:  # a service run without systemd: it stops, its supervisor starts it again
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(Path(pidfile).read_text().strip()), signal.SIGTERM)


def _wait(prefix: Path, trial: ab.Trial) -> dict[str, str]:
    """The trial's outcome: healthy, or rolled back once its deadline passed."""
    while True:
        doc = ab.read_report(prefix, trial.version) or {}
        if doc.get("status") in ("healthy", "rolled_back"):
            return doc
        ab.check_trial(prefix, time.time())
        time.sleep(0.5)


def _install(args: argparse.Namespace, cfg: Config) -> int:
    prefix = Path(args.prefix) if args.prefix else cfg.release.prefix
    try:
        bundle = _pinned(args, cfg)
        check_install(
            ab.installed_version(prefix),
            SCHEMA_VERSION,
            bundle.manifest,
            allow_downgrade=args.allow_downgrade,
        )
    except ReleaseRefused as exc:
        if prefix.is_dir():
            ab.report(prefix, _version_of(args.file), "refused", exc.message)
        raise
    version = bundle.manifest.version
    try:
        ab.unpack_release(bundle, prefix)
        ab.write_launcher(prefix)
    except (SohoaError, OSError) as exc:  # reported, so that the province sees why
        failure = (
            exc
            if isinstance(exc, SohoaError)
            else ab.InstallError(
                f"cannot write the release prefix {prefix} ({exc.strerror})",
                "run as the user who owns it, or give --prefix",
            )
        )
        with contextlib.suppress(OSError):
            ab.report(prefix, version, "refused", failure.message)
        raise failure from None
    deadline = args.deadline or cfg.release.health_deadline_s
    trial = ab.begin_trial(prefix, version, deadline)
    units = [] if args.no_restart else list(args.unit or DEFAULT_UNITS)
    _restart(units, args.restart_pidfile)
    if trial is None:
        print(f"release {version} installed in {prefix}")
        return 0
    if args.no_wait:
        print(
            f"release {version} switched on, on trial for {deadline} s (previous {trial.previous})"
        )
        return 0
    outcome = _wait(prefix, trial)
    if outcome.get("status") == "rolled_back":
        _restart(units, args.restart_pidfile)
        raise IncompleteError(
            f"release {version} rolled back to {trial.previous}: {outcome.get('reason')}",
            "read the new release's service log (journalctl -u sohoa-sync); the device runs"
            " the previous release",
        )
    print(f"release {version} is healthy (previous {trial.previous} kept for going back)")
    return 0


def _version_of(file: str) -> str:
    name = Path(file).name
    stem = name.removeprefix("sohoa-").removesuffix(".bundle")
    return stem if stem and all(p.isdigit() for p in stem.split(".")) else "unknown"


def _status(args: argparse.Namespace, cfg: Config) -> int:
    prefix = Path(args.prefix) if args.prefix else cfg.release.prefix
    trial = ab.read_trial(prefix)
    reports = sorted(
        (ab.read_report(prefix, p.stem) or {} for p in (prefix / "reports").glob("*.json")),
        key=lambda d: str(d.get("at", "")),
    )
    doc = {
        "prefix": str(prefix),
        "current": ab.installed_version(prefix),
        "trial": None if trial is None else {"version": trial.version, "previous": trial.previous},
        "reports": reports,
    }
    if args.json:
        print(json.dumps(doc, ensure_ascii=False))
        return 0
    print(f"current release: {doc['current'] or 'none (not installed from a bundle)'}")
    if trial is not None:
        print(f"on trial: {trial.version} (goes back to {trial.previous} without health)")
    for r in reports[-5:]:
        reason = f" ({r.get('reason')})" if r.get("reason") else ""
        print(f"{r.get('at', '')}  {r.get('version', '')}  {r.get('status', '')}{reason}")
    return 0


def _file_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE", help="a release bundle (sohoa-<version>.bundle)")
    p.add_argument("--release-pub", help="the release public key (else [release] public_key)")


def add_release(sub: Subparsers) -> None:
    s = sub.add_parser("release", help="signed software releases: build, verify, install")
    rsub = s.add_subparsers(dest="release_cmd", required=True, metavar="RELEASE_COMMAND")
    r = rsub.add_parser("keygen", help="province: create the release signing key")
    r.add_argument("--key", help="where (else [release] key)")
    r.add_argument("--force", action="store_true", help="replace an existing key")
    r.set_defaults(func=_keygen)
    r = rsub.add_parser("build", help="province: build and sign a release bundle")
    r.add_argument("--out", required=True, help="folder the bundle is written to")
    r.add_argument("--version", help=f"the release's version (else {__version__})")
    r.add_argument("--key", help="the release key (else [release] key)")
    r.add_argument("--source", help="the sohoa checkout (else the one this sohoa runs from)")
    r.add_argument(
        "--platform",
        action="append",
        choices=sorted(PLATFORMS),
        help="target platform, repeatable (default aarch64 and armhf; needs the index)",
    )
    r.add_argument("--wheels", help="take dependency wheels from this folder, offline")
    r.set_defaults(func=_build)
    r = rsub.add_parser("verify", help="check a bundle's signature and hashes")
    _file_args(r)
    r.set_defaults(func=_verify)
    r = rsub.add_parser("install", help="device: install a bundle, switch, roll back if unhealthy")
    _file_args(r)
    r.add_argument("--prefix", help="the A/B prefix (else [release] prefix)")
    r.add_argument("--allow-downgrade", action="store_true", help="install an older release")
    r.add_argument("--deadline", type=int, help="seconds to report healthy (else the config)")
    r.add_argument("--no-wait", action="store_true", help="do not wait for the trial's outcome")
    r.add_argument("--no-restart", action="store_true", help="restart no service")
    r.add_argument("--unit", action="append", help="a unit to restart (default sync and agent)")
    r.add_argument("--restart-pidfile", help="also stop the process this file names (it restarts)")
    r.set_defaults(func=_install)
    r = rsub.add_parser("status", help="the installed release, a trial, the last reports")
    r.add_argument("--prefix", help="the A/B prefix (else [release] prefix)")
    r.add_argument("--json", action="store_true", help="print as JSON")
    r.set_defaults(func=_status)
    add_rollout(rsub)
