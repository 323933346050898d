"""Page sources from files: a folder of page images, a multi-page TIFF, a PDF, a hot folder.

``pages_from_path`` streams pages one at a time (a 500-page TIFF is never held in
memory) as ``ScannedPage`` values in mode "1", "L" or "RGB". A plain baseline JPEG of
at least 200 dpi — a file, or the only image on a scanned PDF page — keeps its original
bytes so that the PDF step wraps it without re-encoding. ``HotFolder`` serves network
scanners that write files into a shared directory: a file is taken only once it has
settled and loads completely, and it is moved aside, never lost, whatever happens.
"""

from __future__ import annotations

import io
import logging
import re
import shutil
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
from PIL import Image, ImageOps

from device.errors import InputError
from device.scanner import ScannedPage

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".pnm", ".pbm", ".pgm", ".ppm"}
)
PAGE_SUFFIXES = IMAGE_SUFFIXES | {".pdf"}
TEMP_SUFFIXES = (".part", ".partial", ".tmp", ".temp", ".crdownload", ".filepart", ".swp", "~")
MIN_PASSTHROUGH_DPI = 200
ORIENTATION = 0x0112  # EXIF tag
_UNREADABLE = (OSError, ValueError, SyntaxError, EOFError, struct.error, pdfium.PdfiumError)

# A raster page: image, dpi, original JPEG bytes or None, label ("a.tif#2")
_Raster = tuple[Image.Image, int, bytes | None, str]


def natural_key(name: str) -> tuple[Any, ...]:
    """Sort key that puts page2 before page10 (and equals plain order for zero-padded names)."""
    parts = re.split(r"(\d+)", name.casefold())
    return (tuple(int(p) if p.isdigit() else p for p in parts), name)


def is_temp_name(name: str) -> bool:
    """Names that scanners, SMB clients and editors use while a file is still written."""
    lowered = name.lower()
    return name.startswith((".", "~")) or lowered.endswith(TEMP_SUFFIXES)


def page_files(folder: Path) -> list[Path]:
    """The page files of a folder, in name order; other files and temp names are skipped."""
    return sorted(
        (
            p
            for p in folder.iterdir()
            if p.is_file() and p.suffix.lower() in PAGE_SUFFIXES and not is_temp_name(p.name)
        ),
        key=lambda p: natural_key(p.name),
    )


def image_dpi(info: Mapping[Any, Any], default_dpi: int) -> int:
    """Resolution from PIL's ``info["dpi"]`` (JFIF, EXIF, pHYs, TIFF tags); the smaller
    axis for non-square pixels; ``default_dpi`` when absent or meaningless."""
    dpi = info.get("dpi")
    try:
        value = round(min(float(dpi[0]), float(dpi[1])))  # type: ignore[index]
    except (TypeError, ValueError, IndexError):
        return default_dpi
    return value if value > 1 else default_dpi


