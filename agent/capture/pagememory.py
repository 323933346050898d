"""A worker's page memory: each page it decodes goes into the same 8.7 MB.

A page decoded into a new image every time leaves each worker thread's malloc
arena with freed 8.7 MB blocks among the small allocations of the checks; with
four workers that slack alone took peak RSS from ~150 to ~170 MB over a
500-page batch. A page that arrives as a JPEG not yet decoded (the scanner's
JPEG, a file) is decoded here into memory the worker keeps, so the arenas only
see small allocations come and go. A page already decoded (SANE's frames) is
used as it is.
"""

from __future__ import annotations

import threading

from PIL import Image, ImageFile


class PageMemory:
    """The memory one worker decodes its pages into; one per thread, never shared:
    the pixels of a page decoded here are the next page's once it is decoded."""

    def __init__(self) -> None:
        self._page: Image.Image | None = None

    def decode(self, image: Image.Image) -> Image.Image:
        """``image``, decoded into this memory when it is a file image not yet loaded
        (Pillow decodes into the image's core when one is set before ``load``)."""
        if not isinstance(image, ImageFile.ImageFile) or image.mode not in ("L", "RGB"):
            return image
        if getattr(image, "_im", False) is not None:  # loaded already (or Pillow changed)
            return image
        page = self._page
        if page is None or page.mode != image.mode or page.size != image.size:
            self._page = page = None  # the old page's memory goes before the new is made
            self._page = page = Image.new(image.mode, image.size)
        image.im = page.im
        image.load()
        return image


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
