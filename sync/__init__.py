"""sohoa's wire formats, spool, uploader and provincial services; imports nothing of agent/ or device/."""

from __future__ import annotations

__version__ = "0.1.0"
