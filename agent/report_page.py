"""The progress report as a printable HTML table, laid out like the annex of a provincial
digitization plan (Vietnamese), rendered on the server with Jinja2.

One page: procedures down the side, the periods of issue across (documents and A4
pages in each), totals at the foot; then the same per commune and device. Its CSS
prints it on A4 landscape with the header repeated on every page, so a browser's
"print to PDF" makes the PDF; no PDF library is involved.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import jinja2

from sync.warehouse.periods import LABELS_VI, ORDER
from sync.warehouse.report import VIETNAM, DeviceRow, Report, communes, pivot

TEMPLATES = Path(__file__).resolve().parent / "web" / "templates"


def vn_number(n: int) -> str:
    """12345 → "12.345": Vietnamese groups thousands with dots."""
    return f"{n:,}".replace(",", ".")


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(default=True),
        undefined=jinja2.StrictUndefined,
    )
    env.filters["vn"] = vn_number
    return env


def _unit_order(d: DeviceRow) -> tuple[bool, str, str, str]:
    return d.district is None and d.commune is None, d.district or "", d.commune or "", d.device


def render_report(report: Report, now: datetime | None = None) -> str:
    """The whole HTML document for ``report``."""
    lines, columns = pivot(report)
    made = (now or datetime.now(UTC)).astimezone(VIETNAM)
    return (
        _environment()
        .get_template("warehouse_report.html")
        .render(
            periods=[LABELS_VI[p] for p in ORDER],
            lines=lines,
            columns=columns,
            total=report.total,
            communes=communes(report),
            devices=sorted(report.devices, key=_unit_order),
            first=report.first.strftime("%d/%m/%Y") if report.first else None,
            last=report.last.strftime("%d/%m/%Y") if report.last else None,
            made=made.strftime("%H:%M ngày %d/%m/%Y"),
        )
    )
