"""Connection pools with the codecs every headrace query relies on.

jsonb and json columns are encoded and decoded with orjson (binary jsonb format: a
version byte then the text), so repositories hand dicts and lists in and out.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson

from headrace.errors import HeadraceError

# jsonb's binary wire format is a version byte (1) followed by the JSON text.
_JSONB_VERSION = b"\x01"
# Dates in JSON as Kestra writes them: RFC 3339 with a `Z`.
JSON_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS


class DatabaseError(HeadraceError):
    """PostgreSQL refused or could not be reached."""


# PostgreSQL away for a while, as opposed to refusing a statement: try again later. A
# server shutting down or starting answers "cannot connect now" and cuts sessions with
# "admin shutdown": errors of the class 57 (operator intervention), not connection errors.
# A session cut in the middle of an error reply can leave asyncpg's protocol waiting for
# the rest of it until the closed socket is noticed: the connection's next use raises
# InternalClientError ("another operation is in progress"; seen once when PostgreSQL
# stopped, and it ended the indexer). Pools skip the reset query that would have caught
# it (`_keep_session`): callers that retry terminate such a connection first.
UNREACHABLE = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InternalClientError,
)


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=JSON_OPTIONS)


def _encode_jsonb(value: Any) -> bytes:
    return _JSONB_VERSION + dumps(value)


def _decode_jsonb(data: bytes) -> Any:
    return orjson.loads(data[1:])


async def init_connection(conn: asyncpg.Connection) -> None:
    """Install the orjson codecs on one connection (the pool's `init` hook)."""
    await conn.set_type_codec(
        "jsonb",
        schema="pg_catalog",
        encoder=_encode_jsonb,
        decoder=_decode_jsonb,
        format="binary",
    )
    await conn.set_type_codec(
        "json", schema="pg_catalog", encoder=dumps, decoder=orjson.loads, format="binary"
    )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """A released connection's reset, beyond what asyncpg always does (roll back an open
    transaction, drop listeners): nothing. Its default runs `RESET ALL`, `UNLISTEN *`,
    `CLOSE ALL` and an advisory unlock-all, one more round trip per query through the
    pool (10% of the gateway's time per webhook, py-spy). No headrace query leaves session
    state behind: no SET, LISTEN only on connections of its own (`connect`), and the one
    session advisory lock (migrations) is released in a `finally`."""


async def create_pool(database_url: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    try:
        pool = await asyncpg.create_pool(
            database_url,
            min_size=min_size,
            max_size=max_size,
            init=init_connection,
            reset=_keep_session,
        )
    except (OSError, asyncpg.PostgresError) as exc:
        raise DatabaseError(f"cannot connect to PostgreSQL: {exc}") from exc
    assert pool is not None  # create_pool returns None only when used without await
    return pool


async def connect(database_url: str) -> asyncpg.Connection:
    """One connection with the codecs (LISTEN needs a connection of its own)."""
    try:
        conn = await asyncpg.connect(database_url)
    except (OSError, asyncpg.PostgresError) as exc:
        raise DatabaseError(f"cannot connect to PostgreSQL: {exc}") from exc
    await init_connection(conn)
    return conn
