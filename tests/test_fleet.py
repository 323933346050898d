"""Central staff see every device: online or not (Last Will), with its backlog."""

from __future__ import annotations

import json
import time
from collections import deque
from pathlib import Path

from agent.capture.samples import make_page
from agent.health import health_payload
from agent.services.sync import birth, device_link
from sync.protocol import health_topic, state_topic
from sync.spool.store import Spool
from tests.support.site import Site
from tests.support.wait import wait_until

HEALTH_KEYS = {
    "device",
    "time",
    "version",
    "uptime_s",
    "scanner",
    "spool",
    "capture",
    "disk_free_bytes",
    "cpu_temp_c",
    "link",
    "clock_synced",
    "cert_expiry",
    "recent_errors",
}


def test_fleet_shows_backlog_and_marks_a_vanished_device_offline(
    site: Site, tmp_path: Path
) -> None:
    pages = tmp_path / "pages"
    pages.mkdir()
    make_page(["TỜ KHAI"], seed=1).save(pages / "p0.png", dpi=(300, 300))
    assert site.run("scan", "--from", str(pages)).returncode == 0
    cfg = site.device
    link = device_link(cfg)
    link.connect()
    with Spool(cfg.home / "spool") as spool:
        payload = health_payload(cfg, spool, time.monotonic(), 12.5, deque())
    link.publish(state_topic(cfg.device.id), birth(cfg.device.id, True), retain=True)
    link.publish(health_topic(cfg.device.id), payload, retain=True)
    health = json.loads(payload)
    assert set(health) >= HEALTH_KEYS
    assert health["spool"]["pending_docs"] == 1 and health["link"]["rtt_ms"] == 12.5

    online = json.loads(site.run("fleet", "--json", "--wait", "0.5", check=True).stdout)
    (row,) = online["devices"]
    assert row["device"] == cfg.device.id and row["online"] is True and row["pending_docs"] == 1

    link.drop()  # power cut: the broker publishes the Last Will

    def fleet_rows() -> list[dict[str, object]]:
        out = site.run("fleet", "--json", "--wait", "0.5", check=True).stdout
        rows: list[dict[str, object]] = json.loads(out)["devices"]
        return rows

    wait_until(lambda: fleet_rows()[0]["online"] is False, 20, "the Last Will to mark it offline")
    (row,) = fleet_rows()
    assert row["online"] is False and row["pending_docs"] == 1
    text = site.run("fleet", "--wait", "0.5", check=True).stdout
    assert cfg.device.id in text and "OFFLINE" in text


def test_fleet_with_broker_down_says_so_in_one_line(site: Site) -> None:
    site.broker.stop()
    proc = site.run("fleet")
    assert proc.returncode == 7
    lines = proc.stderr.strip().splitlines()
    assert (
        len(lines) == 1
        and lines[0].startswith("error: broker at")
        and "Traceback" not in proc.stderr
    )
