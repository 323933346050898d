"""The counter page: routes over ``CounterState``, the device's facts and the capture actions.

``GET /`` renders the page on the server (Jinja2); its script follows
``/api/events`` (server-sent events, one per change) and redraws from
``/api/state``, so a page appears on the screen as soon as the pipeline has
taken it. Thumbnails come from memory (``/api/thumb/<batch>/<n>``); sheets are
PDFs made on request (``POST /api/sheets``, so a dossier code never sits in a
URL). The server runs in its own thread with its own event loop beside the
capture threads (``agent.web.server.PageServer``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import jinja2
from aiohttp import web

from agent.capture.review import Edit
from agent.counter.i18n import strings
from agent.counter.state import CounterState
from agent.errors import CodeError
from agent.web.http import base_app, json_data, lang_of, page, session_of, templates

HERE = Path(__file__).resolve().parent
STATE = web.AppKey("state", CounterState)
ENV = web.AppKey("env", jinja2.Environment)
HEARTBEAT_S = 15.0
EXPIRE_EVERY_S = 10.0


class Actions(Protocol):
    """What the officer can ask of the capture service; each answers with an error
    message, or None when it was done."""

    def start_batch(self, profile: str | None) -> str | None: ...

    def preset_dossier(self, code: str) -> str | None: ...

    def open_signing(self, pin: str) -> str | None: ...

    def close_signing(self) -> str | None: ...

    def certify_next(self, on: bool) -> str | None: ...

    def signing(self) -> dict[str, Any]: ...


@dataclass
class CounterContext:
    home: Path
    facts: Callable[[], dict[str, Any]]  # scanner, disk, sync: read from the spool
    actions: Actions
    review_mode: bool = False


CONTEXT = web.AppKey("context", CounterContext)


def state_json(request: web.Request) -> dict[str, Any]:
    ctx = request.app[CONTEXT]
    return {
        **ctx.facts(),
        **request.app[STATE].snapshot(),
        "review_mode": ctx.review_mode,
        "signing": ctx.actions.signing(),
    }


async def index(request: web.Request) -> web.StreamResponse:
    session = session_of(request)
    assert session is not None  # the guard signed it in
    lang = lang_of(request)
    env = request.app[ENV]
    return page(
        env,
        "counter.html",
        t=strings(lang),
        lang=lang,
        other="en" if lang == "vi" else "vi",
        name=session.name,
        csrf=session.csrf,
        strings_json=json_data(strings(lang)),
        state_json=json_data(state_json(request)),
    )


async def login_page(request: web.Request) -> web.StreamResponse:
    lang = lang_of(request)
    return page(
        request.app[ENV],
        "login.html",
        t=strings(lang),
        lang=lang,
        other="en" if lang == "vi" else "vi",
        strings_json=json_data(strings(lang)),
    )


async def api_state(request: web.Request) -> web.StreamResponse:
    return web.json_response(state_json(request))


async def events(request: web.Request) -> web.StreamResponse:
    """One ``state`` event per change (with its version), and a heartbeat comment."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    loop = asyncio.get_running_loop()
    changed = asyncio.Event()

    def wake(_version: int) -> None:  # called from the capture thread
        loop.call_soon_threadsafe(changed.set)

    stop_watching = request.app[STATE].watch(wake)
    try:
        await response.write(f"event: state\ndata: {request.app[STATE].version}\n\n".encode())
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), HEARTBEAT_S)
            if changed.is_set():
                changed.clear()
                await response.write(
                    f"event: state\ndata: {request.app[STATE].version}\n\n".encode()
                )
            else:
                await response.write(b": heartbeat\n\n")
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        stop_watching()
    return response


async def thumb(request: web.Request) -> web.StreamResponse:
    try:
        index_ = int(request.match_info["index"])
    except ValueError:
        raise web.HTTPNotFound() from None
    data = request.app[STATE].thumbnail(request.match_info["batch"], index_)
    if data is None:
        raise web.HTTPNotFound()
    return web.Response(body=data, content_type="image/jpeg")


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text="send JSON") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="send a JSON object")
    return body


def _answer(error: str | None, done: str) -> web.Response:
    if error:
        return web.json_response({"error": error}, status=409)
    return web.json_response({"done": done})


