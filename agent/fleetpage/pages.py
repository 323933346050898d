"""The fleet page and its API: rows for people, the same facts as JSON, /metrics.

Pure helpers (``rows``, ``chart_svg``) turn the model into what the templates
show; the handlers only read the ``FleetPicture`` the service keeps.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from aiohttp import web

from agent.fleetpage.i18n import strings
from agent.web.http import base_app, json_data, lang_of, page, templates
from sync.fleet_alerts import Alert
from sync.fleet_metrics import render_metrics
from sync.fleet_model import FleetModel, RegisterEntry

HERE = Path(__file__).resolve().parent
SORTS = ("attention", "device", "district", "backlog", "oldest", "last_seen", "disk")


@dataclass
class FleetPicture:
    """What the service knows, as the handlers read it."""

    model: FleetModel
    alerts: Callable[[], list[Alert]]
    history: Callable[[str, float], list[tuple[str, int, int]]]
    extra_metrics: Callable[[], list[tuple[str, str, str, float]]]


PICTURE = web.AppKey("picture", FleetPicture)
ENV = web.AppKey("fleet_env", jinja2.Environment)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} d"


def _mb(n: float | None) -> str:
    return "-" if n is None else f"{n / 2**20:.1f}"


def _size(n: float | None) -> str:
    if n is None:
        return "-"
    return f"{n / 2**30:.1f} GB" if n >= 2**30 else f"{n / 2**20:.0f} MB"


def _date(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d", time.gmtime(ts))


def row(
    facts: dict[str, Any], entry: RegisterEntry, alerts: list[str], t: dict[str, str], now: float
) -> dict[str, Any]:
    online = facts["online"]
    status = (
        t["never_seen"] if facts["last_seen"] is None else t["online"] if online else t["offline"]
    )
    rate = facts["link_rate_bps"]
    link = "-" if rate is None else f"{rate / 1000:.0f} kbit/s"
    if facts["rtt_ms"] is not None:
        link += f" · {facts['rtt_ms']:.0f} ms"
    disk = _size(facts["disk_free_bytes"])
    if facts["disk_free_ratio"] is not None:
        disk += f" ({facts['disk_free_ratio'] * 100:.0f} %)"
    return {
        **facts,
        "commune": entry.commune,
        "district": entry.district,
        "contact": entry.contact,
        "status": status,
        "backlog": "-" if facts["pending_docs"] is None else int(facts["pending_docs"]),
        "backlog_mb": _mb(facts["pending_bytes"]),
        "oldest": _age(facts["oldest_pending_age_s"]),
        "pages_today": "-" if facts["pages_today"] is None else int(facts["pages_today"]),
        "scanner": t.get(f"scanner_{facts['scanner_state']}", "-")
        if facts["scanner_state"]
        else "-",
        "disk": disk,
        "cert": _date(facts["cert_expiry"]),
        "link": link,
        "release": " · ".join(
            str(facts[k])
            for k in ("release_version", "release_status", "release_reason")
            if facts[k]
        )
        or "-",
        "last_seen": "-"
        if facts["last_seen"] is None
        else f"{_age(now - facts['last_seen'])} {t['ago']}",
        "alerts": alerts,
    }


def _sort_key(sort: str) -> Callable[[dict[str, Any]], Any]:
    keys: dict[str, Callable[[dict[str, Any]], Any]] = {
        "device": lambda r: r["device"],
        "district": lambda r: (r["district"], r["device"]),
        "backlog": lambda r: -(r["pending_docs"] or 0),
        "oldest": lambda r: -(r["oldest_pending_age_s"] or 0),
        "last_seen": lambda r: r["last_seen"] if isinstance(r["last_seen"], float) else 0.0,
        "disk": lambda r: r["disk_free_ratio"] if r["disk_free_ratio"] is not None else 2.0,
    }
    return keys.get(sort, lambda r: (not r["alerts"], r["online"] is not False, r["device"]))


def rows(
    picture: FleetPicture, t: dict[str, str], now: float, sort: str, district: str
) -> list[dict[str, Any]]:
    register = picture.model.register or {}
    by_device: dict[str, list[str]] = {}
    for a in picture.alerts():
        if a.device:
            by_device.setdefault(a.device, []).append(a.summary)
    out = [
        row(
            v.facts(),
            register.get(v.device) or RegisterEntry(v.device),
            by_device.get(v.device, []),
            t,
            now,
        )
        for v in picture.model.views()
    ]
    out = [r for r in out if not district or r["district"] == district]
    return sorted(out, key=_sort_key(sort))


def release_summary(shown: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each release the devices reported on: how many are at each step, and the failures
    (rolled back or refused) with their reason; newest version first."""
    out: dict[str, dict[str, Any]] = {}
    for r in shown:
        version, status = r.get("release_version"), r.get("release_status")
        if not version or not status:
            continue
        entry = out.setdefault(version, {"version": version, "by_status": {}, "failures": []})
        entry["by_status"][status] = entry["by_status"].get(status, 0) + 1
        if status in ("rolled_back", "refused"):
            entry["failures"].append((r["device"], status, r.get("release_reason") or ""))
    order = sorted(out, key=lambda v: tuple(int(p) for p in v.split(".") if p.isdigit()))
    return [out[v] for v in reversed(order)]


