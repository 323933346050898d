"""What the capture pipeline knows of signing: the ``Certifier`` it is handed and
what comes back. No pyHanko here: the signing library takes about a second to
import (three or four on a Pi), so ``agent.capture.signing`` is imported only
when a batch is certified (``sohoa scan --certify``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sync.errors import CryptoError

__all__ = ["Certifier", "CertifiedPdf", "SignerInfo", "SigningError"]


class SigningError(CryptoError):
    """A certified copy could not be signed (certificate, signature, font)."""


@dataclass(frozen=True)
class SignerInfo:
    """Who signs, from the certificate: name (CN), title, organisation, validity."""

    name: str
    title: str
    organisation: str
    not_before: datetime
    not_after: datetime


@dataclass(frozen=True)
class CertifiedPdf:
    pdf: bytes
    record: dict[str, Any]  # the register entry and the signature level, sealed with it


class Certifier(Protocol):
    def certify(self, pdf: bytes, doc_id: str) -> CertifiedPdf:
        """``pdf`` signed as a certified copy; ``SigningError``/``TokenError`` if not."""
