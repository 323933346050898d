"""sohoa capture side: pages -> checks -> split & tag -> PDF -> sealed envelope -> spool."""

from __future__ import annotations

__version__ = "0.1.0"