def chart_svg(days: Sequence[tuple[str, int, int]], width: int = 900, height: int = 220) -> str:
    """Bars of pages per day and a line of the largest backlog, as an inline SVG."""
    if not days:
        return ""
    top = max(1, max(max(b, p) for _d, b, p in days))
    step = width / len(days)
    bars, points = [], []
    for i, (_day, backlog, pages) in enumerate(days):
        h = (height - 30) * pages / top
        bars.append(
            f'<rect x="{i * step + 2:.1f}" y="{height - 20 - h:.1f}" width="{step - 4:.1f}"'
            f' height="{h:.1f}" fill="#8fb3d9"><title>{pages}</title></rect>'
        )
        points.append(
            f"{i * step + step / 2:.1f},{height - 20 - (height - 30) * backlog / top:.1f}"
        )
    first, last = days[0][0], days[-1][0]
    return (
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" xmlns="http://www.w3.org/2000/svg">'
        + "".join(bars)
        + f'<polyline points="{" ".join(points)}" fill="none" stroke="#b00020" stroke-width="2"/>'
        + f'<text x="2" y="{height - 4}" font-size="12">{first}</text>'
        + f'<text x="{width - 80}" y="{height - 4}" font-size="12">{last}</text>'
        + f'<text x="2" y="12" font-size="12">max {top}</text></svg>'
    )


def _common(request: web.Request) -> dict[str, Any]:
    lang = lang_of(request)
    other = "en" if lang == "vi" else "vi"
    query = {k: v for k, v in request.query.items() if k != "lang"}
    t = strings(lang)
    return {
        "t": t,
        "lang": lang,
        "query_other": urlencode({**query, "lang": other}),
        "strings_json": json_data(t),
    }


async def index(request: web.Request) -> web.StreamResponse:
    common = _common(request)
    sort = request.query.get("sort", "attention")
    district = request.query.get("district", "")
    picture = request.app[PICTURE]
    all_rows = rows(picture, common["t"], time.time(), sort if sort in SORTS else "attention", "")
    shown = [r for r in all_rows if not district or r["district"] == district]
    t = common["t"]
    columns = [
        ("device", t["device"]),
        ("district", t["district"]),
        ("attention", t["status"]),
        ("backlog", t["backlog"]),
        ("backlog", t["backlog_mb"]),
        ("oldest", t["oldest"]),
        ("attention", t["pages_today"]),
        ("attention", t["scanner"]),
        ("disk", t["disk"]),
        ("attention", t["certificate"]),
        ("attention", t["link"]),
        ("last_seen", t["last_seen"]),
    ]
    return page(
        request.app[ENV],
        "fleet.html",
        **common,
        rows=shown,
        columns=columns,
        sort=sort,
        district=district,
        districts=sorted({r["district"] for r in all_rows if r["district"]}),
        attention=sum(1 for r in shown if r["alerts"]),
        releases=release_summary(shown),
        alerts=[a.to_json() for a in picture.alerts() if a.device],
    )


async def device_page(request: web.Request) -> web.StreamResponse:
    common = _common(request)
    device = request.match_info["device"]
    picture = request.app[PICTURE]
    found = [
        r for r in rows(picture, common["t"], time.time(), "device", "") if r["device"] == device
    ]
    if not found:
        raise web.HTTPNotFound()
    chart = chart_svg(picture.history(device, time.time()))
    return page(request.app[ENV], "device.html", **common, row=found[0], chart=chart)


def _api_row(r: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "device",
        "commune",
        "district",
        "online",
        "last_seen",
        "pending_docs",
        "pending_bytes",
        "oldest_pending_age_s",
        "disk_free_bytes",
        "disk_total_bytes",
        "scanner_present",
        "scanner_state",
        "scanner_error",
        "pages_today",
        "pages_total",
        "cert_expiry",
        "link_rate_bps",
        "rtt_ms",
        "clock_synced",
        "version",
        "release_version",
        "release_status",
        "release_reason",
        "alerts",
    )
    return {k: r.get(k) for k in keys}


async def api_devices(request: web.Request) -> web.StreamResponse:
    picture = request.app[PICTURE]
    t = strings("en")
    return web.json_response(
        {"devices": [_api_row(r) for r in rows(picture, t, time.time(), "device", "")]}
    )


async def api_device(request: web.Request) -> web.StreamResponse:
    picture = request.app[PICTURE]
    device = request.match_info["device"]
    found = [
        r for r in rows(picture, strings("en"), time.time(), "device", "") if r["device"] == device
    ]
    if not found:
        return web.json_response({"error": f"no device {device!r}"}, status=404)
    history = [
        {"day": d, "backlog": b, "pages": p} for d, b, p in picture.history(device, time.time())
    ]
    return web.json_response({**_api_row(found[0]), "history": history})


async def metrics(request: web.Request) -> web.StreamResponse:
    picture = request.app[PICTURE]
    text = render_metrics(picture.model.views(), picture.model.register, picture.extra_metrics())
    return web.Response(
        text=text, content_type="text/plain", charset="utf-8", headers={"X-Format": "0.0.4"}
    )


async def login_page(request: web.Request) -> web.StreamResponse:
    return page(request.app[ENV], "login.html", **_common(request))


def build_fleet_app(home: Path, picture: FleetPicture, *, secure: bool = False) -> web.Application:
    app = base_app(home, secure=secure)
    app[PICTURE] = picture
    app[ENV] = templates(HERE / "templates")
    r = app.router
    r.add_get("/", index)
    r.add_get("/login", login_page)
    r.add_get("/devices/{device}", device_page)
    r.add_get("/api/devices", api_devices)
    r.add_get("/api/devices/{device}", api_device)
    r.add_get("/metrics", metrics)
    r.add_static("/static/", HERE / "static", show_index=False)
    return app
