"""The counter page's API: nobody signed in gets nothing, a change needs its CSRF token,
guessing passwords locks, and what the page shows (thumbnails, codes) lives in the
agent's memory only, for ``[ui] keep_minutes``.

Sign-in, CSRF and headers are checked on the page's own app served in this process
(its clocks can be moved); the batches go through a real ``sohoa agent``.
"""

from __future__ import annotations

import contextlib
import http.cookies
import json
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.capture.events import thumbnail_jpeg
from agent.capture.results import CaptureResult, DocumentResult
from agent.capture.samples import receipt_page
from agent.counter.server import CounterContext, build_app
from agent.counter.state import CounterState
from agent.web import accounts
from agent.web.http import SESSIONS
from agent.web.server import PageServer
from agent.web.sessions import LOCK_S, Sessions
from tests.support.browser import (
    OFFICER,
    PASSWORD,
    CounterAgent,
    PageClient,
    content_pages,
    counter_batch,
    free_port,
)
from tests.support.mqtt import Broker
from tests.support.site import make_site
from tests.support.wait import wait_until

DOSSIER = "000.00.20.H56-230512-0031"
OWNER = "001090012345"
FACTS = {"scanner": {"state": "ready"}, "disk": {"free_bytes": 1}, "sync": {"pending_docs": 0}}
JFIF = b"\xff\xd8\xff\xe0\x00\x10JFIF"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class RecordedActions:
    """The capture service's side of the page: remembers what it was asked."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None]] = []

    def start_batch(self, profile: str | None) -> str | None:
        self.calls.append(("start_batch", profile))
        return None

    def preset_dossier(self, code: str) -> str | None:
        self.calls.append(("preset_dossier", code))
        return None

    def open_signing(self, pin: str) -> str | None:
        self.calls.append(("open_signing", None))  # the PIN is not kept, even here
        return None

    def close_signing(self) -> str | None:
        self.calls.append(("close_signing", None))
        return None

    def certify_next(self, on: bool) -> str | None:
        self.calls.append(("certify_next", str(on)))
        return None

    def signing(self) -> dict[str, Any]:
        return {"available": False, "open": False, "signer": None, "title": None}


class Page:
    """The page's app on a free port in this process, with clocks a test can move."""

    def __init__(self, home: Path, *, secure: bool = False, expire_every_s: float = 60) -> None:
        self.clock = Clock()
        self.actions = RecordedActions()
        self.state = CounterState(keep_minutes=1, clock=self.clock)
        ctx = CounterContext(home, lambda: dict(FACTS), self.actions)
        app = build_app(ctx, self.state, secure=secure, expire_every_s=expire_every_s)
        app[SESSIONS] = Sessions(clock=self.clock)
        self.server = PageServer(app, "127.0.0.1", free_port()).start()
        self.client = PageClient(self.server.port)


@pytest.fixture(scope="module")
def officer_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("counter-home")
    accounts.set_password(home, OFFICER, PASSWORD)
    accounts.set_password(home, "canbo.hai", PASSWORD)
    return home


@pytest.fixture
def page(officer_home: Path) -> Iterator[Page]:
    served = Page(officer_home)
    yield served
    served.server.stop()


def signed_in(page: Page) -> PageClient:
    client = PageClient(page.server.port)
    assert client.sign_in().status == 200
    return client


ROUTES = [
    ("GET", "/api/state", None),
    ("GET", "/api/events", None),
    ("GET", "/api/thumb/b1/0", None),
    ("POST", "/api/batch", {"profile": "text"}),
    ("POST", "/api/dossier", {"code": DOSSIER}),
    ("POST", "/api/review/b1", {"action": "confirm"}),
    ("POST", "/api/sheets", {"kind": "SEP", "copies": 1}),
    ("POST", "/api/logout", {}),
]


@pytest.mark.parametrize("cookie", [None, "sohoa_session=forged-token"])
@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
def test_without_sign_in_every_api_route_is_refused(
    page: Page, method: str, path: str, body: Any, cookie: str | None
) -> None:
    page.client.cookie = cookie
    answer = page.client.request(method, path, body)
    assert (answer.status, answer.json()) == (401, {"error": "sign in first"})
    assert page.actions.calls == []


