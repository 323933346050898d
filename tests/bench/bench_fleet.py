"""Benchmark: the fleet service with 10,000 devices, against a plain JSON-parsing subscriber.

Run: .venv/bin/python -m tests.bench.bench_fleet [--devices N] [--rounds R]

One paho client (through a private mosquitto) publishes every device's retained
state and R rounds of health messages, the 60-second cycle compressed into one
burst per round. Two subscribers take the same stream in turn, each over the
project's MQTT link: the baseline only parses each payload as JSON; the fleet
takes it into ``FleetModel`` (bounded parse, checks, the device's view). Their
CPU per 1,000 messages is compared (the targets: keep up with 10,000 devices on
one core with 5x headroom, i.e. 10,000 messages a minute at under 20 % of a
core). Then, on the full model: ``/metrics`` render time, the fleet page's
render time (rows and template, signed-in work only), the alert evaluation,
and this process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from tempfile import TemporaryDirectory

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from agent.fleetpage.i18n import strings
from agent.fleetpage.pages import FleetPicture, rows
from agent.web.http import templates
from sync.fleet_alerts import AlertBook, rules
from sync.fleet_metrics import render_metrics
from sync.fleet_model import FleetModel
from sync.mqtt.link import Link
from sync.mqtt.settings import LinkSettings
from tests.support.mqtt import start_mosquitto

PAGES = Path(__file__).resolve().parents[2] / "agent" / "fleetpage" / "templates"


def health(device: str, n: int) -> bytes:
    return json.dumps(
        {
            "device": device,
            "time": "2026-12-01T10:00:00Z",
            "version": "0.1.0",
            "spool": {
                "pending_docs": n % 7,
                "pending_bytes": 40960 * (n % 7),
                "oldest_pending_age_s": 30.0,
            },
            "scanner": {"present": True, "state": "ready", "model": "fi-7160"},
            "capture": {"pages_today": n % 300, "pages_total": 1000 + n},
            "disk_free_bytes": 20 * 2**30,
            "disk_total_bytes": 32 * 2**30,
            "link": {"rtt_ms": 80.0, "rate_bps": 2e6},
            "cert_expiry": "2027-12-01T00:00:00Z",
            "clock_synced": True,
        }
    ).encode()


def publish(port: int, devices: list[str], rounds: int) -> None:
    """Every device's retained state, then ``rounds`` of health messages."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", port)
    client.loop_start()
    for d in devices:
        client.publish(f"sohoa/v1/d/{d}/state", b'{"online": true}', qos=1, retain=True)
    publish_health(client, devices, rounds)
    client.disconnect()
    client.loop_stop()


def publish_health(client: mqtt.Client, devices: list[str], rounds: int) -> None:
    info = None
    for r in range(rounds):
        for i, d in enumerate(devices):
            info = client.publish(f"sohoa/v1/d/{d}/health", health(d, i + r), qos=1, retain=True)
    if info is not None:
        info.wait_for_publish(120)


def timed_consume(
    port: int, devices: list[str], rounds: int, handle: Callable[[str, bytes], object]
) -> tuple[float, int]:
    link = Link(
        LinkSettings(
            "127.0.0.1", port, f"bench-{secrets.token_hex(3)}", clean_start=True, session_expiry_s=0
        )
    )
    link.connect()
    for f in ("sohoa/v1/d/+/state", "sohoa/v1/d/+/health"):
        link.subscribe(f)
    # the retained messages of an earlier round arrive first: take them, then time a fresh round
    while link.get(1.0) is not None:
        pass
    expect = len(devices) * rounds
    cpu0 = time.process_time()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", port)
    client.loop_start()
    pub = threading.Thread(target=publish_health, args=(client, devices, rounds))
    pub.start()
    got = 0
    while got < expect:
        msg = link.get(30)
        if msg is None:
            break
        handle(msg.topic, msg.payload)
        got += 1
    cpu = time.process_time() - cpu0
    pub.join()
    client.disconnect()
    client.loop_stop()
    link.close()
    return cpu, got


def best(fn: Callable[[], object], runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    devices = [f"H56-{i:05d}-a1" for i in range(args.devices)]
    with TemporaryDirectory() as tmp:
        broker = start_mosquitto(Path(tmp) / "broker")
        try:
            publish(broker.port, devices, 1)
            base_cpu, base_n = timed_consume(
                broker.port, devices, args.rounds, lambda _t, p: json.loads(p)
            )
            model = FleetModel()
            now = time.time()
            fleet_cpu, fleet_n = timed_consume(
                broker.port, devices, args.rounds, lambda t, p: model.apply(t, p, now)
            )
        finally:
            broker.stop()
    for d in devices:  # the retained states, as the service holds them after start-up
        model.apply(f"sohoa/v1/d/{d}/state", b'{"online": true}', now)
    book = AlertBook(rules())
    picture = FleetPicture(model, lambda: [], lambda _d, _n: [], lambda: [])
    env = templates(PAGES)
    t = strings("vi")

    def page() -> str:
        shown = rows(picture, t, now, "attention", "")
        return env.get_template("fleet.html").render(
            t=t,
            lang="vi",
            query_other="lang=en",
            strings_json="{}",
            rows=shown,
            columns=[],
            sort="attention",
            district="",
            districts=[],
            attention=0,
            alerts=[],
        )

    scrape = best(lambda: render_metrics(model.views(), None))
    render = best(page)
    alerts = best(lambda: book.evaluate(model.views(), now))
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    per_k_base = base_cpu / base_n * 1000
    per_k_fleet = fleet_cpu / fleet_n * 1000
    share = fleet_cpu / fleet_n * args.devices / 60  # of one core, at one health a minute each
    print(f"devices: {args.devices}; health messages timed: {fleet_n} (baseline {base_n})")
    print("| measure | fleet | baseline | ratio |")
    print("|---|---|---|---|")
    print(
        f"| CPU per 1,000 health messages | {per_k_fleet * 1000:.0f} ms | {per_k_base * 1000:.0f} ms (JSON only) | {per_k_fleet / per_k_base:.2f} |"
    )
    print(
        f"| one core's share at {args.devices} devices x 1/min | {share * 100:.1f} % | 20 % (5x headroom) | {share / 0.2:.2f} |"
    )
    print(
        f"| /metrics render, {args.devices} devices | {scrape * 1000:.0f} ms | 1000 ms target | {scrape:.2f} |"
    )
    print(
        f"| fleet page render, {args.devices} devices | {render * 1000:.0f} ms | 1000 ms target | {render:.2f} |"
    )
    print(f"| alert evaluation, {args.devices} devices | {alerts * 1000:.0f} ms | - | - |")
    print(f"| peak RSS of this process | {rss_mb:.0f} MB | 300 MB target | {rss_mb / 300:.2f} |")


if __name__ == "__main__":
    main()
