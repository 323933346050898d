"""``sohoa release build``: the project's wheel and every dependency wheel, signed into
one bundle file.

The project wheel is built from a clean copy of the checkout (tests left out)
with the release's version written into ``pyproject.toml`` and
``sync/__init__.py``, with no build isolation, so nothing is downloaded for it.
Dependency wheels come either from a folder (``--wheels DIR``, with pip's
``--no-index``: an offline build for the platform of that folder) or from the
package index for each ``--platform`` (Raspberry Pi OS Bookworm: aarch64 and
armhf), binary wheels only; a dependency without a binary wheel for a platform
(python-sane, zbar-py) must then be built on such a device and given with
``--wheels``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sync.errors import InputFileError, SohoaError
from sync.release.bundle import write_bundle
from sync.release.manifest import Manifest, parse_version
from sync.spool.schema import SCHEMA_VERSION

# pip's platform tags for Raspberry Pi OS Bookworm (glibc 2.36) and a PC for tests
PLATFORMS = {
    "aarch64": ("manylinux_2_36_aarch64", "manylinux2014_aarch64", "linux_aarch64"),
    "armhf": ("manylinux_2_36_armv7l", "manylinux2014_armv7l", "linux_armv7l"),
    "amd64": ("manylinux_2_36_x86_64", "manylinux2014_x86_64", "linux_x86_64"),
}
_SOURCES = ("agent", "device", "sync", "pyproject.toml", "README.md", "LICENSE")
_VERSION_LINE = re.compile(r'^(version|__version__)\s*=\s*"[^"]*"', re.MULTILINE)


class BuildError(SohoaError):
    """A step of building a release failed; the message names it."""


def default_source() -> Path | None:
    """The checkout this sohoa runs from, when it runs from one (an editable install)."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() else None


def copy_sources(repo: Path, version: str, dest: Path) -> Path:
    """A copy of what the wheel is built from, carrying ``version``."""
    parse_version(version)
    if not (repo / "pyproject.toml").is_file():
        raise InputFileError(
            f"{repo} is not a sohoa checkout (no pyproject.toml)",
            "run from the checkout or give --source DIR",
        )
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in _SOURCES:
        src = repo / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore)
        elif src.is_file():
            shutil.copy2(src, dest / name)
    for rel in ("pyproject.toml", "sync/__init__.py"):
        path = dest / rel
        text, n = _VERSION_LINE.subn(lambda m: f'{m.group(1)} = "{version}"', path.read_text(), 1)
        if n != 1:
            raise BuildError(f"{repo / rel} has no version line to set", "check the checkout")
        path.write_text(text)
    return dest


def _pip(args: Sequence[str], what: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pip", *args], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
        last = lines[-1].strip() if lines else f"exit status {proc.returncode}"
        raise BuildError(
            f"{what} failed: {last[:300]}", "read pip's message; fix it and build again"
        )


def project_wheel(src: Path, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    _pip(
        [
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-w",
            str(out),
            str(src),
        ],
        "building sohoa's wheel",
    )
    found = sorted(out.glob("sohoa-*.whl"))
    if not found:
        raise BuildError("pip built no sohoa wheel", "run pip wheel by hand to see why")
    return found[0]


def dependency_wheels(wheel: Path, out: Path, wheels_dir: Path | None, platform: str) -> None:
    """Every wheel ``wheel`` needs, into ``out``: from ``wheels_dir`` offline, else from the
    index for ``platform`` (a key of ``PLATFORMS``)."""
    if wheels_dir is not None:
        if not wheels_dir.is_dir():
            raise InputFileError(
                f"--wheels {wheels_dir} is not a folder", "give a folder of wheels"
            )
        args = ["--no-index", "--find-links", str(wheels_dir)]
    else:
        tags = [a for tag in PLATFORMS[platform] for a in ("--platform", tag)]
        args = ["--only-binary=:all:", *tags, "--python-version", "3.11", "--implementation", "cp"]
    _pip(
        ["download", "-q", "--find-links", str(wheel.parent), *args, "-d", str(out), str(wheel)],
        f"collecting the dependency wheels ({platform})",
    )


def local_platform() -> str:
    """This machine's entry of ``PLATFORMS``, named in a bundle built with --wheels."""
    machine = sysconfig.get_platform().rsplit("-", 1)[-1]
    return {"x86_64": "amd64", "aarch64": "aarch64", "armv7l": "armhf"}.get(machine, machine)


def build_release(
    repo: Path,
    version: str,
    out_dir: Path,
    key: Ed25519PrivateKey,
    *,
    platforms: Sequence[str],
    wheels_dir: Path | None,
    work: Path,
) -> tuple[Path, Manifest]:
    """Build ``out_dir/sohoa-<version>.bundle``; its path and manifest."""
    src = copy_sources(repo, version, work / "src")
    dist = work / "wheels"
    wheel = project_wheel(src, dist)
    names = [local_platform()] if wheels_dir is not None else list(platforms)
    for platform in names:
        dependency_wheels(wheel, dist, wheels_dir, platform)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"sohoa-{version}.bundle"
    manifest = write_bundle(
        out, version, SCHEMA_VERSION, tuple(names), sorted(dist.glob("*.whl")), key
    )
    return out, manifest
