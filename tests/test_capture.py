"""A feeder batch through capture_batch with real parts: zbar, page checks, PDF/A,
sealed envelopes in a real spool, opened again with the warehouse key."""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pypdfium2 as pdfium
import pytest
from PIL import Image

from agent.capture.pagememory import PageMemory
from agent.capture.pipeline import CaptureResult, SealSettings, capture_batch
from agent.capture.samples import blank_page, content_lines, make_page, receipt_page
from agent.config import CaptureConfig
from agent.errors import PageWorkError
from device.barcodes import Barcode, ZbarReader
from device.errors import ScannerError
from device.pixels import Reduced
from device.scanner import SaneScanner, ScannedPage, ScanSettings
from sync.envelope.header import verify_header
from sync.envelope.opening import open_envelope
from sync.envelope.payload import unpack_payload
from sync.envelope.reader import iter_segments, read_header, read_prefix
from sync.keys import (
    WarehousePrivate,
    init_device_keys,
    init_warehouse_keys,
    load_device_key,
    load_warehouse_private,
)
from sync.spool.store import Spool
from tests.support.counter_pages import make

DEVICE_ID = "test-device"
RECEIPTS = {"receipt1": "000.00.20.H56-230512-0003", "receipt2": "000.00.20.H56-230512-0004"}


@dataclass(frozen=True)
class Keys:
    seal: SealSettings
    warehouse: WarehousePrivate


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    directory = tmp_path_factory.mktemp("keys")
    init_device_keys(directory / "device.key")
    public = init_warehouse_keys(directory / "warehouse.key", directory / "warehouse.pub")
    seal = SealSettings(DEVICE_ID, load_device_key(directory / "device.key"), public)
    return Keys(seal, load_warehouse_private(directory / "warehouse.key"))


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    with Spool(tmp_path / "spool", reserve_bytes=0) as opened:
        yield opened


@pytest.fixture(scope="module")
def reader() -> ZbarReader:
    return ZbarReader()


@cache
def page(kind: str) -> Image.Image:
    """A 300-dpi A4 grey page: "text", "text2", "blank" or "patcht" (a separator sheet)."""
    if kind == "blank":
        return blank_page()
    if kind == "patcht":
        return make_page(["PATCH T"], codes=[("CODE39", "PATCHT")])
    if kind in RECEIPTS:
        return receipt_page(RECEIPTS[kind])
    return make_page(content_lines(len(kind)), marker=kind, seed=len(kind))


