"""CCITT Group 4 by libtiff, called directly: one page's ink in, the G4 bytes out.

Pillow's TIFF writer runs libtiff's encoder while holding Python's interpreter
lock, so page workers queued behind each other there; through ctypes the lock
is released for the whole encoding, and no TIFF container is parsed again to
find the strip. libtiff writes into an anonymous in-memory file (memfd): the
page never touches the disk. Without the system's libtiff, Pillow's writer does
the same work (same bytes) under the lock.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import io
import os
from functools import cache
from typing import Any

from PIL import Image, TiffImagePlugin

from sync.errors import MissingDependencyError

# TIFF tags and values (tiff.h)
IMAGE_WIDTH, IMAGE_LENGTH, BITS_PER_SAMPLE, COMPRESSION = 256, 257, 258, 259
PHOTOMETRIC, FILL_ORDER, STRIP_OFFSETS, SAMPLES_PER_PIXEL = 262, 266, 273, 277
ROWS_PER_STRIP, STRIP_BYTE_COUNTS, PLANAR_CONFIG = 278, 279, 284
COMPRESSION_CCITT_G4, PHOTOMETRIC_MIN_IS_BLACK = 4, 1
WRITE_BUFFER = 64 * 1024


@cache
def _libtiff() -> Any | None:
    name = ctypes.util.find_library("tiff") or "libtiff.so.6"
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        return None
    lib.TIFFFdOpen.restype = ctypes.c_void_p
    lib.TIFFFdOpen.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p]
    lib.TIFFWriteEncodedStrip.restype = ctypes.c_ssize_t
    lib.TIFFWriteEncodedStrip.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_void_p,
        ctypes.c_ssize_t,
    ]
    lib.TIFFClose.argtypes = [ctypes.c_void_p]
    lib.TIFFWriteDirectory.argtypes = [ctypes.c_void_p]
    lib.TIFFWriteBufferSetup.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_ssize_t]
    return lib


def encode_g4(rows: bytes | bytearray, size: tuple[int, int]) -> bytes:
    """The G4 bytes of a page given as packed rows of bits (ink = 1, each row padded to a
    byte; coded BlackIsZero, one strip)."""
    data = _libtiff_g4(rows, size)
    return data if data is not None else _pillow_g4(Image.frombytes("1", size, rows))


def _libtiff_g4(rows: bytes | bytearray, size: tuple[int, int]) -> bytes | None:
    lib = _libtiff()
    if lib is None:
        return None
    width, height = size
    try:
        fd = os.memfd_create("sohoa-g4", os.MFD_CLOEXEC)
    except (AttributeError, OSError):  # no memfd (an old kernel): Pillow does it
        return None
    try:
        tif = lib.TIFFFdOpen(os.dup(fd), b"page", b"w")
        if not tif:
            return None
        try:
            for tag, value in (
                (IMAGE_WIDTH, ctypes.c_uint32(width)),
                (IMAGE_LENGTH, ctypes.c_uint32(height)),
                (BITS_PER_SAMPLE, ctypes.c_int(1)),
                (SAMPLES_PER_PIXEL, ctypes.c_int(1)),
                (COMPRESSION, ctypes.c_int(COMPRESSION_CCITT_G4)),
                (PHOTOMETRIC, ctypes.c_int(PHOTOMETRIC_MIN_IS_BLACK)),
                (FILL_ORDER, ctypes.c_int(1)),
                (PLANAR_CONFIG, ctypes.c_int(1)),
                (ROWS_PER_STRIP, ctypes.c_uint32(height)),
            ):
                lib.TIFFSetField(ctypes.c_void_p(tif), ctypes.c_uint32(tag), value)
            # the coded bytes go out to the file WRITE_BUFFER at a time: libtiff's default
            # buffer is the whole strip's raw size (1.1 MB a page for a few tens of KB)
            lib.TIFFWriteBufferSetup(tif, None, WRITE_BUFFER)
            strip = (
                rows if isinstance(rows, bytes) else (ctypes.c_char * len(rows)).from_buffer(rows)
            )
            if lib.TIFFWriteEncodedStrip(tif, 0, strip, len(rows)) < 0:
                return None
            offsets, counts = ctypes.c_void_p(), ctypes.c_void_p()
            lib.TIFFGetField(
                ctypes.c_void_p(tif), ctypes.c_uint32(STRIP_OFFSETS), ctypes.byref(offsets)
            )
            lib.TIFFGetField(
                ctypes.c_void_p(tif), ctypes.c_uint32(STRIP_BYTE_COUNTS), ctypes.byref(counts)
            )
            offset = ctypes.cast(offsets, ctypes.POINTER(ctypes.c_uint64))[0]
            count = ctypes.cast(counts, ctypes.POINTER(ctypes.c_uint64))[0]
        finally:
            lib.TIFFClose(tif)
        return os.pread(fd, count, offset)
    finally:
        os.close(fd)


def _pillow_g4(ink: Image.Image) -> bytes:
    buffer = io.BytesIO()
    try:
        ink.save(buffer, "TIFF", compression="group4", strip_size=2**31 - 1)
    except OSError as error:  # Pillow built without libtiff has no G4 encoder
        raise MissingDependencyError(
            f"the text profile needs libtiff ({error})",
            "install libtiff6 (./install.sh) or Pillow's PyPI wheel, or use the color profile",
        ) from error
    buffer.seek(0)
    with TiffImagePlugin.TiffImageFile(buffer) as tiff:
        offsets, counts = tiff.tag_v2[273], tiff.tag_v2[279]  # StripOffsets, StripByteCounts
        fill_order = tiff.tag_v2.get(266, 1)
    if len(offsets) != 1 or fill_order != 1:
        raise MissingDependencyError(
            "this Pillow writes G4 pages in several strips", "install Pillow 10 or newer"
        )
    return buffer.getbuffer()[offsets[0] : offsets[0] + counts[0]].tobytes()
