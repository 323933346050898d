"""The README's first command: `sohoa demo` runs the whole path and says so."""

from __future__ import annotations

import os
import subprocess

from tests.support.site import REPO, SOHOA


def test_demo_delivers_every_document_and_shows_the_fleet() -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("SOHOA_CONFIG", "SOHOA_HOME", "SANE_CONFIG_DIR")
    }
    proc = subprocess.run(
        [*SOHOA, "demo"], capture_output=True, text=True, timeout=300, env=env, cwd=REPO
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "8 pages -> 3 documents" in out
    assert "scan --device test:0: 10 pages -> 1 documents" in out
    assert out.count("sha256 verified") == 4 and "MISMATCH" not in out
    assert "demo-H56-0001" in out.split("fleet:")[1]
    assert out.rstrip().endswith("demo: every captured document arrived and verified")
