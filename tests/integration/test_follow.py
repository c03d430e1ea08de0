"""Following an execution live over Server-Sent Events, and the stored logs' filters.

A task prints a line, then waits for a file the test creates: its first line must reach
the follower while the execution is still running (live, not after the fact), the rest
after, each once; a reconnect with `Last-Event-ID` resumes without a gap or a repeat.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from headrace.api_client import ApiClient, ApiError
from headrace.config import Settings
from headrace.db.indexing import write_batch
from headrace.ids import base62
from headrace.local import LocalStack
from headrace.messages import LogLevel, LogRecord
from headrace.services.gateway import follow
from headrace.sse import Event, EventParser
from tests.integration.stacks import in_process_gateway, run_cli, running_stack
from tests.integration.waiting import wait_until

NAMESPACE = "tests.follow"
GATED = """
id: gated
namespace: tests.follow
inputs:
  - id: gate
    type: STRING
tasks:
  - id: before
    type: shell
    env:
      GATE: "{{ inputs.gate }}"
    commands:
      - echo "line one"
      - echo "a warning" >&2
      - 'while [ ! -e "$GATE" ]; do sleep 0.02; done'
      - echo "line two"
  - id: after
    type: log
    message: "the end"
"""


@pytest.fixture(scope="module")
def stack(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with running_stack(settings, tmp_path_factory, "follow") as stack:
        ApiClient(stack.url).request(
            "PUT",
            f"/flows/{NAMESPACE}/gated",
            body=GATED.encode(),
            content_type="application/x-yaml",
        )
        yield stack


@pytest.fixture
async def http(auth_headers: dict[str, str]) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers=auth_headers) as session:
        yield session


def start_gated(stack: LocalStack, gate: Path) -> str:
    execution = ApiClient(stack.url).request(
        "POST", f"/executions/{NAMESPACE}/gated", json_body={"gate": str(gate)}
    )
    return execution["id"]


async def read_events(response: aiohttp.ClientResponse, until: str = "end") -> AsyncIterator[Event]:
    parser = EventParser()
    async for raw in response.content:
        event = parser.feed(raw.decode())
        if event is not None:
            yield event
            if event.event == until:
                return


async def next_event(events: AsyncIterator[Event]) -> Event:
    return await asyncio.wait_for(anext(events), 30)


async def test_lines_arrive_live_then_the_stream_ends(
    stack: LocalStack, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    execution_id = start_gated(stack, gate)
    url = f"{stack.url}/api/v1/logs/{execution_id}/follow"
    async with http.get(url) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        events = read_events(response)
        first = await next_event(events)
        assert (first.event, json.loads(first.data)["message"]) == ("log", "line one")
        second = await next_event(events)
        assert json.loads(second.data)["level"] == "WARN"
        # Still running: the task waits for the gate. These lines came live.
        running = ApiClient(stack.url).request("GET", f"/executions/{execution_id}")
        assert running["state"]["current"] == "RUNNING"
        gate.touch()
        rest = [event async for event in events]
    assert [json.loads(e.data)["message"] for e in rest[:-1]] == ["line two", "the end"]
    assert rest[-1].event == "end" and json.loads(rest[-1].data) == {"state": "SUCCESS"}
    ids = [int(e.id) for e in [first, second, *rest[:-1]] if e.id is not None]
    assert ids == sorted(set(ids)) and len(ids) == 4  # ascending, none twice

    # Resuming after the second line: the rest, nothing before it, nothing twice.
    async with http.get(url, headers={"Last-Event-ID": second.id or ""}) as response:
        resumed = [event async for event in read_events(response)]
    assert [json.loads(e.data)["message"] for e in resumed[:-1]] == ["line two", "the end"]
    async with http.get(url, params={"lastEventId": "x"}) as response:
        assert response.status == 400
    # Filters are those of the stored lines.
    async with http.get(url, params={"minLevel": "WARN"}) as response:
        only = [event async for event in read_events(response)]
    assert [json.loads(e.data)["message"] for e in only[:-1]] == ["a warning"]


async def test_the_execution_follow_stream_shows_each_change_then_ends(
    stack: LocalStack, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    execution_id = start_gated(stack, gate)
    url = f"{stack.url}/api/v1/executions/{execution_id}/follow"
    async with http.get(url) as response:
        events = read_events(response)
        seen: list[dict[str, Any]] = []
        while not any(run["taskId"] == "before" for e in seen for run in e["taskRunList"]):
            event = await next_event(events)
            assert event.event == "execution"
            seen.append(json.loads(event.data))
        gate.touch()
        rest = [event async for event in events]
    executions = seen + [json.loads(e.data) for e in rest if e.event == "execution"]
    ids = [e.id for e in rest if e.id is not None]
    assert rest[-1].event == "end" and json.loads(rest[-1].data) == {"state": "SUCCESS"}
    assert executions[-1]["state"]["current"] == "SUCCESS"
    # Each event holds the task runs that changed since the one before: together, every
    # run's latest state.
    runs = {run["taskId"]: run["state"]["current"] for e in executions for run in e["taskRunList"]}
    assert runs == {"before": "SUCCESS", "after": "SUCCESS"}
    assert len(executions[-1]["taskRunList"]) < 2  # the last change, not the whole list
    assert ids == sorted(ids, key=int) and len(set(ids)) == len(ids)
    # An ended execution: its last state at once, then the end.
    async with http.get(url) as response:
        replay = [event async for event in read_events(response)]
    assert [e.event for e in replay] == ["execution", "end"]


async def test_unknown_executions_and_missing_tokens_are_refused(
    stack: LocalStack, http: aiohttp.ClientSession
) -> None:
    for path in ("/logs/nope/follow", "/executions/nope/follow", "/logs/nope/download"):
        async with http.get(stack.url + "/api/v1" + path) as response:
            assert response.status == 404, path
        async with (
            aiohttp.ClientSession() as anonymous,
            anonymous.get(stack.url + "/api/v1" + path) as response,
        ):
            assert response.status == 401, path


async def test_stored_lines_filter_and_download_as_text(
    stack: LocalStack, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    gate.touch()
    execution_id = start_gated(stack, gate)
    api = ApiClient(stack.url)

    def four_lines() -> list[dict[str, Any]]:
        try:
            found = api.request("GET", f"/logs/{execution_id}")
        except ApiError as exc:  # 404 until the indexer has seen the execution
            assert exc.status == 404
            return []
        return found if len(found) >= 4 else []

    lines = wait_until(four_lines, what="the execution's four lines")
    by_task = api.request("GET", f"/logs/{execution_id}", params={"taskId": "after"})
    assert [line["message"] for line in by_task] == ["the end"]
    warn = api.request("GET", f"/logs/{execution_id}", params={"minLevel": "warn"})
    assert [line["message"] for line in warn] == ["a warning"]
    first_time = lines[0]["timestamp"]
    later = api.request("GET", f"/logs/{execution_id}", params={"endDate": first_time})
    assert later == []  # endDate excludes the line at that instant
    since = api.request("GET", f"/logs/{execution_id}", params={"startDate": first_time})
    assert len(since) == 4
    async with http.get(
        f"{stack.url}/api/v1/logs/{execution_id}", params={"startDate": "yesterday"}
    ) as response:
        assert response.status == 400
        assert "startDate" in (await response.json())["message"]
    async with http.get(f"{stack.url}/api/v1/logs/{execution_id}/download") as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    rows = text.splitlines()
    assert len(rows) == 4 and rows[0].endswith(" INFO  before#1 line one")
    assert rows[-1].endswith(" INFO  after#1 the end")


def test_the_cli_follows_the_logs_until_the_end(stack: LocalStack, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    gate.touch()
    execution_id = start_gated(stack, gate)
    done = run_cli(stack, "logs", execution_id, "--follow")
    assert done.returncode == 0, done.stderr
    printed = done.stdout.splitlines()
    # A program's stdout and stderr are two pipes: their lines may interleave either way.
    assert sorted(" ".join(line.split()[-2:]) for line in printed[:3]) == [
        "a warning",
        "line one",
        "line two",
    ]
    assert printed[3].split()[-2:] == ["the", "end"]
    assert printed[-1] == f"execution {execution_id} ended SUCCESS"


async def test_lines_of_an_execution_that_never_existed_end_their_stream(
    settings: Settings,
    auth_headers: dict[str, str],
    migrated_pool: asyncpg.Pool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A kill of an id the executor never held leaves a line and no execution: its
    follower gets the line, then the end (no state), instead of waiting forever."""
    monkeypatch.setattr(follow, "UNKNOWN_GRACE_S", 0.5)  # a gateway in this process
    ghost = base62(uuid.uuid4().int)
    line = LogRecord(
        id=f"{ghost}-1",
        execution_id=ghost,
        namespace=NAMESPACE,
        flow_id="gated",
        time=datetime.now(UTC),
        level=LogLevel.ERROR,
        message="kill of an unknown execution",
    )
    async with migrated_pool.acquire() as conn:
        await write_batch(conn, [], [line])
    async with (
        in_process_gateway(settings) as url,
        aiohttp.ClientSession(headers=auth_headers) as http,
    ):
        async with http.get(f"{url}/api/v1/logs/{ghost}/follow") as response:
            events = [event async for event in read_events(response)]
        assert [(e.event, json.loads(e.data).get("message")) for e in events] == [
            ("log", "kill of an unknown execution"),
            ("end", None),
        ]
        assert json.loads(events[-1].data) == {"state": None}
        # An execution stream needs an execution: 404 once the grace is over.
        async with http.get(f"{url}/api/v1/executions/{ghost}/follow") as response:
            assert response.status == 404
        too_big = str(2**63)
        async with http.get(
            f"{url}/api/v1/logs/{ghost}/follow", headers={"Last-Event-ID": too_big}
        ) as response:
            assert response.status == 400