def test_without_sign_in_the_page_sends_to_the_login_form(page: Page) -> None:
    answer = page.client.request("GET", "/")
    assert (answer.status, answer.header("Location")) == (303, "/login")
    login = page.client.request("GET", "/login")
    assert login.status == 200 and b'id="login-form"' in login.body
    assert page.client.request("GET", "/static/web/login.js").status == 200


def csrf_of_another_session(page: Page) -> str:
    other = signed_in(page)
    assert other.csrf is not None
    return other.csrf


@pytest.mark.parametrize("token", ["none", "wrong", "non-ASCII", "another session's"])
@pytest.mark.parametrize(("method", "path", "body"), [r for r in ROUTES if r[0] == "POST"])
def test_a_change_without_its_csrf_token_is_refused_and_changes_nothing(
    page: Page, method: str, path: str, body: Any, token: str
) -> None:
    client = signed_in(page)
    sent = {
        "none": None,
        "wrong": "x" * 43,
        "non-ASCII": "ý" * 43,
        "another session's": csrf_of_another_session(page) if token.startswith("another") else "",
    }
    version = page.state.version

    answer = client.request(method, path, body, csrf=sent[token])

    assert (answer.status, answer.json()) == (403, {"error": "missing or wrong CSRF token"})
    assert (page.actions.calls, page.state.version) == ([], version)
    assert client.get("/api/state").status == 200  # still signed in: logout did not happen


def test_a_change_with_its_csrf_token_is_done(page: Page) -> None:
    client = signed_in(page)
    assert client.post("/api/dossier", {"code": DOSSIER}).json() == {"done": "dossier_set"}
    assert client.post("/api/batch", {"profile": "color"}).json() == {"done": "requested"}
    assert page.actions.calls == [("preset_dossier", DOSSIER), ("start_batch", "color")]


@pytest.mark.parametrize(
    ("body", "status", "starts"),
    [
        ({"kind": "SEP", "copies": "2"}, 200, b"%PDF-"),  # the form sends copies as text
        ({"kind": "DOSSIER", "copies": 1, "dossier": DOSSIER, "tthc": "1.001612"}, 200, b"%PDF-"),
        ({"kind": "DOSSIER", "copies": 1, "dossier": DOSSIER}, 400, b'{"error": "cover sheet'),
        ({"kind": "SEP", "copies": 51}, 400, b'{"error": "the number of copies'),
    ],
)
def test_sheets_come_back_as_a_pdf_made_on_request(
    page: Page, body: dict[str, Any], status: int, starts: bytes
) -> None:
    answer = signed_in(page).post("/api/sheets", body)
    assert (answer.status, answer.body[: len(starts)]) == (status, starts)


def test_ten_wrong_passwords_lock_the_account_until_the_lock_ends(page: Page) -> None:
    client = page.client
    wrong = [client.sign_in(password=f"sai-mat-khau-{n}").status for n in range(10)]
    locked = client.sign_in()  # the right password, too late
    other_name = client.sign_in(name="canbo.hai")  # the address is locked as well

    assert wrong == [401] * 10
    assert (locked.status, locked.json()["error"]) == (429, "too many wrong passwords")
    assert 0 < locked.json()["retry_after_s"] <= LOCK_S + 1
    assert other_name.status == 429
    page.clock.now += LOCK_S - 5
    assert client.sign_in().status == 429
    page.clock.now += 10
    assert client.sign_in().status == 200


@pytest.mark.parametrize("secure", [False, True])
def test_the_session_cookie_is_httponly_and_samesite_strict(
    officer_home: Path, secure: bool
) -> None:
    served = Page(officer_home, secure=secure)
    try:
        answer = served.client.sign_in()
    finally:
        served.server.stop()
    cookie = http.cookies.SimpleCookie(answer.header("Set-Cookie"))
    morsel = cookie["sohoa_session"]
    assert len(morsel.value) >= 43  # 256 random bits
    assert (morsel["httponly"], morsel["samesite"], morsel["path"]) == (True, "Strict", "/")
    assert bool(morsel["secure"]) is secure
    assert "csrf" in answer.json() and morsel.value not in answer.body.decode()


