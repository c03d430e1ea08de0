"""`postgres.query` against a real PostgreSQL server, run as a worker runs it."""

from __future__ import annotations

import asyncio
import contextlib
import struct
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from headrace.connectors.base import MAX_OUTPUTS_BYTES
from headrace.connectors.postgres import _addresses, _dsn
from headrace.states import State
from headrace.storage import Storage
from headrace.testing import TaskRun, run_task
from tests.stored_runs import files_under, run_stored, stored_lines
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

    # Loopback alone denied. asyncpg connects to the user info's host, not to `?host=`:
    # the one checked.
    monkeypatch.setenv("HEADRACE_HTTP_DENY", "127.0.0.0/8")
    decoy = database_url + ("&" if "?" in database_url else "?") + "host=example.com"
    hidden = await query(decoy, "SELECT 1")
    assert hidden.error == "127.0.0.1 is an address the workers may not reach (HEADRACE_HTTP_DENY)"
    # No host at all: asyncpg tries Unix sockets, then localhost; or PGHOST, if set.
    monkeypatch.delenv("PGHOST", raising=False)
    local = await query("postgresql:///postgres", "SELECT 1")
    assert (local.error or "").startswith("a Unix socket is on the worker's own machine")
    monkeypatch.setenv("PGHOST", "127.0.0.1")
    from_environment = await query("postgresql:///postgres", "SELECT 1")
    assert from_environment.error == (
        "127.0.0.1 is an address the workers may not reach (HEADRACE_HTTP_DENY)"
    )
    monkeypatch.delenv("PGHOST")

    monkeypatch.setenv("HEADRACE_HTTP_DENY", "10.0.0.0/8, metadata.google.internal")
    allowed = await query(database_url, "SELECT 1 AS one", fetchType="FETCH_ONE")
    assert allowed.outputs == {"row": {"one": 1}, "size": 1}, allowed.error


def test_the_servers_checked_are_those_asyncpg_connects_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Read by asyncpg's own (private) parser: an asyncpg that reads URLs otherwise, or
    # renames it, fails here.
    for name in ("PGHOST", "PGPORT"):
        monkeypatch.delenv(name, raising=False)

    def servers(url: str) -> list[Any]:
        return _addresses(_dsn(url)[0], None, "", None, {})

    assert servers("postgresql://127.0.0.1:5433/db?host=example.com") == [("127.0.0.1", 5433)]
    assert servers("jdbc:postgresql://db-1,db-2:5444/db") == [("db-1", 5432), ("db-2", 5444)]
    assert servers("postgresql:///db?host=example.com&port=6000") == [("example.com", 6000)]
    assert servers("postgresql:///db") == [
        "/run/postgresql/.s.PGSQL.5432",
        "/var/run/postgresql/.s.PGSQL.5432",
        "/tmp/.s.PGSQL.5432",
        "/private/tmp/.s.PGSQL.5432",
        ("localhost", 5432),
    ]
    monkeypatch.setenv("PGHOST", "db-3")
    assert servers("postgresql:///db") == [("db-3", 5432)]


class PasswordTaker:
    """A PostgreSQL server as far as a cleartext password, as PostgreSQL documents its
    protocol ("Frontend/Backend Protocol": "Message Flow", "Message Formats"): it refuses
    TLS (`N`), reads the startup message, asks for the password
    (AuthenticationCleartextPassword), keeps it, and refuses it (ErrorResponse, SQLSTATE
    28P01)."""

    def __init__(self) -> None:
        self.passwords: list[str] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            length, code = struct.unpack(">ii", await reader.readexactly(8))
            if code == 80877103:  # SSLRequest
                writer.write(b"N")
                length, code = struct.unpack(">ii", await reader.readexactly(8))
            await reader.readexactly(length - 8)  # the startup message's parameters
            writer.write(b"R" + struct.pack(">ii", 8, 3))
            await reader.readexactly(1)  # `p`: PasswordMessage
            (size,) = struct.unpack(">i", await reader.readexactly(4))
            self.passwords.append((await reader.readexactly(size - 4)).rstrip(b"\0").decode())
            fields = b"SFATAL\0C28P01\0Mpassword authentication failed\0\0"
            writer.write(b"E" + struct.pack(">i", len(fields) + 4) + fields)
            await writer.drain()
        writer.close()