async def start_batch(request: web.Request) -> web.StreamResponse:
    body = await _body(request)
    profile = body.get("profile")
    if profile is not None and profile not in ("text", "color", "lossless"):
        return web.json_response({"error": "unknown profile"}, status=400)
    error = await asyncio.to_thread(request.app[CONTEXT].actions.start_batch, profile)
    return _answer(error, "requested")


async def preset_dossier(request: web.Request) -> web.StreamResponse:
    code = str((await _body(request)).get("code", ""))[:200]
    error = await asyncio.to_thread(request.app[CONTEXT].actions.preset_dossier, code)
    return _answer(error, "dossier_set")


async def open_signing(request: web.Request) -> web.StreamResponse:
    """The officer's PIN, in the body of a signed-in, CSRF-checked POST: it opens the
    token session and is dropped; it is never logged, stored or sent back."""
    pin = (await _body(request)).get("pin")
    if not isinstance(pin, str) or not 0 < len(pin) <= 64:
        return web.json_response({"error": "send {pin}"}, status=400)
    error = await asyncio.to_thread(request.app[CONTEXT].actions.open_signing, pin)
    del pin
    return _answer(error, "signing_open")


async def close_signing(request: web.Request) -> web.StreamResponse:
    error = await asyncio.to_thread(request.app[CONTEXT].actions.close_signing)
    return _answer(error, "signing_closed")


async def certify_next(request: web.Request) -> web.StreamResponse:
    on = (await _body(request)).get("on")
    if not isinstance(on, bool):
        return web.json_response({"error": "send {on: true|false}"}, status=400)
    error = request.app[CONTEXT].actions.certify_next(on)
    return _answer(error, "certify_on" if on else "certify_off")


async def review(request: web.Request) -> web.StreamResponse:
    body = await _body(request)
    try:
        edit = Edit(str(body["action"]), int(body.get("page", -1)), int(body.get("doc", -1)))
    except (KeyError, TypeError, ValueError):
        return web.json_response({"error": "send {action, page, doc}"}, status=400)
    if edit.action not in ("confirm", "move", "drop", "rescan"):
        return web.json_response({"error": "unknown action"}, status=400)
    ok = request.app[STATE].submit(request.match_info["batch"], edit)
    return _answer(None if ok else "that batch is not waiting for review", edit.action)


async def sheets(request: web.Request) -> web.StreamResponse:
    from agent.capture.sheets import sheet_pdf

    body = await _body(request)
    try:
        pdf = await asyncio.to_thread(sheet_pdf, body)
    except CodeError as exc:
        return web.json_response({"error": exc.message}, status=400)
    return web.Response(
        body=pdf,
        content_type="application/pdf",
        headers={"Content-Disposition": 'inline; filename="sohoa-sheets.pdf"'},
    )


def forget_expired(every_s: float) -> Callable[[web.Application], AsyncIterator[None]]:
    """Forget finished batches past keep_minutes even when no page asks for anything:
    thumbnails and codes must not outstay them in memory."""

    async def run(app: web.Application) -> AsyncIterator[None]:
        async def loop() -> None:
            while True:
                await asyncio.sleep(every_s)
                app[STATE].expire()

        task = asyncio.create_task(loop())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return run


def build_app(
    ctx: CounterContext,
    state: CounterState,
    *,
    secure: bool = False,
    expire_every_s: float = EXPIRE_EVERY_S,
) -> web.Application:
    app = base_app(ctx.home, secure=secure)
    app.cleanup_ctx.append(forget_expired(expire_every_s))
    app[STATE] = state
    app[CONTEXT] = ctx
    app[ENV] = templates(HERE / "templates")
    r = app.router
    r.add_get("/", index)
    r.add_get("/login", login_page)
    r.add_get("/api/state", api_state)
    r.add_get("/api/events", events)
    r.add_get("/api/thumb/{batch}/{index}", thumb)
    r.add_post("/api/batch", start_batch)
    r.add_post("/api/dossier", preset_dossier)
    r.add_post("/api/review/{batch}", review)
    r.add_post("/api/signing/open", open_signing)
    r.add_post("/api/signing/close", close_signing)
    r.add_post("/api/signing/next", certify_next)
    r.add_post("/api/sheets", sheets)
    r.add_static("/static/", HERE / "static", show_index=False)
    return app
