"""Review mode's re-scan: the officer puts one sheet back in the feeder and it takes the
place of a page before the batch is sealed (SANE's test scanner as the feeder)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from device.sane_testbed import write_sane_config
from tests.support.browser import CounterAgent, content_pages
from tests.support.mqtt import Broker
from tests.support.site import make_site
from tests.support.wait import wait_until


@pytest.fixture
def agent(tmp_path: Path, mosquitto: Broker) -> Iterator[CounterAgent]:
    sane = write_sane_config(tmp_path / "sane.d")
    running = CounterAgent.start(
        make_site(tmp_path, mosquitto),
        tmp_path / "agent",
        ui={"review": True},
        capture={"scanner_device": "test:0", "scanner_resolution": 200},
        env={"SANE_CONFIG_DIR": str(sane)},
    )
    assert running.client.sign_in().status == 200
    yield running
    running.stop()


def waiting(agent: CounterAgent) -> dict[str, Any] | None:
    batch = agent.client.state()["batch"]
    return batch if batch and batch["status"] == "review" else None


def test_a_page_rescanned_in_review_replaces_the_page_and_is_sealed(agent: CounterAgent) -> None:
    assert agent.client.post("/api/batch", {"profile": "text"}).status == 200
    wait_until(lambda: waiting(agent) is not None, 60, "the batch waiting for review")
    batch = waiting(agent)
    assert batch is not None
    count = len(batch["pages"])

    answer = agent.client.post(f"/api/review/{batch['batch_id']}", {"action": "rescan", "page": 1})

    assert answer.status == 200
    wait_until(
        lambda: (
            "rescanned" in (waiting(agent) or {"pages": [{}, {"badges": []}]})["pages"][1]["badges"]
        ),
        60,
        "page 2 re-scanned",
    )
    again = waiting(agent)
    assert again is not None and len(again["pages"]) == count  # replaced, not added
    agent.client.post(f"/api/review/{batch['batch_id']}", {"action": "confirm"})
    (done,) = agent.wait_batches(1)
    assert done["status"] == "complete" and sum(d["pages"] for d in done["documents"]) == count


def test_a_batch_from_files_cannot_be_rescanned_and_is_sealed_as_it_was(
    agent: CounterAgent,
) -> None:
    agent.feed(content_pages(3, seed=4), "from-files")
    wait_until(lambda: waiting(agent) is not None, 60, "the batch waiting for review")
    batch = waiting(agent)
    assert batch is not None

    agent.client.post(f"/api/review/{batch['batch_id']}", {"action": "rescan", "page": 0})
    wait_until(
        lambda: "re-scanning a page needs the scanner" in agent.log_text(), 30, "the refusal"
    )
    agent.client.post(f"/api/review/{batch['batch_id']}", {"action": "confirm"})

    (done,) = agent.wait_batches(1)
    assert all("rescanned" not in p["badges"] for p in done["pages"])
    assert sum(d["pages"] for d in done["documents"]) == 3
