"""The counter page under test: ``sohoa agent`` with its page on a free port, a plain
HTTP client for its API, and Debian's headless Chromium through selenium.

``CounterAgent.start`` writes a configuration for the site's device (the hot
folder, the page on ``127.0.0.1:<free port>``, whatever else a test asks for),
sets an officer's password with ``sohoa ui passwd`` and starts ``sohoa -v
agent`` as a subprocess, the way systemd runs it. Its log goes to a file that a
failing test can show. ``counter_batch`` makes the pages of a dossier as they come
to the counter; ``chromium`` and ``open_page`` give a browser signed in on the page.
Used by tests/test_counter_*.py and tests/bench/bench_counter.py.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from PIL import Image

from agent.capture.samples import content_lines, make_page, receipt_page
from tests.support.site import REPO, SOHOA, Site, write_toml
from tests.support.wait import became_true

OFFICER = "canbo.mot"
PASSWORD = "mat-khau-quay-2024"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class PageClient:
    """HTTP to the page as a browser would: the session cookie once signed in, and the
    CSRF token that sign-in returned."""

    port: int
    host: str = "127.0.0.1"
    cookie: str | None = None
    csrf: str | None = None

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        csrf: str | None = None,
        signed_in: bool = True,
    ) -> Answer:
        headers: dict[str, str] = {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if signed_in and self.cookie:
            headers["Cookie"] = self.cookie
        if csrf:
            headers["X-CSRF-Token"] = csrf
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            conn.request(method, path, body=data, headers=headers)
            r = conn.getresponse()
            return Answer(r.status, r.getheaders(), r.read())
        finally:
            conn.close()

    def sign_in(self, name: str = OFFICER, password: str = PASSWORD) -> Answer:
        answer = self.request("POST", "/api/login", {"name": name, "password": password})
        if answer.status == 200:
            cookie = answer.header("Set-Cookie") or ""
            self.cookie = cookie.split(";", 1)[0]
            self.csrf = answer.json()["csrf"]
        return answer

    def get(self, path: str) -> Answer:
        return self.request("GET", path)

    def post(self, path: str, body: Any) -> Answer:
        """A change, with the session's CSRF token."""
        return self.request("POST", path, body, csrf=self.csrf)

    def state(self) -> dict[str, Any]:
        answer = self.get("/api/state")
        assert answer.status == 200, answer
        state: dict[str, Any] = answer.json()
        return state


def counter_batch(dossier: str, owner: str, *, seed: int = 0) -> list[Image.Image]:
    """A dossier as it comes to the counter: the receipt (Code 128 dossier code), the
    application, the owner's ID card (CCCD QR), a PATCHT separator, one more page."""
    cccd = f"{owner}||Nguyen Van Counter|01011990|Nam|Ha Noi|01012021"
    return [
        receipt_page(dossier, seed=seed),
        make_page(content_lines(seed + 1), seed=seed + 1),
        make_page(["CĂN CƯỚC CÔNG DÂN"], codes=[("QRCODE", cccd)], seed=seed + 2),
        make_page([], codes=[("CODE128", "PATCHT")], seed=seed + 3),
        make_page(content_lines(seed + 4), seed=seed + 4),
    ]


def content_pages(count: int, *, seed: int = 0) -> list[Image.Image]:
    """Pages of text with no code on them."""
    return [make_page(content_lines(seed + n), seed=seed + n) for n in range(count)]


def save_pages(pages: Sequence[Image.Image], path: Path) -> None:
    """One page as PNG, several as one multi-page TIFF (one hot-folder batch)."""
    if len(pages) == 1:
        pages[0].save(path, format="PNG", dpi=(300, 300))
    else:
        pages[0].save(
            path,
            format="TIFF",
            save_all=True,
            append_images=list(pages[1:]),
            compression="tiff_deflate",
            dpi=(300, 300),
        )


