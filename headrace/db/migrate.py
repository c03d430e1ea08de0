"""Bring the schema up to date: the numbered SQL files of `migrations/`, each applied once.

Several services start at once and each calls `migrate`; a session advisory lock
serialises them, and `schema_migrations` records what has been applied, so the second
caller finds nothing to do. Each file runs in its own transaction with its version row.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import resources

import asyncpg

log = logging.getLogger(__name__)

# Arbitrary, fixed key of the advisory lock held while migrating ("hdrc" in ASCII).
MIGRATION_LOCK_KEY = 0x68647263


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def bundled_migrations() -> list[Migration]:
    folder = resources.files("headrace.db") / "migrations"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append(Migration(version, entry.name, entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    return found


async def migrate(
    pool_or_conn: asyncpg.Pool | asyncpg.Connection, migrations: list[Migration] | None = None
) -> list[int]:
    """Apply pending migrations; returns the versions applied by this call."""
    if isinstance(pool_or_conn, asyncpg.Pool):
        async with pool_or_conn.acquire() as conn:
            return await _migrate(conn, migrations)
    return await _migrate(pool_or_conn, migrations)


async def _migrate(conn: asyncpg.Connection, migrations: list[Migration] | None) -> list[int]:
    pending = bundled_migrations() if migrations is None else migrations
    applied_now: list[int] = []
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for migration in pending:
            if migration.version in done:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version) VALUES ($1)", migration.version
                )
            log.info("applied migration %s", migration.name)
            applied_now.append(migration.version)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    return applied_now


async def migrate_url(url: str) -> list[int]:
    """Apply pending migrations through a short-lived connection to `url`."""
    conn = await asyncpg.connect(url)
    try:
        return await migrate(conn)
    finally:
        await conn.close()
