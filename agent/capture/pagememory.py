"""A worker's page memory: each page it decodes goes into the same 8.7 MB.

A page decoded into a new image every time leaves each worker thread's malloc
arena with freed 8.7 MB blocks among the small allocations of the checks; with
four workers that slack alone took peak RSS from ~150 to ~170 MB over a
500-page batch. A page that arrives as a JPEG not yet decoded (the scanner's
JPEG, a file) is decoded here into memory the worker keeps, so the arenas only
see small allocations come and go. A page already decoded (SANE's frames) is
used as it is.

The memory is a numpy array that the decoded page's pixels are mapped on, so
the ink of the page is thresholded straight from it (``pixels``): no copy of
the page, not even band by band.
"""

from __future__ import annotations

import threading

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageFile


class PageMemory:
    """The memory one worker decodes its pages into; one per thread, never shared:
    the pixels of a page decoded here are the next page's once it is decoded."""

    def __init__(self) -> None:
        self._page: Image.Image | None = None
        self._pixels: npt.NDArray[np.uint8] | None = None

    def decode(self, image: Image.Image) -> Image.Image:
        """``image``, decoded into this memory when it is a file image not yet loaded
        (Pillow decodes into the image's core when one is set before ``load``)."""
        if not isinstance(image, ImageFile.ImageFile) or image.mode not in ("L", "RGB"):
            return image
        if getattr(image, "_im", False) is not None:  # loaded already (or Pillow changed)
            return image
        page = self._page
        if page is None or page.mode != image.mode or page.size != image.size:
            self._page = page = self._pixels = None  # the old memory goes before the new
            w, h = image.size
            if image.mode == "L":
                self._pixels = np.empty((h, w), dtype=np.uint8)
                page = Image.frombuffer("L", (w, h), self._pixels, "raw", "L", 0, 1)
            else:
                page = Image.new(image.mode, image.size)
            self._page = page
        image.im = page.im
        image.load()
        return image

    def pixels(self, image: Image.Image) -> npt.NDArray[np.uint8] | None:
        """The pixels of ``image`` as an array (rows of bytes), no copy made, when it is
        the grey page last decoded here (Pillow kept the memory it was given)."""
        page = self._page
        if page is None or self._pixels is None or getattr(image, "_im", None) is not page.im:
            return None
        return self._pixels


class WorkerMemories:
    """Each worker thread's ``PageMemory``, made on its first page (one pool of workers:
    one batch)."""

    def __init__(self) -> None:
        self._local = threading.local()

    def mine(self) -> PageMemory:
        """The calling thread's memory."""
        memory: PageMemory | None = getattr(self._local, "memory", None)
        if memory is None:
            memory = self._local.memory = PageMemory()
        return memory
