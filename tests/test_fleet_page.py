"""The fleet page in a real headless Chromium: staff sign in and see every device, in
Vietnamese first, filtered by district, with a device's 30-day chart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from tests.support.browser import chromium, free_port
from tests.support.mqtt import Broker
from tests.support.site import REPO, SOHOA, write_toml
from tests.support.wait import wait_until

PASSWORD = "fleet-page-pass"
REGISTER = (
    "device,commune,district,contact\n"
    "H56-00001-a1,Xã Tân Phú,Huyện Đông Anh,0901 000 001\n"
    "H56-00002-a1,Xã Hòa Bình,Huyện Sóc Sơn,0901 000 002\n"
    "H56-00003-a1,Xã An Lạc,Huyện Sóc Sơn,0901 000 003\n"
)
SHOTS = REPO / "docs"


def _publish(broker: Broker) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    client.connect(broker.host, broker.port)
    client.loop_start()
    for n, online in ((1, True), (2, True), (3, False)):
        device = f"H56-0000{n}-a1"
        health = {
            "device": device,
            "spool": {
                "pending_docs": 4 * n,
                "pending_bytes": n * 3 * 2**20,
                "oldest_pending_age_s": 600.0 * n,
            },
            "scanner": {"present": n != 2, "state": "ready" if n != 2 else "absent"},
            "capture": {"pages_today": 40 * n, "pages_total": 900 * n},
            "disk_free_bytes": 9 * 2**30,
            "disk_total_bytes": 32 * 2**30,
            "cert_expiry": "2027-11-30T00:00:00Z",
            "clock_synced": True,
        }
        client.publish(f"sohoa/v1/d/{device}/health", json.dumps(health), qos=1, retain=True)
        state = {"online": online}
        client.publish(
            f"sohoa/v1/d/{device}/state", json.dumps(state), qos=1, retain=True
        ).wait_for_publish(10)
    client.disconnect()
    client.loop_stop()


@pytest.fixture
def fleet_url(tmp_path: Path, mosquitto: Broker) -> Iterator[str]:
    _publish(mosquitto)
    register = tmp_path / "devices.csv"
    register.write_text(REGISTER, encoding="utf-8")
    port = free_port()
    toml = write_toml(
        tmp_path / "fleet.toml",
        tmp_path / "province",
        "fleet-1",
        mosquitto.url(),
        fleet={"listen": f"127.0.0.1:{port}", "register": str(register)},
    )
    env = {**os.environ, "SOHOA_CONFIG": str(toml)}
    subprocess.run(
        [*SOHOA, "ui", "passwd", "staff"], input=PASSWORD, text=True, env=env, cwd=REPO, check=True
    )
    proc = subprocess.Popen([*SOHOA, "fleet", "serve"], env=env, cwd=REPO)
    url = f"http://127.0.0.1:{port}"

    def heard_all() -> bool:
        try:
            with urllib.request.urlopen(url + "/metrics", timeout=2) as r:
                return r.read().decode().count("sohoa_device_online{") == 3
        except OSError:
            return False

    try:
        wait_until(heard_all, 30, "the fleet service to hear the three devices")
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)


@pytest.fixture
def browser() -> Iterator[Any]:
    driver = chromium(1280, 800)
    try:
        yield driver
    finally:
        driver.quit()


def test_staff_see_every_device_filter_by_district_and_open_one(
    fleet_url: str, browser: Any
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(fleet_url + "/")
    WebDriverWait(browser, 30).until(lambda d: d.current_url.endswith("/login"))
    browser.find_element(By.ID, "name").send_keys("staff")
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.ID, "sign-in").click()
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.ID, "devices"))

    rows = browser.find_elements(By.CSS_SELECTOR, "#devices tbody tr")
    text = browser.find_element(By.TAG_NAME, "body").text
    assert [r.get_attribute("data-device") for r in rows][0] == "H56-00003-a1"  # attention first
    for needle in (
        "Giám sát thiết bị số hóa",
        "Xã Tân Phú",
        "Huyện Sóc Sơn",
        "Mất kết nối",
        "Trực tuyến",
    ):
        assert needle in text, needle
    SHOTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(SHOTS / "fleet-page.png"))

    browser.get(fleet_url + "/?district=Huy%E1%BB%87n%20S%C3%B3c%20S%C6%A1n")
    shown = {
        r.get_attribute("data-device")
        for r in browser.find_elements(By.CSS_SELECTOR, "#devices tbody tr")
    }
    assert shown == {"H56-00002-a1", "H56-00003-a1"}

    browser.get(fleet_url + "/devices/H56-00001-a1?lang=en")
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.ID, "device-name"))
    assert "30 days: backlog and pages per day" in browser.find_element(By.TAG_NAME, "body").text
    assert browser.find_elements(By.CSS_SELECTOR, "svg.chart rect")
