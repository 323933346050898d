"""`sohoa agent`: the capture service takes complete hot-folder files as batches,
and a handheld reader on a serial port sets the next batch's dossier."""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from agent.capture.pipeline import CaptureResult
from agent.capture.samples import make_page
from agent.services.capture import dossier_from_reader, run_agent
from sync.spool.store import Spool
from tests.support.site import Site
from tests.support.wait import wait_until

DOSSIER = "000.00.20.H56-230512-0007"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (DOSSIER, DOSSIER),
        (f"  {DOSSIER}\r", DOSSIER),
        (f"https://dichvucong.gov.vn/tra-cuu?MHS={DOSSIER}&SGT=001090012345", DOSSIER),
        ("000.00.20.H56-231340-0007", None),  # month 13: not a real date
        ("hello", None),
        ("", None),
    ],
)
def test_handheld_reader_line_sets_only_a_valid_dossier(line: str, expected: str | None) -> None:
    assert dossier_from_reader(line) == expected


def test_agent_takes_hot_folder_file_with_dossier_from_serial_reader(
    site: Site, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sohoa.agent")
    master, slave = os.openpty()
    port = os.ttyname(slave)
    hot = tmp_path / "hot"
    hot.mkdir()
    results: list[CaptureResult] = []
    stop, ready = threading.Event(), threading.Event()
    cfg = replace(site.device, capture=replace(site.device.capture, drop_blank=False))
    t = threading.Thread(
        target=run_agent,
        args=(cfg,),
        kwargs={
            "device": None,
            "hot_folder": hot,
            "reader_port": port,
            "stop": stop,
            "on_batch": results.append,
            "notify": lambda state: state == "READY=1" and ready.set(),
        },
        daemon=True,
    )
    t.start()
    try:
        assert ready.wait(15), "the capture service did not start"
        scanned_at = [-1.0]

        def dossier_set() -> bool:
            if "dossier set for the next batch" in caplog.text:
                return True
            # a line sent while the agent is still opening the port is flushed by the
            # open, so scan again after a second without an answer, as a clerk would
            if time.monotonic() - scanned_at[0] > 1.0:
                os.write(master, f"{DOSSIER}\r\n".encode())
                scanned_at[0] = time.monotonic()
            return False

        wait_until(dossier_set, 15, "the handheld reader to set the dossier")
        tmp = hot / "scan-0001.png.part"
        make_page(["ĐƠN ĐỀ NGHỊ", "Kính gửi: UBND xã"], seed=3).save(
            tmp, format="PNG", dpi=(300, 300)
        )
        tmp.rename(hot / "scan-0001.png")
        wait_until(lambda: results, 30, "the hot-folder batch")
    finally:
        stop.set()
        t.join(15)
        os.close(master)
        os.close(slave)
    assert len(results) == 1
    (doc,) = results[0].documents
    assert doc.dossier_code == DOSSIER and doc.pages == 1
    # the original holds personal data in clear: gone once its batch is in the spool
    assert sorted(p.name for p in hot.iterdir()) == []


def test_agent_with_nothing_to_capture_waits_and_says_which_settings_to_fill(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    stop, ready = threading.Event(), threading.Event()
    t = threading.Thread(
        target=run_agent,
        args=(site.device,),
        kwargs={
            "device": None,
            "hot_folder": None,
            "reader_port": None,
            "stop": stop,
            "notify": lambda state: state == "READY=1" and ready.set(),
        },
        daemon=True,
    )
    t.start()
    assert ready.wait(15), "the capture service did not start"
    alive_while_waiting = t.is_alive()
    stop.set()
    t.join(15)

    assert (alive_while_waiting, t.is_alive()) == (True, False)
    assert "set [capture] scanner_device" in caplog.text and "[capture] hot_folder" in caplog.text
    with Spool(site.device.home / "spool") as spool:
        scanner = spool.scanner_status()
    assert (scanner.present, scanner.last_error) == (
        False,
        "no scanner or hot folder configured — set [capture] scanner_device or"
        " [capture] hot_folder, then restart sohoa-agent",
    )
