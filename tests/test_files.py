"""Pages from files and from a hot folder, over real files written by Pillow."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pypdfium2 as pdfium
import pytest
from PIL import Image, ImageDraw

from device.errors import InputError
from device.files import HotFolder, is_plain_jpeg, natural_key, pages_from_path
from device.scanner import ScannedPage


def page(size: tuple[int, int] = (240, 340), mode: str = "L") -> Image.Image:
    """A small page with something on it, so that lossy and lossless copies differ."""
    image = Image.new("L", size, 255)
    draw = ImageDraw.Draw(image)
    draw.rectangle((10, 10, size[0] // 2, size[1] // 3), fill=0)
    draw.ellipse((size[0] // 4, size[1] // 2, size[0] - 10, size[1] - 10), outline=0, width=4)
    return image.convert(mode)


def save(image: Image.Image, path: Path, **params: object) -> Path:
    image.save(path, **params)
    return path


def multi(path: Path, frames: list[Image.Image], **params: object) -> Path:
    frames[0].save(path, save_all=True, append_images=frames[1:], **params)
    return path


def vector_pdf(path: Path) -> Path:
    """A one-page A4 PDF drawn with vector operators only (no image)."""
    content = b"0 0 0 rg 72 72 144 288 re f"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content),
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    path.write_bytes(bytes(out))
    return path


def summary(pages: list[ScannedPage]) -> list[tuple[int, str, int, str, tuple[int, int], bool]]:
    return [
        (p.index, p.source, p.dpi, p.image.mode, p.image.size, p.jpeg is not None) for p in pages
    ]


def test_folder_yields_every_page_of_every_file_in_name_order(tmp_path: Path) -> None:
    save(page((200, 300)), tmp_path / "page10.png", dpi=(300, 300))
    save(page((210, 300), "RGB"), tmp_path / "page02.jpg", dpi=(300, 300))
    save(page((220, 300)), tmp_path / "page1.png", dpi=(300, 300))
    multi(tmp_path / "page03.tiff", [page((230, 300)), page((231, 300))], dpi=(200, 200))
    multi(tmp_path / "page04.pdf", [page((150, 200)), page((151, 200))], resolution=150)
    save(page((50, 50)), tmp_path / "page9.bmp", dpi=(300, 300))
    (tmp_path / "notes.txt").write_text("not a page")
    save(page(), tmp_path / ".hidden.png")
    save(page(), tmp_path / "page05.png.part", format="PNG")
    (tmp_path / "sub").mkdir()
    save(page(), tmp_path / "sub" / "page00.png")

    pages = list(pages_from_path(tmp_path))

    assert summary(pages) == [
        (0, "page1.png", 300, "L", (220, 300), False),
        (1, "page02.jpg", 300, "RGB", (210, 300), True),
        (2, "page03.tiff#1", 200, "L", (230, 300), False),
        (3, "page03.tiff#2", 200, "L", (231, 300), False),
        (4, "page04.pdf#1", 150, "L", (150, 200), False),  # below 200 dpi: no passthrough
        (5, "page04.pdf#2", 150, "L", (151, 200), False),
        (6, "page9.bmp", 300, "L", (50, 50), False),
        (7, "page10.png", 300, "L", (200, 300), False),
    ]


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["b.png", "a10.png", "a9.png", "a09b.png"], ["a9.png", "a09b.png", "a10.png", "b.png"]),
        (
            ["scan_0010.tif", "scan_0002.tif", "Scan_0003.tif"],
            ["scan_0002.tif", "Scan_0003.tif", "scan_0010.tif"],
        ),
    ],
)
def test_page_files_sort_as_a_file_manager_shows_them(
    names: list[str], expected: list[str]
) -> None:
    assert sorted(names, key=natural_key) == expected


def test_multipage_tiff_yields_every_frame(tmp_path: Path) -> None:
    frames = [page((100 + i, 140), mode) for i, mode in enumerate(["1", "L", "RGB", "L"])]
    path = multi(tmp_path / "batch.tif", frames, dpi=(300, 300), compression="tiff_lzw")

    pages = list(pages_from_path(path))

    assert summary(pages) == [
        (0, "batch.tif#1", 300, "1", (100, 140), False),
        (1, "batch.tif#2", 300, "L", (101, 140), False),
        (2, "batch.tif#3", 300, "RGB", (102, 140), False),
        (3, "batch.tif#4", 300, "L", (103, 140), False),
    ]
    assert [
        np.array_equal(np.asarray(p.image), np.asarray(f))
        for p, f in zip(pages, frames, strict=True)
    ] == [True] * 4


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def png_bytes(**params: object) -> bytes:
    out = io.BytesIO()
    page().save(out, "PNG", **params)
    return out.getvalue()


def encoded(fmt: str, image: Image.Image | None = None, **params: object) -> bytes:
    out = io.BytesIO()
    (image or page()).save(out, fmt, **params)
    return out.getvalue()


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("02.png", truncated(encoded("PNG"))),
        ("02.jpg", truncated(encoded("JPEG", quality=90))),
        ("02.tif", truncated(encoded("TIFF"))),
        ("02.pdf", truncated(encoded("PDF"))),
        ("02.pdf", b"%PDF-1.4\ngarbage\n%%EOF\n"),
        ("02.png", b""),
        ("02.bmp", b"this is not a bitmap"),
    ],
)
def test_unreadable_file_mid_folder_stops_after_the_pages_before_it(
    tmp_path: Path, name: str, data: bytes
) -> None:
    save(page((100, 100)), tmp_path / "01.png")
    (tmp_path / name).write_bytes(data)
    save(page((300, 300)), tmp_path / "03.png")
    got: list[ScannedPage] = []

    with pytest.raises(InputError) as caught:
        got.extend(pages_from_path(tmp_path))

    assert [p.source for p in got] == ["01.png"]
    assert caught.value.message.startswith(f"cannot read page file {name}: ")
    assert caught.value.hint == f"re-scan page {name} or remove the file, then run again"
    assert str(tmp_path) not in caught.value.message


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: None, "no page images in folder"),
        (lambda d: (d / "readme.txt").write_text("x"), "no page images in folder"),
    ],
)
def test_folder_without_pages_is_an_input_error(tmp_path: Path, setup, message: str) -> None:  # type: ignore[no-untyped-def]
    setup(tmp_path)

    with pytest.raises(InputError, match=message):
        list(pages_from_path(tmp_path))


def test_missing_input_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="input not found"):
        list(pages_from_path(tmp_path / "nope"))


@pytest.mark.parametrize(
    ("image", "params", "dpi", "kept"),
    [
        (page(mode="RGB"), {"dpi": (300, 300), "quality": 85}, 300, True),
        (page(), {"dpi": (200, 200)}, 200, True),
        (page(), {}, 300, True),  # no density: the default dpi applies
        (page(), {"dpi": (150, 150)}, 150, False),  # too coarse to archive as it is
        (page(), {"dpi": (300, 300), "progressive": True}, 300, False),
        (page(mode="CMYK"), {"dpi": (300, 300)}, 300, False),
    ],
)
def test_jpeg_keeps_its_original_bytes_only_when_a_pdf_can_wrap_them(
    tmp_path: Path, image: Image.Image, params: dict[str, object], dpi: int, kept: bool
) -> None:
    path = save(image, tmp_path / "p.jpg", **params)

    (got,) = pages_from_path(path)

    assert (got.dpi, got.jpeg == path.read_bytes() if kept else got.jpeg is None) == (dpi, True)
    assert got.image.mode in ("L", "RGB")


def test_photo_with_exif_rotation_comes_out_upright_and_is_re_encoded(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to view
    path = save(page((200, 100)), tmp_path / "phone.jpg", dpi=(300, 300), exif=exif)

    (got,) = pages_from_path(path)

    assert (got.image.size, got.jpeg) == ((100, 200), None)


def test_phone_jpeg_with_a_preview_frame_is_one_page(tmp_path: Path) -> None:
    path = tmp_path / "phone.jpg"
    page((200, 300), "RGB").save(
        path, format="MPO", save_all=True, append_images=[page((50, 60), "RGB")], dpi=(300, 300)
    )

    assert summary(list(pages_from_path(path))) == [(0, "phone.jpg", 300, "RGB", (200, 300), False)]


@pytest.mark.parametrize(
    ("params", "default_dpi", "expected"),
    [
        ({"dpi": (200, 200)}, 300, 200),
        ({"dpi": (204, 196)}, 300, 196),  # fax fine: the coarser axis counts
        ({}, 300, 300),
        ({}, 150, 150),
        ({"dpi": (72, 72)}, 300, 72),  # what the file says, even when it is low
    ],
)
def test_page_resolution_comes_from_the_file_else_the_default(
    tmp_path: Path, params: dict[str, object], default_dpi: int, expected: int
) -> None:
    path = save(page(), tmp_path / "p.png", **params)

    assert [p.dpi for p in pages_from_path(path, default_dpi=default_dpi)] == [expected]


@pytest.mark.parametrize(
    ("image", "mode"),
    [
        (page().convert("P"), "RGB"),
        (page().convert("RGBA"), "RGB"),
        (page().convert("LA"), "L"),
        (Image.fromarray(np.full((20, 30), 40000, dtype=np.uint16)), "L"),
        (page().convert("1"), "1"),
    ],
)
def test_images_come_out_bilevel_gray_or_rgb(tmp_path: Path, image: Image.Image, mode: str) -> None:
    path = save(image, tmp_path / "p.png")

    (got,) = pages_from_path(path)

    assert (got.image.mode, got.image.size) == (mode, image.size)


def test_sixteen_bit_gray_keeps_its_brightness(tmp_path: Path) -> None:
    path = save(Image.fromarray(np.full((20, 30), 40000, dtype=np.uint16)), tmp_path / "p.png")

    (got,) = pages_from_path(path)

    assert np.unique(np.asarray(got.image)).tolist() == [40000 >> 8]


def test_scanned_pdf_page_with_a_jpeg_keeps_the_jpeg_and_its_resolution(tmp_path: Path) -> None:
    original = page((600, 800))
    path = save(original, tmp_path / "scan.pdf", resolution=300)

    (got,) = pages_from_path(path)

    assert (got.dpi, got.image.size, got.image.mode, is_plain_jpeg(got.jpeg or b"")) == (
        300,
        (600, 800),
        "L",
        True,
    )
    assert got.image.tobytes() == Image.open(io.BytesIO(got.jpeg or b"")).tobytes()


def test_scanned_bilevel_pdf_renders_at_native_resolution_pixel_for_pixel(
    tmp_path: Path,
) -> None:
    original = page((600, 800), "1")
    path = save(original, tmp_path / "scan.pdf", resolution=200)

    (got,) = pages_from_path(path)

    assert (got.dpi, got.image.mode, got.jpeg) == (200, "1", None)
    assert np.array_equal(np.asarray(got.image), np.asarray(original))


def test_low_resolution_scanned_pdf_keeps_its_own_resolution(tmp_path: Path) -> None:
    path = save(page((300, 400), "RGB"), tmp_path / "scan.pdf", resolution=100)

    (got,) = pages_from_path(path)

    assert (got.dpi, got.image.size, got.image.mode, got.jpeg) == (100, (300, 400), "RGB", None)


def test_scanned_pdf_page_turned_by_the_viewer_comes_out_turned(tmp_path: Path) -> None:
    path = save(page((300, 200)), tmp_path / "scan.pdf", resolution=200)
    pdf = pdfium.PdfDocument(path)
    pdf[0].set_rotation(90)
    turned = tmp_path / "turned.pdf"
    pdf.save(turned)
    pdf.close()

    (got,) = pages_from_path(turned)

    assert (got.dpi, got.image.size, got.image.mode, got.jpeg) == (200, (200, 300), "L", None)


def test_pdf_drawn_without_images_renders_at_the_default_resolution(tmp_path: Path) -> None:
    path = vector_pdf(tmp_path / "form.pdf")

    (got,) = pages_from_path(path)

    assert (got.dpi, got.image.size, got.image.mode, got.source) == (
        300,
        (2480, 3509),  # 842 pt at 300 dpi, rounded up by pdfium
        "RGB",
        "form.pdf",
    )
    # the rectangle drawn at (72 pt, 72 pt) from the bottom left, and white outside it
    assert (got.image.getpixel((310, 3509 - 310)), got.image.getpixel((290, 3509 - 310))) == (
        (0, 0, 0),
        (255, 255, 255),
    )


# --- hot folder ----------------------------------------------------------------------------


def test_file_written_in_chunks_is_ready_only_once_complete_and_settled(tmp_path: Path) -> None:
    data = encoded("JPEG", dpi=(300, 300))
    path = tmp_path / "scan001.jpg"
    hot = HotFolder(tmp_path, settle_s=2.0, single_settle_s=None)
    path.write_bytes(data[:1000])
    seen = [hot.ready_files(now=0.0), hot.ready_files(now=5.0)]  # settled but cut short
    with path.open("ab") as fh:
        fh.write(data[1000:])

    seen += [hot.ready_files(now=5.5), hot.ready_files(now=7.0), hot.ready_files(now=7.5)]

    assert seen == [[], [], [], [], [path]]


def test_a_single_page_image_is_ready_sooner_than_a_multipage_file(tmp_path: Path) -> None:
    """A JPEG that stopped growing and decodes whole is taken after 0.5 s, so its page is
    on the counter screen within a second; a TIFF could still be getting pages: 2 s."""
    (tmp_path / "a.jpg").write_bytes(encoded("JPEG", dpi=(300, 300)))
    (tmp_path / "b.tif").write_bytes(encoded("TIFF"))
    hot = HotFolder(tmp_path)

    seen = [[p.name for p in hot.ready_files(now=t)] for t in (0.0, 0.6, 1.5, 2.1)]

    assert seen == [[], ["a.jpg"], ["a.jpg"], ["a.jpg", "b.tif"]]


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("cut.jpg", truncated(encoded("JPEG"))),
        ("cut.pdf", truncated(encoded("PDF", page((400, 500))))),
        ("cut.tif", truncated(encoded("TIFF"))),
        ("cut.png", truncated(encoded("PNG"))),
        ("empty.pdf", b""),
    ],
)
def test_file_cut_short_is_never_ready(tmp_path: Path, name: str, data: bytes) -> None:
    (tmp_path / name).write_bytes(data)
    hot = HotFolder(tmp_path, settle_s=1.0)

    assert [hot.ready_files(now=t) for t in (0.0, 10.0, 100.0)] == [[], [], []]


def test_temporary_names_are_never_taken(tmp_path: Path) -> None:
    data = encoded("PDF")
    for name in ["scan.pdf.part", ".scan.pdf", "~scan.pdf", "scan.pdf~", "scan.tmp", "ok.pdf"]:
        (tmp_path / name).write_bytes(data)
    (tmp_path / "scan.crdownload").write_bytes(data)
    hot = HotFolder(tmp_path, settle_s=1.0)

    assert [hot.ready_files(now=0.0), hot.ready_files(now=1.0)] == [[], [tmp_path / "ok.pdf"]]


def test_a_kept_original_is_moved_to_done_once_its_batch_is_committed(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    multi(inbox / "a.pdf", [page((100, 100)), page((120, 100))], resolution=200)
    done = tmp_path / "done"
    (done).mkdir()
    (done / "a.pdf").write_bytes(b"an earlier a.pdf")
    hot = HotFolder(inbox, settle_s=1.0, done_dir=done, keep_originals=True)
    hot.ready_files(now=0.0)
    (path,) = hot.ready_files(now=1.0)

    pages = list(hot.take(path))
    hot.finish(path)

    assert summary(pages) == [
        (0, "a.pdf#1", 200, "L", (100, 100), True),
        (1, "a.pdf#2", 200, "L", (120, 100), True),
    ]
    assert (hot.ready_files(now=2.0), hot.ready_files(now=9.0)) == ([], [])
    assert sorted(p.name for p in done.iterdir()) == ["a.1.pdf", "a.pdf"]
    assert (done / "a.pdf").read_bytes() == b"an earlier a.pdf"


def test_a_file_is_deleted_only_once_its_batch_is_committed(tmp_path: Path) -> None:
    path = save(page(), tmp_path / "a.png")
    hot = HotFolder(tmp_path)

    pages = list(hot.take(path))
    left_after_reading = sorted(os.listdir(tmp_path))
    hot.finish(path)

    assert (len(pages), left_after_reading, sorted(os.listdir(tmp_path))) == (1, ["a.png"], [])


def test_unreadable_file_is_kept_in_failed_not_lost(tmp_path: Path) -> None:
    path = tmp_path / "bad.tif"
    path.write_bytes(b"II*\x00garbage")
    hot = HotFolder(tmp_path)

    with pytest.raises(InputError) as caught:
        list(hot.take(path))

    assert (sorted(os.listdir(tmp_path)), os.listdir(tmp_path / "failed")) == (
        ["failed"],
        ["bad.tif"],
    )
    assert caught.value.hint.endswith(f"(the file is kept as {tmp_path / 'failed' / 'bad.tif'})")


def test_run_stopped_part_way_leaves_the_file_to_be_taken_again(tmp_path: Path) -> None:
    path = multi(tmp_path / "two.pdf", [page(), page()], resolution=200)
    hot = HotFolder(tmp_path)
    pages = hot.take(path)
    next(pages)

    pages.close()

    assert sorted(os.listdir(tmp_path)) == ["two.pdf"]


def test_missing_hot_folder_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read hot folder"):
        HotFolder(tmp_path / "nope").ready_files(now=0.0)
