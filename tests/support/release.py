"""Release bundles of the current tree, built once per test session with no network.

``release_bundles`` builds, with ``sohoa release build --wheels``: the tree at
two bumped versions and the tree at a version that fails to start (its sync
service raises at import), all signed by one release key made for the session. Dependency wheels are packed from the test environment
(``tests.support.wheels``), for this machine's platform only.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.site import REPO, SOHOA
from tests.support.wheels import dependency_wheels

GOOD, NEXT, BROKEN = "0.9.1", "0.9.2", "0.9.3"


@dataclass(frozen=True)
class Bundles:
    key: Path  # release.key; release.pub beside it
    pub: Path
    dir: Path

    def of(self, version: str) -> Path:
        return self.dir / f"sohoa-{version}.bundle"


def _broken_tree(dest: Path) -> Path:
    for name in ("agent", "device", "sync", "pyproject.toml", "README.md", "LICENSE"):
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / name)
    with (dest / "agent" / "services" / "sync.py").open("a") as f:
        f.write('\nraise RuntimeError("this release fails to start")\n')
    return dest


def build(key: Path, version: str, out: Path, wheels: Path, source: Path) -> subprocess.Popen[str]:
    """``sohoa release build`` of ``source`` at ``version``, offline, as a process."""
    cmd = [*SOHOA, "release", "build", "--key", str(key), "--version", version, "--out", str(out)]
    cmd += ["--wheels", str(wheels), "--source", str(source)]
    return subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.fixture(scope="session")
def release_bundles(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bundles]:
    root = tmp_path_factory.mktemp("release")
    key = root / "keys" / "release.key"
    subprocess.run(
        [*SOHOA, "release", "keygen", "--key", str(key)], check=True, cwd=REPO, capture_output=True
    )
    wheels = root / "wheels"
    dependency_wheels(wheels)
    out = root / "bundles"
    broken = _broken_tree(root / "broken-src")
    builds = [build(key, v, out, wheels, REPO) for v in (GOOD, NEXT)]
    builds.append(build(key, BROKEN, out, wheels, broken))
    for proc in builds:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    yield Bundles(key, key.with_suffix(".pub"), out)
