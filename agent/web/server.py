"""The web pages' server thread, shared by the counter page and the fleet page."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading

from aiohttp import web


class PageServer:
    """A page's aiohttp server in a thread with its own event loop, beside the service's
    threads (the counter page in ``sohoa agent``, the fleet page in ``sohoa fleet serve``);
    ``start`` returns once it listens."""

    def __init__(
        self, app: web.Application, host: str, port: int, tls: ssl.SSLContext | None = None
    ) -> None:
        self.app, self.host, self.port, self.tls = app, host, port, tls
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="web-page", daemon=True)
        self._runner: web.AppRunner | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported by start()
            self._error = exc
            self._ready.set()
            return
        self._loop.run_forever()

    async def _serve(self) -> None:
        # an open page holds its event stream open: give it a second, not aiohttp's 60
        self._runner = web.AppRunner(
            self.app, handle_signals=False, access_log=None, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(
            self._runner, self.host, self.port, reuse_address=True, ssl_context=self.tls
        )
        await site.start()
        self._ready.set()

    def start(self, timeout_s: float = 10.0) -> PageServer:
        self._thread.start()
        self._ready.wait(timeout_s)
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        if self._runner is not None:
            fut = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
            with contextlib.suppress(Exception):
                fut.result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
