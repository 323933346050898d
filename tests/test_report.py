"""The progress report counts documents, pages and A4 page equivalents per procedure and
period of issue, and per device and commune, exactly as the corpus was scanned.

The corpus goes the whole real way: printed cover sheets (``sohoa sheets``) and
generated pages of several paper sizes through capture (zbar, PDF, sealing), then
every envelope through warehouse ingest message by message (verification, decryption,
archive, catalogue from the metadata and the PDF's page sizes) into SQLite and into
PostgreSQL. The expected sums are written out from the corpus table below, not
computed by the code under test.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from agent.capture.pipeline import SealSettings, capture_batch
from agent.capture.samples import content_lines, make_page
from agent.capture.sheets import build_sheet
from agent.config import CaptureConfig
from device.barcodes import ZbarReader
from device.scanner import ScannedPage
from sync import enrolment, keys
from sync.envelope.header import manifest_bytes
from sync.envelope.reader import iter_segments, read_header, read_prefix
from sync.fleet_model import RegisterEntry, parse_register
from sync.protocol import manifest_topic, segment_topic
from sync.spool.store import Spool
from sync.warehouse.catalogue import a4_equivalent, dossier_date
from sync.warehouse.index import DocumentIndex, Tally, open_index
from sync.warehouse.ingest import Ingest, IngestSettings
from sync.warehouse.periods import period_of
from sync.warehouse.records import Counts
from sync.warehouse.report import (
    build_report,
    parse_day,
    pivot,
    report_csv,
    stored_bounds,
)

VN = timezone(timedelta(hours=7))
PAPER_MM = {"A5": (148, 210), "A4": (210, 297), "A3": (297, 420)}
A4_WEIGHT = {"A5": 1, "A4": 1, "A3": 2}  # the plans' rule, written out
OWNER = "001090012345"
CCCD = f"{OWNER}||Nguyen Van An|01011990|Nam|Xa An Binh|01012021"
REGISTER = "device,commune,district,contact\ndev-r-01,Xã An Bình,Huyện Mỹ Đức,0912000000\n"
MAY_10 = datetime(2024, 5, 10, 9, 30, tzinfo=VN).timestamp()
JUNE_1_EARLY = datetime(2024, 6, 1, 1, 0, tzinfo=VN).timestamp()  # still 31 May in UTC


@dataclass(frozen=True)
class Doc:
    """One document of the corpus as the test knows it."""

    doc_type: str
    tthc: str | None
    period: str
    papers: tuple[str, ...]
    owner: str | None = None


# device -> batches; a batch is its sheets in feeder order: ("DOSSIER"|"DOC", fields),
# ("page", paper) or ("cccd", paper)
CORPUS: dict[str, list[list[tuple[str, Any]]]] = {
    "dev-r-01": [
        [
            ("DOSSIER", {"dossier": "000.00.20.H56-230512-0003", "tthc": "1.001612"}),
            ("DOC", {"type": "KQ.G15.000031", "year": 1994}),
            ("cccd", "A4"),
            ("page", "A4"),
            ("DOC", {"type": "KQ.G15.000032", "year": 2010}),
            ("page", "A3"),
            ("page", "A4"),
            ("DOSSIER", {"dossier": "000.00.20.H56-230601-0001", "tthc": "1.004227.000.00.00.H56"}),
            ("DOC", {"type": "KQ.G15.000041"}),  # no year: the dossier code's (2023)
            ("page", "A5"),
        ]
    ],
    "dev-r-02": [
        [
            ("DOSSIER", {"dossier": "000.00.20.H56-191105-0002", "tthc": "1.001612"}),
            ("DOC", {"type": "KQ.G15.000031"}),  # the dossier code's year: 2019
            ("page", "A4"),
            ("page", "A4"),
            ("page", "A4"),
        ],
        [
            ("DOC", {"type": "KQ.X1.000001", "year": 2001}),  # no dossier: no procedure
            ("page", "A3"),
            ("DOC", {"type": "KQ.X1.000002"}),  # no year, no dossier: unknown
            ("page", "A4"),
        ],
    ],
}
EXPECTED = {
    "dev-r-01": [
        Doc("KQ.G15.000031", "1.001612", "<=1995", ("A4", "A4"), OWNER),
        Doc("KQ.G15.000032", "1.001612", "2006-2015", ("A3", "A4"), OWNER),
        Doc("KQ.G15.000041", "1.004227.000.00.00.H56", "2022-", ("A5",)),
    ],
    "dev-r-02": [
        Doc("KQ.G15.000031", "1.001612", "2016-2021", ("A4", "A4", "A4")),
        Doc("KQ.X1.000001", None, "1996-2005", ("A3",)),
        Doc("KQ.X1.000002", None, "unknown", ("A4",)),
    ],
}
STORED_AT = {"dev-r-01": MAY_10, "dev-r-02": JUNE_1_EARLY}


def sums(docs: list[Doc]) -> dict[tuple[str | None, str], tuple[int, int, int]]:
    out: dict[tuple[str | None, str], tuple[int, int, int]] = {}
    for d in docs:
        n, pages, a4 = out.get((d.tthc, d.period), (0, 0, 0))
        weight = sum(A4_WEIGHT[p] for p in d.papers)
        out[(d.tthc, d.period)] = (n + 1, pages + len(d.papers), a4 + weight)
    return out


def totals(docs: list[Doc]) -> dict[str, int]:
    return {
        "documents": len(docs),
        "pages": sum(len(d.papers) for d in docs),
        "a4_pages": sum(A4_WEIGHT[p] for d in docs for p in d.papers),
    }


# -- the real way in: capture, seal, ingest ---------------------------------------------------


def sheet_image(kind: str, value: Any, n: int) -> tuple[Image.Image, int]:
    if kind in ("DOSSIER", "DOC"):
        return build_sheet(kind, dict(value))[1], 300
    codes = [("QRCODE", CCCD)] if kind == "cccd" else []
    size = PAPER_MM[str(value)]
    return make_page(content_lines(n, 8), codes=codes, dpi=200, size_mm=size, seed=n), 200


class Feeder:
    def __init__(self, sheets: list[tuple[str, Any]]) -> None:
        self.sheets = sheets

    def pages(self) -> Iterator[ScannedPage]:
        for n, (kind, value) in enumerate(self.sheets):
            image, dpi = sheet_image(kind, value, n)
            yield ScannedPage(n, image, dpi, "feeder double")


@dataclass(frozen=True)
class Corpus:
    warehouse_key: Path
    devices: Path  # enrolled device keys
    envelopes: dict[str, list[Path]]  # per device, in capture order


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    root = tmp_path_factory.mktemp("corpus")
    public = keys.init_warehouse_keys(root / "warehouse.key", root / "warehouse.pub")
    envelopes: dict[str, list[Path]] = {}
    for device, batches in CORPUS.items():
        keys.init_device_keys(root / device / "device.key")
        enrolment.enroll_device(root / device / "device.pub", device, root / "devices")
        seal = SealSettings(device, keys.load_device_key(root / device / "device.key"), public)
        with Spool(root / device / "spool", reserve_bytes=0) as spool:
            for sheets in batches:
                result = capture_batch(
                    Feeder(sheets),
                    spool=spool,
                    reader=ZbarReader(),
                    capture=CaptureConfig(min_dpi=200),
                    seal=seal,
                )
                assert result.status == "complete" and not result.warnings, result
                envelopes.setdefault(device, []).extend(
                    spool.envelope_path(d.doc_id) for d in result.documents
                )
    return Corpus(root / "warehouse.key", root / "devices", envelopes)


def ingest_corpus(corpus: Corpus, index: DocumentIndex, archive: Path) -> None:
    private = keys.load_warehouse_private(corpus.warehouse_key)
    for device, paths in corpus.envelopes.items():
        stored_at = STORED_AT[device]
        settings = IngestSettings(archive, corpus.devices)
        ingest = Ingest(settings, private, index, clock=partial(float, stored_at))
        for path in paths:
            header = read_header(path)
            out = ingest.handle(
                manifest_topic(device, header.doc_id), manifest_bytes(header, read_prefix(path))
            )
            for i, segment in enumerate(iter_segments(path)):
                out += ingest.handle(segment_topic(device, header.doc_id, i), segment)
            assert out, f"{header.doc_id} was not stored"


@pytest.fixture(params=["sqlite", "postgresql"])
def index(
    request: pytest.FixtureRequest, corpus: Corpus, tmp_path: Path
) -> Iterator[DocumentIndex]:
    spec = "sqlite" if request.param == "sqlite" else str(request.getfixturevalue("postgres_db"))
    opened = open_index(spec, tmp_path / "archive")
    ingest_corpus(corpus, opened, tmp_path / "archive")
    yield opened
    opened.close()


def register() -> dict[str, RegisterEntry]:
    return parse_register(REGISTER)


def test_the_report_over_the_corpus_equals_its_sums(index: DocumentIndex) -> None:
    everything = EXPECTED["dev-r-01"] + EXPECTED["dev-r-02"]
    report = build_report(index.tally(), register()).to_json()
    rows = {(r["tthc_code"], r["period"]): r for r in report["rows"]}
    assert len(rows) == len(report["rows"])
    assert {k: (r["documents"], r["pages"], r["a4_pages"]) for k, r in rows.items()} == sums(
        everything
    )
    assert all(
        list(r) == ["tthc_code", "period", "documents", "pages", "a4_pages"] for r in report["rows"]
    )
    assert report["totals"] == totals(everything)
    assert report["devices"] == [
        {
            "device": "dev-r-01",
            "commune": "Xã An Bình",
            "district": "Huyện Mỹ Đức",
            **totals(EXPECTED["dev-r-01"]),
        },
        {"device": "dev-r-02", "commune": None, "district": None, **totals(EXPECTED["dev-r-02"])},
    ]


@pytest.mark.parametrize(
    ("first", "last", "devices"),
    [
        (date(2024, 5, 1), date(2024, 5, 31), ["dev-r-01"]),  # 01:00 on 1 June VN is June
        (date(2024, 6, 1), None, ["dev-r-02"]),
        (None, date(2024, 5, 9), []),
        (date(2024, 5, 10), date(2024, 6, 1), ["dev-r-01", "dev-r-02"]),
    ],
)
def test_dates_choose_documents_by_the_day_they_were_stored_in_vietnam(
    index: DocumentIndex, first: date | None, last: date | None, devices: list[str]
) -> None:
    report = build_report(index.tally(*stored_bounds(first, last)), None, first, last)
    chosen = [d for device in devices for d in EXPECTED[device]]
    assert {
        (r.tthc_code, r.period): (r.counts.documents, r.counts.pages, r.counts.a4_pages)
        for r in report.rows
    } == sums(chosen)


def test_ingest_catalogues_owner_procedure_dates_and_a4_pages(index: DocumentIndex) -> None:
    def year(issue: int | None, received: str | None) -> int | None:
        return issue or (int(received[:4]) if received else None)

    stored = {
        (d.device, d.doc_type): (
            d.tthc_code,
            period_of(year(d.issue_year, d.dossier_date)),
            d.pages,
            d.a4_pages,
            d.owner_id,
        )
        for d in index.all()
    }
    assert stored == {
        (device, e.doc_type): (
            e.tthc,
            e.period,
            len(e.papers),
            sum(A4_WEIGHT[p] for p in e.papers),
            e.owner,
        )
        for device, docs in EXPECTED.items()
        for e in docs
    }
    owned = {d.doc_id for d in index.all() if d.owner_id == OWNER}
    assert len(owned) == 2 and {h.doc.doc_id for h in index.search(OWNER)} == owned
    assert {d.dossier_date for d in index.all()} == {"2023-05-12", "2023-06-01", "2019-11-05", None}


# -- the rules, by themselves -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("year", "period"),
    [
        (None, "unknown"),
        (1975, "<=1995"),
        (1995, "<=1995"),
        (1996, "1996-2005"),
        (2005, "1996-2005"),
        (2006, "2006-2015"),
        (2015, "2006-2015"),
        (2016, "2016-2021"),
        (2021, "2016-2021"),
        (2022, "2022-"),
        (2031, "2022-"),
    ],
)
def test_a_year_falls_in_one_period_of_issue(year: int | None, period: str) -> None:
    assert period_of(year) == period


MM = 72 / 25.4


@pytest.mark.parametrize(
    ("paper", "mm", "a4"),
    [
        ("A4", (210, 297), 1),
        ("A4 landscape", (297, 210), 1),
        ("A4 cropped a little wide", (216, 303), 1),
        ("A5", (148, 210), 1),
        ("Letter", (215.9, 279.4), 1),
        ("A3", (297, 420), 2),
        ("A3 cropped a little wide", (303, 428), 2),
        ("Legal", (215.9, 355.6), 2),
        ("A2", (420, 594), 4),
        ("A1", (594, 841), 8),
    ],
)
def test_a_page_counts_by_its_area_against_a4(paper: str, mm: tuple[float, float], a4: int) -> None:
    assert a4_equivalent(mm[0] * MM, mm[1] * MM) == a4, paper


@pytest.mark.parametrize(
    ("code", "day"),
    [
        ("000.00.20.H56-230512-0003", "2023-05-12"),
        ("000.00.20.H56-000229-0001", "2000-02-29"),
        ("000.00.20.H56-230230-0001", None),  # no 30 February
        ("000.00.20.H56-2305120-0001", None),
        ("not a code", None),
        (None, None),
    ],
)
def test_a_dossier_code_gives_the_day_it_was_received(code: str | None, day: str | None) -> None:
    assert dossier_date(code) == day


@pytest.mark.parametrize(
    ("text", "day"),
    [
        ("2024-05-31", date(2024, 5, 31)),
        ("31/05/2024", date(2024, 5, 31)),
        ("1/6/2024", date(2024, 6, 1)),
    ],
)
def test_a_day_is_written_iso_or_vietnamese(text: str, day: date) -> None:
    assert parse_day(text, "--from") == day


@pytest.mark.parametrize("text", ["2024-13-01", "31/02/2024", "yesterday", "2024/05/31", ""])
def test_a_day_that_is_not_a_date_is_one_clear_error(text: str) -> None:
    from sync.errors import QueryError

    with pytest.raises(QueryError, match="is not a date") as caught:
        parse_day(text, "--to")
    assert "\n" not in caught.value.line() and "YYYY-MM-DD" in caught.value.line()


def test_a_day_in_vietnam_is_bounded_in_utc() -> None:
    assert stored_bounds(date(2024, 5, 1), date(2024, 5, 31)) == (
        "2024-04-30T17:00:00Z",
        "2024-05-31T17:00:00Z",
    )
    assert stored_bounds(None, None) == (None, None)
    assert datetime.fromtimestamp(JUNE_1_EARLY, UTC).date() == date(2024, 5, 31)


def test_a_tally_becomes_ordered_rows_devices_and_the_annex_table() -> None:
    tally = Tally(
        procedures=(
            (None, "unknown", Counts(3, 3, 3)),
            ("1.001612", "2022-", Counts(1, 2, 2)),
            ("1.001612", "<=1995", Counts(3, 6, 7)),
        ),
        devices=(("dev-b", Counts(4, 4, 4)), ("dev-a", Counts(3, 7, 8))),
    )
    report = build_report(tally, {"dev-a": RegisterEntry("dev-a", "Xã A", "Huyện B")})
    assert [r.to_json() for r in report.rows] == [
        {"tthc_code": "1.001612", "period": "<=1995", "documents": 3, "pages": 6, "a4_pages": 7},
        {"tthc_code": "1.001612", "period": "2022-", "documents": 1, "pages": 2, "a4_pages": 2},
        {"tthc_code": None, "period": "unknown", "documents": 3, "pages": 3, "a4_pages": 3},
    ]
    assert [d.to_json() for d in report.devices] == [
        {
            "device": "dev-a",
            "commune": "Xã A",
            "district": "Huyện B",
            "documents": 3,
            "pages": 7,
            "a4_pages": 8,
        },
        {
            "device": "dev-b",
            "commune": None,
            "district": None,
            "documents": 4,
            "pages": 4,
            "a4_pages": 4,
        },
    ]
    lines, columns = pivot(report)
    assert [(line.tthc_code, line.total) for line in lines] == [
        ("1.001612", Counts(4, 8, 9)),
        (None, Counts(3, 3, 3)),
    ]
    assert columns[0] == Counts(3, 6, 7) and columns[-1] == Counts(3, 3, 3)
    assert report_csv(report) == (
        "tthc_code,period,documents,pages,a4_pages\n"
        "1.001612,<=1995,3,6,7\n1.001612,2022-,1,2,2\n,unknown,3,3,3\n"
    )
