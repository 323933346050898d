"""Only a device can speak as itself: real mosquitto with the configuration sohoa writes."""

from __future__ import annotations

import os
import pwd
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from agent.capture.samples import make_page
from agent.capture.wiring import Capture
from agent.config import Config, DeviceConfig
from agent.demo import provision_pair
from agent.services.sync import run_sync
from agent.services.warehouse import WarehouseWorkers
from device.files import PathSource
from sync import pki
from sync.broker_config import write_broker_config
from sync.errors import BrokerError
from sync.localbroker import free_port
from sync.mqtt.link import Link
from sync.mqtt.settings import BrokerConfig, LinkSettings
from sync.warehouse.index import SqliteIndex
from tests.support.mqtt import make_tls, run_generated_broker

IDENTITIES = (("dev-a", "device"), ("dev-b", "device"), ("wh-1", "warehouse"), ("fleet-1", "fleet"))


@dataclass
class SecureBroker:
    port: int
    keys: Path
    certs: Path
    conf: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = run_generated_broker(self.conf, self.port)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)

    def settings(self, name: str, **kw: object) -> LinkSettings:
        return LinkSettings(
            "127.0.0.1",
            self.port,
            f"t-{name}-{kw.pop('tag', '')}",
            clean_start=True,
            tls_ca=self.keys / "ca.crt",
            tls_cert=self.certs / f"{name}.crt",
            tls_key=self.certs / f"{name}.key",
            connect_timeout_s=5.0,
            **kw,  # type: ignore[arg-type]
        )

    def link(self, name: str, tag: str = "") -> Link:
        link = Link(self.settings(name, tag=tag))
        link.connect()
        return link

    def broker_config(self, name: str) -> BrokerConfig:
        return BrokerConfig(
            url=f"mqtts://127.0.0.1:{self.port}",
            ca=self.keys / "ca.crt",
            cert=self.certs / f"{name}.crt",
            key=self.certs / f"{name}.key",
        )


@pytest.fixture
def secure_broker(tmp_path: Path) -> Iterator[SecureBroker]:
    keys, certs = tmp_path / "province" / "keys", tmp_path / "certs"
    pki.init_ca(keys)
    for name, role in IDENTITIES:
        pki.issue(keys, name, role, certs)
    port = free_port()
    me = pwd.getpwuid(os.getuid()).pw_name
    conf = write_broker_config(
        keys,
        tmp_path / "broker",
        port=port,
        host="127.0.0.1",
        listen="127.0.0.1",
        run_as=me,
        enroll_port=0,
    )
    broker = SecureBroker(port, keys, certs, conf)
    broker.start()
    yield broker
    broker.stop()


def refused(settings: LinkSettings) -> str:
    with pytest.raises(BrokerError) as caught:
        Link(settings).connect()
    return caught.value.message


def test_plain_tcp_and_anonymous_clients_are_refused(secure_broker: SecureBroker) -> None:
    plain = LinkSettings("127.0.0.1", secure_broker.port, "t-plain", connect_timeout_s=3.0)
    no_cert = replace(secure_broker.settings("dev-a"), tls_cert=None, tls_key=None)

    assert refused(plain)
    assert refused(no_cert)


def test_a_certificate_from_another_ca_is_refused(
    secure_broker: SecureBroker, tmp_path: Path
) -> None:
    other = make_tls(tmp_path / "other", client_cn="dev-a")
    forged = replace(
        secure_broker.settings("dev-a"), tls_cert=other.client_cert, tls_key=other.client_key
    )
    assert refused(forged)


def test_a_device_cannot_speak_for_another_or_read_its_traffic(
    secure_broker: SecureBroker,
) -> None:
    warehouse = secure_broker.link("wh-1")
    warehouse.subscribe("$share/ingest/sohoa/v1/d/+/doc/#")
    b = secure_broker.link("dev-b")
    b.subscribe("sohoa/v1/d/dev-b/rcpt")
    a = secure_broker.link("dev-a")
    a.subscribe("sohoa/v1/d/dev-b/rcpt")  # accepted, but nothing may ever be delivered
    a.subscribe("sohoa/v1/d/+/doc/#")

    for topic in ("sohoa/v1/d/dev-b/doc/d1/m", "sohoa/v1/d/dev-b/state", "sohoa/v1/d/dev-b/health"):
        with pytest.raises(BrokerError, match="Not authorized"):
            a.publish(topic, b"forged")
    b.publish("sohoa/v1/d/dev-b/doc/d2/m", b"genuine")
    warehouse.publish("sohoa/v1/d/dev-b/rcpt", b"receipt for b")

    got = warehouse.get(5)
    assert (got.topic, got.payload) == ("sohoa/v1/d/dev-b/doc/d2/m", b"genuine")  # type: ignore[union-attr]
    assert b.get(5) is not None  # b's own receipt arrives ...
    assert (a.get(1), warehouse.get(0.5)) == (None, None)  # ... and nothing of it reaches a
    for link in (a, b, warehouse):
        link.close()


