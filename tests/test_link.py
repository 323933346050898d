"""The MQTT link against a real mosquitto: acknowledgements, retained state, Wills,
persistent sessions, shared subscriptions, TLS, and a weak link through the fault proxy."""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sync.errors import BrokerError, ConfigError
from sync.mqtt.link import Link
from sync.mqtt.settings import BrokerConfig, LinkSettings, Message, shared_subscription
from tests.support.faultproxy import FaultProxy
from tests.support.mqtt import Broker, free_port, make_tls, start_mosquitto
from tests.support.wait import became_true

_ids = itertools.count()


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """One broker for the tests that do not restart it; each test uses its own names."""
    b = start_mosquitto(tmp_path_factory.mktemp("link-broker"))
    yield b
    b.stop()


@pytest.fixture
def ns() -> str:
    """A prefix unique to the test, for client ids and topics on the shared broker."""
    return f"t{next(_ids)}-{os.getpid()}"


def settings(port: int, client_id: str, **kw: object) -> LinkSettings:
    return LinkSettings("127.0.0.1", port, client_id, **kw)  # type: ignore[arg-type]


def connected(port: int, client_id: str, **kw: object) -> Link:
    link = Link(settings(port, client_id, **kw))
    link.connect()
    return link


def drain(link: Link, quiet_s: float = 0.3) -> list[Message]:
    got: list[Message] = []
    while (m := link.get(quiet_s)) is not None:
        got.append(m)
    return got


def test_publish_returns_only_after_the_puback(broker: Broker, ns: str) -> None:
    with (
        FaultProxy((broker.host, broker.port), latency_ms=150) as proxy,
        connected(broker.port, f"{ns}-sub") as sub,
        connected(proxy.port, f"{ns}-pub") as pub,
    ):
        sub.subscribe(f"{ns}/x")
        started = time.monotonic()
        pub.publish(f"{ns}/x", b"hello")
        elapsed = time.monotonic() - started  # PUBLISH up and PUBACK down: 2 × 150 ms
        pending = pub.publish_nowait(f"{ns}/x", b"again")
        assert not pending.done()
        assert pending.wait(5) and not pending.failed
        assert [m.payload for m in drain(sub)] == [b"hello", b"again"]
    assert 0.3 <= elapsed < 1.5


def test_received_messages_keep_topic_qos_and_payload(broker: Broker, ns: str) -> None:
    payload = os.urandom(200_000)
    with connected(broker.port, f"{ns}-a") as a:
        a.subscribe(f"{ns}/big/#")
        a.publish(f"{ns}/big/1", payload)
        a.publish(f"{ns}/big/2", b"", qos=0)
        assert drain(a) == [Message(f"{ns}/big/1", payload, 1), Message(f"{ns}/big/2", b"", 0)]


@pytest.mark.parametrize(
    ("ending", "live_sees", "late_subscriber_sees"),
    [
        ("drop", [b'{"online": false}'], b'{"online": false}'),
        ("close", [], b'{"online": true}'),
    ],
)
def test_will_is_sent_on_a_crash_but_not_on_a_clean_close(
    broker: Broker, ns: str, ending: str, live_sees: list[bytes], late_subscriber_sees: bytes
) -> None:
    state = f"sohoa/v1/d/{ns}/state"
    will = Message(state, b'{"online": false}', qos=1, retain=True)
    device = connected(broker.port, f"{ns}-dev", will=will)
    device.publish(state, b'{"online": true}', retain=True)
    with connected(broker.port, f"{ns}-watch") as watcher:
        watcher.subscribe(state)
        assert watcher.get(2) == Message(state, b'{"online": true}', 1, retain=True)
        getattr(device, ending)()
        assert not device.connected
        assert [m.payload for m in drain(watcher, 0.5)] == live_sees
    with connected(broker.port, f"{ns}-late", clean_start=True) as late:
        late.subscribe(state)
        assert late.get(2) == Message(state, late_subscriber_sees, 1, retain=True)


