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
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
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


def _release_pub(args: argparse.Namespace, cfg: Config) -> Path:
    """--release-pub, else the pinned ``[release] public_key``."""
    return Path(args.release_pub) if args.release_pub else cfg.path(cfg.release.public_key)


def _pinned(args: argparse.Namespace, cfg: Config) -> Bundle:
    return open_bundle(Path(args.file), load_release_public(_release_pub(args, cfg)))


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


@dataclass(frozen=True)
class Restart:
    """How the services are restarted on the release ``current`` names: systemd units,
    and/or the process a pid file names (a service run without systemd: it stops, its
    supervisor starts it again)."""

    units: tuple[str, ...] = ()
    pidfile: Path | None = None

    def __call__(self) -> None:
        if self.units:
            subprocess.run(["systemctl", "restart", *self.units], check=False)
        if self.pidfile is not None:
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(self.pidfile.read_text().strip()), signal.SIGTERM)

    def up(self) -> bool:
        """Every enabled unit runs (a release is healthy only then)."""
        for unit in self.units:
            enabled = subprocess.run(["systemctl", "is-enabled", "--quiet", unit], check=False)
            active = subprocess.run(["systemctl", "is-active", "--quiet", unit], check=False)
            if enabled.returncode == 0 and active.returncode != 0:
                return False
        return True


def _wait(layout: ab.Layout, trial: ab.Trial, restart: Restart) -> str:
    """The trial's outcome: healthy, or rolled back once its deadline passed."""
    while True:
        outcome = ab.settle(layout, time.time(), up=restart.up())
        if outcome is None and ab.read_trial(layout.prefix) is None:
            # the launcher settled it meanwhile
            doc = ab.read_report(layout.prefix, trial.version) or {}
            outcome = doc.get("status", "rolled_back")
        if outcome is not None:
            return outcome
        # polled: the mark is a file another process writes, the units' state systemd's
        time.sleep(0.5)


def _layout(args: argparse.Namespace, cfg: Config) -> ab.Layout:
    return ab.Layout.of(cfg.home, Path(args.prefix) if args.prefix else cfg.release.prefix)


def install_bundle(
    layout: ab.Layout,
    bundle_file: Path,
    pub: Path,
    *,
    allow_downgrade: bool,
    deadline: int,
    restart: Restart,
    wait: bool = True,
) -> int:
    """Verify, unpack, switch, restart and wait for health (else switch back): the steps
    of ``release install`` and ``release apply``."""
    prefix = layout.prefix
    try:
        bundle = open_bundle(bundle_file, load_release_public(pub))
        check_install(
            ab.installed_version(prefix),
            SCHEMA_VERSION,
            bundle.manifest,
            allow_downgrade=allow_downgrade,
        )
    except ReleaseRefused as exc:
        if prefix.is_dir():
            ab.report(prefix, _version_of(str(bundle_file)), "refused", exc.message)
        raise
    version = bundle.manifest.version
    try:
        ab.unpack_release(bundle, prefix)
        ab.write_launcher(layout)
    except (SohoaError, OSError) as exc:  # reported, so that the province sees why
        failure = (
            exc
            if isinstance(exc, SohoaError)
            else ab.InstallError(
                f"cannot write the release prefix {prefix} ({exc.strerror})",
                "run as root (sudo sohoa release install), or give --prefix",
            )
        )
        with contextlib.suppress(OSError):
            ab.report(prefix, version, "refused", failure.message)
        raise failure from None
    trial = ab.begin_trial(layout, version, deadline)
    restart()
    if trial is None:
        print(f"release {version} installed in {prefix}")
        return 0
    if not wait:
        print(
            f"release {version} switched on, on trial for {deadline} s (previous {trial.previous})"
        )
        return 0
    return _outcome(layout, trial, restart)


def _outcome(layout: ab.Layout, trial: ab.Trial, restart: Restart) -> int:
    if _wait(layout, trial, restart) != "healthy":
        restart()
        doc = ab.read_report(layout.prefix, trial.version) or {}
        raise IncompleteError(
            f"release {trial.version} rolled back to {trial.previous}: {doc.get('reason')}",
            "read the new release's service log (journalctl -u sohoa-sync); the device runs"
            " the previous release",
        )
    removed = ab.prune(layout.prefix, {trial.version, trial.previous})
    gone = f"; removed {', '.join(removed)}" if removed else ""
    print(
        f"release {trial.version} is healthy (previous {trial.previous} kept for going back{gone})"
    )
    return 0


