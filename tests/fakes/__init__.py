"""Local stand-ins for SaaS vendors, answering as each vendor's API documentation says.

Each module serves one vendor from an aiohttp application: the tests run it with
`aiohttp.test_utils.TestServer`, and `python -m tests.fakes.NAME --port PORT` serves it
standalone with a few preconfigured objects, for end-to-end examples.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator

from aiohttp import web


@contextlib.contextmanager
def serving(app: web.Application) -> Iterator[str]:
    """Serve `app` on a free local port from a thread of its own (for tests whose
    services run in other processes); yields its base URL."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    host, port = runner.addresses[0][:2]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


class Gate:
    """Holds a fake's answers until the test opens it (`open`: before the server closes)."""

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None

    def open(self) -> None:
        self._opened().set()

    async def wait(self) -> None:
        await self._opened().wait()

    def _opened(self) -> asyncio.Event:
        if self._event is None:  # made on the server's event loop, when first needed
            self._event = asyncio.Event()
        return self._event
