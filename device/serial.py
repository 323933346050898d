"""Serial devices: a handheld barcode reader (one code per line) and a cellular modem's signal.

Barcode readers in USB-CDC mode show up as /dev/ttyACM0 and send each code as a line
ended by CR, LF or CRLF. A reader that is missing or unplugged raises
``ReaderNotFoundError`` (a ScannerError), told apart from other faults so that the
caller can wait and reopen. Codes may carry personal data (a CCCD QR holds a name):
they are never logged.
"""

from __future__ import annotations

import errno
import logging
import re
import time
from typing import Any

import serial as pyserial

from device.errors import ScannerError

log = logging.getLogger(__name__)

MAX_LINE = 4096  # bytes without an end of line before the buffer is treated as noise
_TERMINATORS = re.compile(rb"[\r\n]")
_CONTROL = " \t\x00\x02\x03\x04"  # whitespace, STX/ETX/EOT framing some readers add
_REPLUG = "Cắm lại đầu đọc mã vạch / plug the barcode reader in again"


class ReaderNotFoundError(ScannerError):
    """The serial device is not there (not plugged in, or unplugged)."""


def _open_error(port: str, what: str, exc: BaseException) -> ScannerError:
    code = getattr(exc, "errno", None)
    if code in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
        return ReaderNotFoundError(f"{what} not found at {port}", f"{_REPLUG} (`ls {port}`)")
    if code in (errno.EACCES, errno.EPERM):
        return ScannerError(
            f"no permission to open the {what} at {port}",
            "add the service user to group 'dialout' and log in again",
        )
    if code == errno.EBUSY:
        return ScannerError(
            f"{what} at {port} is in use by another program",
            "close the other program (or ModemManager) that holds the port",
        )
    return ScannerError(f"cannot open the {what} at {port}: {exc}", "run `sohoa doctor`")


def _open(port: str, what: str, *, baudrate: int, timeout_s: float) -> Any:
    try:
        return pyserial.Serial(port, baudrate=baudrate, timeout=timeout_s, exclusive=True)
    except (pyserial.SerialException, OSError) as exc:
        raise _open_error(port, what, exc) from exc


def split_line(buffer: bytes) -> tuple[str | None, bytes]:
    """The first complete, non-empty line of ``buffer`` (stripped) and what is left."""
    while True:
        match = _TERMINATORS.search(buffer)
        if match is None:
            return None, buffer
        line, buffer = buffer[: match.start()], buffer[match.end() :]
        text = line.decode("utf-8", errors="replace").strip(_CONTROL)
        if text:
            return text, buffer


class SerialCodeReader:
    """A handheld barcode reader on a serial port; ``read_code`` returns one code."""

    def __init__(self, port: str, *, baudrate: int = 9600, timeout_s: float = 0.2) -> None:
        self.port = port
        self._poll_s = timeout_s
        self._serial = _open(port, "barcode reader", baudrate=baudrate, timeout_s=timeout_s)
        self._buffer = b""

    def read_code(self, timeout_s: float) -> str | None:
        """The next complete line, stripped; None when none completes in ``timeout_s``.
        A partial line is kept for the next call."""
        deadline = time.monotonic() + timeout_s
        while True:
            code, self._buffer = split_line(self._buffer)
            if code is not None:
                return code
            if len(self._buffer) > MAX_LINE:
                log.warning("barcode reader sent %d bytes without end of line, dropped", MAX_LINE)
                self._buffer = b""
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self._buffer += self._read(min(remaining, self._poll_s))

    def _read(self, wait_s: float) -> bytes:
        try:
            self._serial.timeout = wait_s
            data: bytes = self._serial.read(max(1, self._serial.in_waiting))
        except (pyserial.SerialException, OSError) as exc:
            raise ReaderNotFoundError(
                f"barcode reader at {self.port} disconnected", f"{_REPLUG}; sohoa reopens it"
            ) from exc
        return data

    def close(self) -> None:
        self._serial.close()

    def __enter__(self) -> SerialCodeReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def csq_to_dbm(rssi: int) -> int | None:
    """3GPP TS 27.007 +CSQ <rssi> to dBm: 0 → -113, 2..30 → -109..-53, 31 → -51,
    99 → unknown; 100..191 (TD-SCDMA) → -116..-25."""
    if 0 <= rssi <= 31:
        return -113 + 2 * rssi
    if 100 <= rssi <= 191:
        return -116 + (rssi - 100)
    return None


_CSQ = re.compile(r"\+CSQ:\s*(\d+)\s*,\s*(\d+)")


def parse_csq(response: str) -> int | None:
    """Signal in dBm from a modem's answer to AT+CSQ, None when unknown or absent."""
    match = _CSQ.search(response)
    return csq_to_dbm(int(match.group(1))) if match else None


def modem_signal(port: str, *, timeout_s: float = 2.0) -> int | None:
    """Ask the modem at ``port`` for its signal (AT+CSQ): RSSI in dBm, or None when the
    modem reports it unknown (99), does not answer, or is not there. A health probe: it
    logs the cause and never raises."""
    try:
        modem = _open(port, "modem", baudrate=115200, timeout_s=0.1)
    except ScannerError as exc:
        log.warning("modem probe failed port=%s error=%s", port, exc.message)
        return None
    answer = b""
    try:
        modem.reset_input_buffer()
        modem.write(b"AT+CSQ\r")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not re.search(rb"\r?\n(OK|ERROR)\r?\n", answer):
            answer += modem.read(max(1, modem.in_waiting))
    except (pyserial.SerialException, OSError) as exc:
        log.warning("modem probe failed port=%s error=%s", port, exc)
        return None
    finally:
        modem.close()
    text = answer.decode("ascii", errors="replace")
    if "+CSQ:" not in text:
        log.warning("modem gave no signal answer port=%s", port)
        return None
    return parse_csq(text)
