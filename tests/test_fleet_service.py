"""The fleet service: devices' retained health to /metrics, the page's API and the alerts,
with a real mosquitto, real `sohoa sync` devices, promtool and a real Prometheus."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.fleetpage.pages import release_summary
from sync.fleet_alerts import AlertBook, rules
from sync.fleet_metrics import render_metrics
from sync.fleet_model import FleetModel, parse_register
from sync.localbroker import free_port
from tests.support.mqtt import Broker
from tests.support.site import REPO, SOHOA, Site, make_site, write_toml
from tests.support.wait import wait_until

RULES = REPO / "config" / "prometheus"
PASSWORD = "fleet-pass-1"


def health(device: str, **extra: Any) -> bytes:
    body = {
        "device": device,
        "time": "2026-12-01T10:00:00Z",
        "spool": {"pending_docs": 3, "pending_bytes": 4096, "oldest_pending_age_s": 120.0},
        "scanner": {"present": True, "state": "ready"},
        "capture": {"pages_today": 12, "pages_total": 340},
        "disk_free_bytes": 5 * 2**30,
        "disk_total_bytes": 32 * 2**30,
        "cert_expiry": "2027-12-01T00:00:00Z",
        "clock_synced": True,
        **extra,
    }
    return json.dumps(body).encode()


def test_bad_input_on_the_health_topics_is_counted_and_ignored() -> None:
    model = FleetModel(parse_register("device,commune,district,contact\nd1,Xã A,Huyện 1,0900\n"))
    cases = {
        "not a JSON object": ("sohoa/v1/d/d1/health", b"{garbage"),
        "payload too large": ("sohoa/v1/d/d1/health", b"{" + b" " * 300_000 + b"}"),
        "device not in the register": ("sohoa/v1/d/d9/health", health("d9")),
        "health names another device than its topic": ("sohoa/v1/d/d1/health", health("d2")),
    }
    for reason, (topic, payload) in cases.items():
        assert model.apply(topic, payload, 100.0) == reason
    assert model.apply("sohoa/v1/d/d1/health", b"[" * 100_000, 100.0) == "not a JSON object"
    assert model.apply("sohoa/v1/d/d1/health", health("d1"), 101.0) is None

    (view,) = model.views()
    assert (view.device, view.facts()["pending_docs"], sum(model.ignored.values())) == ("d1", 3, 5)


def test_each_device_shows_its_version_and_its_last_release_report() -> None:
    model = FleetModel(None)
    model.apply("sohoa/v1/d/d1/health", health("d1", version="0.2.0"), 100.0)
    report = b'{"version": "0.3.0", "status": "rolled_back", "reason": "no health", "at": "t"}'
    assert model.apply("sohoa/v1/d/d1/rel/r", report, 101.0) is None

    facts = model.views()[0].facts()
    assert (facts["version"], facts["last_seen"]) == ("0.2.0", 100.0)
    assert (facts["release_version"], facts["release_status"], facts["release_reason"]) == (
        "0.3.0",
        "rolled_back",
        "no health",
    )


def test_the_fleet_page_sums_up_each_release_with_its_failures() -> None:
    model = FleetModel(None)
    for device, version, status, why in [
        ("d1", "0.3.0", "healthy", ""),
        ("d2", "0.3.0", "rolled_back", "no health within the deadline"),
        ("d3", "0.3.0", "downloading", "100/200"),
        ("d4", "0.2.0", "healthy", ""),
    ]:
        body = {"version": version, "status": status, "reason": why, "at": "t"}
        model.apply(f"sohoa/v1/d/{device}/rel/r", json.dumps(body).encode(), 100.0)
    shown = [{"device": v.device, **v.facts()} for v in model.views()]

    assert release_summary(shown) == [
        {
            "version": "0.3.0",
            "by_status": {"healthy": 1, "rolled_back": 1, "downloading": 1},
            "failures": [("d2", "rolled_back", "no health within the deadline")],
        },
        {"version": "0.2.0", "by_status": {"healthy": 1}, "failures": []},
    ]


def test_metrics_keep_an_offline_device_and_drop_one_removed_from_the_register() -> None:
    register = parse_register("d1,Xã A,Huyện 1,\nd2,Xã B,Huyện 1,\n")
    model = FleetModel(register)
    for d in ("d1", "d2"):
        model.apply(f"sohoa/v1/d/{d}/state", b'{"online": true}', 100.0)
        model.apply(f"sohoa/v1/d/{d}/health", health(d), 100.0)
    model.apply("sohoa/v1/d/d2/state", b'{"online": false}', 130.0)  # its Last Will

    text = render_metrics(model.views(), register)

    assert 'sohoa_device_online{device="d2",commune="Xã B",district="Huyện 1"} 0' in text
    assert (
        'sohoa_device_last_seen_timestamp_seconds{device="d2",commune="Xã B",district="Huyện 1"} 130'
        in text
    )
    assert 'sohoa_capture_pages_total{device="d1",commune="Xã A",district="Huyện 1"} 340' in text
    assert "sohoa_fleet_devices 2" in text
    check = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    model.register = parse_register("d1,Xã A,Huyện 1,\n")
    assert 'device="d2"' not in render_metrics(model.views(), model.register)


def test_the_service_evaluates_the_offline_rule_after_its_delay() -> None:
    model = FleetModel()
    model.apply("sohoa/v1/d/d1/state", b'{"online": false}', 1000.0)
    book = AlertBook(rules(offline_for_s=900))

    early = [a.name for a in book.evaluate(model.views(), 1000.0 + 600)]
    late = [(a.name, a.device) for a in book.evaluate(model.views(), 1000.0 + 901)]

    assert early == ["SohoaWatchdog"]
    assert ("SohoaDeviceOffline", "d1") in late


def test_the_shipped_rules_pass_promtool_and_their_tests() -> None:
    for args in (
        ["check", "rules", "sohoa-alerts.yml"],
        ["test", "rules", "sohoa-alerts.test.yml"],
    ):
        proc = subprocess.run(["promtool", *args], cwd=RULES, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr


@dataclass
class Fleet:
    site: Site
    url: str
    cookie: str

    def get(self, path: str) -> Any:
        req = urllib.request.Request(self.url + path, headers={"Cookie": self.cookie})
        with urllib.request.urlopen(req, timeout=10) as r:
            body = r.read()
        return json.loads(body) if path.startswith("/api/") else body.decode()


def _login(url: str) -> str:
    req = urllib.request.Request(
        url + "/api/login",
        data=json.dumps({"name": "staff", "password": PASSWORD}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.headers["Set-Cookie"].split(";")[0]


def _listening(url: str) -> bool:
    try:
        urllib.request.urlopen(url + "/metrics", timeout=2).close()
    except OSError:
        return False
    return True


@pytest.fixture
def fleet(tmp_path: Path, mosquitto: Broker) -> Iterator[Fleet]:
    site = make_site(tmp_path, mosquitto)
    port = free_port()
    home = tmp_path / "province"
    toml = write_toml(
        tmp_path / "fleet.toml",
        home,
        "fleet-1",
        mosquitto.url(),
        fleet={"listen": f"127.0.0.1:{port}", "offline_alert_s": 10},
    )
    env = {**os.environ, "SOHOA_CONFIG": str(toml)}
    subprocess.run(
        [*SOHOA, "ui", "passwd", "staff"], input=PASSWORD, text=True, env=env, cwd=REPO, check=True
    )
    proc = subprocess.Popen([*SOHOA, "fleet", "serve"], env=env, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _listening(url), 20, "the fleet service to listen")
        yield Fleet(site, url, _login(url))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)


def _retained(site: Site, topic: str) -> Any:
    from sync.mqtt.link import Link
    from sync.mqtt.settings import LinkSettings

    link = Link(LinkSettings(site.broker.host, site.broker.port, "alerts-reader", clean_start=True))
    link.connect()
    try:
        link.subscribe(topic)
        msg = link.get(10)
        assert msg is not None, f"nothing retained on {topic}"
        return json.loads(msg.payload)
    finally:
        link.close()


def _sync(site: Site, toml: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*SOHOA, "sync"], env={**os.environ, "SOHOA_CONFIG": str(toml)}, cwd=REPO
    )


def test_two_devices_reach_metrics_and_a_killed_one_goes_offline_and_raises_the_alert(
    fleet: Fleet, tmp_path: Path
) -> None:
    site = fleet.site
    home2 = tmp_path / "device2"
    shutil.copytree(site.device.home / "keys", home2 / "keys")  # a second device beside it
    second = write_toml(
        tmp_path / "device2.toml",
        home2,
        "dev-test-02",
        site.broker.url(),
        spool={"reserve_mb": 0},
    )
    # a short keep-alive: the broker notices the kill soon
    text = second.read_text().replace("[broker]\n", "[broker]\nkeepalive_s = 5\n", 1)
    second.write_text(text)
    first = _sync(site, site.device_toml)
    killed = _sync(site, second)
    try:
        wait_until(
            lambda: (
                fleet.get("/metrics").count("sohoa_device_online{") == 2
                and 'sohoa_device_online{device="dev-test-02",commune="",district=""} 1'
                in fleet.get("/metrics")
            ),
            30,
            "both devices online in /metrics",
        )
        killed.send_signal(signal.SIGKILL)  # no goodbye: the broker's Last Will says it
        killed.wait(10)
        wait_until(
            lambda: (
                'sohoa_device_online{device="dev-test-02",commune="",district=""} 0'
                in fleet.get("/metrics")
            ),
            30,
            "the killed device offline (Last Will within the keepalive window)",
        )
        wait_until(
            lambda: any(
                d["device"] == "dev-test-02" and any("offline" in a for a in d["alerts"])
                for d in fleet.get("/api/devices")["devices"]
            ),
            40,
            "the offline alert after its (shortened) delay",
        )
        page = fleet.get("/")
        assert "dev-test-02" in page and "Mất kết nối" in page  # Vietnamese first
        retained = _retained(site, "sohoa/v1/fleet/alerts")  # for a province without Prometheus
        names = {(a["alert"], a["device"]) for a in retained["alerts"]}
        assert {("SohoaWatchdog", ""), ("SohoaDeviceOffline", "dev-test-02")} <= names
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(15)


def test_a_real_prometheus_scrapes_the_fleet_and_fires_the_watchdog(
    fleet: Fleet, tmp_path: Path
) -> None:
    port = free_port()
    target = fleet.url.removeprefix("http://")
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: [{RULES / 'sohoa-alerts.yml'}]\n"
        f"scrape_configs: [{{job_name: sohoa-fleet, static_configs: [{{targets: ['{target}']}}]}}]\n"
    )
    prom = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def query(q: str) -> list[Any]:
        url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": q})
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                result: list[Any] = json.loads(r.read())["data"]["result"]
                return result
        except OSError:
            return []

    try:
        wait_until(lambda: query('up{job="sohoa-fleet"} == 1'), 60, "Prometheus scraping the fleet")
        wait_until(lambda: query("sohoa_fleet_devices"), 30, "the fleet's own series")
        wait_until(
            lambda: query('ALERTS{alertname="SohoaWatchdog",alertstate="firing"}'),
            60,
            "the watchdog alert",
        )
    finally:
        prom.terminate()
        prom.wait(15)
