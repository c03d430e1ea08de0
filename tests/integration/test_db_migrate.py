"""Migrations: applied once, idempotent, safe when several services start together."""

from __future__ import annotations

import asyncio

import asyncpg

from headrace.db.migrate import bundled_migrations, migrate


async def test_migrations_are_numbered_and_bundled() -> None:
    versions = [m.version for m in bundled_migrations()]
    assert versions[0] == 1
    assert versions == sorted(set(versions))


async def test_migrate_twice_applies_nothing_the_second_time(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn)  # may have been applied by another test already
        assert await migrate(conn) == []
        applied = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert [r["version"] for r in applied] == [m.version for m in bundled_migrations()]
        tables = {
            r["tablename"]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")
        }
        assert {"flows", "executions", "task_runs", "logs", "schema_migrations"} <= tables
    finally:
        await conn.close()


async def test_concurrent_migrations_on_a_fresh_database(postgres_server_url: str) -> None:
    # A database of its own: the session database is already migrated.
    name = "headrace_test_migrate_race"
    admin = await asyncpg.connect(postgres_server_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
        base = postgres_server_url.rpartition("/")[0]
        conns = [await asyncpg.connect(f"{base}/{name}") for _ in range(4)]
        try:
            results = await asyncio.gather(*(migrate(c) for c in conns))
            # Exactly one caller applied each migration; the others found nothing to do.
            applied = sorted(v for result in results for v in result)
            assert applied == [m.version for m in bundled_migrations()]
        finally:
            for conn in conns:
                await conn.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