@pytest.mark.parametrize(
    ("clean_start", "session_present", "delivered"),
    [(False, True, [b"0", b"1", b"2"]), (True, False, [])],
)
def test_messages_published_while_away_arrive_on_reconnect(
    broker: Broker, ns: str, clean_start: bool, session_present: bool, delivered: list[bytes]
) -> None:
    topic = f"sohoa/v1/d/{ns}/rcpt"
    with connected(broker.port, f"{ns}-dev", clean_start=True) as first:
        assert not first.session_present
        first.subscribe(topic)
    with connected(broker.port, f"{ns}-wh") as warehouse:
        for n in range(3):
            warehouse.publish(topic, str(n).encode())
    with connected(broker.port, f"{ns}-dev", clean_start=clean_start) as again:
        assert again.session_present is session_present
        assert [m.payload for m in drain(again)] == delivered


def test_queued_messages_survive_a_broker_restart(tmp_path: Path) -> None:
    broker = start_mosquitto(tmp_path)
    try:
        with connected(broker.port, "dev-1") as dev:
            dev.subscribe("sohoa/v1/d/dev-1/cmd")
        with connected(broker.port, "wh") as wh:
            wh.publish("sohoa/v1/d/dev-1/cmd", b"rotate")
        broker.stop()
        broker.start()
        with connected(broker.port, "dev-1") as dev:
            assert dev.session_present
            assert drain(dev) == [Message("sohoa/v1/d/dev-1/cmd", b"rotate", 1)]
    finally:
        broker.stop()


def test_connecting_to_a_stopped_broker_says_which_broker_and_what_to_do() -> None:
    port = free_port()
    with pytest.raises(BrokerError) as caught:
        Link(settings(port, "dev-1", connect_timeout_s=2)).connect()
    err = caught.value
    assert err.line() == (
        f"error: broker at 127.0.0.1:{port} unreachable: connection refused"
        " — check [broker] url and that mosquitto is running"
    )
    assert err.__cause__ is None and err.__suppress_context__


def test_a_link_that_swallows_packets_times_out_waiting_for_connack(broker: Broker) -> None:
    with FaultProxy((broker.host, broker.port)) as proxy:
        proxy.blackhole(True)
        started = time.monotonic()
        with pytest.raises(BrokerError, match=r"unreachable: no CONNACK within 0.5 s$"):
            Link(settings(proxy.port, "dev-1", connect_timeout_s=0.5)).connect()
        assert time.monotonic() - started < 2


def test_refused_publish_names_the_mqtt_reason_code(tmp_path: Path) -> None:
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite sohoa/v1/d/dev-1/#\n")
    broker = start_mosquitto(tmp_path, extra_conf=f"acl_file {acl}\n")
    try:
        with connected(broker.port, "dev-1") as dev:
            dev.publish("sohoa/v1/d/dev-1/state", b"{}")
            with pytest.raises(
                BrokerError,
                match=r"refused publish to sohoa/v1/d/dev-2/state: Not authorized \(135\)$",
            ):
                dev.publish("sohoa/v1/d/dev-2/state", b"{}")
            assert dev.connected
    finally:
        broker.stop()


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda link: link.publish("a/+/b", b""), r"cannot publish to topic 'a/\+/b'"),
        (lambda link: link.subscribe("a/#/b"), r"cannot subscribe to 'a/#/b'"),
    ],
)
def test_invalid_topics_are_refused_before_sending(
    broker: Broker, ns: str, call: Callable[[Link], None], match: str
) -> None:
    with connected(broker.port, ns) as link:
        with pytest.raises(BrokerError, match=match):
            call(link)
        assert link.connected


def test_shared_subscribers_split_the_messages(broker: Broker, ns: str) -> None:
    topic_filter = shared_subscription(f"{ns}-ingest", f"{ns}/d/+/doc/#")
    assert topic_filter == f"$share/{ns}-ingest/{ns}/d/+/doc/#"
    with (
        connected(broker.port, f"{ns}-w1") as w1,
        connected(broker.port, f"{ns}-w2") as w2,
        connected(broker.port, f"{ns}-dev") as dev,
    ):
        w1.subscribe(topic_filter)
        w2.subscribe(topic_filter)
        sent = {f"{ns}/d/dev/doc/{n}/m" for n in range(20)}
        for topic in sorted(sent):
            dev.publish(topic, b"m")
        got1 = [m.topic for m in drain(w1)]
        got2 = [m.topic for m in drain(w2, 0.05)]
    assert sorted(got1 + got2) == sorted(sent)  # each message to exactly one worker
    assert got1 and got2


