"""The device's release fetcher on a real broker: an offer it must not take is refused
with one reason on its report topic, a replayed offer changes nothing, a good one is
fetched by offset from the province and handed over whole, and a switch back is
reported."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sync.durable import iso
from sync.mqtt.link import Link
from sync.mqtt.settings import LinkSettings
from sync.release.fetch import FetchSettings, ReleaseFetcher
from sync.release.manifest import check_order
from sync.release.rollout import Rollout
from sync.release.server import ReleaseServer, save_rollout
from sync.release.wire import Offer, offer_topic, report_topic, sign_offer
from tests.support.mqtt import Broker

DEVICE = "H56-01234-a1"
COMMAND_KEY = Ed25519PrivateKey.generate()


def settings(broker: Broker, name: str) -> LinkSettings:
    return LinkSettings(broker.host, broker.port, name, clean_start=True)


def offer(version: str, data: bytes, counter: int) -> bytes:
    o = Offer(
        DEVICE, counter, iso(4_000_000_000), version, len(data), hashlib.sha256(data).hexdigest()
    )
    return sign_offer(o, COMMAND_KEY).to_bytes()


class Device:
    """A fetcher on a device that runs 0.2.0, its installs and reports recorded."""

    def __init__(self, broker: Broker, work: Path) -> None:
        self.installed: list[tuple[Path, bytes]] = []
        self.reports: dict[str, dict[str, str]] = {}
        self.fetcher = ReleaseFetcher(
            FetchSettings(DEVICE, work, COMMAND_KEY.public_key()),
            settings(broker, f"{DEVICE}-rel"),
            check=lambda o: check_order("0.2.0", o.version, allow_downgrade=o.allow_downgrade),
            install=lambda path, o: self.installed.append((path, path.read_bytes())),
            reports=self.reports.get,
        )


def reports_seen(province: Link, count: int) -> list[dict[str, str]]:
    out = []
    while len(out) < count and (msg := province.get(5)) is not None:
        if msg.topic == report_topic(DEVICE):
            out.append(json.loads(msg.payload))
    return out


def test_fetcher_refuses_downgrade_and_replay_fetches_a_good_offer_and_reports(
    mosquitto: Broker, tmp_path: Path
) -> None:
    bundle = bytes(range(256)) * 900  # four segments of 64 KiB
    folder = tmp_path / "province"
    folder.mkdir()
    (folder / "sohoa-0.3.0.bundle").write_bytes(bundle)
    save_rollout(folder, Rollout("0.3.0", (DEVICE,), 0.1))
    province = Link(settings(mosquitto, "province"))
    province.connect()
    province.subscribe(report_topic(DEVICE))
    server_link = Link(settings(mosquitto, "server"))
    server_link.connect()
    server = ReleaseServer(server_link, folder)
    server.start()
    stop = threading.Event()
    threading.Thread(target=server.serve, args=(stop,), daemon=True).start()
    device = Device(mosquitto, tmp_path / "device")
    try:
        province.publish(offer_topic(DEVICE), offer("0.1.0", b"old", 10), retain=True)
        device.fetcher.step(0, 1.0)
        (refused,) = reports_seen(province, 1)
        assert (refused["version"], refused["status"]) == ("0.1.0", "refused")
        assert refused["reason"].startswith("release 0.1.0 is older than the installed 0.2.0")

        province.publish(offer_topic(DEVICE), offer("0.3.0", bundle, 11), retain=True)
        device.fetcher.step(0, 2.0)
        assert device.installed == [(tmp_path / "device" / "sohoa-0.3.0.bundle", bundle)]
        province.publish(offer_topic(DEVICE), offer("0.3.0", bundle, 11), retain=True)  # replay
        device.reports["0.3.0"] = {"status": "rolled_back", "reason": "no health", "at": "t"}
        device.fetcher.step(0, 1.0)
        seen = reports_seen(province, 2)
        assert [(r["version"], r["status"]) for r in seen] == [
            ("0.3.0", "downloading"),
            ("0.3.0", "rolled_back"),
        ]
        assert len(device.installed) == 1
    finally:
        stop.set()
        device.fetcher.close()
        server_link.close()
        province.close()
