"""What every sohoa web page shares: security headers, sign-in, CSRF, one Jinja2 setup.

aiohttp serves both pages (the counter page on the device, the fleet page at
the province): one small, well-kept library with its own server, server-sent
events and no build step; Jinja2 renders the pages on the server with
autoescaping on. JSON sign-in (``POST /api/login``) sets an HttpOnly,
SameSite=Strict cookie; every other POST needs the session's CSRF token in
``X-CSRF-Token``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from agent.web import accounts
from agent.web.sessions import COOKIE, SESSION_S, Session, Sessions

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SESSIONS = web.AppKey("sessions", Sessions)
HOME = web.AppKey("home", Path)
SECURE = web.AppKey("secure", bool)
# /metrics: Prometheus scrapes the fleet service without a session (bind it to the
# province network only); the counter page has no such route
PUBLIC = ("/login", "/api/login", "/static/", "/metrics")
LANGS = ("vi", "en")

CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self';"
    " connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


def templates(folder: Path) -> jinja2.Environment:
    """The page's own templates (its ``base.html``), then the shared ones (``login.html``)."""
    shared = Path(__file__).resolve().parent / "templates"
    return jinja2.Environment(
        loader=jinja2.ChoiceLoader(
            [jinja2.FileSystemLoader(folder), jinja2.FileSystemLoader(shared)]
        ),
        autoescape=jinja2.select_autoescape(default=True),
        undefined=jinja2.StrictUndefined,
    )


def lang_of(request: web.Request) -> str:
    lang = request.query.get("lang") or request.cookies.get("lang", "vi")
    return lang if lang in LANGS else "vi"


def session_of(request: web.Request) -> Session | None:
    return request.app[SESSIONS].get(request.cookies.get(COOKIE))


def _refused(request: web.Request, status: int, reason: str) -> web.StreamResponse:
    if request.path.startswith("/api/") or request.method != "GET":
        return web.json_response({"error": reason}, status=status)
    raise web.HTTPSeeOther("/login")


def _secure(headers: Any) -> None:
    headers.setdefault("Content-Security-Policy", CSP)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "no-referrer")
    headers.setdefault("Cache-Control", "no-store")


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Sign-in for everything but the sign-in page and static files; CSRF on changes;
    security headers on every answer, redirects and errors included."""
    try:
        response = await _checked(request, handler)
    except web.HTTPException as exc:  # a redirect to /login, a 404, ...
        _secure(exc.headers)
        raise
    _secure(response.headers)
    if "lang" in request.query and lang_of(request) == request.query["lang"]:
        response.set_cookie("lang", lang_of(request), samesite="Strict", max_age=365 * 86400)
    return response


async def _checked(request: web.Request, handler: Handler) -> web.StreamResponse:
    public = request.path in PUBLIC or request.path.startswith("/static/")
    session = session_of(request)
    if not public and session is None:
        response = _refused(request, 401, "sign in first")
    elif (
        request.method not in ("GET", "HEAD")
        and not public
        and not (
            session is not None and Sessions.csrf_ok(session, request.headers.get("X-CSRF-Token"))
        )
    ):
        response = web.json_response({"error": "missing or wrong CSRF token"}, status=403)
    else:
        response = await handler(request)
    return response


def _client(request: web.Request) -> str:
    return f"ip:{request.remote or '?'}"


async def login(request: web.Request) -> web.StreamResponse:
    """``POST /api/login`` with JSON ``{"name", "password"}``."""
    try:
        body: Any = await request.json()
        name, password = str(body["name"]), str(body["password"])
    except (ValueError, KeyError, TypeError):
        return web.json_response({"error": "send JSON {name, password}"}, status=400)
    sessions = request.app[SESSIONS]
    keys = (f"name:{name}", _client(request))
    wait = sessions.locked_for(*keys)
    if wait > 0:
        return web.json_response(
            {"error": "too many wrong passwords", "retry_after_s": int(wait) + 1}, status=429
        )
    if not accounts.verify(request.app[HOME], name, password):
        sessions.failed(*keys)
        return web.json_response({"error": "wrong name or password"}, status=401)
    sessions.succeeded(*keys)
    token, session = sessions.open(name)
    response = web.json_response({"name": name, "csrf": session.csrf})
    response.set_cookie(
        COOKIE,
        token,
        httponly=True,
        samesite="Strict",
        secure=request.app[SECURE],
        max_age=SESSION_S,
        path="/",
    )
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    request.app[SESSIONS].close(request.cookies.get(COOKIE))
    response = web.json_response({"signed_out": True})
    response.del_cookie(COOKIE, path="/")
    return response


def page(env: jinja2.Environment, template: str, **values: Any) -> web.Response:
    return web.Response(text=env.get_template(template).render(**values), content_type="text/html")


def json_data(value: Any) -> str:
    """JSON for a ``<script type="application/json">`` block: no ``</`` can end it."""
    return json.dumps(value, ensure_ascii=False).replace("</", "<\\/")


def base_app(home: Path, *, secure: bool, sessions: Sessions | None = None) -> web.Application:
    app = web.Application(middlewares=[guard], client_max_size=1 << 20)
    app[SESSIONS] = sessions or Sessions()
    app[HOME] = home
    app[SECURE] = secure
    app.router.add_post("/api/login", login)
    app.router.add_post("/api/logout", logout)
    # what every page shares (the sign-in script)
    app.router.add_static("/static/web/", Path(__file__).resolve().parent / "static")
    return app
