"""``sohoa warehouse search|report|export`` end to end: the real command line over a real
index (SQLite, and PostgreSQL for the report), its outputs, and one clear line for
every mistake — never a traceback."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from sync.warehouse.index import StoredDocument, open_index
from tests.support.site import REPO, SOHOA, write_toml

BASE = StoredDocument(
    doc_id="doc-0",
    device="dev-c-01",
    ciphertext_sha256="c" * 64,
    stored_at="2024-05-10T03:00:00Z",
    bytes=1000,
    pages=2,
    pdf_sha256="p" * 64,
    path="",
)
DOCS = [
    replace(
        BASE,
        dossier_code="000.00.20.H56-230512-0003",
        doc_type="KQ.G15.000031",
        owner_id="001090012345",
        tthc_code="1.001612",
        issue_year=1994,
        dossier_date="2023-05-12",
        a4_pages=3,
    ),
    replace(
        BASE,
        doc_id="doc-1",
        dossier_code="000.00.20.H56-230512-0003",
        tthc_code="1.001612",
        issue_year=1994,
        dossier_date="2023-05-12",
        pages=1500,
        a4_pages=1500,
    ),
    replace(BASE, doc_id="doc-2", device="dev-c-02", stored_at="2024-06-20T03:00:00Z"),
]
TEXT = "Giấy chứng nhận đăng ký hộ kinh doanh"
REGISTER = "dev-c-01,Xã An Bình,Huyện Mỹ Đức,\n"


@dataclass
class Warehouse:
    home: Path
    toml: Path

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "SOHOA_CONFIG": str(self.toml)}
        env.pop("SOHOA_HOME", None)
        return subprocess.run(
            [*SOHOA, "warehouse", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=REPO,
        )

    def json(self, *args: str) -> Any:
        proc = self.run(*args)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)


def make_warehouse(tmp_path: Path, index: str, docs: list[StoredDocument]) -> Warehouse:
    home = tmp_path / "warehouse"
    archive = home / "archive"
    (tmp_path / "register.csv").write_text(REGISTER, encoding="utf-8")
    toml = write_toml(
        tmp_path / "warehouse.toml",
        home,
        "warehouse",
        "mqtt://127.0.0.1:1883",
        warehouse={"index": index},
        fleet={"register": str(tmp_path / "register.csv")},
    )
    opened = open_index(index, archive)
    for d in docs:
        pdf = archive / "docs" / d.device / d.doc_id / "document.pdf"
        opened.add(replace(d, path=str(pdf)))
    if docs:
        opened.set_text(docs[0].device, docs[0].doc_id, TEXT)
    opened.close()
    return Warehouse(home, toml)


@pytest.fixture
def warehouse(tmp_path: Path) -> Warehouse:
    return make_warehouse(tmp_path, "sqlite", DOCS)


@pytest.fixture
def empty(tmp_path: Path) -> Warehouse:
    return make_warehouse(tmp_path, "sqlite", [])


REPORT: dict[str, Any] = {
    "from": None,
    "to": None,
    "rows": [
        {
            "tthc_code": "1.001612",
            "period": "<=1995",
            "documents": 2,
            "pages": 1502,
            "a4_pages": 1503,
        },
        {"tthc_code": None, "period": "unknown", "documents": 1, "pages": 2, "a4_pages": 2},
    ],
    "devices": [
        {
            "device": "dev-c-01",
            "commune": "Xã An Bình",
            "district": "Huyện Mỹ Đức",
            "documents": 2,
            "pages": 1502,
            "a4_pages": 1503,
        },
        {
            "device": "dev-c-02",
            "commune": None,
            "district": None,
            "documents": 1,
            "pages": 2,
            "a4_pages": 2,
        },
    ],
    "totals": {"documents": 3, "pages": 1504, "a4_pages": 1505},
}


def one_line(proc: subprocess.CompletedProcess[str], stream: str = "stderr") -> str:
    text = proc.stderr if stream == "stderr" else proc.stdout
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) == 1, text
    return lines[0]


def test_report_json_has_the_rows_devices_and_totals(warehouse: Warehouse) -> None:
    assert warehouse.json("report", "--json") == REPORT


def test_report_on_postgresql_says_the_same(tmp_path: Path, postgres_db: str) -> None:
    assert make_warehouse(tmp_path, postgres_db, DOCS).json("report", "--json") == REPORT


def test_report_dates_are_days_stored(warehouse: Warehouse) -> None:
    report = warehouse.json("report", "--json", "--from", "01/06/2024", "--to", "2024-06-30")
    assert (report["from"], report["to"], report["totals"]) == (
        "2024-06-01",
        "2024-06-30",
        {"documents": 1, "pages": 2, "a4_pages": 2},
    )


def test_report_csv_is_the_rows(warehouse: Warehouse) -> None:
    proc = warehouse.run("report", "--csv")
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert rows == [{k: "" if v is None else str(v) for k, v in r.items()} for r in REPORT["rows"]]


def test_report_html_is_the_annex_table_in_vietnamese(warehouse: Warehouse, tmp_path: Path) -> None:
    out = tmp_path / "phu-luc.html"
    proc = warehouse.run("report", "--html", str(out))
    assert proc.returncode == 0, proc.stderr
    assert f"printable table: {out}" in proc.stdout and "Tổng cộng / total" in proc.stdout
    page = out.read_text(encoding="utf-8")
    for needle in (
        '<html lang="vi">',
        "Phụ lục",
        "Mã thủ tục hành chính",
        "Đến năm 1995",
        "Từ năm 2022",
        "Chưa xác định",
        "1.001612",
        "1.503",  # 1503 A4 pages, Vietnamese thousands
        "Xã An Bình",
        "@page { size: A4 landscape",
    ):
        assert needle in page, needle


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("report", "--from", "2024-02-30"), "--from '2024-02-30' is not a date"),
        (("report", "--to", "mai"), "--to 'mai' is not a date"),
        (("report", "--from", "2024-06-02", "--to", "2024-06-01"), "is after --to"),
        (("search", "?!"), "has no letters or digits"),
        (("search", "ho", "--limit", "0"), "--limit 0 is not between 1 and 1000"),
        (("export", "000.00.20.H56-999999-0001"), "no stored document belongs to that dossier"),
    ],
)
def test_a_mistake_is_one_clear_line(
    warehouse: Warehouse, args: tuple[str, ...], needle: str
) -> None:
    proc = warehouse.run(*args)
    line = one_line(proc)
    assert proc.returncode == 1 and proc.stdout == ""
    assert line.startswith("error: ") and " — " in line and needle in line, line


@pytest.mark.parametrize(
    ("args", "code", "expect"),
    [
        (("report",), 0, lambda line: line.startswith("Chưa có tài liệu nào được lưu")),
        (("search", "hộ kinh doanh"), 0, lambda line: line.startswith("Không tìm thấy")),
        (("export", "--all"), 1, lambda line: "kho chưa có hồ sơ nào" in line),
    ],
)
def test_an_empty_index_is_said_in_one_line(
    empty: Warehouse, args: tuple[str, ...], code: int, expect: Callable[[str], bool]
) -> None:
    proc = empty.run(*args)
    assert proc.returncode == code
    assert expect(one_line(proc, "stdout" if code == 0 else "stderr"))


def test_search_prints_one_line_per_hit(warehouse: Warehouse) -> None:
    proc = warehouse.run("search", "ho kinh doanh")
    assert proc.returncode == 0, proc.stderr
    hit, count = proc.stdout.splitlines()
    assert hit.split()[:4] == ["doc-0", "dev-c-01", "000.00.20.H56-230512-0003", "KQ.G15.000031"]
    assert hit.endswith(TEXT) and count == "1 tài liệu / document(s)"


def test_search_json_has_stable_keys(warehouse: Warehouse) -> None:
    found = warehouse.json("search", "001090012345", "--json")
    assert found["documents"] == [
        {
            "doc_id": "doc-0",
            "device": "dev-c-01",
            "dossier_code": "000.00.20.H56-230512-0003",
            "doc_type": "KQ.G15.000031",
            "tthc_code": "1.001612",
            "stored_at": "2024-05-10T03:00:00Z",
            "pages": 2,
            "path": str(warehouse.home / "archive/docs/dev-c-01/doc-0/document.pdf"),
            "snippet": "chủ hồ sơ: 001090012345",
        }
    ]


def test_export_prints_and_writes_dongbohosomc(warehouse: Warehouse, tmp_path: Path) -> None:
    body = warehouse.json(
        "export", "000.00.20.H56-230512-0003", "--json", "--base-url", "https://kho.example.vn/a"
    )
    (record,) = body["data"]
    assert (body["service"], record["MaHoSo"], record["MaTTHC"]) == (
        "DongBoHoSoMC",
        "000.00.20.H56-230512-0003",
        "1.001612",
    )
    assert [a["DuongDanTaiTepTin"] for a in record["TaiLieuNop"]] == [
        "https://kho.example.vn/a/docs/dev-c-01/doc-0/document.pdf",
        "https://kho.example.vn/a/docs/dev-c-01/doc-1/document.pdf",
    ]
    out = tmp_path / "out"
    proc = warehouse.run("export", "--all", "--out", str(out))
    assert proc.returncode == 0 and one_line(proc, "stdout") == f"1 hồ sơ / dossier(s) → {out}"
    written = json.loads((out / "000.00.20.H56-230512-0003.json").read_text(encoding="utf-8"))
    assert written["data"][0]["TaiLieuNop"][0]["DuongDanTaiTepTin"].startswith("file:///")
