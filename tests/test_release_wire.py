"""Release delivery's messages as values: the signed offer, its refusals, segment requests
that leave the link to the documents first, and reports."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sync.commands import CommandRefused
from sync.protocol import ProtocolError
from sync.release.wire import (
    SEGMENT,
    Offer,
    check_offer,
    next_request,
    parse_offer,
    parse_release_topic,
    parse_report,
    parse_request,
    report,
    request,
    segment_topic,
    sign_offer,
)

KEY = Ed25519PrivateKey.generate()
NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
OFFER = Offer("H56-01234-a1", 7, "2026-12-09T12:00:00+00:00", "0.2.0", 5000, "ab" * 32)


def test_signed_offer_round_trips_and_passes_its_checks() -> None:
    signed = sign_offer(OFFER, KEY)
    got = parse_offer(signed.to_bytes())
    assert got == signed
    check_offer(got, device=OFFER.device, key=KEY.public_key(), last_counter=6, now=NOW)


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        ({"key": Ed25519PrivateKey.generate().public_key()}, "does not verify"),
        ({"device": "H56-other-a1"}, "addressed to device"),
        ({"last_counter": 7}, r"counter 7 is not above 7 \(replay\)"),
        ({"now": datetime(2027, 1, 1, tzinfo=UTC)}, "expired at"),
    ],
)
def test_offer_refused_for_key_device_replay_and_expiry(kw: dict[str, object], reason: str) -> None:
    args: dict[str, object] = {
        "device": OFFER.device,
        "key": KEY.public_key(),
        "last_counter": 0,
        "now": NOW,
    }
    with pytest.raises(CommandRefused, match=reason):
        check_offer(parse_offer(sign_offer(OFFER, KEY).to_bytes()), **{**args, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("old", "new", "reason"),
    [
        (b'"version":"0.2.0"', b'"version":"0.2-x"', "dotted numbers"),
        (b'"size":5000', b'"size":0', "'size' is not a positive integer"),
        (b'"kind":"release"', b'"kind":"receipt-keys"', "not a sohoa-cmd/1 release offer"),
    ],
)
def test_malformed_offer_is_refused(old: bytes, new: bytes, reason: str) -> None:
    raw = sign_offer(OFFER, KEY).to_bytes().replace(old, new)
    with pytest.raises(CommandRefused, match=reason):
        parse_offer(raw)


def test_requests_topics_and_reports_parse_back() -> None:
    assert parse_request(request("0.2.0", 65536)) == ("0.2.0", 65536, SEGMENT)
    assert parse_release_topic(segment_topic("dev-1", 98304)) == ("dev-1", "s", 98304)
    assert parse_release_topic("sohoa/v1/d/dev-1/rel/q") == ("dev-1", "q", None)
    assert parse_report(report("0.2.0", "rolled_back", "no health", "t")) == (
        "0.2.0",
        "rolled_back",
        "no health",
    )
    with pytest.raises(ProtocolError):
        parse_request(b'{"version": "0.2.0", "offset": -1, "length": 10}')
    with pytest.raises(ProtocolError):
        parse_release_topic("sohoa/v1/d/dev-1/doc/x/q")


@pytest.mark.parametrize(
    ("held", "size", "pending", "ask"),
    [
        (0, 100_000, 0, SEGMENT),  # nothing waiting: whole segments
        (90_000, 100_000, 0, 10_000),  # the rest
        (100_000, 100_000, 0, None),  # complete
        (0, 100_000, 3, None),  # documents waiting: the documents go first
    ],
)
def test_segments_are_asked_for_only_while_no_document_waits(
    held: int, size: int, pending: int, ask: int | None
) -> None:
    assert next_request(held, size, pending) == ask
