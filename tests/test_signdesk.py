"""The signing session's rules at the counter, as values: a mark is for one batch, a
session is closed only once the batch signing with it is done, and idleness ends it."""

from __future__ import annotations

from datetime import UTC, datetime

from agent.capture.certifier import CertifiedPdf, SignerInfo
from agent.capture.signdesk import Opened, SigningDesk

INFO = SignerInfo("Nguyễn Thị Thu Hà", "", "UBND xã", datetime.now(UTC), datetime.now(UTC))


class Session:
    """A logged-in session's bookkeeping (the token itself is exercised elsewhere)."""

    def __init__(self) -> None:
        self.info = INFO
        self.closed = False

    def certify(self, pdf: bytes, doc_id: str) -> CertifiedPdf:
        return CertifiedPdf(pdf, {"doc_id": doc_id})

    def close(self) -> None:
        self.closed = True


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def desk(clock: Clock | None = None) -> tuple[SigningDesk, list[Session]]:
    opened: list[Session] = []

    def opener(pin: str) -> Opened:
        if pin != "1234":
            return Opened(None, "wrong PIN for the signing token")
        opened.append(Session())
        return Opened(opened[-1])

    return SigningDesk(opener, clock=clock or Clock(), idle_s=60), opened


def test_a_mark_certifies_one_batch_only() -> None:
    d, _ = desk()
    assert d.mark_next(True) is not None  # no session yet
    assert d.open("0000") == "wrong PIN for the signing token"
    assert d.open("1234") is None and d.mark_next(True) is None
    with d.for_batch() as first:
        assert first is not None
    with d.for_batch() as second:
        assert second is None
    assert d.status()["open"] is True and d.status()["certify_next"] is False


def test_closing_during_a_batch_waits_for_it() -> None:
    d, opened = desk()
    d.open("1234")
    d.mark_next(True)
    with d.for_batch() as certifier:
        d.close()
        assert certifier is not None and not opened[0].closed  # still signing
        assert certifier.certify(b"%PDF", "doc").record == {"doc_id": "doc"}
    assert opened[0].closed and d.status()["open"] is False


def test_an_idle_session_ends_and_reopening_replaces_the_last() -> None:
    clock = Clock()
    d, opened = desk(clock)
    d.open("1234")
    d.open("1234")
    assert opened[0].closed and not opened[1].closed
    clock.now = 59
    d.expire()
    assert d.status()["open"] is True
    clock.now = 61
    d.expire()
    assert opened[1].closed and d.status()["open"] is False


def test_without_a_token_the_page_is_told_so() -> None:
    d = SigningDesk(None)
    assert d.status()["available"] is False
    assert "[sign]" in (d.open("1234") or "")
