"""A harder counter corpus, generated: what a commune's feeder really sees.

Crooked feeds, phone photos of documents (uneven light, vignette, heavy JPEG),
curled pages (a shadow along the fold), faded print (thermal fax, weak toner),
grime and heavy JPEG, receipts with small codes, and the true blank backs of a
duplex run (paper texture, bleed-through of the front, dust, the lid's shadow).
Every page is deterministic for its seed and kept apart from the project's own
samples, so that nothing in the pipeline is tuned to it.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from agent.capture.samples import content_lines, make_page, receipt_page

DPI = 300
# (kind, how many in one round of the corpus); faded and blank backs are what the
# blank checks are judged on
KINDS = (
    ("text", 3),
    ("crooked", 2),
    ("phone", 2),
    ("curled", 2),
    ("faded", 3),
    ("faded_note", 1),
    ("grime", 2),
    ("small_code", 1),
    ("blank_back", 4),
)


@dataclass(frozen=True)
class CounterPage:
    kind: str
    seed: int
    jpeg: bytes  # as a scanner (or phone) delivers it: a grey JPEG
    dossier: str | None = None  # the code a small-code receipt carries

    @property
    def blank(self) -> bool:
        return self.kind == "blank_back"

    @property
    def faded(self) -> bool:
        return self.kind.startswith("faded")


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _as_array(page: Image.Image) -> np.ndarray:
    return np.asarray(page, dtype=np.float32)


def _to_image(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "L")


def _paper(size: tuple[int, int], seed: int, level: float = 238.0) -> np.ndarray:
    """Paper with texture: slow blotches a few levels deep and fine fibre noise."""
    rng = _rng(seed)
    w, h = size
    blotches = Image.fromarray(rng.integers(0, 256, size=(h // 60, w // 60), dtype=np.uint8))
    slow = _as_array(blotches.resize((w, h), Image.Resampling.BICUBIC)) / 255.0 - 0.5
    fibre = rng.normal(0.0, 3.0, size=(h // 2, w // 2)).astype(np.float32)
    fine = np.kron(fibre, np.ones((2, 2), dtype=np.float32))[:h, :w]
    return level + 6.0 * slow + fine


def _ink_on(paper: np.ndarray, ink: Image.Image, depth: float) -> np.ndarray:
    """Lay ``ink`` (a white page with black print) on ``paper``, ``depth`` levels deep."""
    coverage = 1.0 - _as_array(ink) / 255.0
    return paper - depth * coverage


def _text(seed: int, lines: int = 18) -> Image.Image:
    return make_page(content_lines(seed, lines), marker=f"c{seed}", seed=seed)


def _jpeg(page: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    page.save(buffer, "JPEG", quality=quality, dpi=(DPI, DPI))
    return buffer.getvalue()


def _light(pixels: np.ndarray, seed: int, strength: float) -> np.ndarray:
    """Uneven light: a gradient across the page and a dark vignette (a phone photo)."""
    h, w = pixels.shape
    rng = _rng(seed)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * xs / w + np.sin(angle) * ys / h) * strength
    r2 = ((xs - w / 2) / w) ** 2 + ((ys - h / 2) / h) ** 2
    return pixels * (1.0 - ramp - strength * r2)


def make(kind: str, seed: int) -> CounterPage:
    """One page of ``kind`` for ``seed``, as JPEG bytes."""
    rng = _rng(seed)
    if kind == "blank_back":
        paper = _paper((2480, 3508), seed, level=float(rng.uniform(228, 245)))
        # bleed-through: the front's print, mirrored, blurred by the paper and faint
        front = ImageOps.mirror(_text(seed + 1000)).filter(ImageFilter.GaussianBlur(3))
        pixels = _ink_on(paper, front, float(rng.uniform(5, 10)))
        for _ in range(40):  # dust: specks well under a millimetre
            y, x = int(rng.integers(200, 3300)), int(rng.integers(200, 2280))
            size = int(rng.integers(1, 5))
            pixels[y : y + size, x : x + size] -= 120
        shadow = int(rng.integers(20, 60))  # the lid's shadow down one edge
        pixels[:, :shadow] -= np.linspace(120, 0, shadow, dtype=np.float32)[None, :]
        return CounterPage(kind, seed, _jpeg(_to_image(pixels), 70))
    if kind in ("faded", "faded_note"):
        lines = 18 if kind == "faded" else 2
        paper = _paper((2480, 3508), seed, level=float(rng.uniform(225, 242)))
        depth = float(rng.uniform(28, 45))  # weak toner, an old thermal fax
        ink = _text(seed, lines).filter(ImageFilter.GaussianBlur(0.8))
        page = _to_image(_ink_on(paper, ink, depth)).rotate(
            float(rng.uniform(-1.5, 1.5)), resample=Image.Resampling.BILINEAR, fillcolor=235
        )
        return CounterPage(kind, seed, _jpeg(page, 60))
    if kind == "small_code":
        dossier = f"000.00.20.H56-2305{seed % 100:02d}-{seed % 10000:04d}"
        page = receipt_page(dossier, code_scale=0.7, skew_deg=float(rng.uniform(-1, 1)))
        pixels = _ink_on(_paper(page.size, seed), page, 200.0)
        return CounterPage(kind, seed, _jpeg(_to_image(pixels), 55), dossier)
    page = _text(seed)
    if kind == "crooked":
        page = page.rotate(
            float(rng.choice([-1, 1]) * rng.uniform(2.5, 6)),
            resample=Image.Resampling.BILINEAR,
            fillcolor=255,
        )
    pixels = _ink_on(_paper(page.size, seed), page, 210.0)
    quality = 75
    if kind == "phone":
        pixels = _light(pixels, seed, 0.25)
        quality = 40
    elif kind == "curled":
        edge = int(rng.integers(250, 450))  # the fold's shadow, deepening to the edge
        pixels[:, -edge:] *= np.linspace(1.0, 0.55, edge, dtype=np.float32)[None, :]
    elif kind == "grime":
        for _ in range(25):  # smudges and dirt, then heavy JPEG
            y, x = int(rng.integers(0, 3400)), int(rng.integers(0, 2400))
            size = int(rng.integers(3, 25))
            pixels[y : y + size, x : x + size] -= float(rng.uniform(40, 120))
        pixels += rng.normal(0, 8, size=pixels.shape).astype(np.float32)
        quality = 25
    return CounterPage(kind, seed, _jpeg(_to_image(pixels), quality))


def corpus(rounds: int = 1, seed: int = 17) -> Iterator[CounterPage]:
    """Every kind, ``rounds`` times, in a fixed order; one page made at a time."""
    n = 0
    for r in range(rounds):
        for kind, count in KINDS:
            for _ in range(count):
                yield make(kind, seed * 1000 + r * 100 + n)
                n += 1
