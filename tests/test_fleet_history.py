"""The fleet's 30-day history on SQLite and on PostgreSQL: the same answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sync.fleet_history import History, open_history
from sync.fleet_model import FleetModel

DAY = 86400.0
NOW = 1_764_547_200.0  # 2025-12-01T00:00:00Z


@pytest.fixture(params=["sqlite", "postgresql"])
def history(request: pytest.FixtureRequest, tmp_path: Path) -> History:
    spec = "sqlite" if request.param == "sqlite" else request.getfixturevalue("postgres_db")
    return open_history(spec, tmp_path)


def seen(model: FleetModel, device: str, pending: int, pages: int, at: float) -> None:
    body = {"device": device, "spool": {"pending_docs": pending}, "capture": {"pages_today": pages}}
    assert model.apply(f"sohoa/v1/d/{device}/health", json.dumps(body).encode(), at) is None


def test_a_day_keeps_its_largest_backlog_and_pages_and_silent_days_are_zero(
    history: History,
) -> None:
    model = FleetModel()
    seen(model, "d1", 40, 10, NOW - 2 * DAY)
    history.record(model.views(), NOW - 2 * DAY)
    seen(model, "d1", 5, 25, NOW - 2 * DAY + 3600)  # later the same day: fewer waiting
    history.record(model.views(), NOW - 2 * DAY + 3600)
    seen(model, "d1", 7, 3, NOW)
    history.record(model.views(), NOW)

    days = history.days("d1", NOW)

    assert len(days) == 30 and days[-1] == ("2025-12-01", 7, 3)
    assert days[-3] == ("2025-11-29", 40, 25)
    assert days[-2] == ("2025-11-30", 0, 0)
    assert history.days("nobody", NOW)[-1] == ("2025-12-01", 0, 0)
    history.close()
