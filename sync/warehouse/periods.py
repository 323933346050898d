"""Periods of issue, as the digitization plans count work: ≤ 1995, 1996–2005,
2006–2015, 2016–2021, 2022 on, else unknown.

A document's year of issue is its cover sheet's ``Y=``, else the year of the date in
its dossier code; ``year_sql`` and ``period_sql`` say the same in SQL, so that a
backend groups rows without sending each one to Python.
"""

from __future__ import annotations

# (key, first year, last year); None = open-ended
PERIODS: tuple[tuple[str, int | None, int | None], ...] = (
    ("<=1995", None, 1995),
    ("1996-2005", 1996, 2005),
    ("2006-2015", 2006, 2015),
    ("2016-2021", 2016, 2021),
    ("2022-", 2022, None),
)
UNKNOWN = "unknown"
ORDER = (*(key for key, _, _ in PERIODS), UNKNOWN)
LABELS_VI = {
    "<=1995": "Đến năm 1995",
    "1996-2005": "1996 – 2005",
    "2006-2015": "2006 – 2015",
    "2016-2021": "2016 – 2021",
    "2022-": "Từ năm 2022",
    UNKNOWN: "Chưa xác định",
}
# both SQLite and PostgreSQL: the issue year, else the dossier code's year
YEAR_SQL = "COALESCE(issue_year, CAST(substr(dossier_date, 1, 4) AS INTEGER))"


def period_of(year: int | None) -> str:
    """The period a year of issue falls in."""
    if year is None:
        return UNKNOWN
    for key, first, last in PERIODS:
        if (first is None or year >= first) and (last is None or year <= last):
            return key
    return UNKNOWN  # not reached: the periods cover every year


def period_sql(year: str = YEAR_SQL) -> str:
    """``period_of`` as an SQL CASE over the expression ``year`` (built from constants)."""
    arms = [f"WHEN ({year}) IS NULL THEN '{UNKNOWN}'"]
    for key, _, last in PERIODS:
        arms.append(
            f"WHEN ({year}) <= {last} THEN '{key}'" if last is not None else f"ELSE '{key}'"
        )
    return "CASE " + " ".join(arms) + " END"