def test_upload_through_a_256_kbit_link_takes_the_expected_time(broker: Broker, ns: str) -> None:
    payload = os.urandom(64 * 1024)
    expected = len(payload) * 8 / 256_000
    with (
        FaultProxy((broker.host, broker.port), bandwidth_kbps=256) as proxy,
        connected(proxy.port, ns) as link,
    ):
        started = time.monotonic()
        link.publish(f"{ns}/s/0", payload)
        elapsed = time.monotonic() - started
    assert 0.8 * expected <= elapsed <= 2.0 * expected


def test_a_cut_link_fails_pending_publishes_and_keeps_received_messages(
    broker: Broker, ns: str
) -> None:
    with (
        FaultProxy((broker.host, broker.port)) as proxy,
        connected(proxy.port, f"{ns}-dev") as dev,
        connected(broker.port, f"{ns}-wh") as wh,
    ):
        dev.subscribe(f"{ns}/rcpt")
        wh.publish(f"{ns}/rcpt", b"stored")
        assert became_true(lambda: proxy.bytes_down > 0 and dev.queued == 1, 3.0)
        proxy.blackhole(True)
        pending = dev.publish_nowait(f"{ns}/s/1", b"segment")
        proxy.cut()
        assert became_true(lambda: not dev.connected, 3.0)
        assert pending.done() and pending.failed and not pending.wait(0)
        assert pending.reason.startswith("connection lost")
        assert dev.publish_nowait(f"{ns}/s/2", b"segment").failed
        with pytest.raises(BrokerError, match=r"publish to .*/s/3 failed: connection lost"):
            dev.publish(f"{ns}/s/3", b"segment")
        assert dev.get(0) == Message(f"{ns}/rcpt", b"stored", 1)


def test_publish_times_out_on_a_silent_link(broker: Broker, ns: str) -> None:
    with (
        FaultProxy((broker.host, broker.port)) as proxy,
        connected(proxy.port, ns) as link,
    ):
        proxy.blackhole(True)
        with pytest.raises(BrokerError, match=r"no acknowledgement from .* within 0.3 s"):
            link.publish(f"{ns}/s/0", b"x", timeout_s=0.3)


def test_a_silent_link_is_noticed_within_two_keepalives(broker: Broker, ns: str) -> None:
    with (
        FaultProxy((broker.host, broker.port)) as proxy,
        connected(proxy.port, ns, keepalive_s=1) as link,
    ):
        proxy.blackhole(True)
        started = time.monotonic()
        assert became_true(lambda: not link.connected, 4)
        assert time.monotonic() - started <= 3.0


def paho_threads(client_id: str) -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.endswith(f"-{client_id}")]


@pytest.mark.parametrize("ending", ["close", "drop"])
def test_context_manager_connects_and_every_ending_stops_the_network_thread(
    broker: Broker, ns: str, ending: str
) -> None:
    link = Link(settings(broker.port, ns))
    assert not link.connected
    with link as entered:
        assert entered is link and link.connected and link.wait_connected(0)
        assert paho_threads(ns) == [f"paho-mqtt-client-{ns}"]
        with pytest.raises(RuntimeError, match="a Link connects once"):
            link.connect()
        getattr(link, ending)()
    assert not link.connected and not link.wait_connected(0)
    assert paho_threads(ns) == []


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    tmp = tmp_path_factory.mktemp("tls-broker")
    b = start_mosquitto(tmp, tls=make_tls(tmp / "pki", client_cn="dev-tls-01"))
    yield b
    b.stop()