class Feeder:
    """A scanner double: hands out pages, then optionally jams."""

    def __init__(self, pages: Sequence[tuple[str, int]], jam_after: int | None = None) -> None:
        self.sheets = pages
        self.jam_after = jam_after

    def pages(self) -> Iterator[ScannedPage]:
        for n, (kind, dpi) in enumerate(self.sheets):
            if n == self.jam_after:
                raise ScannerError(
                    f"paper jam after {n} pages", "open the feeder, clear the sheet, scan again"
                )
            image = page(kind)
            if dpi != 300:
                image = image.reduce(300 // dpi)
            yield ScannedPage(n, image, dpi, "feeder double")


def run(
    source: Feeder | SaneScanner,
    spool: Spool,
    keys: Keys,
    reader: ZbarReader,
    **config: object,
) -> CaptureResult:
    return capture_batch(
        source,
        spool=spool,
        reader=reader,
        capture=CaptureConfig(**config),  # type: ignore[arg-type]
        seal=keys.seal,
    )


def opened_pdf_pages(spool: Spool, doc_id: str, keys: Keys) -> tuple[int, dict[str, object]]:
    """Open a sealed envelope as the warehouse would: pages of its PDF and its tags."""
    path = spool.envelope_path(doc_id)
    header = read_header(path)
    verify_header(header, keys.seal.device_key.public_key())
    chunks = open_envelope(header, read_prefix(path), iter_segments(path), keys.warehouse)
    pdf = io.BytesIO()
    device = (header.device_id, header.doc_id, keys.seal.device_key.public_key())
    unpacked = unpack_payload(chunks, pdf.write, device=device, created=header.created)
    assert unpacked.signed  # the device's signature covers the tags and the PDF
    meta = unpacked.meta
    document = pdfium.PdfDocument(pdf.getvalue())
    try:
        return len(document), meta
    finally:
        document.close()


def shape(result: CaptureResult, spool: Spool, keys: Keys) -> list[tuple[int, int]]:
    """(pages the result reports, pages in the sealed PDF) for each document."""
    return [(d.pages, opened_pdf_pages(spool, d.doc_id, keys)[0]) for d in result.documents]


def test_paper_jam_keeps_the_pages_scanned_before_it(spool, keys, reader):
    feeder = Feeder([("text", 300)] * 5, jam_after=3)
    result = run(feeder, spool, keys, reader)
    assert (result.status, result.pages_in, result.flags) == ("interrupted", 3, ("interrupted",))
    assert result.warnings == (
        "paper jam after 3 pages — open the feeder, clear the sheet, scan again",
    )
    assert shape(result, spool, keys) == [(3, 3)]
    assert [d.doc_id for d in spool.pending()] == [result.documents[0].doc_id]


@pytest.mark.parametrize(
    "dpis,expected",
    [((300, 150, 300), [(2, 2)]), ((150,), [])],
    ids=["others kept", "nothing left to seal"],
)
def test_low_resolution_page_is_refused_and_the_others_kept(spool, keys, reader, dpis, expected):
    feeder = Feeder([(f"text{n}", dpi) for n, dpi in enumerate(dpis)])
    result = run(feeder, spool, keys, reader)
    assert (result.status, result.pages_in, result.flags) == (
        "complete",
        len(dpis),
        ("rejected_pages",),
    )
    page = dpis.index(150) + 1
    (warning,) = result.warnings
    assert warning.startswith(f"trang {page} / page {page}: ") and "150 dpi" in warning
    assert shape(result, spool, keys) == expected


@pytest.mark.parametrize(
    "drop_blank,expected",
    [(True, [(2, 2)]), (False, [(3, 3)])],
    ids=["blank dropped", "blank kept"],
)
def test_blank_back_pages_are_dropped_when_configured(spool, keys, reader, drop_blank, expected):
    feeder = Feeder([("text", 300), ("blank", 300), ("text2", 300)])
    result = run(feeder, spool, keys, reader, drop_blank=drop_blank)
    assert shape(result, spool, keys) == expected


def test_patch_t_sheet_splits_the_batch_into_two_documents(spool, keys, reader):
    feeder = Feeder([("text", 300), ("text2", 300), ("patcht", 300), ("text", 300)])
    result = run(feeder, spool, keys, reader)
    assert (result.status, result.separators) == ("complete", (2,))
    assert shape(result, spool, keys) == [(2, 2), (1, 1)]
    _, meta = opened_pdf_pages(spool, result.documents[1].doc_id, keys)
    assert (meta["device_id"], meta["batch_id"], meta["profile"]) == (
        DEVICE_ID,
        result.batch_id,
        "text",
    )


def test_sane_test_scanner_batch_becomes_one_ten_page_document(
    spool, keys, reader, sane_test_scanner
):
    scanner = SaneScanner(sane_test_scanner, ScanSettings("adf", "gray", 50))
    result = run(scanner, spool, keys, reader, min_dpi=50)
    assert (result.status, result.pages_in, result.warnings) == ("complete", 10, ())
    assert shape(result, spool, keys) == [(10, 10)]


class Listed:
    """Pages as a scanner delivering JPEG hands them over."""

    def __init__(self, jpegs: Sequence[bytes]) -> None:
        self.jpegs = jpegs

    def pages(self) -> Iterator[ScannedPage]:
        for n, data in enumerate(self.jpegs):
            yield ScannedPage(n, Image.open(io.BytesIO(data)), 300, "feeder", data)


def test_faded_pages_are_kept_with_drop_blank_and_true_backs_dropped(spool, keys, reader):
    sheets = [make("faded", 21), make("blank_back", 22), make("faded_note", 23)]
    result = run(Listed([p.jpeg for p in sheets]), spool, keys, reader, drop_blank=True)
    assert shape(result, spool, keys) == [(2, 2)]
    assert result.warnings == ("Đã bỏ 1 trang trắng (trang 2) / 1 blank pages dropped (pages 2)",)


def mixed_batch() -> list[tuple[str, int]]:
    """Two dossiers, a PATCHT sheet, a blank back: splitting has something to get wrong."""
    return [
        ("receipt1", 300),
        ("text", 300),
        ("blank", 300),
        ("patcht", 300),
        ("text2", 300),
        ("receipt2", 300),
        ("text3", 300),
        ("text", 300),
    ]


def test_four_workers_give_the_same_documents_as_one(spool, keys, reader):
    results = [run(Feeder(mixed_batch()), spool, keys, reader, workers=n) for n in (1, 4)]
    seen = [
        (
            r.separators,
            r.warnings,
            [(d.dossier_code, d.pages, d.flags) for d in r.documents],
            shape(r, spool, keys),
        )
        for r in results
    ]
    assert seen[0] == seen[1]
    assert seen[0][2] == [
        (RECEIPTS["receipt1"], 3, ("blank_pages",)),
        (RECEIPTS["receipt1"], 1, ()),
        (RECEIPTS["receipt2"], 3, ()),
    ]


class FailingReader:
    """zbar, until page ``fail_at``: a worker dying mid-batch (a bug, a native crash)."""

    def __init__(self, reader: ZbarReader, fail_at: int) -> None:
        self.reader, self.fail_at = reader, fail_at

    def read(
        self, image: Image.Image, index: int, *, small: Reduced | None = None
    ) -> tuple[Barcode, ...]:
        if index == self.fail_at:
            raise RuntimeError("worker died")
        return self.reader.read(image, index, small=small)


@pytest.mark.parametrize("workers", [1, 4])
def test_a_worker_failing_mid_batch_stops_it_cleanly_and_seals_nothing(
    spool, keys, reader, workers
):
    with pytest.raises(PageWorkError) as failed:
        run(Feeder(mixed_batch()), spool, keys, FailingReader(reader, 4), workers=workers)
    assert failed.value.line() == (
        "error: Trang 5 không xử lý được, lô này chưa được lưu / page 5 could not be"
        " processed (RuntimeError), this batch was not saved — quét lại lô này; nếu lặp lại,"
        " chạy sohoa doctor / scan the batch again; if it happens again, run sohoa doctor"
    )
    assert spool.pending() == [] and list(spool.tmp_dir.iterdir()) == []
    # the spool takes the next batch as if nothing happened
    assert shape(run(Feeder([("text", 300)]), spool, keys, reader), spool, keys) == [(1, 1)]


def test_a_workers_pages_are_decoded_into_its_own_memory_as_pillow_decodes_them() -> None:
    memory = PageMemory()
    decoded = []
    for kind, seed in (("text", 1), ("faded", 2), ("phone", 3)):
        data = make(kind, seed).jpeg
        expected = np.asarray(Image.open(io.BytesIO(data)))
        page = memory.decode(Image.open(io.BytesIO(data)))
        assert np.array_equal(np.asarray(page), expected)
        # the ink is thresholded from the same memory, read in place
        pixels = memory.pixels(page)
        assert pixels is not None and np.array_equal(pixels, expected)
        decoded.append(page.im)
    # one page's memory, every page
    assert all(core is decoded[0] for core in decoded)
    # a page already decoded (a SANE frame) is left as it is
    frame = Image.new("L", (40, 30), 200)
    assert memory.decode(frame) is frame and frame.im is not decoded[0]
    assert memory.pixels(frame) is None
