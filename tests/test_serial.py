"""Serial devices over a real pseudo-terminal pair: the test plays the hardware on the master."""

from __future__ import annotations

import os
import threading
import time
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest

from device.errors import ScannerError
from device.serial import (
    ReaderNotFoundError,
    SerialCodeReader,
    csq_to_dbm,
    modem_signal,
    parse_csq,
    split_line,
)


class Pty:
    """A pseudo-terminal: ``port`` is the device path a program opens, ``master`` the
    hardware's end."""

    def __init__(self) -> None:
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.port = os.ttyname(self._slave)
        self._fds: tuple[int, ...] = (self.master, self._slave)

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def close(self) -> None:
        # once only: a second close could hit a descriptor number reused meanwhile
        fds, self._fds = self._fds, ()
        for fd in fds:
            os.close(fd)


@pytest.fixture
def pty_pair() -> Iterator[Pty]:
    pair = Pty()
    yield pair
    pair.close()


@pytest.fixture
def reader(pty_pair: Pty) -> Iterator[SerialCodeReader]:
    code_reader = SerialCodeReader(pty_pair.port, timeout_s=0.05)
    yield code_reader
    code_reader.close()


@pytest.mark.parametrize(
    ("sent", "codes"),
    [
        (b"000.00.20.H56-230512-0003\r\n", ["000.00.20.H56-230512-0003"]),
        (b"A1\rB2\nC3\r\n", ["A1", "B2", "C3"]),
        (b"\x02PATCHT\x03\r\n", ["PATCHT"]),
        (b"\r\n\r\n  KQ.G15.000031  \n", ["KQ.G15.000031"]),
        ("Nguyễn Văn A|01011990\n".encode(), ["Nguyễn Văn A|01011990"]),
    ],
)
def test_each_scanned_line_is_one_code(
    pty_pair: Pty, reader: SerialCodeReader, sent: bytes, codes: list[str]
) -> None:
    pty_pair.send(sent)

    got = [reader.read_code(1.0) for _ in codes]

    assert (got, reader.read_code(0.1)) == (codes, None)


def test_code_split_across_reads_is_joined(pty_pair: Pty, reader: SerialCodeReader) -> None:
    pty_pair.send(b"1.0016")
    first = reader.read_code(0.2)
    pty_pair.send(b"12\r")
    second = reader.read_code(1.0)
    pty_pair.send(b"\nNEXT\n")

    assert (first, second, reader.read_code(1.0)) == (None, "1.001612", "NEXT")


def test_no_code_returns_none_after_the_timeout(reader: SerialCodeReader) -> None:
    started = time.monotonic()

    got = reader.read_code(0.3)

    assert (got, 0.25 < time.monotonic() - started < 1.0) == (None, True)


def test_code_arriving_while_waiting_is_returned_at_once(
    pty_pair: Pty, reader: SerialCodeReader
) -> None:
    threading.Timer(0.2, pty_pair.send, args=(b"LATE\n",)).start()
    started = time.monotonic()

    got = reader.read_code(5.0)

    assert (got, time.monotonic() - started < 1.5) == ("LATE", True)


def test_missing_reader_is_told_apart_from_other_faults(tmp_path: Path) -> None:
    port = str(tmp_path / "ttyACM0")

    with pytest.raises(ReaderNotFoundError) as caught:
        SerialCodeReader(port)

    assert caught.value.message == f"barcode reader not found at {port}"
    assert caught.value.hint.startswith("Cắm lại đầu đọc mã vạch / plug the barcode reader in")


def test_a_file_that_is_not_a_serial_port_is_another_fault(tmp_path: Path) -> None:
    port = tmp_path / "not-a-tty"
    port.write_text("")

    with pytest.raises(ScannerError) as caught:
        SerialCodeReader(str(port))

    assert (type(caught.value), caught.value.message.startswith("cannot open")) == (
        ScannerError,
        True,
    )


def test_unplugging_while_reading_raises_and_the_reader_can_be_reopened(
    pty_pair: Pty, reader: SerialCodeReader
) -> None:
    pty_pair.send(b"BEFORE\n")
    first = reader.read_code(1.0)
    pty_pair.close()  # the USB device goes away

    with pytest.raises(ReaderNotFoundError, match="disconnected"):
        reader.read_code(1.0)

    replugged = Pty()
    try:
        with SerialCodeReader(replugged.port, timeout_s=0.05) as again:
            replugged.send(b"AFTER\n")
            assert (first, again.read_code(1.0)) == ("BEFORE", "AFTER")
    finally:
        replugged.close()


@pytest.mark.parametrize(
    ("buffer", "expected"),
    [
        (b"", (None, b"")),
        (b"ABC", (None, b"ABC")),
        (b"ABC\r\nDEF", ("ABC", b"\nDEF")),
        (b"\n\r\nX\n", ("X", b"")),
        (b"\xffbad\n", ("\ufffdbad", b"")),
    ],
)
def test_split_line(buffer: bytes, expected: tuple[str | None, bytes]) -> None:
    assert split_line(buffer) == expected


# --- modem -----------------------------------------------------------------------------------


def fake_modem(pair: Pty, answer: bytes | None) -> threading.Thread:
    """Answers AT+CSQ on the master end like a modem with echo on."""

    def run() -> None:
        heard = b""
        deadline = time.monotonic() + 3
        while b"AT+CSQ\r" not in heard and time.monotonic() < deadline:
            try:
                heard += os.read(pair.master, 64)
            except OSError:
                return
        if answer is not None:
            pair.send(b"AT+CSQ\r" + answer)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize(
    ("answer", "dbm"),
    [
        (b"\r\n+CSQ: 17,99\r\n\r\nOK\r\n", -79),
        (b"\r\n+CSQ: 31,0\r\n\r\nOK\r\n", -51),
        (b"\r\n+CREG: 1\r\n+CSQ: 0,99\r\n\r\nOK\r\n", -113),
        (b"\r\n+CSQ: 99,99\r\n\r\nOK\r\n", None),
        (b"\r\nERROR\r\n", None),
    ],
)
def test_modem_signal_is_read_in_dbm(pty_pair: Pty, answer: bytes, dbm: int | None) -> None:
    modem = fake_modem(pty_pair, answer)

    got = modem_signal(pty_pair.port, timeout_s=2.0)

    modem.join(timeout=3)
    assert got == dbm


def test_silent_modem_gives_no_signal_after_the_timeout(pty_pair: Pty) -> None:
    fake_modem(pty_pair, None)
    started = time.monotonic()

    got = modem_signal(pty_pair.port, timeout_s=0.3)

    assert (got, time.monotonic() - started < 1.5) == (None, True)


def test_missing_modem_gives_no_signal_and_logs_the_port(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = str(tmp_path / "ttyUSB2")

    assert modem_signal(port) is None
    assert f"port={port}" in caplog.text


@pytest.mark.parametrize(
    ("rssi", "dbm"),
    [(0, -113), (1, -111), (2, -109), (15, -83), (30, -53), (31, -51), (99, None), (100, -116)]
    + [(191, -25), (32, None), (-1, None)],
)
def test_csq_to_dbm(rssi: int, dbm: int | None) -> None:
    assert csq_to_dbm(rssi) == dbm


@pytest.mark.parametrize(
    ("text", "dbm"),
    [("+CSQ: 20,99", -73), ("+CSQ:5,3", -103), ("OK", None), ("+CSQ: 99,99", None)],
)
def test_parse_csq(text: str, dbm: int | None) -> None:
    assert parse_csq(text) == dbm