def jpeg_frame(data: bytes) -> tuple[int, int] | None:
    """(SOF marker, components) of a JPEG stream, or None when it is not one."""
    if data[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return (marker, data[i + 9]) if i + 9 < len(data) else None
        if marker in (0xD9, 0xDA):  # end of image or start of scan before any frame
            return None
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None


def is_plain_jpeg(data: bytes) -> bool:
    """Baseline (SOF0) gray or YCbCr/RGB JPEG: what a PDF can wrap as it is."""
    frame = jpeg_frame(data)
    return frame is not None and frame[0] == 0xC0 and frame[1] in (1, 3)


def _normalized(image: Image.Image) -> Image.Image:
    if image.mode in ("1", "L", "RGB"):
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat.convert("L") if image.mode == "LA" else flat
    if image.mode.startswith("I"):  # 16-bit gray from PNG or TIFF
        wide = np.asarray(image, dtype=np.uint32)
        return Image.fromarray((wide >> 8).clip(0, 255).astype(np.uint8), "L")
    if image.mode == "F":
        return image.convert("L")
    return image.convert("RGB")


def _label(file: Path, number: int, count: int) -> str:
    return file.name if count == 1 else f"{file.name}#{number + 1}"


def _image_pages(file: Path, default_dpi: int) -> Iterator[_Raster]:
    with Image.open(file) as im:
        # a phone's MPO "JPEG" carries a second, preview frame: not a page
        count = 1 if im.format == "MPO" else getattr(im, "n_frames", 1)
        for frame_no in range(count):
            im.seek(frame_no)
            im.load()
            dpi = image_dpi(im.info, default_dpi)
            jpeg = None
            if im.getexif().get(ORIENTATION, 1) != 1:  # a phone photo: show it upright
                image = ImageOps.exif_transpose(im)
            else:
                image = im.copy()
                if im.format == "JPEG" and dpi >= MIN_PASSTHROUGH_DPI:
                    data = file.read_bytes()
                    jpeg = data if is_plain_jpeg(data) else None
            yield _normalized(image), dpi, jpeg, _label(file, frame_no, count)


def _single_scan_image(page: Any) -> Any | None:
    """The page's image object when the page is one full-page image (a scanned page),
    text objects aside (an OCR layer); else None."""
    images, others = [], 0
    for obj in page.get_objects():
        if obj.type == pdfium_c.FPDF_PAGEOBJ_IMAGE:
            images.append(obj)
        elif obj.type not in (pdfium_c.FPDF_PAGEOBJ_TEXT, pdfium_c.FPDF_PAGEOBJ_FORM):
            others += 1
    if len(images) != 1 or others:
        return None
    left, bottom, right, top = images[0].get_bounds()
    width, height = page.get_size()
    covered = (right - left) * (top - bottom) / (width * height) if width * height else 0.0
    return images[0] if covered >= 0.9 else None


def _pdf_page(page: Any, default_dpi: int) -> tuple[Image.Image, int, bytes | None]:
    image_obj = _single_scan_image(page)
    if image_obj is None:
        bitmap = page.render(scale=default_dpi / 72)
        return _normalized(bitmap.to_pil()), default_dpi, None
    meta = image_obj.get_metadata()
    dpi = round(min(meta.horizontal_dpi, meta.vertical_dpi)) or default_dpi
    matrix = image_obj.get_matrix()
    upright = (
        matrix.a > 0 and matrix.d > 0 and matrix.b == 0 and matrix.c == 0
    ) and page.get_rotation() == 0
    if upright and image_obj.get_filters() == ["DCTDecode"] and dpi >= MIN_PASSTHROUGH_DPI:
        data = bytes(image_obj.get_data(decode_simple=False))
        if is_plain_jpeg(data):
            with Image.open(io.BytesIO(data)) as decoded:
                return _normalized(decoded.copy()), dpi, data
    if upright:  # the image's own pixels, not a resampled rendering
        image = _normalized(image_obj.get_bitmap(render=False).to_pil())
    else:
        gray = meta.bits_per_pixel == 1 or (
            meta.bits_per_pixel == 8
            and meta.colorspace
            in (pdfium_c.FPDF_COLORSPACE_DEVICEGRAY, pdfium_c.FPDF_COLORSPACE_CALGRAY)
        )
        image = _normalized(page.render(scale=dpi / 72, grayscale=gray).to_pil())
        image = image.convert("L") if gray else image
    if meta.bits_per_pixel == 1 and image.mode != "1":
        image = image.convert("1", dither=Image.Dither.NONE)
    return image, dpi, None


def pdf_is_complete(file: Path) -> bool:
    """A PDF ends with %%EOF in its last 1024 bytes (ISO 32000); pdfium itself would
    silently repair a file cut short and show fewer pages."""
    with file.open("rb") as fh:
        fh.seek(max(0, file.stat().st_size - 1024))
        return b"%%EOF" in fh.read()


def _pdf_pages(file: Path, default_dpi: int) -> Iterator[_Raster]:
    if not pdf_is_complete(file):
        raise ValueError("PDF is cut short (no %%EOF end marker)")
    pdf = pdfium.PdfDocument(file)
    try:
        if len(pdf) == 0:
            raise ValueError("PDF has no pages")
        count = len(pdf)
        for number in range(count):
            page = pdf[number]
            try:
                image, dpi, jpeg = _pdf_page(page, default_dpi)
            finally:
                page.close()
            yield image, dpi, jpeg, _label(file, number, count)
    finally:
        pdf.close()


def _is_pdf(file: Path) -> bool:
    if file.suffix.lower() == ".pdf":
        return True
    with file.open("rb") as fh:
        return fh.read(5) == b"%PDF-"


def _file_pages(file: Path, default_dpi: int) -> Iterator[_Raster]:
    if _is_pdf(file):
        return _pdf_pages(file, default_dpi)
    return _image_pages(file, default_dpi)


def _unreadable(file: Path, exc: BaseException) -> InputError:
    reason = str(exc).replace(str(file), file.name)[:160] or type(exc).__name__
    return InputError(
        f"cannot read page file {file.name}: {reason}",
        f"re-scan page {file.name} or remove the file, then run again",
    )


def pages_from_path(path: Path, *, default_dpi: int = 300) -> Iterator[ScannedPage]:
    """Pages from a folder (page files in name order), a multi-page TIFF, a PDF or one
    image. A file that cannot be read raises InputError after the pages before it."""
    if path.is_dir():
        files = page_files(path)
        if not files:
            raise InputError(
                f"no page images in folder {path}",
                "put PNG, JPEG, TIFF, BMP, PNM or PDF pages in it",
            )
    elif path.is_file():
        files = [path]
    else:
        raise InputError(f"input not found: {path}", "check the path given to --from")
    index = 0
    for file in files:
        try:
            for image, dpi, jpeg, label in _file_pages(file, default_dpi):
                yield ScannedPage(index, image, dpi, label, jpeg)
                index += 1
        except (*_UNREADABLE, Image.DecompressionBombError) as exc:
            raise _unreadable(file, exc) from exc


def file_is_complete(file: Path) -> bool:
    """Whether every page of the file decodes to the end (a file still being copied
    does not)."""
    try:
        for _raster in _file_pages(file, 300):
            pass
    except (*_UNREADABLE, Image.DecompressionBombError):
        return False
    return True


@dataclass(frozen=True)
class _Sighting:
    stamp: tuple[int, int]  # (size, mtime_ns)
    since: float  # ``now`` when this stamp was first seen
    complete: bool | None = None  # decode check, done once per stamp


class HotFolder:
    """A directory a network scanner writes into (scan-to-folder, SMB share).

    A file is read by ``take`` and removed by ``finish`` once its batch is committed
    to the spool, so a crash in between leaves it to be taken again. Originals hold
    personal data in clear: they are deleted unless ``keep_originals`` moves them
    to ``done_dir``.
    """

    def __init__(
        self,
        directory: Path,
        *,
        settle_s: float = 2.0,
        single_settle_s: float | None = 0.5,
        done_dir: Path | None = None,
        failed_dir: Path | None = None,
        keep_originals: bool = False,
        default_dpi: int = 300,
    ) -> None:
        self.directory = directory
        self.settle_s = settle_s
        # a single-page image that stopped growing and decodes whole is complete (a
        # truncated JPEG or PNG fails to load); a TIFF or PDF can look whole with pages
        # still to come, so it waits the full settle time
        self.single_settle_s = (
            settle_s if single_settle_s is None else min(settle_s, single_settle_s)
        )
        self.done_dir = done_dir if done_dir is not None else directory / "done"
        self.failed_dir = failed_dir if failed_dir is not None else directory / "failed"
        self.keep_originals = keep_originals
        self.default_dpi = default_dpi
        self._seen: dict[Path, _Sighting] = {}

    def _settle(self, path: Path) -> float:
        multipage = path.suffix.lower() in (".tif", ".tiff", ".pdf")
        return self.settle_s if multipage else self.single_settle_s

    def ready_files(self, now: float) -> list[Path]:
        """Files whose size and mtime have not changed for ``settle_s`` (by this object's
        own observations, so a scanner with a wrong clock cannot fool it) and that load
        completely; in name order."""
        try:
            candidates = page_files(self.directory)
        except OSError as exc:
            raise InputError(
                f"cannot read hot folder {self.directory}: {exc.strerror}",
                "create the folder or fix its path and permissions",
            ) from exc
        ready: list[Path] = []
        seen: dict[Path, _Sighting] = {}
        for path in candidates:
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            stamp = (st.st_size, st.st_mtime_ns)
            sighting = self._seen.get(path)
            if sighting is None or sighting.stamp != stamp:
                sighting = _Sighting(stamp, now)
            elif now - sighting.since >= self._settle(path) and st.st_size > 0:
                if sighting.complete is None:
                    sighting = replace(sighting, complete=file_is_complete(path))
                    if not sighting.complete:
                        log.warning("hot folder file settled but unreadable file=%s", path)
                if sighting.complete:
                    ready.append(path)
            seen[path] = sighting
        self._seen = seen
        return ready

    def take(self, path: Path) -> Iterator[ScannedPage]:
        """Yield the file's pages. An unreadable file goes to ``failed_dir``; a file
        read to the end stays where it is until ``finish``."""
        try:
            yield from pages_from_path(path, default_dpi=self.default_dpi)
        except InputError as exc:
            kept = _move(path, self.failed_dir)
            self._seen.pop(path, None)
            raise InputError(exc.message, f"{exc.hint} (the file is kept as {kept})") from exc

    def finish(self, path: Path) -> None:
        """The file's batch is in the spool: delete it (or keep it in ``done_dir``)."""
        self._seen.pop(path, None)
        if self.keep_originals:
            _move(path, self.done_dir)
        else:
            path.unlink(missing_ok=True)


def _move(path: Path, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / path.name
    n = 0
    while target.exists():
        n += 1
        target = directory / f"{path.stem}.{n}{path.suffix}"
    return Path(shutil.move(path, target))


@dataclass(frozen=True)
class PathSource:
    """A folder, TIFF or PDF as a ``PageSource`` (``sohoa scan --from PATH``)."""

    path: Path
    default_dpi: int = 300

    def pages(self) -> Iterator[ScannedPage]:
        return pages_from_path(self.path, default_dpi=self.default_dpi)
