"""Errors raised at the hardware edges: a scanner, a page file, a barcode, a port.

``device/`` imports nothing of ours, so these carry the same shape as the rest
of sohoa's errors (``message`` names the cause, ``hint`` says what to do) and
the command line maps each class to its exit code.
"""

from __future__ import annotations


class DeviceError(Exception):
    """Base error: ``message`` names the cause, ``hint`` says what to do."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def line(self) -> str:
        return f"error: {self.message}" + (f" — {self.hint}" if self.hint else "")


class InputError(DeviceError):
    """A page file or image that cannot be read or used."""


class ScannerError(DeviceError):
    """The scanner, the handheld reader or the modem is missing, busy or failed."""


class PaperJamError(ScannerError):
    """The feeder jammed: the pages before the jam are kept, the rest must be fed again."""


class ScannerSettingError(ScannerError):
    """A scanner setting (source, mode, resolution) the scanner does not offer."""


class BarcodeError(DeviceError):
    """A barcode could not be decoded or rendered."""
