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

from tests.support.browser import CounterAgent, chromium, content_pages, open_page
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


def test_on_a_phone_the_officer_opens_a_session_and_sees_the_copy_certified(
    agent: CounterAgent, softhsm_token: Token, tmp_path: Path
) -> None:
    """The signing section in Chromium on a 375-pixel phone screen, in Vietnamese: a
    wrong PIN is told with the tries left, the right one shows the signer, the mark
    certifies the next batch and the page shows its register number."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = chromium(375, 740)
    try:
        open_page(driver, agent)

        def until(check: Any) -> Any:
            return WebDriverWait(driver, 60, poll_frequency=0.1).until(check)

        section = until(lambda d: d.find_element(By.ID, "signing"))
        until(lambda d: section.is_displayed())
        assert "Ký số — chứng thực bản sao" in section.text
        pin = driver.find_element(By.ID, "pin")
        pin.send_keys("0000-wrong")
        driver.find_element(By.ID, "open-signing").click()
        result = driver.find_element(By.ID, "action-result")
        until(lambda d: "PIN" in result.text)
        assert "còn" in result.text or "left" in result.text, result.text
        assert pin.get_attribute("value") == ""  # the PIN stays nowhere on the page

        pin.send_keys(softhsm_token.pin)
        driver.find_element(By.ID, "open-signing").click()
        until(lambda d: d.find_element(By.ID, "signer").text.startswith(SIGNER_NAME))
        assert driver.find_element(By.ID, "pin-form").is_displayed() is False
        driver.find_element(By.ID, "certify-next").click()
        until(lambda d: result.text == "Lô tiếp theo sẽ được ký chứng thực")

        agent.feed(content_pages(1, seed=7), "phone-certified")
        badge = until(lambda d: d.find_elements(By.CSS_SELECTOR, ".badge-certified"))[0]
        assert badge.text.startswith("Đã chứng thực, số "), badge.text
        width = driver.execute_script(
            "return [document.documentElement.scrollWidth, window.innerWidth]"
        )
        assert width[0] <= width[1], f"the page scrolls sideways on a phone: {width}"
        driver.save_screenshot(str(tmp_path / "counter-signing-phone.png"))
    finally:
        driver.quit()
