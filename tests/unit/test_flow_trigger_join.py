"""The flow-trigger consumer gives up on a join that hangs and tries again, then fails
loudly (the scheduler exits and is restarted) instead of never becoming ready."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest

from headrace.config import Settings
from headrace.services.scheduler import flow_triggers
from headrace.services.scheduler.flow_triggers import FlowTriggers


async def test_a_join_that_hangs_is_retried_then_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    connections = 0

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1  # a "broker" that accepts and never answers
        await reader.read()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    monkeypatch.setattr(flow_triggers, "JOIN_TIMEOUT_S", {True: 0.5, False: 0.5})
    settings = dataclasses.replace(
        Settings(), kafka_bootstrap=f"127.0.0.1:{port}", low_latency=True
    )
    component = FlowTriggers(settings, None, None, None)  # type: ignore[arg-type]
    began = time.monotonic()
    async with server:
        with pytest.raises(TimeoutError):
            await component.start()
    assert connections >= flow_triggers.JOIN_ATTEMPTS  # one new consumer per attempt
    assert time.monotonic() - began < 10
