"""`/readyz` of a service whose broker or database is unreachable: 503, naming it, soon.

The probe server (`headrace.service_http.serving`, as `headrace server <name>` runs it)
with the session's broker and database, and with each replaced by an address where
nothing answers: a port nobody listens on (refused at once), and a listener that
accepts and never speaks (the check's time bound is what answers).
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp

from headrace.broker import free_port
from headrace.config import Settings
from headrace.service_http import serving

# Far above a check's bound (1 s): an answer at all is what is checked.
ANSWER_WITHIN_S = 10.0


@contextlib.contextmanager
def silent_listener() -> Iterator[int]:
    """A port that accepts connections and never answers on them."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield server.getsockname()[1]


@contextlib.asynccontextmanager
async def probes(
    service: str, settings: Settings, joined: bool = True
) -> AsyncIterator[aiohttp.ClientSession]:
    settings = dataclasses.replace(settings, metrics_port=0)
    async with serving(service, settings, lambda: joined) as port:
        assert port is not None
        timeout = aiohttp.ClientTimeout(total=ANSWER_WITHIN_S)
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}", timeout=timeout) as http:
            yield http


async def readyz(http: aiohttp.ClientSession) -> tuple[int, dict[str, Any]]:
    async with http.get("/readyz") as response:
        return response.status, await response.json()


async def test_ready_when_the_broker_and_database_answer_and_the_group_is_joined(
    settings: Settings,
) -> None:
    async with probes("indexer", settings) as http:
        assert await readyz(http) == (200, {"status": "ready"})
    async with probes("indexer", settings, joined=False) as http:
        assert await readyz(http) == (
            503,
            {"status": "unavailable", "problems": {"consumer group": "not joined yet"}},
        )


async def test_an_unreachable_database_makes_it_unready(settings: Settings) -> None:
    refused = dataclasses.replace(
        settings, database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/headrace"
    )
    async with probes("scheduler", refused) as http:
        status, body = await readyz(http)
        assert status == 503 and set(body["problems"]) == {"postgresql"}
        # Probes within the cache window get the same answer without a new round.
        assert await readyz(http) == (status, body)
        # Liveness is another matter: the process serves.
        async with http.get("/healthz") as response:
            assert response.status == 200
    with silent_listener() as port:
        silent = dataclasses.replace(
            settings, database_url=f"postgresql://postgres@127.0.0.1:{port}/headrace"
        )
        async with probes("indexer", silent) as http:
            status, body = await readyz(http)
    assert status == 503 and set(body["problems"]) == {"postgresql"}


async def test_an_unreachable_broker_makes_it_unready(settings: Settings) -> None:
    refused = dataclasses.replace(settings, kafka_bootstrap=f"127.0.0.1:{free_port()}")
    # The executor and the workers never use PostgreSQL: not checked.
    async with probes("worker", refused) as http:
        status, body = await readyz(http)
    assert status == 503 and set(body["problems"]) == {"kafka"}
    with silent_listener() as port:
        silent = dataclasses.replace(settings, kafka_bootstrap=f"127.0.0.1:{port}")
        async with probes("executor", silent) as http:
            status, body = await readyz(http)
    assert status == 503 and set(body["problems"]) == {"kafka"}