@pytest.mark.parametrize(
    ("method", "path", "signed", "status"),
    [
        ("GET", "/login", False, 200),
        ("GET", "/", False, 303),
        ("GET", "/", True, 200),
        ("GET", "/api/state", True, 200),
        ("GET", "/api/state", False, 401),
        ("GET", "/static/counter.js", False, 200),
        ("GET", "/api/thumb/nobatch/0", True, 404),
        ("POST", "/api/batch", True, 403),  # no CSRF token
    ],
)
def test_every_answer_carries_the_security_headers(
    page: Page, method: str, path: str, signed: bool, status: int
) -> None:
    client = signed_in(page) if signed else page.client
    answer = client.request(method, path, {} if method == "POST" else None)
    csp, nosniff = answer.header("Content-Security-Policy"), answer.header("X-Content-Type-Options")
    assert (answer.status, nosniff) == (status, "nosniff")
    assert csp is not None
    for rule in ("default-src 'self'", "script-src 'self'", "frame-ancestors 'none'"):
        assert rule in csp
    assert "unsafe-inline" not in csp


def ended(batch_id: str, dossier: str) -> CaptureResult:
    doc = DocumentResult(f"d-{batch_id}", dossier, OWNER, None, None, None, 1, 100, (), "0" * 64)
    return CaptureResult(batch_id, 1, (), (), (doc,))


def test_thumbnails_and_codes_are_forgotten_after_keep_minutes(page: Page) -> None:
    client = signed_in(page)
    jpeg = thumbnail_jpeg(receipt_page(DOSSIER))
    for batch_id in ("b-old", "b-running"):
        page.state.batch_started(batch_id, "folder")
        page.state.page_taken(batch_id, 0, jpeg, ("receipt_code",))
    page.state.batch_ended("b-old", ended("b-old", DOSSIER))

    page.clock.now += 59
    kept = client.get("/api/thumb/b-old/0")
    assert (kept.status, kept.body) == (200, jpeg)
    assert DOSSIER in client.get("/api/state").body.decode()
    page.clock.now += 2

    assert client.get("/api/thumb/b-old/0").status == 404  # asked first: forgotten too
    state = client.state()
    assert DOSSIER not in json.dumps(state) and OWNER not in json.dumps(state)
    assert (state["last_batches"], state["banner"]) == ([], None)
    assert state["batch"]["batch_id"] == "b-running"  # a batch still scanning stays
    assert client.get("/api/thumb/b-running/0").body == jpeg


def test_codes_are_forgotten_even_when_no_page_asks(officer_home: Path) -> None:
    served = Page(officer_home, expire_every_s=0.05)
    try:
        state = served.state
        state.batch_started("b-old", "folder")
        state.page_taken("b-old", 0, b"jpeg", ("receipt_code",))
        state.batch_ended("b-old", ended("b-old", DOSSIER))
        version = state.version
        served.clock.now += 61
        wait_until(lambda: state.version > version, 10, "the page to forget the batch")
        assert state.snapshot()["last_batches"] == []
    finally:
        served.server.stop()


# -- a real `sohoa agent` ---------------------------------------------------------------


@pytest.fixture(scope="module")
def agent(
    tmp_path_factory: pytest.TempPathFactory, mosquitto_session: Broker
) -> Iterator[CounterAgent]:
    base = tmp_path_factory.mktemp("counter-agent")
    site = make_site(base, mosquitto_session)
    (base / "tmp").mkdir()
    running = CounterAgent.start(site, base / "agent", env={"TMPDIR": str(base / "tmp")})
    yield running
    running.stop()


def feed_and_wait(agent: CounterAgent, pages: list[Any], name: str) -> dict[str, Any]:
    before = len(agent.batches())
    agent.feed(pages, name)
    return agent.wait_batches(before + 1)[0]