@dataclass
class CounterAgent:
    """``sohoa agent`` with the counter page, fed through its hot folder."""

    proc: subprocess.Popen[bytes]
    client: PageClient
    hot: Path
    home: Path
    log_path: Path
    env: dict[str, str]
    _log: IO[bytes] = field(repr=False)

    @classmethod
    def start(
        cls,
        site: Site,
        work: Path,
        *,
        ui: Mapping[str, object] | None = None,
        capture: Mapping[str, object] | None = None,
        env: Mapping[str, str] | None = None,
        listen: bool = True,
        sections: Mapping[str, Mapping[str, object]] | None = None,
    ) -> CounterAgent:
        work.mkdir(parents=True, exist_ok=True)
        hot = work / "hot"
        hot.mkdir(exist_ok=True)
        port = free_port()
        config = write_toml(
            work / "agent.toml",
            site.device.home,
            site.device.device.id,
            site.broker.url(),
            capture={"hot_folder": str(hot), **(capture or {})},
            ui={"listen": f"127.0.0.1:{port}" if listen else "", **(ui or {})},
            spool={"reserve_mb": 0},
            **{name: dict(values) for name, values in (sections or {}).items()},
        )
        full_env = {**os.environ, "SOHOA_CONFIG": str(config), **(env or {})}
        full_env.pop("SOHOA_HOME", None)
        subprocess.run(
            [*SOHOA, "ui", "passwd", OFFICER],
            input=PASSWORD + "\n",
            env=full_env,
            cwd=REPO,
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
        log_path = work / "agent.log"
        log = log_path.open("ab")
        proc = subprocess.Popen(
            [*SOHOA, "-v", "agent"], env=full_env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT
        )
        agent = cls(proc, PageClient(port), hot, site.device.home, log_path, full_env, log)
        if listen:
            if not became_true(agent.listening, 30, poll_s=0.1):
                agent.stop()
                raise AssertionError(f"the counter page did not start:\n{agent.log_text()}")
            answer = agent.client.sign_in()
            assert answer.status == 200, answer
        return agent

    @property
    def url(self) -> str:
        return f"http://{self.client.host}:{self.client.port}"

    def listening(self) -> bool:
        assert self.proc.poll() is None, f"sohoa agent exited:\n{self.log_text()}"
        try:
            return self.client.request("GET", "/login", signed_in=False).status == 200
        except OSError:
            return False

    def feed(self, pages: Sequence[Image.Image], name: str) -> float:
        """One batch into the hot folder, written aside and renamed as scanners do;
        the time (``time.time()``) at which it landed."""
        suffix = ".png" if len(pages) == 1 else ".tif"
        part = self.hot / f"{name}{suffix}.part"
        save_pages(pages, part)
        landed = time.time()
        part.rename(self.hot / f"{name}{suffix}")
        return landed

    def batches(self) -> list[dict[str, Any]]:
        """Finished batches the page knows, newest first."""
        batches: list[dict[str, Any]] = self.client.state()["last_batches"]
        return batches

    def wait_batches(self, count: int, timeout_s: float = 60) -> list[dict[str, Any]]:
        if not became_true(lambda: len(self.batches()) >= count, timeout_s, poll_s=0.1):
            raise AssertionError(
                f"no {count} finished batch(es) in {timeout_s} s:\n{self.log_text()}"
            )
        return self.batches()

    def log_text(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


def chromium(width: int = 1024, height: int = 600) -> Any:
    """A headless Chromium whose page area is ``width`` x ``height`` CSS pixels."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI containers and root have no sandbox to offer
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--lang=vi",
        f"--window-size={width},{height}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
    )
    return driver


def sign_in_form(driver: Any, agent: CounterAgent, password: str = PASSWORD) -> None:
    """Open the page and sign in through its form, as an officer does (no waiting
    for the answer: the caller waits for what it expects)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.delete_all_cookies()
    driver.get(agent.url + "/")
    WebDriverWait(driver, 30).until(lambda d: d.current_url.endswith("/login"))
    driver.find_element(By.ID, "name").send_keys(OFFICER)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.ID, "sign-in").click()


def open_page(driver: Any, agent: CounterAgent) -> None:
    """Signed in, the counter page on screen."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    sign_in_form(driver, agent)
    WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.ID, "start-batch"))
