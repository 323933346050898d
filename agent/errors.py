"""The appliance's own errors and the one map from any failure to an exit code.

``sync.errors.SohoaError`` covers everything above the hardware; the hardware
edges raise ``device.errors.DeviceError``. ``FAILURES`` catches both where a
service reports a failure and carries on; ``exit_code_of`` says how the
command line ends.
"""

from __future__ import annotations

from device.errors import BarcodeError, DeviceError, InputError, ScannerError, ScannerSettingError
from sync.errors import ExitCode, SohoaError

FAILURES: tuple[type[SohoaError], type[DeviceError]] = (SohoaError, DeviceError)

Failure = SohoaError | DeviceError

# most specific first: a setting the scanner does not offer is a configuration fault
_DEVICE_EXIT: tuple[tuple[type[DeviceError], ExitCode], ...] = (
    (ScannerSettingError, ExitCode.config),
    (ScannerError, ExitCode.scanner),
    (InputError, ExitCode.input_file),
    (BarcodeError, ExitCode.input_file),
)


class CodeError(SohoaError):
    """A barcode's text failed validation (dossier code, ID number, tax code...)."""

    exit_code = ExitCode.input_file


class PageWorkError(SohoaError):
    """Page work failed in a way no check foresaw (a bug, a native library): the batch
    stops, nothing of it is sealed, and the officer scans it again."""

    exit_code = ExitCode.incomplete


def exit_code_of(exc: Failure) -> ExitCode:
    """The documented exit status for a failure of either kind."""
    if isinstance(exc, SohoaError):
        return exc.exit_code
    for cls, code in _DEVICE_EXIT:
        if isinstance(exc, cls):
            return code
    return ExitCode.other
