"""`postgres.query`: run SQL on PostgreSQL (Kestra's `jdbc.postgresql.Query`)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import ssl
import time
from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any
from urllib.parse import parse_qs, parse_qsl, unquote, urlencode, urlsplit, urlunsplit
from uuid import UUID

import asyncpg
import asyncpg.connect_utils
import isodate
import orjson
from pydantic import BaseModel, Field, field_validator

from headrace.connectors.base import ConnectorProperties, TaskContext, TaskFailed
from headrace.connectors.network_policy import DENY_ENV, DeniedAddress, NetworkPolicy
from headrace.connectors.sql_text import named_parameters, split_statements
from headrace.connectors.stored_results import json_line, json_lines_file, storage_of
from headrace.storage import TaskFiles

CONNECT_TIMEOUT_S = 30.0
CLOSE_TIMEOUT_S = 5.0
# What JDBC URLs carry that libpq's do not: translated, not passed on as server settings.
_JDBC_SETTINGS = {"currentSchema": "search_path", "ApplicationName": "application_name"}
_AFFECTED = re.compile(r"(\d+)$")  # `INSERT 0 3`, `UPDATE 2`, `DELETE 0`
# STORE reads the rows through a cursor, this many at a time: the memory a result takes.
STORE_PREFETCH = 1000
# URL parameters with which asyncpg reads files on the worker: its password file, a
# service definition (host and password included), a client certificate and its key,
# authorities. A flow must not borrow the worker's credentials, nor probe its files.
_WORKER_FILES = {
    "passfile": "a password file",
    "service": "a service definition file",
    "sslcert": "a client certificate",
    "sslkey": "a client certificate's key",
    "sslpassword": "a client certificate's key",
    "sslrootcert": "certificate authorities (give their PEM in sslRootCert)",
    "sslcrl": "a certificate revocation list",
}


class FetchType(StrEnum):
    NONE = "NONE"
    FETCH_ONE = "FETCH_ONE"
    FETCH = "FETCH"
    STORE = "STORE"


class SslMode(StrEnum):
    DISABLE = "DISABLE"
    PREFER = "PREFER"
    REQUIRE = "REQUIRE"
    VERIFY_CA = "VERIFY_CA"
    VERIFY_FULL = "VERIFY_FULL"


class PostgresQueryProperties(ConnectorProperties):
    url: str = Field(
        description="jdbc:postgresql://host:5432/db (Kestra's form) or postgresql://host/db."
    )
    username: str | None = Field(default=None, description="Overrides the URL's user.")
    password: str | None = Field(default=None, description="Use `{{ secret('…') }}`.")
    sql: str = Field(description="One or more statements separated by `;`, run in one transaction.")
    parameters: dict[str, Any] | list[Any] | None = Field(
        default=None,
        description="Values bound to `:name` placeholders (a mapping) or to `$1`, `$2`…"
        " (a list); never pasted into the SQL text.",
    )
    fetch_type: FetchType = Field(
        default=FetchType.NONE,
        alias="fetchType",
        description="What the last statement's rows become: NONE (nothing), FETCH_ONE"
        " (`row`, the first), FETCH (`rows`, all: they must fit in the 256 KiB of outputs)"
        " or STORE (a JSON Lines file in the file storage, one row per line, as FETCH gives"
        " them; output `uri`, which a later task's `inputFiles` takes).",
    )
    ssl_mode: SslMode | None = Field(
        default=None, alias="sslMode", description="Default: the URL's sslmode, else PREFER."
    )
    ssl_root_cert: str | None = Field(
        default=None,
        alias="sslRootCert",
        description="PEM of the authority that signed the server's certificate (VERIFY_CA,"
        " VERIFY_FULL).",
    )

    # Field validators: when a flow is loaded, a field may still hold an expression, and
    # only a field's own errors are excused for it.
    # Errors end with ", got …" (not the URL, which may hold a password), so that the flow
    # loader does not add the value itself.
    @field_validator("url")
    @classmethod
    def _postgres_url(cls, url: str) -> str:
        parts = urlsplit(url.removeprefix("jdbc:"))
        if parts.scheme not in ("postgresql", "postgres"):
            raise ValueError(
                "must start with jdbc:postgresql:// or postgresql://, got"
                f" {parts.scheme or 'no scheme'}:…"
            )
        for key, _ in parse_qsl(parts.query, keep_blank_values=True):
            if key in _WORKER_FILES:
                raise ValueError(
                    f"parameter {key} names {_WORKER_FILES[key]} on the worker, which a flow"
                    f" may not use, got ?{key}=…"
                )
        return url

    @field_validator("sql")
    @classmethod
    def _some_statement(cls, sql: str) -> str:
        if not split_statements(sql):
            raise ValueError("holds no statement")
        return sql


class PostgresQueryOutputs(BaseModel):
    row: dict[str, Any] | None = Field(default=None, description="FETCH_ONE: the first row.")
    rows: list[dict[str, Any]] | None = Field(default=None, description="FETCH: every row.")
    uri: str | None = Field(
        default=None,
        description="STORE: the JSON Lines file holding every row (`headrace:///…`), one"
        " JSON object per line.",
    )
    size: int = Field(
        description="Rows fetched or stored; with NONE, the count PostgreSQL reports for the"
        " last statement (rows inserted, updated, deleted or selected)."
    )


class PostgresQuery:
    """Runs SQL on PostgreSQL, all statements in one transaction.

    Either every statement takes effect or none does. Parameters are bound by the server,
    never pasted into the text. The last statement's rows become the outputs as
    `fetchType` asks; values are JSON (numbers, text, lists, objects; dates and times as
    ISO text, bytes as base64). STORE streams them into a JSON Lines file of the file
    storage, of any size, which exists once the transaction committed. A failing
    statement fails the task with PostgreSQL's message and its position; a kill or
    timeout cancels the running statement on the server.
    """

    Properties = PostgresQueryProperties
    Outputs = PostgresQueryOutputs
    aliases = ("io.kestra.plugin.jdbc.postgresql.Query",)
    uses_workdir = False

    async def run(
        self, properties: PostgresQueryProperties, context: TaskContext
    ) -> dict[str, Any]:
        statements = split_statements(properties.sql)
        if isinstance(properties.parameters, list) and len(statements) > 1:
            raise TaskFailed(
                "a list of `parameters` binds one statement: name them (`:name`) to use them in several"
            )
        files = None
        if properties.fetch_type is FetchType.STORE:  # before connecting: fail at once
            files = storage_of(context, "fetchType STORE")
        dsn, settings = _dsn(properties.url)
        connection = await _connect(properties, dsn, settings)
        try:
            await _json_codecs(connection)
            # Left after the transaction: a stored result becomes its URI only once the
            # transaction committed, so a failed one leaves no file behind.
            try:
                async with contextlib.AsyncExitStack() as stored, connection.transaction():
                    for number, statement in enumerate(statements, 1):
                        last = number == len(statements)
                        outputs = await _run_statement(
                            connection,
                            statement,
                            properties,
                            fetch=properties.fetch_type if last else FetchType.NONE,
                            label=f"statement {number} of {len(statements)}",
                            context=context,
                            files=files,
                            stored=stored,
                        )
            except asyncpg.PostgresError as exc:  # the statements' own are TaskFailed
                raise TaskFailed(f"the commit failed: {_describe(exc, '')}") from None
        finally:
            await asyncio.shield(_close(connection))
        return outputs


async def _connect(
    properties: PostgresQueryProperties, dsn: str, settings: dict[str, str]
) -> asyncpg.Connection:
    ssl = _ssl(properties)
    password = _flow_password(properties, dsn)
    addresses = _addresses(dsn, properties.username, password, ssl, settings)
    where = ",".join(map(_shown, addresses)) + (urlsplit(dsn).path or "/")
    await _check_servers(NetworkPolicy.from_environment(), addresses)
    try:
        return await asyncpg.connect(
            dsn,
            # Exactly the servers checked: given here, the URL's hosts are not read again.
            host=[_host(address) for address in addresses],
            port=[5432 if isinstance(address, str) else address[1] for address in addresses],
            user=properties.username,
            password=password,
            ssl=ssl,
            server_settings=settings or None,
            timeout=CONNECT_TIMEOUT_S,
        )
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise TaskFailed(f"could not connect to PostgreSQL at {where}: {exc}") from None


def _flow_password(properties: PostgresQueryProperties, dsn: str) -> str:
    """`password`, else the URL's (its user info, then `?password=`, as asyncpg reads
    them), else none: never the worker's PGPASSWORD or password file, which asyncpg would
    otherwise send to whatever server the flow names."""
    if properties.password is not None:
        return properties.password
    parts = urlsplit(dsn)
    if "@" in parts.netloc:
        secret = parts.netloc.partition("@")[0].partition(":")[2]
        if secret:
            return unquote(secret)
    return parse_qs(parts.query).get("password", [""])[-1]


def _addresses(
    dsn: str, user: str | None, password: str, ssl: Any, settings: dict[str, str]
) -> list[tuple[str, int] | str]:
    """The servers asyncpg connects to for these arguments, in order, read by asyncpg
    itself: the URL's hosts (the user info's before `?host=`), else PGHOST, else its
    defaults (Unix sockets, then localhost). A (host, port), or a Unix socket's path.
    (A private function of asyncpg's: the connector's tests pin what it answers.)"""
    try:
        addresses, _ = asyncpg.connect_utils._parse_connect_dsn_and_args(
            dsn=dsn,
            host=None,
            port=None,
            user=user,
            password=password,
            passfile=None,
            database=None,
            ssl=ssl,
            service=None,
            servicefile=None,
            direct_tls=None,
            server_settings=settings or None,
            target_session_attrs=None,
            krbsrvname=None,
            gsslib=None,
        )
    except (asyncpg.InterfaceError, ValueError, OSError) as exc:
        raise TaskFailed(f"url: {exc}") from None
    return list(addresses)


def _host(address: tuple[str, int] | str) -> str:
    return address if isinstance(address, str) else address[0]


def _shown(address: tuple[str, int] | str) -> str:
    if isinstance(address, str):
        return address
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _check_servers(policy: NetworkPolicy, addresses: list[tuple[str, int] | str]) -> None:
    """The operator's deny-list, applied to every server asyncpg would try (it resolves
    names itself). A Unix socket is on the worker's own machine: refused when its
    loopback addresses are."""
    if any(isinstance(address, str) for address in addresses) and policy.denies_this_machine():
        raise DeniedAddress(
            "a Unix socket is on the worker's own machine, which the workers may not reach"
            f" ({DENY_ENV} denies its loopback addresses): give the server's host in url"
        )
    servers = [address for address in addresses if not isinstance(address, str)]
    await policy.check_hosts(servers, "PostgreSQL server")


async def _close(connection: asyncpg.Connection) -> None:
    try:
        await connection.close(timeout=CLOSE_TIMEOUT_S)
    except Exception:
        connection.terminate()


async def _json_codecs(connection: asyncpg.Connection) -> None:
    """json and jsonb read as values; written from values, or from text that is JSON."""

    def encode(value: Any) -> str:
        return value if isinstance(value, str) else orjson.dumps(value).decode()

    for name in ("json", "jsonb"):
        await connection.set_type_codec(
            name, encoder=encode, decoder=orjson.loads, schema="pg_catalog"
        )


async def _run_statement(
    connection: asyncpg.Connection,
    statement: str,
    properties: PostgresQueryProperties,
    *,
    fetch: FetchType,
    label: str,
    context: TaskContext,
    files: TaskFiles | None,
    stored: contextlib.AsyncExitStack,
) -> dict[str, Any]:
    """Run one statement; STORE's file is left open in `stored`, to be closed (renamed
    into place) once the transaction committed."""
    started = time.monotonic()
    text, names = (
        named_parameters(statement) if isinstance(properties.parameters, dict) else (statement, [])
    )
    try:
        prepared = await connection.prepare(text)
        arguments = _arguments(prepared, properties.parameters, names, label)
        if fetch is FetchType.FETCH:
            records = await prepared.fetch(*arguments)
            outputs: dict[str, Any] = {
                "rows": [_row(record) for record in records],
                "size": len(records),
            }
            status = f"{len(records)} rows"
        elif fetch is FetchType.FETCH_ONE:
            record = await prepared.fetchrow(*arguments)
            outputs = {
                "row": None if record is None else _row(record),
                "size": 0 if record is None else 1,
            }
            status = "1 row" if record is not None else "no row"
        elif fetch is FetchType.STORE:
            assert files is not None  # `run` checked it
            rows = await stored.enter_async_context(
                json_lines_file(files, f"{context.task_id}.jsonl", context.mask)
            )
            # A cursor, not `fetch`: the rows come PREFETCH at a time, never all at once.
            async for record in prepared.cursor(*arguments, prefetch=STORE_PREFETCH):
                await rows.add(json_line(_row(record), f"row {rows.count + 1}"))
            outputs = {"uri": rows.uri, "size": rows.count}
            status = f"{rows.count} rows to {rows.uri}"
        else:
            await prepared.fetch(*arguments)
            status = prepared.get_statusmsg() or ""
            affected = _AFFECTED.search(status)
            outputs = {"size": int(affected.group(1)) if affected else 0}
    except asyncpg.PostgresError as exc:
        raise TaskFailed(f"{label} failed: {_describe(exc, text)}") from None
    except asyncpg.InterfaceError as exc:  # the client refused a value or a statement
        raise TaskFailed(f"{label} failed: {exc}") from None
    elapsed_ms = (time.monotonic() - started) * 1000
    await context.info(f"{label}: {status} ({elapsed_ms:.0f} ms)")
    return outputs


def _describe(exc: asyncpg.PostgresError, text: str) -> str:
    """PostgreSQL's message, where in the statement, its detail and hint."""
    parts = [f"{exc.sqlstate}: {exc}" if getattr(exc, "sqlstate", None) else str(exc)]
    position = getattr(exc, "position", None)
    if position:
        offset = int(position) - 1
        line = text.count("\n", 0, offset) + 1
        parts.append(f"at line {line} of the statement, near {text[offset : offset + 30]!r}")
    for extra in ("detail", "hint"):
        value = getattr(exc, extra, None)
        if value:
            parts.append(f"{extra}: {value}")
    return "; ".join(parts)


