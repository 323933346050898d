"""The paperless-ngx barcode samples: separators and document starts found as its tests expect."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import pytest
from PIL import Image, ImageSequence

from agent.capture.codes import Signal, interpret
from agent.capture.split import PageFacts, split_batch
from device.barcodes import Barcode, ZbarReader

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "paperless-barcodes"
if not CORPUS.is_dir():
    pytest.skip("shared corpus not present", allow_module_level=True)

CASES = json.loads((CORPUS / "EXPECTED.json").read_text(encoding="utf-8"))["cases"]
READER = ZbarReader(fallback=None)  # zbar alone must pass the corpus


def _pages(path: Path) -> list[Image.Image]:
    if path.suffix == ".pdf":
        import pypdfium2 as pdfium

        doc = pdfium.PdfDocument(str(path))
        try:
            return [page.render(scale=300 / 72).to_pil() for page in doc]
        finally:
            doc.close()
    with Image.open(path) as image:
        return [frame.copy() for frame in ImageSequence.Iterator(image)]


@cache
def barcodes(name: str) -> tuple[tuple[Barcode, ...], ...]:
    """Each page's barcodes, decoded once per file for all the cases that use it."""
    return tuple(READER.read(image, n) for n, image in enumerate(_pages(CORPUS / name)))


def _facts(case: dict) -> list[PageFacts]:
    """Our signals, plus paperless's ASN stickers mapped to a dossier code of their own
    (a new value starts a new document, as an ASN does in paperless)."""
    prefix = case.get("start_prefix")
    facts = []
    for n, found in enumerate(barcodes(case["file"])):
        signals = [interpret(b, case.get("separator_text", "PATCHT")) for b in found]
        if prefix:
            signals += [
                Signal("dossier", n, dossier_code=f"ASN:{b.value}")
                for b in found
                if b.value.startswith(prefix)
            ]
        facts.append(PageFacts(n, tuple(signals)))
    return facts


def _case_id(case: dict) -> str:
    return f"{case['file']}[{case.get('separator_text', case.get('start_prefix'))}]"


SPLIT_CASES = [c for c in CASES if "separators" in c]
VALUE_CASES = [c for c in CASES if "start_value" in c]


@pytest.mark.parametrize("case", SPLIT_CASES, ids=[_case_id(c) for c in SPLIT_CASES])
def test_corpus_separators_and_documents(case):
    plan = split_batch(_facts(case))
    assert list(plan.separators) == case["separators"]
    if "documents" in case:
        assert len(plan.documents) == case["documents"]
    if "starts" in case:
        assert set(case["starts"]) <= {d.pages[0] for d in plan.documents}
        prefix = case["start_prefix"]
        pages_with_start = [
            n
            for n, found in enumerate(barcodes(case["file"]))
            if n > 0 and any(b.value.startswith(prefix) for b in found)
        ]
        assert pages_with_start == case["starts"]


@pytest.mark.parametrize("case", VALUE_CASES, ids=[_case_id(c) for c in VALUE_CASES])
def test_corpus_start_value(case):
    prefix = case["start_prefix"]
    values = [b.value for found in barcodes(case["file"]) for b in found]
    starts = [int(v[len(prefix) :]) for v in values if v.startswith(prefix)]
    assert starts == [case["start_value"]]
