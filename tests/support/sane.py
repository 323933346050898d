"""The real libsane ``test`` backend: the ``sane_test_scanner`` fixture (in
``tests/support/plugin.py``) and ``sane_env`` for subprocesses.

libsane finds its configuration through ``$SANE_CONFIG_DIR``. Two facts measured on
libsane 1.2 decide the design:
- the dll meta-backend reads ``dll.conf`` at the first ``sane_init()`` of the process and
  keeps that directory for good; it still loads a backend by name on ``sane_open()``
  ("test:0") even when ``dll.conf`` does not list it;
- each backend is unloaded at ``sane_exit()`` and re-reads its own ``test.conf`` at the
  next ``sane_init()``.
sohoa runs every batch inside its own init/exit, so once this fixture has set the
variable, scanning test:0 works in any test order. Only the device *list* depends on
the first init: a test that needs ``test:0`` listed runs in a subprocess with
``sane_env()``.
"""

from __future__ import annotations

import os
from pathlib import Path


def sane_env(directory: Path) -> dict[str, str]:
    """Environment for a subprocess that must see only the test backend."""
    return {**os.environ, "SANE_CONFIG_DIR": str(directory)}