def test_state_after_a_hot_folder_batch_has_the_designed_shape(agent: CounterAgent) -> None:
    batch = feed_and_wait(agent, counter_batch(DOSSIER, OWNER), "scan-shape")
    state = agent.client.state()

    assert {"scanner", "disk", "sync", "batch", "last_batches"} <= set(state)
    assert state["batch"] is None and state["last_batches"][0] == batch
    assert isinstance(state["scanner"]["state"], str) and state["disk"]["free_bytes"] > 0
    assert {"pending_docs", "pending_bytes", "oldest_pending_age_s"} <= set(state["sync"])
    assert (batch["status"], batch["pages_in"], batch["warnings"]) == ("complete", 5, [])
    assert batch["documents"] == [
        {"dossier_code": DOSSIER, "owner_id": OWNER, "doc_type": None, "pages": 3, "flags": []},
        {"dossier_code": DOSSIER, "owner_id": OWNER, "doc_type": None, "pages": 1, "flags": []},
    ]
    assert [p["badges"] for p in batch["pages"]] == [
        ["receipt_code"],
        [],
        ["id_card_qr"],
        ["separator"],
        [],
    ]
    for n in range(5):
        thumb = agent.client.get(f"/api/thumb/{batch['batch_id']}/{n}")
        assert (thumb.status, thumb.header("Content-Type")) == (200, "image/jpeg")
        assert thumb.body.startswith(b"\xff\xd8\xff") and len(thumb.body) < 60_000


def test_a_dossier_preset_on_the_page_tags_the_next_batch_only(agent: CounterAgent) -> None:
    preset = "000.00.20.H56-230512-0032"
    refused = agent.client.post("/api/dossier", {"code": "000.00.20.H56-231340-0007"})
    assert (refused.status, refused.json()) == (
        409,
        {"error": "Mã hồ sơ không hợp lệ / not a valid dossier code"},
    )
    assert agent.client.post("/api/dossier", {"code": preset}).status == 200

    tagged = feed_and_wait(agent, content_pages(2, seed=40), "scan-preset")
    untagged = feed_and_wait(agent, content_pages(1, seed=50), "scan-after")

    assert [(d["dossier_code"], d["pages"]) for d in tagged["documents"]] == [(preset, 2)]
    assert [(d["dossier_code"], d["pages"]) for d in untagged["documents"]] == [(None, 1)]


def new_files(folder: Path, since: float, skip: tuple[str, ...] = ()) -> Iterator[Path]:
    for root, dirs, files in os.walk(folder, onerror=lambda _e: None):
        dirs[:] = [d for d in dirs if not d.startswith(skip)]
        for name in files:
            path = Path(root, name)
            try:
                if path.is_file() and path.stat().st_mtime >= since:
                    yield path
            except OSError:
                continue


def readable(paths: set[Path]) -> Iterator[tuple[Path, bytes]]:
    for path in sorted(paths):
        if "keys" not in path.parts:
            with contextlib.suppress(OSError):
                yield path, path.read_bytes()


def test_after_a_batch_no_thumbnail_or_dossier_code_is_on_disk(agent: CounterAgent) -> None:
    code = f"000.00.20.H56-230512-{random.randint(1000, 9999)}"
    owner = f"001090{random.randint(0, 999_999):06d}"  # this test's own: nobody else has it
    since = time.time() - 1
    batch = feed_and_wait(agent, counter_batch(code, owner, seed=60), "scan-secret")
    assert (batch["documents"][0]["dossier_code"], batch["documents"][0]["owner_id"]) == (
        code,
        owner,
    )  # in memory, on the page
    thumbs = [agent.client.get(f"/api/thumb/{batch['batch_id']}/{n}").body for n in range(5)]
    assert all(t.startswith(b"\xff\xd8\xff") for t in thumbs)

    work = agent.hot.parent
    ours = {p for d in (agent.home, work, Path(agent.env["TMPDIR"])) for p in new_files(d, 0)}
    # the rest of /tmp, new files only; other runs' pytest folders and jobs are theirs
    others = set(new_files(Path("/tmp"), since, skip=("pytest-of-", "bash_"))) - ours
    assert any(p.suffix == ".env" for p in ours)  # the sealed documents are there
    markers = [code.encode(), owner.encode()]
    for path, data in readable(ours):
        assert not any(m in data for m in markers), f"a code is in {path}"
        assert not data.startswith(b"\xff\xd8\xff") and JFIF not in data, f"a JPEG in {path}"
    tails = [t[-64:-2] for t in thumbs]  # compressed picture data: this batch's own
    for path, data in readable(others):
        assert not any(m in data for m in markers), f"a code is in {path}"
        assert not any(t in data for t in tails), f"a thumbnail is in {path}"
