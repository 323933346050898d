"""Central staff see what happened at the counter: the scanner's state, the day's
capture and the modem's signal reach the retained health message."""

from __future__ import annotations

import json
import os
import threading
import tty
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from agent.capture.wiring import Capture, scan_settings
from agent.services.sync import run_sync
from device.scanner import SaneScanner, ScannedPage
from sync.mqtt.link import Link
from sync.mqtt.settings import LinkSettings
from sync.protocol import health_topic


class JamAfter:
    """SANE's test scanner, set to jam (SANE_STATUS_JAMMED) after ``pages`` sheets."""

    def __init__(self, scanner: SaneScanner, pages: int) -> None:
        self.scanner = scanner
        self.device_name = scanner.device_name
        self.pages_before_jam = pages

    def pages(self) -> Iterator[ScannedPage]:
        for page in self.scanner.pages():
            yield page
            if page.index + 1 == self.pages_before_jam:
                self.scanner.set_option("read-return-value", "SANE_STATUS_JAMMED")


@pytest.fixture
def modem_port() -> Iterator[str]:
    """A pseudo-terminal answering every AT+CSQ like a modem at RSSI 20 (-73 dBm)."""
    master, slave = os.openpty()
    tty.setraw(slave)
    stop = threading.Event()

    def answer() -> None:
        heard = b""
        while not stop.is_set():
            try:
                heard += os.read(master, 64)
            except OSError:
                return
            if b"AT+CSQ\r" in heard:
                heard = b""
                os.write(master, b"AT+CSQ\r\r\n+CSQ: 20,99\r\n\r\nOK\r\n")

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    yield os.ttyname(slave)
    stop.set()
    os.close(slave)
    os.close(master)
    thread.join(2)


def retained_health(host: str, port: int, device: str) -> dict[str, object]:
    settings = LinkSettings(host=host, port=port, client_id="t-health-reader", clean_start=True)
    with Link(settings) as link:
        link.subscribe(health_topic(device))
        msg = link.get(10)
    assert msg is not None, "no retained health message"
    health: dict[str, object] = json.loads(msg.payload)
    return health


def test_a_jam_at_the_counter_reaches_the_retained_health(
    site: Any, sane_test_scanner: str, warehouse_worker: object, modem_port: str
) -> None:
    device = replace(site.device, sync=replace(site.device.sync, modem_port=modem_port))
    with Capture.from_config(device) as capture:
        scanner = SaneScanner(sane_test_scanner, scan_settings(device))
        result = capture.run(JamAfter(scanner, 3))
    assert (result.status, result.pages_in) == ("interrupted", 3)

    outcome = run_sync(device, once=True, timeout_s=60)
    assert (outcome.stored, outcome.pending) == (len(result.documents), 0)

    health = retained_health(site.broker.host, site.broker.port, device.device.id)
    assert health["scanner"] == {
        "present": True,
        "model": "test:0",
        "last_error": "paper jam after 3 pages (test:0) — " + scanner_hint(health),
        "last_error_at": health["scanner"]["last_error_at"],  # type: ignore[index]
        "jams": 1,
        "last_ok_at": health["scanner"]["last_ok_at"],  # type: ignore[index]
        "state": "jam",  # what the counter page and the fleet show
    }
    assert health["capture"]["pages_today"] == 3  # type: ignore[index]
    assert health["capture"]["pages_total"] == 3  # type: ignore[index]
    assert health["disk_total_bytes"] >= health["disk_free_bytes"] > 0  # type: ignore[operator]
    assert health["capture"]["last_batch"] is not None  # type: ignore[index]
    assert health["link"]["modem_signal_dbm"] == -73  # type: ignore[index]


def scanner_hint(health: dict[str, Any]) -> str:
    error = str(health["scanner"]["last_error"])
    assert error.startswith("paper jam after 3 pages (test:0) — Gỡ giấy kẹt"), error
    return error.split(" — ", 1)[1]
