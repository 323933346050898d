"""A staged rollout as a value: which devices a release goes to, what each reported,
and whether the rollout stops itself.

Pure functions only; ``sohoa release offer`` and the fleet service keep the
value on disk and feed it the devices' reports (``…/rel/r``).

- ``select_targets``: ``--to DEVICE``, ``group:NAME`` (from the province's
  device register) or ``N%``. A percentage takes the devices whose hash of
  (version, device id) is lowest, so the same release goes to the same devices
  however often it is offered, and a larger percentage only adds devices.
- A rollout stops itself when the devices that rolled back exceed
  ``max_rollback_fraction`` of its targets (``[release] max_rollback_fraction``);
  a stopped rollout offers to no further device.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from sync.errors import ConfigError

STATUSES = ("offered", "downloading", "installed", "healthy", "rolled_back", "refused")
FINISHED = ("healthy", "rolled_back", "refused")
_PERCENT = re.compile(r"^([0-9]{1,3}(?:\.[0-9]+)?)%$")


def _rank(version: str, device: str) -> bytes:
    return hashlib.sha256(f"{version}\0{device}".encode()).digest()


def select_targets(
    to: str, version: str, devices: Iterable[str], groups: Mapping[str, Iterable[str]]
) -> tuple[str, ...]:
    """The devices ``--to`` names, in a stable order."""
    known = sorted(set(devices))
    if (m := _PERCENT.match(to)) is not None:
        share = float(m.group(1))
        if not 0 < share <= 100:
            raise ConfigError(f"--to {to}: a share is more than 0 % and at most 100 %", "e.g. 10%")
        count = max(1, math.ceil(len(known) * share / 100)) if known else 0
        return tuple(sorted(sorted(known, key=lambda d: _rank(version, d))[:count]))
    if to.startswith("group:"):
        name = to.removeprefix("group:")
        if name not in groups:
            raise ConfigError(
                f"--to {to}: no group {name!r} in the device register",
                "name a district or commune the register lists",
            )
        return tuple(sorted(set(groups[name])))
    if to not in known:
        raise ConfigError(f"--to {to}: no enrolled device has that id", "check 'sohoa fleet'")
    return (to,)


@dataclass(frozen=True)
class DeviceReport:
    status: str
    reason: str = ""


@dataclass(frozen=True)
class Rollout:
    version: str
    targets: tuple[str, ...]
    max_rollback_fraction: float
    allow_downgrade: bool = False
    reports: Mapping[str, DeviceReport] = field(default_factory=dict)
    stopped: str = ""  # why the rollout stopped itself; "" while it runs


def record(rollout: Rollout, device: str, report: DeviceReport) -> Rollout:
    """The rollout after ``device`` reported; it stops itself once too many rolled back."""
    if device not in rollout.targets or report.status not in STATUSES:
        return rollout
    reports = {**rollout.reports, device: report}
    updated = replace(rollout, reports=reports)
    if not rollout.stopped and too_many_rollbacks(updated):
        failed = rollbacks(updated)
        updated = replace(
            updated,
            stopped=f"{failed} of {len(rollout.targets)} devices rolled back"
            f" (more than {rollout.max_rollback_fraction:.0%})",
        )
    return updated


def widen(rollout: Rollout, targets: tuple[str, ...], *, allow_downgrade: bool) -> Rollout:
    """The rollout offered again, to more devices (``--to 10%`` then ``--to 50%``): what
    devices reported stays, so none is offered a release it already runs; offering it
    again is the province's decision to go on, so a stopped rollout runs again."""
    merged = tuple(sorted(set(rollout.targets) | set(targets)))
    return replace(rollout, targets=merged, allow_downgrade=allow_downgrade, stopped="")


def rollbacks(rollout: Rollout) -> int:
    return sum(1 for r in rollout.reports.values() if r.status == "rolled_back")


def too_many_rollbacks(rollout: Rollout) -> bool:
    if not rollout.targets:
        return False
    return rollbacks(rollout) / len(rollout.targets) > rollout.max_rollback_fraction


def may_offer(rollout: Rollout, device: str) -> bool:
    """Whether ``device`` should (still) get the offer: a target that has not begun,
    while the rollout runs."""
    if rollout.stopped or device not in rollout.targets:
        return False
    return device not in rollout.reports or rollout.reports[device].status == "offered"


def progress(rollout: Rollout) -> dict[str, object]:
    """What the fleet page and ``sohoa release status --json`` show of a rollout."""
    counts = dict.fromkeys(STATUSES, 0)
    for r in rollout.reports.values():
        counts[r.status] += 1
    counts["offered"] = len(rollout.targets) - sum(counts[s] for s in STATUSES[1:])
    return {
        "version": rollout.version,
        "targets": len(rollout.targets),
        "by_status": counts,
        "stopped": rollout.stopped or None,
        "failures": {
            d: r.reason for d, r in sorted(rollout.reports.items()) if r.status in FINISHED[1:]
        },
    }
