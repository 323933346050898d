"""Errors with a cause, a hint and an exit code, for everything above the hardware.

The CLI prints ``error: <message> — <hint>`` on one line and exits with
``exit_code``; tracebacks only with ``--debug``. Hardware edges raise
``device.errors.DeviceError`` instead, which ``agent.errors`` maps to the
same exit codes.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    ok = 0
    bad_args = 1
    input_file = 2
    missing_dependency = 3
    config = 4
    scanner = 5
    spool_full = 6
    broker = 7
    crypto = 8
    incomplete = 9
    other = 10


class SohoaError(Exception):
    """Base error: ``message`` names the cause, ``hint`` says what to do."""

    exit_code: ExitCode = ExitCode.other

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def line(self) -> str:
        return f"error: {self.message}" + (f" — {self.hint}" if self.hint else "")


class ConfigError(SohoaError):
    exit_code = ExitCode.config


class SpoolFullError(SohoaError):
    exit_code = ExitCode.spool_full

    @classmethod
    def low_disk(cls, free: int, reserve: int) -> SpoolFullError:
        """Free space fell below the reserve kept so that nothing captured is lost."""
        return cls(
            f"Bộ nhớ gần đầy: còn {free // 2**20} MB, cần dự trữ {reserve // 2**20} MB / "
            f"disk nearly full ({free // 2**20} MB free, {reserve // 2**20} MB reserve)",
            "chờ đồng bộ xong hoặc gọi kỹ thuật viên / "
            "wait for sync to free space or call a technician",
        )


class SpoolError(SohoaError):
    exit_code = ExitCode.other


class BrokerError(SohoaError):
    exit_code = ExitCode.broker


class CryptoError(SohoaError):
    """A key is missing or wrong, or sealed data does not verify."""

    exit_code = ExitCode.crypto


class EnvelopeError(CryptoError):
    pass


class IncompleteError(SohoaError):
    """The job ran but did not finish (e.g. sync timed out with documents pending)."""

    exit_code = ExitCode.incomplete


class MissingDependencyError(SohoaError):
    exit_code = ExitCode.missing_dependency


class InputFileError(SohoaError):
    """A file given on the command line cannot be read."""

    exit_code = ExitCode.input_file


class ArchiveError(SohoaError):
    """The warehouse archive cannot be written (full disk, permissions)."""

    exit_code = ExitCode.other


class WarehouseIndexError(SohoaError):
    """The warehouse document index (PostgreSQL) cannot be reached or used."""

    exit_code = ExitCode.other


class QueryError(SohoaError):
    """A search, report or export was asked for something it cannot answer: a date that
    is not a date, a search with no words, a dossier the warehouse does not hold."""

    exit_code = ExitCode.bad_args
