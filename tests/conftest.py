"""The real parts come from one plugin: ``tests/support/plugin.py``."""

from __future__ import annotations

pytest_plugins = ["tests.support.plugin"]