def _arguments(prepared: Any, parameters: Any, names: list[str], label: str) -> list[Any]:
    """The values to bind, in `$n` order, each made the type the server expects."""
    types = prepared.get_parameters()
    if isinstance(parameters, dict):
        missing = [name for name in names if name not in parameters]
        if missing:
            raise TaskFailed(f"{label} uses :{missing[0]}, which `parameters` does not give")
        values = [parameters[name] for name in names]
        shown = [f":{name}" for name in names]
        if len(values) != len(types):  # `$n` placeholders beside named ones
            raise TaskFailed(
                f"{label} takes {len(types)} parameter(s) but names {len(values)}: with a"
                " mapping of `parameters`, write every placeholder as :name"
            )
    else:
        values = list(parameters or [])
        shown = [f"${n}" for n in range(1, len(values) + 1)]
        if len(values) != len(types):
            raise TaskFailed(
                f"{label} takes {len(types)} parameter(s), `parameters` gives {len(values)}"
            )
    return [
        _coerce(value, kind.name, where)
        for value, kind, where in zip(values, types, shown, strict=True)
    ]


def _coerce(value: Any, type_name: str, where: str) -> Any:
    """`value` (from YAML or an expression: often text) as the Python type asyncpg
    encodes `type_name` from; a value that does not fit fails the task by parameter."""
    if value is None:
        return None
    try:
        if type_name.startswith("_") and isinstance(value, list):  # an array type
            return [_coerce(item, type_name[1:], where) for item in value]
        if type_name in ("int2", "int4", "int8", "oid"):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError("not a whole number")
            return int(value)
        if type_name in ("float4", "float8"):
            return float(value)
        if type_name == "numeric":
            return Decimal(str(value))
        if type_name == "bool":
            if isinstance(value, str) and value.lower() in ("true", "false"):
                return value.lower() == "true"
            if not isinstance(value, bool):
                raise ValueError("not true or false")
            return value
        if type_name in ("text", "varchar", "bpchar", "name"):
            return value if isinstance(value, str) else orjson.dumps(value).decode()
        if type_name in ("timestamptz", "timestamp") and isinstance(value, str):
            return datetime.fromisoformat(value)
        if type_name == "date" and isinstance(value, str):
            return date.fromisoformat(value)
        if type_name == "uuid" and isinstance(value, str):
            return UUID(value)
    except (TypeError, ValueError, ArithmeticError) as exc:
        raise TaskFailed(
            f"parameter {where}: {value!r} is not a valid {type_name} ({exc})"
        ) from None
    return value


