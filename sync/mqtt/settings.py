"""What a connection to the broker needs: the ``[broker]`` section, link settings, a message.

Plain values with no paho in them, so that configuration and tests build them
without a connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from sync.errors import ConfigError


@dataclass(frozen=True)
class BrokerConfig:
    url: str = "mqtt://127.0.0.1:1883"
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    keepalive_s: int = 30
    session_expiry_s: int = 7 * 24 * 3600
    enroll_url: str = ""  # the enrolment listener; "" = same host, TLS port + 1

    @property
    def enroll_endpoint(self) -> tuple[str, int]:
        """Host and port of the broker's enrolment listener."""
        if self.enroll_url:
            parsed = urlparse(self.enroll_url)
            return parsed.hostname or self.host, parsed.port or 8884
        return self.host, self.port + 1

    @property
    def host(self) -> str:
        return urlparse(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        parsed = urlparse(self.url)
        return parsed.port or (8883 if parsed.scheme == "mqtts" else 1883)

    @property
    def tls(self) -> bool:
        return urlparse(self.url).scheme == "mqtts"


def check_broker(broker: BrokerConfig) -> None:
    """The ``[broker]`` values that only make sense together: TLS files with mqtts://."""
    if broker.tls and broker.ca is None:
        raise ConfigError(
            f"[broker] url = {broker.url!r} asks for TLS but [broker] ca is empty",
            "set ca to the CA bundle that signed the broker's certificate",
        )
    if not broker.tls and (broker.ca or broker.cert or broker.key):
        raise ConfigError(
            f"[broker] url = {broker.url!r} is plain MQTT but ca/cert/key are set",
            "use an mqtts:// url to connect with TLS, or clear ca, cert and key",
        )
    if (broker.cert is None) != (broker.key is None):
        raise ConfigError(
            "[broker] cert and key must be set together",
            "give both the device certificate and its key, or neither",
        )


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


@dataclass(frozen=True)
class LinkSettings:
    host: str
    port: int
    client_id: str
    username: str | None = None
    password: str | None = None
    tls_ca: Path | None = None  # mqtts when a CA is given
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # TLS without checking the broker's certificate: only for first enrolment, whose
    # messages are authenticated end to end by the one-time code
    tls_unverified: bool = False
    clean_start: bool = False  # persistent session by default
    session_expiry_s: int = 7 * 24 * 3600
    keepalive_s: int = 30
    will: Message | None = None
    max_inflight: int = 64  # paho's default of 20 starves a high-latency link
    connect_timeout_s: float = 10.0

    @classmethod
    def from_config(
        cls,
        broker: BrokerConfig,
        client_id: str,
        *,
        will: Message | None = None,
        clean_start: bool = False,
        username: str | None = None,
    ) -> LinkSettings:
        """Settings for ``broker``; its paths must already be resolved against the home."""
        check_broker(broker)
        return cls(
            host=broker.host,
            port=broker.port,
            client_id=client_id,
            username=username,
            tls_ca=broker.ca,
            tls_cert=broker.cert,
            tls_key=broker.key,
            clean_start=clean_start,
            session_expiry_s=broker.session_expiry_s,
            keepalive_s=broker.keepalive_s,
            will=will,
        )


def shared_subscription(group: str, topic_filter: str) -> str:
    """The filter that makes subscribers in ``group`` split the messages of ``topic_filter``."""
    return f"$share/{group}/{topic_filter}"