def _install(args: argparse.Namespace, cfg: Config) -> int:
    units = () if args.no_restart else tuple(args.unit or DEFAULT_UNITS)
    pidfile = Path(args.restart_pidfile) if args.restart_pidfile else None
    return install_bundle(
        _layout(args, cfg),
        Path(args.file),
        _release_pub(args, cfg),
        allow_downgrade=args.allow_downgrade,
        deadline=args.deadline or cfg.release.health_deadline_s,
        restart=Restart(units, pidfile),
        wait=not args.no_wait,
    )


def _apply(args: argparse.Namespace, cfg: Config) -> int:
    """sohoa-release-switch.service (root): take the sync service's request and install
    its bundle; or wait out a trial a power cut left (the unit also starts on ``pending``)."""
    layout = _layout(args, cfg)
    pidfile = Path(args.restart_pidfile) if args.restart_pidfile else None
    restart = Restart(() if pidfile else DEFAULT_UNITS, pidfile)
    request = ab.take_request(cfg.home, layout.prefix)
    if request is not None:
        try:
            return install_bundle(
                layout,
                request.bundle,
                _release_pub(args, cfg),
                allow_downgrade=request.allow_downgrade,
                deadline=cfg.release.health_deadline_s,
                restart=restart,
            )
        finally:
            shutil.rmtree(request.bundle.parent, ignore_errors=True)
    trial = ab.read_trial(layout.prefix)
    if trial is None:
        print("nothing to install and no release on trial")
        return 0
    return _outcome(layout, trial, restart)


def _adopt(args: argparse.Namespace, cfg: Config) -> int:
    """install.sh --device: the release it installed into ``releases/<version>`` becomes
    the current one, with the launcher the units run."""
    layout = _layout(args, cfg)
    ab.adopt(layout, Path(sys.prefix), __version__)
    print(f"release {__version__} is current in {layout.prefix}")
    return 0


def _version_of(file: str) -> str:
    name = Path(file).name
    stem = name.removeprefix("sohoa-").removesuffix(".bundle")
    return stem if stem and all(p.isdigit() for p in stem.split(".")) else "unknown"


def _status(args: argparse.Namespace, cfg: Config) -> int:
    prefix = _layout(args, cfg).prefix
    trial = ab.read_trial(prefix)
    reports = ab.read_reports(prefix)
    doc = {
        "prefix": str(prefix),
        "current": ab.installed_version(prefix),
        "trial": None if trial is None else {"version": trial.version, "previous": trial.previous},
        "reports": reports,
        "request": (cfg.home / "release" / ab.REQUEST).exists(),
    }
    if args.json:
        print(json.dumps(doc, ensure_ascii=False))
        return 0
    print(f"current release: {doc['current'] or 'none (not installed from a bundle)'}")
    if trial is not None:
        print(f"on trial: {trial.version} (goes back to {trial.previous} without health)")
    if doc["request"]:
        print(
            "a downloaded release waits for sohoa-release-switch.service"
            " (systemctl status sohoa-release-switch.path; by hand: sudo sohoa release apply)"
        )
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
    r = rsub.add_parser(
        "apply", help="device, as root: install what the sync service downloaded (the switch unit)"
    )
    r.add_argument("--prefix", help="the A/B prefix (else [release] prefix)")
    r.add_argument("--release-pub", help="the pinned release key (else [release] public_key)")
    r.add_argument("--restart-pidfile", help="stop this process instead of the units")
    r.set_defaults(func=_apply)
    r = rsub.add_parser("adopt", help="install.sh: make the running release the current one")
    r.add_argument("--prefix", help="the A/B prefix (else [release] prefix)")
    r.set_defaults(func=_adopt)
    r = rsub.add_parser("status", help="the installed release, a trial, the last reports")
    r.add_argument("--prefix", help="the A/B prefix (else [release] prefix)")
    r.add_argument("--json", action="store_true", help="print as JSON")
    r.set_defaults(func=_status)
    add_rollout(rsub)
