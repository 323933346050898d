"""``sohoa warehouse report``: the province's progress in documents, pages and A4 page
equivalents per procedure (mã TTHC) and period of issue, and per device and commune
where the fleet register names them.

The index tallies (``DocumentIndex.tally``); everything here is pure: dates given on
the command line are days in Vietnam time (UTC+7, no daylight saving), turned into
bounds on the stored time (UTC); the tallies are summed into rows. JSON rows are
exactly ``{"tthc_code", "period", "documents", "pages", "a4_pages"}``.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Any

from sync.errors import QueryError
from sync.fleet_model import RegisterEntry
from sync.warehouse.periods import ORDER
from sync.warehouse.records import Counts, Tally

VIETNAM = timezone(timedelta(hours=7))
ROW_KEYS = ("tthc_code", "period", "documents", "pages", "a4_pages")
DATE_HINT = "write the date as YYYY-MM-DD or DD/MM/YYYY, e.g. 2024-05-31 / ghi ngày dạng 31/05/2024"


@dataclass(frozen=True)
class ReportRow:
    tthc_code: str | None
    period: str
    counts: Counts

    def to_json(self) -> dict[str, Any]:
        return {"tthc_code": self.tthc_code, "period": self.period, **self.counts.to_json()}


@dataclass(frozen=True)
class DeviceRow:
    device: str
    commune: str | None
    district: str | None
    counts: Counts

    def to_json(self) -> dict[str, Any]:
        where = {"device": self.device, "commune": self.commune, "district": self.district}
        return {**where, **self.counts.to_json()}


@dataclass(frozen=True)
class Report:
    first: date | None  # the days asked for, inclusive
    last: date | None
    rows: tuple[ReportRow, ...]
    devices: tuple[DeviceRow, ...]
    total: Counts

    def to_json(self) -> dict[str, Any]:
        return {
            "from": self.first.isoformat() if self.first else None,
            "to": self.last.isoformat() if self.last else None,
            "rows": [r.to_json() for r in self.rows],
            "devices": [d.to_json() for d in self.devices],
            "totals": self.total.to_json(),
        }


def parse_day(text: str, flag: str) -> date:
    """A day from the command line: ``2024-05-31`` or ``31/05/2024``."""
    text = text.strip()
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            return date.fromisoformat(text)
        m = re.fullmatch(r"(\d{1,2})/(\d{1,2})/(\d{4})", text)
        if m:
            return date(int(m[3]), int(m[2]), int(m[1]))
    except ValueError:
        pass
    raise QueryError(f"{flag} {text[:40]!r} is not a date / không phải là ngày", DATE_HINT)


def check_days(first: date | None, last: date | None) -> None:
    if first is not None and last is not None and first > last:
        raise QueryError(
            f"--from {first.isoformat()} is after --to {last.isoformat()}"
            " / ngày bắt đầu sau ngày kết thúc",
            "swap the two dates",
        )


def _utc_text(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def stored_bounds(first: date | None, last: date | None) -> tuple[str | None, str | None]:
    """``since <= stored_at < until`` for the Vietnam days ``first`` to ``last``."""
    since = _utc_text(datetime.combine(first, time(), VIETNAM)) if first else None
    until = None
    if last is not None:
        until = _utc_text(datetime.combine(last + timedelta(days=1), time(), VIETNAM))
    return since, until


def _row_order(key: tuple[str | None, str]) -> tuple[bool, str, int]:
    return key[0] is None, key[0] or "", ORDER.index(key[1])


def build_report(
    tally: Tally,
    register: Mapping[str, RegisterEntry] | None,
    first: date | None = None,
    last: date | None = None,
) -> Report:
    """Rows per (procedure, period) and per device, from the index's tally."""
    by_row = {(code, period): counts for code, period, counts in tally.procedures}
    rows = tuple(ReportRow(k[0], k[1], by_row[k]) for k in sorted(by_row, key=_row_order))
    devices = []
    for device, counts in sorted(tally.devices):
        entry = (register or {}).get(device)
        commune = entry.commune or None if entry else None
        district = entry.district or None if entry else None
        devices.append(DeviceRow(device, commune, district, counts))
    total = sum((r.counts for r in rows), Counts())
    return Report(first, last, rows, tuple(devices), total)


def communes(report: Report) -> list[tuple[str | None, str | None, Counts]]:
    """(district, commune, counts) for each commune the register names, in order; the
    devices it does not name are summed under (None, None) at the end."""
    sums: dict[tuple[str | None, str | None], Counts] = {}
    for d in report.devices:
        key = (d.district, d.commune) if d.commune or d.district else (None, None)
        sums[key] = sums.get(key, Counts()) + d.counts
    keys = sorted(sums, key=lambda k: (k == (None, None), k[0] or "", k[1] or ""))
    return [(k[0], k[1], sums[k]) for k in keys]


def report_csv(report: Report) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(ROW_KEYS)
    for r in report.rows:
        writer.writerow([r.tthc_code or "", r.period, *r.counts.to_json().values()])
    return out.getvalue()


@dataclass(frozen=True)
class PivotRow:
    """One procedure across every period (``periods.ORDER``): the annex's table row."""

    tthc_code: str | None
    cells: tuple[Counts, ...]
    total: Counts


def pivot(report: Report) -> tuple[list[PivotRow], tuple[Counts, ...]]:
    """The rows turned into one line per procedure, and the column totals."""
    by_code: dict[str | None, dict[str, Counts]] = {}
    for r in report.rows:  # already in procedure order
        by_code.setdefault(r.tthc_code, {})[r.period] = r.counts
    lines = []
    for code, periods in by_code.items():
        cells = tuple(periods.get(p, Counts()) for p in ORDER)
        lines.append(PivotRow(code, cells, sum(cells, Counts())))
    columns = tuple(sum((line.cells[i] for line in lines), Counts()) for i in range(len(ORDER)))
    return lines, columns
