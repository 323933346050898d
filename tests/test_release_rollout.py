"""A staged rollout on a real broker: offers to 10 % of the fleet, reports coming back,
and the rollout stopping itself (its offers withdrawn) once too many devices roll back."""

from __future__ import annotations

import threading
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sync.durable import iso
from sync.mqtt.link import Link
from sync.mqtt.settings import LinkSettings
from sync.release.rollout import Rollout, select_targets
from sync.release.server import ReleaseServer, load_rollout, offers, save_rollout
from sync.release.wire import offer_topic, parse_offer, report, report_topic
from tests.support.mqtt import Broker
from tests.support.wait import wait_until


def link(broker: Broker, name: str) -> Link:
    settings = LinkSettings(broker.host, broker.port, name, clean_start=True)
    ln = Link(settings)
    ln.connect()
    return ln


def test_rollout_to_ten_percent_stops_itself_and_withdraws_its_offers(
    mosquitto: Broker, tmp_path: Path
) -> None:
    fleet = [f"H56-{n:05d}-a1" for n in range(50)]
    targets = select_targets("10%", "0.2.0", fleet, {})
    assert len(targets) == 5
    rollout = Rollout("0.2.0", targets, max_rollback_fraction=0.2)
    bundle = tmp_path / "sohoa-0.2.0.bundle"
    bundle.write_bytes(b"bundle bytes" * 100)
    save_rollout(tmp_path, rollout)
    province = link(mosquitto, "province")
    key = Ed25519PrivateKey.generate()
    for m in offers(rollout, bundle, key, 100, iso(4_000_000_000)):
        province.publish(m.topic, m.payload, retain=True)
    server = ReleaseServer(province, tmp_path)
    server.start()
    stop = threading.Event()
    thread = threading.Thread(target=server.serve, args=(stop,), daemon=True)
    thread.start()
    devices = link(mosquitto, "devices")
    try:
        healthy, *failing, waiting = targets
        devices.subscribe(offer_topic(waiting))
        devices.subscribe(offer_topic(healthy))
        retained = [devices.get(5), devices.get(5)]
        assert all(m is not None and parse_offer(m.payload).version == "0.2.0" for m in retained)
        for device, status in [(healthy, "healthy"), *((d, "rolled_back") for d in failing[:2])]:
            devices.publish(
                report_topic(device), report("0.2.0", status, "injected", "t"), retain=True
            )
        # 2 of 5 rolled back: 40 % is more than 20 %
        wait_until(lambda: load_rollout(tmp_path, "0.2.0").stopped, 10, "the rollout stopped")
        assert (
            load_rollout(tmp_path, "0.2.0").stopped == "2 of 5 devices rolled back (more than 20%)"
        )
        msg = devices.get(5)  # the waiting device's offer withdrawn: it has not begun
        assert msg is not None and (msg.topic, msg.payload) == (offer_topic(waiting), b"")
        assert devices.get(1) is None  # the healthy device's offer stays
    finally:
        stop.set()
        thread.join(5)
        devices.close()
        province.close()
