"""Host health probes: CPU temperature, disk, uptime, load and clock sync.

Every sysfs/procfs path is built from one ``root`` prefix so that tests point it at a
fake tree. Each probe degrades on its own: an absent or unreadable source gives None
and a log line naming the path, so one bad sensor never breaks the health report.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# Thermal zone types that measure the CPU/SoC itself, preferred over the others.
CPU_ZONE_TYPES = ("cpu", "soc", "x86_pkg_temp", "coretemp", "k10temp", "acpitz")


@dataclass(frozen=True)
class HostHealth:
    cpu_temp_c: float | None
    disk_free_bytes: int | None
    disk_total_bytes: int | None
    uptime_s: float | None
    clock_synced: bool | None
    load1: float | None


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        log.debug("health probe source absent path=%s", path)
    except OSError as exc:
        log.warning("health probe unreadable path=%s error=%s", path, exc.strerror or exc)
    return None


def _first_number(path: Path) -> float | None:
    text = _read(path)
    if text is None:
        return None
    try:
        return float(text.split()[0])
    except (IndexError, ValueError):
        log.warning("health probe unparsable path=%s", path)
        return None


def _zone_rank(zone: Path) -> int:
    kind = (_read(zone / "type") or "").strip().lower()
    return next((i for i, name in enumerate(CPU_ZONE_TYPES) if name in kind), len(CPU_ZONE_TYPES))


def cpu_temperature(root: Path) -> float | None:
    """°C from the CPU's thermal zone (millidegrees in sysfs); the hottest readable zone
    when none names the CPU."""
    zones = sorted((root / "sys/class/thermal").glob("thermal_zone*"))
    readings: list[tuple[int, float]] = []
    for zone in zones:
        value = _first_number(zone / "temp")
        if value is not None:
            readings.append((_zone_rank(zone), value / 1000.0))
    if not readings:
        log.debug("no thermal zone readable path=%s", root / "sys/class/thermal")
        return None
    best_rank = min(rank for rank, _ in readings)
    return max(value for rank, value in readings if rank == best_rank)


def disk_space(data_dir: Path) -> tuple[int | None, int | None]:
    """(free bytes available to the service, total bytes) of the data directory's
    filesystem."""
    try:
        st = os.statvfs(data_dir)
    except OSError as exc:
        log.warning("health probe unreadable path=%s error=%s", data_dir, exc.strerror or exc)
        return None, None
    return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize


def clock_synced(root: Path) -> bool | None:
    """systemd-timesyncd's flag file: True when present, False while timesyncd runs
    without sync, None when timesyncd is not in use (another NTP client may be)."""
    timesync = root / "run/systemd/timesync"
    if (timesync / "synchronized").exists():
        return True
    if timesync.is_dir():
        return False
    log.debug("clock sync unknown: no timesyncd state path=%s", timesync)
    return None


def read_host_health(data_dir: Path, *, root: Path = Path("/")) -> HostHealth:
    free, total = disk_space(data_dir)
    return HostHealth(
        cpu_temp_c=cpu_temperature(root),
        disk_free_bytes=free,
        disk_total_bytes=total,
        uptime_s=_first_number(root / "proc/uptime"),
        clock_synced=clock_synced(root),
        load1=_first_number(root / "proc/loadavg"),
    )
