"""The counter page from ``[ui]``: the server on its address, or one line saying why not."""

from __future__ import annotations

import logging
import ssl

from agent.config import Config
from agent.counter.facts import CachedFacts
from agent.counter.server import Actions, CounterContext, build_app
from agent.counter.state import CounterState
from agent.validators import listen_address
from agent.web.accounts import load_accounts
from agent.web.server import PageServer
from agent.wiring import open_spool

log = logging.getLogger("sohoa.counter")


def _tls(cfg: Config) -> ssl.SSLContext | None:
    ui = cfg.ui
    if ui.tls_cert is None or ui.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cfg.path(ui.tls_cert), cfg.path(ui.tls_key))
    return context


def refresh_facts_after_each_batch(state: CounterState, facts: CachedFacts) -> None:
    """A batch's end changes the spool and the scanner's record: the page redraws at
    once, and its facts must not lag behind (a jam's banner beside "scanner ready")."""
    last: list[object] = [state.banner]

    def changed(_version: int) -> None:
        if state.banner is not last[0]:  # a new banner: a batch ended or failed
            last[0] = state.banner
            facts.invalidate()

    state.watch(changed)


def start_counter(cfg: Config, actions: Actions, state: CounterState) -> PageServer | None:
    """Serve the page on ``[ui] listen``; capture goes on without it if it cannot."""
    host, port = listen_address(cfg.ui.listen)
    facts = CachedFacts(lambda: open_spool(cfg))
    refresh_facts_after_each_batch(state, facts)
    ctx = CounterContext(cfg.home, facts, actions, cfg.ui.review)
    try:
        tls = _tls(cfg)
        app = build_app(ctx, state, secure=tls is not None)
        server = PageServer(app, host, port, tls).start()
    except (OSError, ssl.SSLError) as exc:
        log.error(
            "the counter page cannot listen on %s (%s) — set [ui] listen to a free host:port"
            ' (or "" to turn it off), and check [ui] tls_cert/tls_key; capture goes on',
            cfg.ui.listen,
            exc.strerror or exc,
        )
        return None
    if not load_accounts(cfg.home):
        log.warning("counter page: no officer account yet — run `sohoa ui passwd NAME`")
    log.info("counter page on %s://%s:%d", "https" if tls else "http", host, port)
    return server