def _row(record: asyncpg.Record) -> dict[str, Any]:
    return {key: _json_value(value) for key, value in record.items()}


def _json_value(value: Any) -> Any:
    """A value PostgreSQL returned, as JSON can carry it."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return isodate.duration_isoformat(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, list | tuple):
        return [_json_value(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _json_value(item) for key, item in value.items()}
    if isinstance(value, asyncpg.Record):
        return _row(value)
    return str(value)  # UUID, time, inet, ranges…: their text form


def _dsn(url: str) -> tuple[str, dict[str, str]]:
    """A libpq URL from Kestra's JDBC one, and the server settings its JDBC-only
    parameters stand for."""
    parts = urlsplit(url.removeprefix("jdbc:"))
    query, settings = [], {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in _JDBC_SETTINGS:
            settings[_JDBC_SETTINGS[key]] = value
        elif key == "ssl" and value.lower() == "true":
            query.append(("sslmode", "require"))
        else:
            query.append((key, value))
    return urlunsplit(parts._replace(scheme="postgresql", query=urlencode(query))), settings


def _ssl(properties: PostgresQueryProperties) -> Any:
    """asyncpg's `ssl` argument for `sslMode` (None: the URL's sslmode decides)."""
    mode = properties.ssl_mode
    if mode is None:
        return None
    if mode in (SslMode.DISABLE, SslMode.PREFER, SslMode.REQUIRE):
        return mode.value.lower()
    try:
        context = ssl.create_default_context(cadata=properties.ssl_root_cert or None)
    except ssl.SSLError as exc:
        raise TaskFailed(f"sslRootCert is not a PEM certificate: {exc}") from None
    context.check_hostname = mode is SslMode.VERIFY_FULL
    return context
