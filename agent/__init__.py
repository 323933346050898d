"""The appliance: capture, the counter page, the services and the ``sohoa`` command line."""

from __future__ import annotations

from sync import __version__

__all__ = ["__version__"]
