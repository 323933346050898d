"""The officer's counter page in a real headless Chromium: sign-in, pages appearing as
the pipeline takes them, the English switch, a cover sheet made from the form, a batch
started from the page on SANE's test scanner, a paper jam, and a batch corrected in
review before it is sealed. ``sohoa agent`` runs as a subprocess, fed through its hot
folder or SANE's test backend (a private ``SANE_CONFIG_DIR``; its ``test.conf`` is
read again at each batch, which is how a jam is set up)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait

from agent.capture.samples import receipt_page
from device.sane_testbed import write_sane_config
from tests.support.browser import (
    CounterAgent,
    chromium,
    content_pages,
    counter_batch,
    open_page,
    sign_in_form,
)
from tests.support.mqtt import Broker
from tests.support.site import make_site
from tests.support.wait import wait_until

DOSSIER = "000.00.20.H56-230512-0041"
SECOND = "000.00.20.H56-230512-0042"
OWNER = "001090012345"
WAIT_S = 60
LOADED_THUMBS = (
    "return [...document.querySelectorAll('#pages figure img')]"
    ".filter((i) => i.complete && i.naturalWidth > 0).length"
)


@pytest.fixture(scope="module")
def driver() -> Iterator[WebDriver]:
    browser = chromium(1024, 600)
    yield browser
    browser.quit()


@pytest.fixture(scope="module")
def sane_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sane_config(tmp_path_factory.mktemp("sane.d"))


def start_agent(
    tmp: pytest.TempPathFactory, broker: Broker, name: str, **options: Any
) -> CounterAgent:
    base = tmp.mktemp(name)
    return CounterAgent.start(make_site(base, broker), base / "agent", **options)


@pytest.fixture(scope="module")
def agent(
    tmp_path_factory: pytest.TempPathFactory, mosquitto_session: Broker, sane_dir: Path
) -> Iterator[CounterAgent]:
    """A hot folder and SANE's test scanner (whose button loop the page can wake)."""
    running = start_agent(
        tmp_path_factory,
        mosquitto_session,
        "page-agent",
        capture={"scanner_device": "test:0", "scanner_resolution": 200},
        env={"SANE_CONFIG_DIR": str(sane_dir)},
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def review_agent(
    tmp_path_factory: pytest.TempPathFactory, mosquitto_session: Broker
) -> Iterator[CounterAgent]:
    running = start_agent(tmp_path_factory, mosquitto_session, "review-agent", ui={"review": True})
    yield running
    running.stop()


def until(driver: WebDriver, check: Callable[[WebDriver], Any], timeout_s: float = WAIT_S) -> Any:
    return WebDriverWait(driver, timeout_s, poll_frequency=0.1).until(check)


def by_id(driver: WebDriver, element_id: str) -> WebElement:
    return driver.find_element(By.ID, element_id)


def texts(driver: WebDriver, outer: str, inner: str | None = None) -> Any:
    """The text of each element matching ``outer`` (or of each ``inner`` inside each),
    read in one go: the page redraws whenever the batch changes."""
    return driver.execute_script(
        "const [outer, inner] = arguments;"
        "return [...document.querySelectorAll(outer)].map((e) => inner"
        " ? [...e.querySelectorAll(inner)].map((i) => i.innerText) : e.innerText);",
        outer,
        inner,
    )


def badges(driver: WebDriver) -> list[list[str]]:
    found: list[list[str]] = texts(driver, "#pages figure", ".badge")
    return found


def shown_batch(driver: WebDriver) -> str:
    batch: str = by_id(driver, "batch").get_attribute("data-batch") or ""
    return batch


def documents(driver: WebDriver, batch_id: str) -> list[str]:
    found: list[str] = texts(driver, f'#last-batches [data-batch="{batch_id}"] li')
    return found


def test_officer_signs_in_and_sees_a_batch_arrive_page_by_page(
    driver: WebDriver, agent: CounterAgent
) -> None:
    sign_in_form(driver, agent, "sai-mat-khau")
    until(driver, lambda d: by_id(d, "login-error").text == "Sai tên hoặc mật khẩu")
    open_page(driver, agent)

    agent.feed(counter_batch(DOSSIER, OWNER), "scan-page")
    until(driver, lambda d: d.execute_script(LOADED_THUMBS) == 5)
    batch_id = shown_batch(driver)
    until(driver, lambda d: documents(d, batch_id))

    assert by_id(driver, "page-count").text == "(5 trang)"
    assert badges(driver) == [["Mã biên nhận"], [], ["QR CCCD"], ["Phân cách"], []]
    assert documents(driver, batch_id) == [
        f"Tài liệu 1 · 3 trang\nMã hồ sơ: {DOSSIER}\nSố định danh: {OWNER}",
        f"Tài liệu 2 · 1 trang\nMã hồ sơ: {DOSSIER}\nSố định danh: {OWNER}",
    ]
    assert by_id(driver, "banner").text == "Đã quét xong lô"
    # on the counter's 1024x600 screen the thumbnails are in view without scrolling
    top = driver.execute_script(
        "return document.querySelector('#pages img').getBoundingClientRect().top"
    )
    assert top < 300


def test_the_english_switch_shows_the_page_in_english_and_back(
    driver: WebDriver, agent: CounterAgent
) -> None:
    open_page(driver, agent)
    if not agent.batches():
        agent.feed(content_pages(1), "scan-english")
    until(driver, lambda d: by_id(d, "batch-title").text == "Lô vừa quét")  # it ended

    by_id(driver, "lang-switch").click()
    until(driver, lambda d: d.find_element(By.TAG_NAME, "html").get_attribute("lang") == "en")
    english = [by_id(driver, e).text for e in ("start-batch", "batch-title", "batch-status")]
    by_id(driver, "lang-switch").click()
    until(driver, lambda d: d.find_element(By.TAG_NAME, "html").get_attribute("lang") == "vi")

    assert english == ["Start a batch", "Last batch", "complete"]
    assert by_id(driver, "start-batch").text == "Bắt đầu quét"


def test_a_dossier_cover_sheet_is_made_from_the_form(
    driver: WebDriver, agent: CounterAgent
) -> None:
    open_page(driver, agent)
    page_window = driver.current_window_handle
    Select(by_id(driver, "sheet-kind")).select_by_value("DOSSIER")
    until(driver, lambda d: by_id(d, "sheet-tthc").is_displayed())
    by_id(driver, "sheet-field").send_keys(DOSSIER)
    by_id(driver, "sheet-tthc").send_keys("1.001612")
    by_id(driver, "make-sheet").click()

    until(driver, lambda d: len(d.window_handles) == 2)  # the PDF, ready to print
    assert by_id(driver, "action-result").text == ""  # no error said
    for handle in driver.window_handles:
        if handle != page_window:
            driver.switch_to.window(handle)
            driver.close()
    driver.switch_to.window(page_window)


def start_from_the_page(driver: WebDriver, agent: CounterAgent) -> None:
    open_page(driver, agent)
    before = shown_batch(driver)
    by_id(driver, "start-batch").click()
    until(driver, lambda d: by_id(d, "action-result").text == "Đã yêu cầu quét")
    until(driver, lambda d: shown_batch(d) not in ("", before))


def test_start_button_scans_a_batch_from_the_sane_test_scanner(
    driver: WebDriver, agent: CounterAgent
) -> None:
    start_from_the_page(driver, agent)
    until(driver, lambda d: by_id(d, "batch-status").text == "hoàn tất")
    until(driver, lambda d: d.execute_script(LOADED_THUMBS) == 10)

    assert by_id(driver, "page-count").text == "(10 trang)"
    assert documents(driver, shown_batch(driver)) == ["Tài liệu 1 · 10 trang\nChưa có mã hồ sơ"]
    until(driver, lambda d: by_id(d, "scanner-state").text == "Sẵn sàng · test:0")


def test_a_paper_jam_shows_the_failure_banner(
    driver: WebDriver, agent: CounterAgent, sane_dir: Path
) -> None:
    conf = sane_dir / "test.conf"
    normal = conf.read_text()
    # the test backend reads its configuration at each batch's sane_init
    conf.write_text(normal + 'read-status-code "SANE_STATUS_JAMMED"\n')
    try:
        start_from_the_page(driver, agent)
        until(driver, lambda d: by_id(d, "batch-status").text == "bị gián đoạn")
    finally:
        conf.write_text(normal)
    banner = by_id(driver, "banner")

    assert (banner.text, banner.get_attribute("class")) == (
        "Lô quét có vấn đề — xem cảnh báo",
        "banner banner-batch_problem",
    )
    warning = driver.find_element(By.CSS_SELECTOR, "#last-batches article .warning").text
    assert warning.startswith("paper jam (test:0) — Gỡ giấy kẹt")
    until(
        driver,
        lambda d: by_id(d, "scanner-state").text.startswith(
            "Kẹt giấy — mở nắp, gỡ giấy rồi quét lại"
        ),
        15,
    )


def review_pages(driver: WebDriver) -> list[list[str]]:
    found: list[list[str]] = texts(driver, "#batch-documents li.document", ".page-no")
    return found


@pytest.mark.parametrize(
    ("clicked", "after", "sealed"),
    [
        # page 2, inside the first document: the second document starts there
        (1, [["1"], ["2", "3", "4", "5"]], [(DOSSIER, 1), (SECOND, 4)]),
        # page 5, inside the last document: it starts there, page 4 joins the first
        (4, [["1", "2", "3", "4"], ["5"]], [(DOSSIER, 4), (SECOND, 1)]),
    ],
)
def test_review_moves_a_boundary_and_the_sealed_documents_follow_it(
    driver: WebDriver,
    review_agent: CounterAgent,
    clicked: int,
    after: list[list[str]],
    sealed: list[tuple[str, int]],
) -> None:
    open_page(driver, review_agent)
    queued = review_agent.client.state()["sync"]["pending_docs"]
    pages = [receipt_page(DOSSIER), *content_pages(2, seed=5), receipt_page(SECOND, seed=1)]
    review_agent.feed([*pages, *content_pages(1, seed=9)], f"scan-review-{clicked}")
    until(driver, lambda d: by_id(d, "batch-status").text == "chờ kiểm tra")
    assert review_pages(driver) == [["1", "2", "3"], ["4", "5"]]

    move = f'#batch-documents .move[data-page="{clicked}"]'
    driver.find_element(By.CSS_SELECTOR, move).click()  # "A new document starts here"
    until(driver, lambda d: review_pages(d) == after)
    by_id(driver, "confirm").click()
    until(driver, lambda d: by_id(d, "batch-status").text == "hoàn tất")

    documents = review_agent.batches()[0]["documents"]
    assert [(d["dossier_code"], d["pages"]) for d in documents] == sealed
    wait_until(
        lambda: review_agent.client.state()["sync"]["pending_docs"] == queued + 2, 10, "the spool"
    )
