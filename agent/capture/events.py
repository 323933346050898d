"""What the capture pipeline tells whoever watches it (the counter page), as it happens.

The pipeline calls a ``CaptureEvents`` at each step; ``NO_EVENTS`` ignores them
all, so ``sohoa scan`` pays nothing. Pages are reported with a small greyscale
JPEG thumbnail (only when ``wants_thumbnails``) and the badges of what was found.
Nothing here writes anywhere: the watcher keeps what it needs in memory.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any, Protocol

from PIL import Image

from agent.capture.codes import Signal
from agent.capture.review import Edit
from agent.capture.split import BatchPlan

THUMB_WIDTH = 240


class CaptureEvents(Protocol):
    wants_thumbnails: bool

    def batch_started(self, batch_id: str, source: str) -> None: ...

    def page_taken(
        self, batch_id: str, index: int, thumbnail: bytes | None, badges: tuple[str, ...]
    ) -> None: ...

    def review(self, batch_id: str, plan: BatchPlan) -> Edit:
        """The officer's next correction, or ``Edit("confirm")``; may block."""

    def batch_ended(self, batch_id: str, result: Any) -> None: ...

    def batch_failed(self, batch_id: str, reason: str) -> None: ...


class NoEvents:
    wants_thumbnails = False

    def batch_started(self, batch_id: str, source: str) -> None:
        pass

    def page_taken(
        self, batch_id: str, index: int, thumbnail: bytes | None, badges: tuple[str, ...]
    ) -> None:
        pass

    def review(self, batch_id: str, plan: BatchPlan) -> Edit:
        return Edit("confirm")

    def batch_ended(self, batch_id: str, result: Any) -> None:
        pass

    def batch_failed(self, batch_id: str, reason: str) -> None:
        pass


NO_EVENTS = NoEvents()


def thumbnail_jpeg(image: Image.Image, width: int = THUMB_WIDTH) -> bytes:
    """A small greyscale JPEG of ``image`` (a few KB), made with a cheap box reduction."""
    factor = max(1, image.width // width)
    small = image if image.mode in ("L", "RGB") else image.convert("L")
    small = small.reduce(factor) if factor > 1 else small  # one box reduction, no resample
    small = small.convert("L")
    if small.width > width:
        small.thumbnail((width, width * 2), Image.Resampling.BOX)
    out = io.BytesIO()
    small.save(out, "JPEG", quality=70)
    return out.getvalue()


_SIGNAL_BADGES = {
    "separator": "separator",
    "cover": "cover_sheet",
    "dossier": "receipt_code",
    "owner": "id_card_qr",
    "invalid": "unreadable_code",
}


def page_badges(
    signals: Sequence[Signal], *, blank: bool, flags: Sequence[str], refused: bool
) -> tuple[str, ...]:
    """What the counter page shows on a page: codes found, blank or maybe blank, deskewed,
    refused."""
    badges = [_SIGNAL_BADGES[s.kind] for s in signals if s.kind in _SIGNAL_BADGES]
    if refused:
        badges.append("resolution_refused")
    if blank:
        badges.append("blank")
    if "maybe_blank" in flags:  # kept, but the officer may want to look
        badges.append("maybe_blank")
    if "deskewed" in flags:
        badges.append("skew_corrected")
    if "rescanned" in flags:
        badges.append("rescanned")
    return tuple(dict.fromkeys(badges))
