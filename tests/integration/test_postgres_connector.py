"""`postgres.query` against a real PostgreSQL server, run as a worker runs it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from headrace.states import State
from headrace.testing import TaskRun, run_task
from tests.unit.test_flow_loader import only_error

DEADLINE_S = 20.0


@pytest.fixture
async def table(database_url: str) -> AsyncIterator[str]:
    name = f"t_{uuid.uuid4().hex[:10]}"
    yield name
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(f"DROP TABLE IF EXISTS {name}")
    finally:
        await connection.close()


async def query(database_url: str, sql: str, **properties: Any) -> TaskRun:
    return await run_task("postgres.query", {"url": database_url, "sql": sql, **properties})


async def test_statements_run_in_one_transaction_and_fetch_the_last(
    database_url: str, table: str
) -> None:
    sql = f"""
        CREATE TABLE {table} (id int PRIMARY KEY, name text);
        INSERT INTO {table} VALUES (:id, :name), (:id + 1, 'it;s'); -- a ; in a comment
        SELECT id, name FROM {table} ORDER BY id
    """
    run = await query(database_url, sql, parameters={"id": "7", "name": "Ann"}, fetchType="FETCH")
    assert run.state is State.SUCCESS, run.error
    assert run.outputs == {"rows": [{"id": 7, "name": "Ann"}, {"id": 8, "name": "it;s"}], "size": 2}
    assert [m.split(" (")[0] for m in run.messages] == [
        "statement 1 of 3: CREATE TABLE",
        "statement 2 of 3: INSERT 0 2",
        "statement 3 of 3: 2 rows",
    ]
    changed = await query(database_url, f"UPDATE {table} SET name = upper(name)")
    assert changed.outputs == {"size": 2}
    one = await query(database_url, f"SELECT * FROM {table} WHERE id = $1", parameters=[8])
    assert one.outputs == {"size": 1}  # NONE: no rows, only PostgreSQL's count
    first = await query(
        database_url,
        f"SELECT name FROM {table} WHERE id = $1",
        parameters=[8],
        fetchType="FETCH_ONE",
    )
    assert first.outputs == {"row": {"name": "IT;S"}, "size": 1}


async def test_a_failing_statement_undoes_the_others_and_says_where(
    database_url: str, table: str
) -> None:
    await query(database_url, f"CREATE TABLE {table} (id int PRIMARY KEY)")
    sql = f"INSERT INTO {table} VALUES (1);\nINSERT INTO {table}\nVALUES (1, 2)"
    run = await query(database_url, sql)
    assert run.state is State.FAILED
    assert run.error is not None and run.error.startswith("statement 2 of 2 failed: 42601: ")
    assert "at line 2 of the statement" in run.error
    count = await query(database_url, f"SELECT count(*) AS n FROM {table}", fetchType="FETCH_ONE")
    assert count.outputs["row"] == {"n": 0}  # the first insert was rolled back


async def test_values_come_back_as_json(database_url: str) -> None:
    sql = """SELECT 1.50::numeric AS price, 3::numeric AS whole, '2026-12-06 10:00+00'::timestamptz AS at,
        '{"a": [1]}'::jsonb AS doc, '\\x0102'::bytea AS raw, ARRAY[1, 2] AS list,
        '1 day 2 hours'::interval AS span, NULL AS nothing, true AS yes"""
    run = await query(database_url, sql, fetchType="FETCH_ONE")
    assert run.state is State.SUCCESS, run.error
    assert run.outputs["row"] == {
        "price": 1.5,
        "whole": 3,
        "at": "2026-12-06T10:00:00+00:00",
        "doc": {"a": [1]},
        "raw": "AQI=",
        "list": [1, 2],
        "span": "P1DT2H",
        "nothing": None,
        "yes": True,
    }


async def test_parameters_are_data_typed_by_the_server(database_url: str, table: str) -> None:
    await query(database_url, f"CREATE TABLE {table} (id int, doc jsonb, at date, tags text[])")
    hostile = "x'); DROP TABLE " + table + "; --"
    run = await query(
        database_url,
        f"INSERT INTO {table} VALUES (:id, :doc, :at, :tags); SELECT * FROM {table}",
        parameters={"id": 1, "doc": {"k": hostile}, "at": "2026-12-06", "tags": ["a", hostile]},
        fetchType="FETCH",
    )
    assert run.state is State.SUCCESS, run.error
    assert run.outputs["rows"] == [
        {"id": 1, "doc": {"k": hostile}, "at": "2026-12-06", "tags": ["a", hostile]}
    ]
    bad = await query(database_url, f"SELECT * FROM {table} WHERE id = :id", parameters={"id": "x"})
    assert bad.state is State.FAILED
    assert bad.error == (
        "parameter :id: 'x' is not a valid int4 (invalid literal for int() with base 10: 'x')"
    )
    missing = await query(database_url, f"SELECT * FROM {table} WHERE id = :id", parameters={})
    assert missing.error == "statement 1 of 1 uses :id, which `parameters` does not give"
    counted = await query(database_url, "SELECT $1::int", parameters=[1, 2])
    assert counted.error == "statement 1 of 1 takes 1 parameter(s), `parameters` gives 2"
    mixed = await query(database_url, "SELECT :a::int, $2::int", parameters={"a": 1})
    assert mixed.error == (
        "statement 1 of 1 takes 2 parameter(s) but names 1: with a mapping of"
        " `parameters`, write every placeholder as :name"
    )


async def test_kestras_jdbc_url_and_a_connection_failure(database_url: str) -> None:
    host_and_db = database_url.split("@", 1)[1]  # the test server trusts local users
    user = database_url.split("//", 1)[1].split("@", 1)[0]
    jdbc = f"jdbc:postgresql://{host_and_db}?currentSchema=pg_catalog"
    run = await query(jdbc, "SELECT current_schema() AS s", username=user, fetchType="FETCH_ONE")
    assert run.state is State.SUCCESS, run.error
    assert run.outputs["row"] == {"s": "pg_catalog"}
    down = await query("postgresql://postgres@127.0.0.1:1/db", "SELECT 1")
    assert down.state is State.FAILED
    assert (down.error or "").startswith("could not connect to PostgreSQL at 127.0.0.1:1/db: ")


async def test_the_workers_deny_list_covers_postgresql_servers(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The test server is on 127.0.0.1: what a worker's own database would be.
    monkeypatch.setenv("HEADRACE_HTTP_DENY", "private")
    refused = await query(database_url, "SELECT 1")
    assert refused.state is State.FAILED
    assert refused.error == (
        "127.0.0.1 is an address the workers may not reach (HEADRACE_HTTP_DENY)"
    )
    socket = await query("postgresql:///postgres?host=/var/run/postgresql", "SELECT 1")
    assert (socket.error or "").startswith("a Unix socket is on the worker's own machine")
    named = await query("postgresql://postgres@localhost/postgres", "SELECT 1")
    assert (named.error or "").startswith("localhost (")  # 127.0.0.1 or ::1: both private
    assert (named.error or "").endswith(
        "is an address the workers may not reach (HEADRACE_HTTP_DENY)"
    )
    monkeypatch.setenv("HEADRACE_HTTP_DENY", "10.0.0.0/8, metadata.google.internal")
    allowed = await query(database_url, "SELECT 1 AS one", fetchType="FETCH_ONE")
    assert allowed.outputs == {"row": {"one": 1}, "size": 1}, allowed.error


async def running_queries(database_url: str, marker: str) -> int:
    connection = await asyncpg.connect(database_url)
    try:
        return await connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE $1 AND pid <> pg_backend_pid()",
            f"%{marker}%",
        )
    finally:
        await connection.close()


async def wait_for_count(database_url: str, marker: str, wanted: int) -> None:
    async with asyncio.timeout(DEADLINE_S):
        while await running_queries(database_url, marker) != wanted:
            await asyncio.sleep(0.05)


async def test_a_kill_or_a_timeout_stops_the_statement_on_the_server(database_url: str) -> None:
    marker = f"killed_{uuid.uuid4().hex[:8]}"
    running = asyncio.ensure_future(query(database_url, f"SELECT pg_sleep(60) AS {marker}"))
    await wait_for_count(database_url, marker, 1)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    await wait_for_count(database_url, marker, 0)  # not left running for a minute
    marker = f"timed_{uuid.uuid4().hex[:8]}"
    timed = await run_task(
        "postgres.query",
        {"url": database_url, "sql": f"SELECT pg_sleep(60) AS {marker}"},
        timeout=timedelta(seconds=1),
    )
    assert timed.state is State.FAILED and (timed.error or "").startswith("timed out after PT1S")
    await wait_for_count(database_url, marker, 0)


def test_a_wrong_property_is_refused_at_validation_with_its_line() -> None:
    source = (
        "id: f\nnamespace: n\ntasks:\n"
        "  - id: q\n    type: io.kestra.plugin.jdbc.postgresql.Query\n"
        "    url: jdbc:postgresql://db:5432/shop\n    sql: SELECT 1\n    fetchType: ALL\n"
    )
    error = only_error(source)
    assert (error.line, error.path) == (8, "tasks[0].fetchType")