async def test_only_the_flows_password_is_sent(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The worker's own: asyncpg would send them to any server that asks.
    monkeypatch.setenv("PGPASSWORD", "the-workers")
    passfile = tmp_path / "pgpass"
    passfile.write_text("*:*:*:*:the-workers-file\n")
    passfile.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    fake = PasswordTaker()
    server = await asyncio.start_server(fake.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        none = await query(f"postgresql://ada@127.0.0.1:{port}/db", "SELECT 1")
        await query(f"postgresql://ada:from%2Furl@127.0.0.1:{port}/db", "SELECT 1")
        await query(f"postgresql://ada@127.0.0.1:{port}/db?password=query", "SELECT 1")
        await query(f"postgresql://ada:url@127.0.0.1:{port}/db", "SELECT 1", password="given")
    assert fake.passwords == ["", "from/url", "query", "given"]
    assert none.error == (
        f"could not connect to PostgreSQL at 127.0.0.1:{port}/db: password authentication failed"
    )


@pytest.mark.parametrize(
    "parameter", ["passfile=/home/w/.pgpass", "service=headrace", "sslkey=/k", "sslrootcert=/ca"]
)
def test_url_parameters_that_read_the_workers_files_are_refused(parameter: str) -> None:
    source = (
        "id: f\nnamespace: n\ntasks:\n"
        "  - id: q\n    type: postgres.query\n    sql: SELECT 1\n"
        f"    url: postgresql://ada:s3cret@db/shop?{parameter}\n"
    )
    error = only_error(source)
    assert (error.line, error.path) == (7, "tasks[0].url")
    name = parameter.partition("=")[0]
    assert error.message.startswith(f"parameter {name} names ")
    assert error.message.endswith(f"on the worker, which a flow may not use, got ?{name}=…")
    assert "s3cret" not in error.message


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


# ------------------------------------------------------------------ fetchType STORE


async def store(
    database_url: str,
    storage: Storage,
    sql: str,
    secrets: dict[str, str] | None = None,
    **properties: Any,
) -> TaskRun:
    return await run_stored(
        "postgres.query",
        {"url": database_url, "sql": sql, "fetchType": "STORE", **properties},
        storage,
        task_id="query",
        secrets=secrets,
    )


async def test_secrets_are_masked_in_a_stored_file_as_in_outputs(
    database_url: str, tmp_path: Path
) -> None:
    storage = Storage(tmp_path)
    secret = "pg-api-key-0123456789"
    run = await store(
        database_url,
        storage,
        f"SELECT 'key={secret}' AS line, 'ok' AS other",
        secrets={"API_KEY": secret},
    )
    assert run.state is State.SUCCESS, run.error
    assert stored_lines(storage, STORED_URI) == [{"line": "key=******", "other": "ok"}]


STORED_URI = (
    "headrace:///test/test-flow/executions/test-execution/tasks/query/test-task-run/query.jsonl"
)


async def test_store_writes_the_last_statements_rows_as_fetch_gives_them(
    database_url: str, table: str, tmp_path: Path
) -> None:
    storage = Storage(tmp_path)
    sql = f"""
        CREATE TABLE {table} (id int, at timestamptz, doc jsonb, raw bytea, price numeric);
        INSERT INTO {table} VALUES
            (1, '2026-12-06 10:00+00', '{{"a": [1]}}', '\\x0102', 1.50),
            (2, NULL, 'null', NULL, 3);
        SELECT * FROM {table} ORDER BY id
    """
    run = await store(database_url, storage, sql)
    assert run.state is State.SUCCESS, run.error
    assert run.outputs == {"uri": STORED_URI, "size": 2}
    assert [m.split(" (")[0] for m in run.messages] == [
        "statement 1 of 3: CREATE TABLE",
        "statement 2 of 3: INSERT 0 2",
        f"statement 3 of 3: 2 rows to {STORED_URI}",
    ]
    fetched = await query(database_url, f"SELECT * FROM {table} ORDER BY id", fetchType="FETCH")
    assert stored_lines(storage, STORED_URI) == fetched.outputs["rows"]
    assert fetched.outputs["rows"][0] == {
        "id": 1,
        "at": "2026-12-06T10:00:00+00:00",
        "doc": {"a": [1]},
        "raw": "AQI=",
        "price": 1.5,
    }
    # Only the last statement stores; one that returns no rows stores an empty file.
    changed = await store(database_url, storage, f"SELECT 1; DELETE FROM {table} WHERE id = 9")
    assert changed.outputs == {"uri": STORED_URI, "size": 0}
    assert storage.size(STORED_URI) == 0
    assert files_under(tmp_path) == [Path(STORED_URI.removeprefix("headrace:///"))]


async def test_a_result_far_over_the_outputs_limit_is_stored(
    database_url: str, tmp_path: Path
) -> None:
    storage = Storage(tmp_path)
    sql = "SELECT g AS id, md5(g::text) AS hash, :tag AS tag FROM generate_series(1, 200000) g"
    run = await store(database_url, storage, sql, parameters={"tag": "big"})
    assert run.state is State.SUCCESS, run.error
    assert run.outputs == {"uri": STORED_URI, "size": 200_000}
    assert storage.size(STORED_URI) > 40 * MAX_OUTPUTS_BYTES
    rows = stored_lines(storage, STORED_URI)
    assert len(rows) == 200_000
    assert rows[0] == {"id": 1, "hash": "c4ca4238a0b923820dcc509a6f75849b", "tag": "big"}
    assert [row["id"] for row in rows] == list(range(1, 200_001))
    # Integers past 64 bits (numeric) are JSON all the same, as long as they are.
    huge = await store(database_url, storage, "SELECT 10::numeric ^ 30 AS n")
    assert huge.state is State.SUCCESS, huge.error
    with storage.open(STORED_URI) as file:
        assert file.read() == b'{"n":1000000000000000000000000000000}\n'


async def test_store_without_a_file_storage_fails_before_connecting(database_url: str) -> None:
    run = await run_stored(
        "postgres.query",
        {"url": "postgresql://postgres@127.0.0.1:1/db", "sql": "SELECT 1", "fetchType": "STORE"},
        None,
    )
    assert run.state is State.FAILED
    assert run.error == (
        "fetchType STORE writes its result to a file, and no file storage is set up where"
        " this task runs (workers have one: HEADRACE_STORAGE_DIR)"
    )


async def test_a_failed_query_or_commit_leaves_no_file(
    database_url: str, table: str, tmp_path: Path
) -> None:
    storage = Storage(tmp_path)
    bad = await store(database_url, storage, "SELECT 1; SELEC 2")
    assert bad.state is State.FAILED
    assert (bad.error or "").startswith("statement 2 of 2 failed: 42601: ")
    # Failing after thousands of rows were written out.
    midway = await store(
        database_url, storage, "SELECT 1 / (g - 5000) AS x FROM generate_series(1, 10000) g"
    )
    assert midway.state is State.FAILED
    assert midway.error == "statement 1 of 1 failed: 22012: division by zero"
    # Every row streamed, then the commit refused: the rows were never committed.
    sql = f"""
        CREATE TABLE {table} (id int UNIQUE DEFERRABLE INITIALLY DEFERRED);
        INSERT INTO {table} VALUES (1), (1) RETURNING id
    """
    commit = await store(database_url, storage, sql)
    assert commit.state is State.FAILED
    assert (commit.error or "").startswith(
        "the commit failed: 23505: duplicate key value violates unique constraint"
    )
    assert files_under(tmp_path) == []
    # A stored result replaced by a failed retry's stays whole.
    good = await store(database_url, storage, "SELECT 1 AS one")
    assert good.state is State.SUCCESS, good.error
    await store(database_url, storage, "SELECT 1 / 0")
    assert stored_lines(storage, STORED_URI) == [{"one": 1}]


async def test_a_kill_while_storing_leaves_no_file(database_url: str, tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    marker = f"stored_{uuid.uuid4().hex[:8]}"
    # Thousands of rows stream out, then the query sleeps: killed halfway through.
    sql = (
        f"SELECT g AS {marker}, pg_sleep(CASE WHEN g = 3500 THEN 60 ELSE 0 END)"
        " FROM generate_series(1, 5000) g"
    )
    running = asyncio.ensure_future(store(database_url, storage, sql))
    connection = await asyncpg.connect(database_url)
    try:
        async with asyncio.timeout(DEADLINE_S):  # asleep at row 3500: 3000 rows fetched
            while not await connection.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'"
                " AND query LIKE $1 AND pid <> pg_backend_pid()",
                f"%{marker}%",
            ):
                await asyncio.sleep(0.05)
    finally:
        await connection.close()
    [writing] = files_under(tmp_path)  # the result's temporary file, being written
    assert writing.name.startswith(".writing-")
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    await wait_for_count(database_url, marker, 0)
    assert files_under(tmp_path) == []
