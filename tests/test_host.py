"""Host health probes over fake sysfs/procfs trees, and once over the real machine."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from device.host import HostHealth, read_host_health


def tree(root: Path, files: dict[str, str | None]) -> Path:
    """Files under ``root``; a None value makes a directory (unreadable as a file)."""
    for rel, text in files.items():
        path = root / rel
        if text is None:
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    return root


PI = {
    "sys/class/thermal/thermal_zone0/type": "cpu-thermal\n",
    "sys/class/thermal/thermal_zone0/temp": "51540\n",
    "proc/uptime": "12345.67 40000.00\n",
    "proc/loadavg": "0.52 0.40 0.30 1/123 4567\n",
    "run/systemd/timesync/synchronized": "",
}


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (PI, (51.54, 12345.67, True, 0.52)),
        ({}, (None, None, None, None)),  # a container: nothing to read
        (
            {  # laptop: the package sensor wins over a hotter wifi card
                "sys/class/thermal/thermal_zone0/type": "iwlwifi_1\n",
                "sys/class/thermal/thermal_zone0/temp": "60000\n",
                "sys/class/thermal/thermal_zone1/type": "x86_pkg_temp\n",
                "sys/class/thermal/thermal_zone1/temp": "45000\n",
                "run/systemd/timesync": None,
            },
            (45.0, None, False, None),
        ),
        (
            {  # no zone names the CPU: the hottest one
                "sys/class/thermal/thermal_zone0/temp": "30000\n",
                "sys/class/thermal/thermal_zone1/temp": "42500\n",
            },
            (42.5, None, None, None),
        ),
        (
            {  # broken sensors and files: each probe gives up alone
                "sys/class/thermal/thermal_zone0/temp": None,
                "sys/class/thermal/thermal_zone1/temp": "N/A\n",
                "proc/uptime": "",
                "proc/loadavg": "garbage\n",
            },
            (None, None, None, None),
        ),
    ],
)
def test_each_probe_reads_its_source_or_gives_none(
    tmp_path: Path, files: dict[str, str | None], expected: tuple[object, ...]
) -> None:
    root = tree(tmp_path / "root", files)
    health = read_host_health(tmp_path, root=root)

    got = (health.cpu_temp_c, health.uptime_s, health.clock_synced, health.load1)

    assert got == expected


def test_disk_space_is_that_of_the_data_directory(tmp_path: Path) -> None:
    st = os.statvfs(tmp_path)

    health = read_host_health(tmp_path, root=tmp_path / "empty")

    assert (health.disk_free_bytes, health.disk_total_bytes) == (
        st.f_bavail * st.f_frsize,
        st.f_blocks * st.f_frsize,
    )


def test_missing_data_directory_gives_no_disk_figures_and_logs_the_path(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = tmp_path / "not-yet-created"

    health = read_host_health(missing, root=tmp_path)

    assert (health.disk_free_bytes, health.disk_total_bytes) == (None, None)
    assert f"path={missing}" in caplog.text


def test_unreadable_sensor_is_logged_with_its_path(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tree(tmp_path, {"sys/class/thermal/thermal_zone0/temp": None})

    assert read_host_health(tmp_path, root=root).cpu_temp_c is None
    assert f"path={root / 'sys/class/thermal/thermal_zone0/temp'}" in caplog.text


def test_this_machine_reports_what_a_linux_host_always_has(tmp_path: Path) -> None:
    health = read_host_health(tmp_path)

    assert isinstance(health, HostHealth)
    assert (
        health.uptime_s is not None and health.uptime_s > 0,
        health.load1 is not None and health.load1 >= 0,
        health.disk_free_bytes is not None and health.disk_free_bytes > 0,
    ) == (True, True, True)
