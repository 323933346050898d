"""A device installs a real wheel, not the checkout: every package and room is in it."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_the_wheel_holds_every_package_and_its_type_marker(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("sohoa-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    expected = {
        str(init.parent.relative_to(REPO))
        for top in ("agent", "device", "sync")
        for init in (REPO / top).rglob("__init__.py")
    }
    packaged = {n.rsplit("/", 1)[0] for n in names if n.endswith("/__init__.py")}
    assert packaged == expected
    assert {"agent/py.typed", "device/py.typed", "sync/py.typed"} <= set(names)