def test_a_device_fetches_only_its_own_release_segments(secure_broker: SecureBroker) -> None:
    province = secure_broker.link("wh-1")
    province.subscribe("sohoa/v1/d/+/rel/q")
    a, b = secure_broker.link("dev-a"), secure_broker.link("dev-b")
    a.subscribe("sohoa/v1/d/dev-b/rel/s/#")  # accepted, but nothing may ever be delivered
    a.subscribe("sohoa/v1/d/dev-b/cmd/rel")
    b.subscribe("sohoa/v1/d/dev-b/rel/s/#")
    for topic in ("sohoa/v1/d/dev-b/rel/q", "sohoa/v1/d/dev-b/rel/r", "sohoa/v1/d/dev-b/rel/s/0"):
        with pytest.raises(BrokerError, match="Not authorized"):
            a.publish(topic, b"forged")
    b.publish("sohoa/v1/d/dev-b/rel/q", b'{"version": "0.2.0", "offset": 0, "length": 9}')

    got = province.get(5)
    assert got is not None and got.topic == "sohoa/v1/d/dev-b/rel/q"
    province.publish("sohoa/v1/d/dev-b/rel/s/0", b"segment 0")
    province.publish("sohoa/v1/d/dev-b/cmd/rel", b"offer", retain=True)
    assert b.get(5) is not None
    assert a.get(1) is None
    for link in (a, b, province):
        link.close()


def test_the_fleet_role_reads_state_and_publishes_nothing(secure_broker: SecureBroker) -> None:
    fleet = secure_broker.link("fleet-1")
    fleet.subscribe("sohoa/v1/d/+/state")
    a = secure_broker.link("dev-a")
    a.publish("sohoa/v1/d/dev-a/state", b'{"online": true}', retain=True)

    assert fleet.get(5) is not None
    for topic in ("sohoa/v1/d/dev-a/state", "sohoa/v1/d/fleet-1/state", "sohoa/v1/d/dev-a/rcpt"):
        with pytest.raises(BrokerError, match="Not authorized"):
            fleet.publish(topic, b"forged")
    fleet.close()
    a.close()


def test_a_revoked_certificate_is_refused_after_the_broker_reloads(
    secure_broker: SecureBroker, tmp_path: Path
) -> None:
    secure_broker.link("dev-b").close()
    pki.revoke(secure_broker.keys, "dev-b")
    secure_broker.stop()
    write_broker_config(
        secure_broker.keys,
        secure_broker.conf.parent,
        port=secure_broker.port,
        host="127.0.0.1",
        listen="127.0.0.1",
        run_as=pwd.getpwuid(os.getuid()).pw_name,
        enroll_port=0,  # this test needs no enrolment listener
    )
    secure_broker.start()

    assert refused(secure_broker.settings("dev-b", tag="after"))
    secure_broker.link("dev-a", tag="after").close()  # the others still connect


def test_an_enrolled_device_syncs_end_to_end_through_tls_with_its_own_certificate(
    secure_broker: SecureBroker, tmp_path: Path
) -> None:
    wh = Config(home=tmp_path / "warehouse", broker=secure_broker.broker_config("wh-1"))
    dev = Config(
        home=tmp_path / "device",
        broker=secure_broker.broker_config("dev-a"),
        device=DeviceConfig(id="dev-a"),
    )
    dev = replace(dev, spool=replace(dev.spool, reserve_mb=0))
    provision_pair(dev, wh)
    pages = tmp_path / "pages"
    pages.mkdir()
    make_page(["GIẤY KHAI SINH"], seed=4).save(pages / "p0.png", dpi=(300, 300))
    with Capture.from_config(dev) as capture:
        result = capture.run(PathSource(pages))

    with WarehouseWorkers.from_config(wh) as workers:
        assert workers.wait_ready(15), "the warehouse did not connect with its certificate"
        outcome = run_sync(dev, once=True, timeout_s=60)

    assert (outcome.stored, outcome.pending, outcome.rejected) == (1, 0, 0)
    index = SqliteIndex(wh.path(wh.warehouse.archive) / "index.db")
    stored = [(d.doc_id, d.device, d.pdf_sha256) for d in index.all()]
    index.close()
    assert stored == [(result.documents[0].doc_id, "dev-a", result.documents[0].pdf_sha256)]
