"""A private SANE configuration that enables only libsane's ``test`` backend.

Used by ``sohoa demo`` and the test suite: libsane reads ``$SANE_CONFIG_DIR``
at its first init, so pointing it here gives a virtual ADF scanner (10 pages per
feeder run) with an A4 bed and a grid test picture.
"""

from __future__ import annotations

from pathlib import Path

SYSTEM_TEST_CONF = Path("/etc/sane.d/test.conf")

# Our changes to the packaged test.conf: an A4 page fits (the default bed is 200 mm),
# pages show a grid rather than solid black, and the test options (bool sensors the
# way scanner buttons look) are on.
OVERRIDES = {
    "geometry_max": "300.0",
    "test-picture": '"Grid"',
    "enable-test-options": "true",
}


def write_sane_config(directory: Path, system_conf: Path = SYSTEM_TEST_CONF) -> Path:
    """A private SANE configuration directory whose dll.conf lists only ``test``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "dll.conf").write_text("test\n")
    lines = system_conf.read_text().splitlines() if system_conf.exists() else []
    seen: set[str] = set()
    out = []
    for line in lines:
        key = line.split(" ", 1)[0]
        if key in OVERRIDES and not line.startswith("#"):
            line = f"{key} {OVERRIDES[key]}"
            seen.add(key)
        out.append(line)
    out += [f"{key} {value}" for key, value in OVERRIDES.items() if key not in seen]
    (directory / "test.conf").write_text("\n".join(out) + "\n")
    return directory
