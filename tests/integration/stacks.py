"""The stack a test module runs against: the five services as child processes."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest

from headrace.broker import free_port
from headrace.config import Settings
from headrace.db.migrate import migrate_url
from headrace.local import LocalStack


@contextlib.contextmanager
def running_stack(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory, logs: str, **changes: Any
) -> Iterator[LocalStack]:
    """A started stack on the session's broker and database, its gateway on a free port,
    its service logs in a temporary folder named after `logs`; stopped on exit."""
    asyncio.run(migrate_url(settings.database_url))
    stack = LocalStack(
        dataclasses.replace(settings, gateway_port=free_port(), **changes),
        log_dir=tmp_path_factory.mktemp(logs),
    )
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
