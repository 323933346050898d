"""Certified copies from the counter page: the officer opens a signing session with the
token's PIN typed on the page, marks the next batch, and its documents come back
signed with their register numbers; the PIN is never kept, logged or written.

A real ``sohoa agent`` (hot folder, counter page) with a SoftHSM2 token.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.browser import CounterAgent, content_pages
from tests.support.mqtt import Broker
from tests.support.site import make_site
from tests.support.softhsm import SIGNER_NAME, SIGNER_TITLE, Token


@pytest.fixture
def agent(
    tmp_path: Path, mosquitto_session: Broker, softhsm_token: Token
) -> Iterator[CounterAgent]:
    site = make_site(tmp_path, mosquitto_session)
    running = CounterAgent.start(
        site,
        tmp_path / "agent",
        env={"SOFTHSM2_CONF": str(softhsm_token.conf)},
        sections={"sign": softhsm_token.sign_section()},
    )
    yield running
    running.stop()


def signing(agent: CounterAgent) -> dict[str, Any]:
    state: dict[str, Any] = agent.client.state()["signing"]
    return state


def batch_of(agent: CounterAgent, pages: int, name: str) -> dict[str, Any]:
    before = len(agent.batches())
    agent.feed(content_pages(pages, seed=len(name)), name)
    return agent.wait_batches(before + 1)[0]


def test_the_officer_certifies_a_batch_from_the_page(
    agent: CounterAgent, softhsm_token: Token
) -> None:
    assert signing(agent) == {
        "available": True,
        "open": False,
        "signer": None,
        "title": None,
        "certify_next": False,
    }
    refused = agent.client.post("/api/signing/next", {"on": True})
    assert refused.status == 409 and "PIN" in refused.json()["error"]

    wrong = agent.client.post("/api/signing/open", {"pin": "0000-wrong"})
    assert wrong.status == 409 and "PIN" in wrong.json()["error"], wrong.json()
    assert signing(agent)["open"] is False

    opened = agent.client.post("/api/signing/open", {"pin": softhsm_token.pin})
    assert opened.status == 200, opened.json()
    assert signing(agent) | {"certify_next": None} == {
        "available": True,
        "open": True,
        "signer": SIGNER_NAME,
        "title": SIGNER_TITLE,
        "certify_next": None,
    }
    assert agent.client.post("/api/signing/next", {"on": True}).status == 200
    assert signing(agent)["certify_next"] is True

    certified = batch_of(agent, 2, "certified")
    assert [d.get("certified") is not None for d in certified["documents"]] == [True]
    assert certified["documents"][0]["certified"]["number"] >= 1
    assert "unsigned" not in certified["documents"][0]
    assert signing(agent)["certify_next"] is False  # the mark was for that batch only

    plain = batch_of(agent, 1, "plain")
    assert "certified" not in plain["documents"][0]

    assert agent.client.post("/api/signing/close", {}).status == 200
    assert signing(agent)["open"] is False

    # the PIN went to the token and nowhere else: not the log, not a file of the agent
    assert softhsm_token.pin not in agent.log_text()
    pin = softhsm_token.pin.encode()
    leaks = [p for p in agent.home.rglob("*") if p.is_file() and pin in p.read_bytes()]
    assert leaks == []


def test_opening_a_session_needs_the_csrf_token(agent: CounterAgent, softhsm_token: Token) -> None:
    answer = agent.client.request(
        "POST", "/api/signing/open", {"pin": softhsm_token.pin}, csrf=None
    )
    assert answer.status == 403
    assert signing(agent)["open"] is False
