"""The MQTT link: one MQTT v5 connection to the broker, and the only module that imports paho.

A small synchronous surface over paho-mqtt 2.x (aiomqtt v2 is the model): ``publish``
returns only after the PUBACK, ``subscribe`` after the SUBACK, received messages wait in
a queue for ``get``, and every library failure becomes a ``BrokerError`` carrying the
MQTT reason code. paho's network loop runs in its own thread. A ``Link`` never
reconnects by itself: after a disconnect ``connected`` is False, outstanding publishes
fail, and the caller (the uploader's outer loop) makes a new ``Link``.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import ssl
import threading
from collections import OrderedDict
from types import TracebackType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from sync.errors import BrokerError, ConfigError
from sync.mqtt.acks import Acks, PendingPublish, describe
from sync.mqtt.settings import LinkSettings, Message

log = logging.getLogger(__name__)

UNREACHABLE_HINT = "check [broker] url and that mosquitto is running"
REFUSED_HINT = "check [broker] url, the device certificate and credentials, and the broker ACL"
MAX_ALIASES = 64  # topic aliases kept per connection (documents in flight at most)
LINK_HINT = "the link is slow or down; reconnect and retry (the spool keeps the data)"


class Link:
    """One MQTT v5 connection: paho-mqtt 2.x, callback API 2, network loop in paho's thread.

    A Link connects once; after a disconnect the caller makes a new one.
    """

    def __init__(self, settings: LinkSettings) -> None:
        self.settings = settings
        self._where = f"{settings.host}:{settings.port}"
        self._inbox: queue.Queue[Message] = queue.Queue()
        self._acks = Acks()
        self._connack = threading.Event()
        self._up = threading.Event()
        self._gone = threading.Event()
        self._activity = threading.Event()  # an acknowledgement, a message or a disconnect
        self._refused: ReasonCode | None = None
        self._down_reason = ""
        self._session_present = False
        self._started = False
        # MQTT v5 topic aliases this connection established (the broker's CONNACK says
        # how many it takes): topic -> alias, least recently used first
        self._alias_max = 0
        self._aliases: OrderedDict[str, int] = OrderedDict()
        self._client = self._make_client()

    def _make_client(self) -> mqtt.Client:
        s = self.settings
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=s.client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            reconnect_on_failure=False,
        )
        client.connect_timeout = s.connect_timeout_s
        client.max_inflight_messages_set(s.max_inflight)
        if s.username is not None:
            client.username_pw_set(s.username, s.password)
        if s.tls_ca is None and s.tls_unverified:
            client.tls_set(cert_reqs=ssl.CERT_NONE)
            client.tls_insecure_set(True)
        elif s.tls_ca is not None:
            try:
                client.tls_set(
                    ca_certs=str(s.tls_ca),
                    certfile=str(s.tls_cert) if s.tls_cert else None,
                    keyfile=str(s.tls_key) if s.tls_key else None,
                )
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(
                    f"cannot load the broker TLS files ({type(exc).__name__}: {exc})",
                    "check [broker] ca, cert and key: PEM files readable by the service",
                ) from None
        if s.will is not None:
            client.will_set(s.will.topic, s.will.payload, s.will.qos, s.will.retain)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    # --- paho's thread -------------------------------------------------------------

    def _on_connect(
        self, _c: mqtt.Client, _u: Any, flags: mqtt.ConnectFlags, code: ReasonCode, props: Any
    ) -> None:
        if code.is_failure:
            self._refused = code
        else:
            self._session_present = flags.session_present
            self._alias_max = min(int(getattr(props, "TopicAliasMaximum", 0) or 0), MAX_ALIASES)
            self._up.set()
        self._connack.set()

    def _on_disconnect(
        self, _c: mqtt.Client, _u: Any, flags: mqtt.DisconnectFlags, code: ReasonCode, _p: Any
    ) -> None:
        if flags.is_disconnect_packet_from_server:
            reason = f"broker disconnected: {describe(code)}"
        elif code.getName() == "Success":
            reason = "link closed"
        elif code.getName() == "Unspecified error":
            reason = f"connection lost ({describe(code)})"
        else:
            reason = describe(code)
        self._down_reason = reason
        was_up = self._up.is_set()
        self._up.clear()
        self._acks.fail_all(reason)
        self._gone.set()
        self._connack.set()
        self._activity.set()
        if was_up:
            log.info("mqtt link down broker=%s reason=%r", self._where, reason)

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, code: ReasonCode, _p: Any) -> None:
        self._acks.settle(mid, [code])
        self._activity.set()

    def _on_subscribe(
        self, _c: mqtt.Client, _u: Any, mid: int, codes: list[ReasonCode], _p: Any
    ) -> None:
        self._acks.settle(mid, codes)

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self._inbox.put(Message(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain)))
        self._activity.set()

    # --- the caller's side ---------------------------------------------------------

    def connect(self) -> None:
        """Connect and wait for the CONNACK; ``BrokerError`` if refused or unreachable."""
        if self._started:
            raise RuntimeError("a Link connects once; make a new Link to reconnect")
        self._started = True
        s = self.settings
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = s.session_expiry_s
        try:
            self._client.connect(
                s.host,
                s.port,
                keepalive=s.keepalive_s,
                clean_start=s.clean_start,
                properties=props,
            )
        except (OSError, ValueError) as exc:
            raise BrokerError(
                f"broker at {self._where} unreachable: {_os_reason(exc)}", UNREACHABLE_HINT
            ) from None
        self._client.loop_start()
        answered = self._connack.wait(s.connect_timeout_s)
        if not self._up.is_set():
            self._shut_socket()
            self._stop_loop()
            if self._refused is not None:
                why = f"refused the connection: {describe(self._refused)}"
                raise BrokerError(f"broker at {self._where} {why}", REFUSED_HINT)
            why = self._down_reason if answered else f"no CONNACK within {s.connect_timeout_s:g} s"
            raise BrokerError(f"broker at {self._where} unreachable: {why}", UNREACHABLE_HINT)
        log.info("mqtt link up broker=%s session_present=%s", self._where, self._session_present)

    @property
    def session_present(self) -> bool:
        """Whether the broker still had this client's session at the last CONNACK."""
        return self._session_present

    @property
    def connected(self) -> bool:
        return self._up.is_set()

    def wait_connected(self, timeout_s: float) -> bool:
        return self._up.wait(timeout_s)

    def close(self) -> None:
        """Disconnect cleanly: the broker discards the Will."""
        if self._up.is_set():
            self._client.disconnect()
            if not self._gone.wait(2.0):
                self._shut_socket()
        self._stop_loop()

    def drop(self) -> None:
        """Close the socket without DISCONNECT, as a crash would: the broker sends the Will."""
        if self._up.is_set():
            self._shut_socket()
            self._gone.wait(2.0)
        self._stop_loop()

    def _shut_socket(self) -> None:
        sock = self._client.socket()
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):  # already closed by the other side
                sock.shutdown(socket.SHUT_RDWR)

    def _stop_loop(self) -> None:
        self._client.loop_stop()
        self._up.clear()
        self._acks.fail_all(self._down_reason or "link closed")
        # paho's callbacks refer back to this Link; dropping them lets a finished Link
        # and its client (with paho's wake-up socket pair) be freed without waiting for gc
        c = self._client
        c.on_connect = c.on_disconnect = c.on_publish = c.on_subscribe = c.on_message = None

    def __enter__(self) -> Link:
        """Connect, unless ``connect`` was already called; the block's end closes."""
        if not self._started:
            self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _alias_for(self, topic: str) -> tuple[str, Properties | None]:
        """(topic to send, properties): the topic with a new alias the first time, an
        empty topic and the alias after; the least recently used alias is remapped once
        all the broker allows are taken."""
        if not self._alias_max:
            return topic, None
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        alias = self._aliases.get(topic)
        if alias is not None:
            self._aliases.move_to_end(topic)
            props.TopicAlias = alias
            return "", props
        if len(self._aliases) < self._alias_max:
            alias = len(self._aliases) + 1
        else:
            _, alias = self._aliases.popitem(last=False)
        self._aliases[topic] = alias
        props.TopicAlias = alias
        return topic, props

    def publish_nowait(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False, alias: bool = False
    ) -> PendingPublish:
        """Send without waiting; the result settles on PUBACK (qos 1) or once written (qos 0).
        With ``alias`` a topic sent often goes as an MQTT v5 topic alias after its first
        message on this connection (when the broker takes aliases)."""
        pending = PendingPublish(f"publish to {topic}")
        if not self._up.is_set():
            pending._settle(self._down_reason or "not connected")
            return pending
        wire, props = self._alias_for(topic) if alias else (topic, None)
        pending.topic_bytes = len(wire.encode()) + (3 if props is not None else 0)
        try:
            info = self._client.publish(wire, payload, qos=qos, retain=retain, properties=props)
        except ValueError as exc:
            raise BrokerError(
                f"cannot publish to topic {topic!r}: {exc}",
                "a topic to publish to must be non-empty UTF-8 without '+' or '#'",
            ) from None
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            pending._settle(mqtt.error_string(info.rc))
            return pending
        return self._acks.track(info.mid, pending)

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        timeout_s: float = 30.0,
    ) -> None:
        """Publish and return only after the broker's PUBACK (qos 1)."""
        self._settle_or_raise(
            self.publish_nowait(topic, payload, qos=qos, retain=retain), timeout_s
        )

    def subscribe(self, topic_filter: str, *, qos: int = 1, timeout_s: float = 10.0) -> None:
        """Subscribe and wait for the SUBACK; ``BrokerError`` if the broker refuses."""
        self.subscribe_all([topic_filter], qos=qos, timeout_s=timeout_s)

    def subscribe_all(
        self,
        topic_filters: list[str],
        *,
        qos: int = 1,
        timeout_s: float = 10.0,
        wait: bool = True,
    ) -> PendingPublish:
        """Subscribe to every filter in one SUBSCRIBE, in order; ``BrokerError`` if the
        broker refuses any. ``wait=False`` returns at once (the broker handles the
        SUBSCRIBE before anything the client sends after it): ``raise_if_failed``
        tells later whether it was refused, and a slow link saves a round trip."""
        topic_filter = ", ".join(topic_filters)
        pending = PendingPublish(f"subscribe to {topic_filter}")
        if not self._up.is_set():
            pending._settle(self._down_reason or "not connected")
        else:
            try:
                rc, mid = self._client.subscribe([(f, qos) for f in topic_filters])
            except ValueError as exc:
                raise BrokerError(
                    f"cannot subscribe to {topic_filter!r}: {exc}",
                    "use '+' and '#' only as whole topic levels, '#' only last",
                ) from None
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
                pending._settle(mqtt.error_string(rc))
            else:
                self._acks.track(mid, pending)
        if wait:
            self._settle_or_raise(pending, timeout_s)
        return pending

    def raise_if_failed(self, pending: PendingPublish) -> None:
        """``BrokerError`` if ``pending`` has settled with a refusal or a lost link."""
        if pending.done() and pending.failed:
            self._settle_or_raise(pending, 0)

    def _settle_or_raise(self, pending: PendingPublish, timeout_s: float) -> None:
        if pending.wait(timeout_s):
            return
        if not pending.done():
            raise BrokerError(
                f"{pending.what}: no acknowledgement from {self._where} within {timeout_s:g} s",
                LINK_HINT,
            )
        if pending.refused:
            raise BrokerError(
                f"broker at {self._where} refused {pending.what}: {pending.reason}",
                "check the broker ACL for this client's username and topics",
            )
        raise BrokerError(f"{pending.what} failed: {pending.reason}", LINK_HINT)

    def wait_activity(self, timeout_s: float) -> None:
        """Return when an acknowledgement or a message arrives, the link drops, or after
        ``timeout_s``; the caller then looks at what changed."""
        self._activity.wait(max(timeout_s, 0.0))
        self._activity.clear()

    @property
    def queued(self) -> int:
        """Messages received and not yet taken with ``get``."""
        return self._inbox.qsize()

    def get(self, timeout_s: float | None) -> Message | None:
        """The next received message, or None after ``timeout_s`` (None waits for ever)."""
        try:
            return self._inbox.get(timeout=timeout_s)
        except queue.Empty:
            return None


def _os_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted ({exc.verify_message})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed ({exc.reason})"
    if isinstance(exc, socket.gaierror):
        return f"host name not resolved ({exc.strerror})"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "connection timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return f"{type(exc).__name__}: {exc}"