def test_device_connects_over_tls_with_its_client_certificate(tls_broker: Broker) -> None:
    tls = tls_broker.tls
    assert tls is not None and tls_broker.url().startswith("mqtts://")
    config = BrokerConfig(url=tls_broker.url(), ca=tls.ca, cert=tls.client_cert, key=tls.client_key)
    with Link(LinkSettings.from_config(config, "dev-tls-01", username="dev-tls-01")) as link:
        link.subscribe("sohoa/v1/d/dev-tls-01/cmd")
        link.publish("sohoa/v1/d/dev-tls-01/cmd", b"ping")
        assert link.get(2) == Message("sohoa/v1/d/dev-tls-01/cmd", b"ping", 1)


def test_broker_certificate_from_another_ca_is_rejected(tls_broker: Broker, tmp_path: Path) -> None:
    assert tls_broker.tls is not None
    stranger = make_tls(tmp_path / "other")
    s = settings(
        tls_broker.port,
        "dev-tls-01",
        tls_ca=stranger.ca,
        tls_cert=tls_broker.tls.client_cert,
        tls_key=tls_broker.tls.client_key,
    )
    with pytest.raises(BrokerError, match=r"unreachable: TLS certificate not trusted"):
        Link(s).connect()


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (
            BrokerConfig(url="mqtt://broker.lan", keepalive_s=15, session_expiry_s=60),
            LinkSettings("broker.lan", 1883, "dev-1", keepalive_s=15, session_expiry_s=60),
        ),
        (
            BrokerConfig(url="mqtts://broker.lan", ca=Path("/k/ca.pem")),
            LinkSettings("broker.lan", 8883, "dev-1", tls_ca=Path("/k/ca.pem")),
        ),
        (
            BrokerConfig(
                url="mqtts://broker.example:9883", ca=Path("/k/ca"), cert=Path("c"), key=Path("k")
            ),
            LinkSettings(
                "broker.example",
                9883,
                "dev-1",
                tls_ca=Path("/k/ca"),
                tls_cert=Path("c"),
                tls_key=Path("k"),
            ),
        ),
    ],
)
def test_settings_follow_the_broker_section(config: BrokerConfig, expected: LinkSettings) -> None:
    assert LinkSettings.from_config(config, "dev-1") == expected


@pytest.mark.parametrize(
    ("config", "match"),
    [
        (BrokerConfig(url="mqtts://broker.lan"), r"asks for TLS but \[broker\] ca is empty"),
        (BrokerConfig(url="mqtt://broker.lan", ca=Path("ca.pem")), "plain MQTT but ca/cert/key"),
    ],
)
def test_inconsistent_tls_settings_are_a_config_error(config: BrokerConfig, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        LinkSettings.from_config(config, "dev-1")


def test_unreadable_tls_files_are_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot load the broker TLS files"):
        Link(settings(1, "dev-1", tls_ca=tmp_path / "missing.pem"))


def test_a_topic_sent_often_goes_as_an_alias_and_arrives_whole(broker: Broker, ns: str) -> None:
    """Pieces of a document share one topic: after the first, each costs 3 bytes of topic
    on the device's link instead of the whole name, and subscribers see the full topic."""
    topics = [f"sohoa/v1/d/{ns}/doc/{ns}-{k:032d}/p" for k in range(2)]
    payload = bytes(100)
    with (
        FaultProxy((broker.host, broker.port)) as proxy,
        connected(broker.port, f"{ns}-sub") as sub,
        connected(proxy.port, f"{ns}-pub") as pub,
    ):
        sub.subscribe(f"sohoa/v1/d/{ns}/doc/+/p")
        before = proxy.bytes_up
        pendings = [pub.publish_nowait(topics[k % 2], payload, alias=True) for k in range(40)]
        assert all(p.wait(10) for p in pendings)
        on_link = proxy.bytes_up - before
        got = drain(sub)
    assert [m.topic for m in got] == [topics[k % 2] for k in range(40)]
    # two full names, then aliases: at most 20 bytes of MQTT beside each payload, where
    # the names alone would be 67 bytes a message
    assert 40 * len(payload) < on_link < 40 * (len(payload) + 20) + 2 * len(topics[0])
    assert [p.topic_bytes for p in pendings[:3]] == [len(topics[0]) + 3, len(topics[1]) + 3, 3]
