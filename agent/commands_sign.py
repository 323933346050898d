"""``sohoa scan --certify``: the officer's PIN and the signing session for one batch.

The PIN comes from stdin (``--pin-stdin``) or, at a terminal, from a prompt that does
not echo; never from the command line, which every process can read. It lives in
memory only while the token session opens, and is never logged or written.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from agent.config import Config
from sync.errors import ConfigError, InputFileError

if TYPE_CHECKING:
    from agent.capture.certifier import Certifier
    from agent.capture.wiring import Capture


def read_pin(args: argparse.Namespace) -> str | None:
    """The token PIN for ``--certify`` (None without it): the first line of stdin with
    ``--pin-stdin``, else a prompt at a terminal."""
    if not args.certify:
        if args.pin_stdin:
            raise InputFileError("--pin-stdin is only for --certify", "add --certify or drop it")
        return None
    if args.pin_stdin:
        pin = sys.stdin.readline().rstrip("\r\n")
    elif sys.stdin.isatty():
        pin = getpass.getpass("Mã PIN token ký số / signing token PIN: ")
    else:
        raise InputFileError(
            "--certify needs the token PIN and stdin is not a terminal",
            "pipe it: sohoa scan … --certify --pin-stdin (first line of stdin)",
        )
    if not pin:
        raise InputFileError("the token PIN is empty", "enter the PIN of the signing token")
    return pin


@contextmanager
def certifying(cfg: Config, capture: Capture, pin: str | None) -> Iterator[Certifier | None]:
    """The signing session for one batch (None without a PIN); closed afterwards. A token
    that cannot be opened is said at once, and the batch is captured unsigned."""
    if pin is None:
        yield None
        return
    if not cfg.sign.module:
        raise ConfigError(
            "--certify needs a signing token and [sign] module is empty",
            "set [sign] module, token and key (see README: certified copies)",
        )
    from agent.capture.signing import RefusedCertifier, open_certifier

    certifier = open_certifier(cfg.sign, pin, capture.register(), cfg.path)
    del pin
    if isinstance(certifier, RefusedCertifier):
        print(certifier.error.line(), file=sys.stderr)
    try:
        yield certifier
    finally:
        certifier.close()
