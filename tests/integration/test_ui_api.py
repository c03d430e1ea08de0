"""The API the web UI reads, on a real gateway (socket, broker, PostgreSQL): the
executions list's filters, the dashboard's statistics (with metrics targets that are down
or hang), the blueprints, the warnings of a validation, and what `headrace server local`
prints and hands its gateway.

The gateway here has a database of its own, so that the statistics are exact: the
executions are written into it as the indexer writes them (`write_batch`), with known
states, labels and creation times.
"""

from __future__ import annotations

import dataclasses
import itertools
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from headrace.broker import free_port
from headrace.config import Settings
from headrace.db.indexing import write_batch
from headrace.db.pool import create_pool
from headrace.ids import base62
from headrace.messages import (
    AttemptSnapshot,
    ExecutionEvent,
    ExecutionSnapshot,
    StateChange,
    TaskRunSnapshot,
)
from headrace.passwords import token_digest
from headrace.services.gateway.stats_api import SCRAPE_TIMEOUT_S
from headrace.states import State
from tests.conftest import scratch_database
from tests.integration.stacks import in_process_gateway

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
YAML = {"Content-Type": "application/x-yaml"}
READER_TOKEN = "reader-" + uuid.uuid4().hex
NS = f"test.ui{uuid.uuid4().hex[:6]}"
NOW = datetime.now(UTC)


# ------------------------------------------------------------------ the gateway


@pytest.fixture(scope="module")
def own_database(postgres_server_url: str) -> Iterator[str]:
    """A database of this module's own: the statistics count every execution in it."""
    with scratch_database(postgres_server_url, "headrace_test_ui") as url:
        yield url


@pytest.fixture(scope="module")
def silent_target() -> Iterator[str]:
    """A metrics target that takes the connection and never answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)  # the kernel accepts; nobody reads or writes
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


@pytest.fixture(scope="module")
def down_target() -> str:
    """A metrics target nothing listens on."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture(scope="module")
def ui_settings(
    settings: Settings,
    own_database: str,
    silent_target: str,
    down_target: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Settings:
    credentials = tmp_path_factory.mktemp("ui-auth") / "credentials.toml"
    credentials.write_text(
        f'[[tokens]]\nname = "dashboard"\nrole = "reader"\nsha256 = "{token_digest(READER_TOKEN)}"\n'
    )
    return dataclasses.replace(
        settings,
        database_url=own_database,
        credentials_file=str(credentials),
        metrics_targets=(down_target, silent_target),
    )


@pytest.fixture(scope="module")
async def base_url(ui_settings: Settings) -> AsyncIterator[str]:
    async with in_process_gateway(ui_settings) as url:
        yield url


@pytest.fixture
async def http(base_url: str, auth_headers: dict[str, str]) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url, headers=auth_headers) as session:
        yield session


async def answer(response: aiohttp.ClientResponse) -> tuple[int, Any]:
    assert response.content_type == "application/json", await response.text()
    return response.status, await response.json()


# ------------------------------------------------------------------ known executions


@dataclasses.dataclass(frozen=True)
class Seeded:
    """name -> (execution id, namespace, flow id, state, created at, labels)."""

    rows: dict[str, tuple[str, str, str, State, datetime, dict[str, str]]]

    def id(self, name: str) -> str:
        return self.rows[name][0]

    def ids(self, *names: str) -> set[str]:
        return {self.id(name) for name in names}


SEED = {
    # name: namespace, flow id, state, minutes ago, labels
    "a": (NS, "load", State.SUCCESS, 30, {"team": "data", "env": "prod"}),
    "b": (NS, "load", State.FAILED, 120, {"team": "data", "env": "dev"}),
    "c": (NS + ".sub", "Report-Daily", State.FAILED, 180, {"team": "ml"}),
    "d": (NS + ".sub", "Report-Daily", State.SUCCESS, 300, {}),
    "e": (NS + "-other", "load", State.SUCCESS, 60, {}),  # not below NS
    "f": (NS, "load", State.RUNNING, 10, {}),
    "g": (NS, "wait", State.PAUSED, 20, {}),
    "h": (NS, "load", State.CREATED, 1, {}),
    "i": (NS, "load", State.QUEUED, 2, {}),
    "j": (NS, "load", State.FAILED, 30 * 60, {}),  # 30 hours ago: outside a day
}


def _event(execution_id: str, row: tuple, seq: int = 1) -> ExecutionEvent:
    namespace, flow_id, state, minutes, labels = row
    created = NOW - timedelta(minutes=minutes)
    history = [StateChange(State.CREATED, created)]
    if state != State.CREATED:
        history.append(StateChange(state, created + timedelta(seconds=1)))
    snapshot = ExecutionSnapshot(namespace, flow_id, 1, state, history, {}, labels=labels)
    runs = []
    if state == State.RUNNING:
        run_history = [StateChange(State.RUNNING, created)]
        runs = [
            TaskRunSnapshot(
                execution_id + "-t",
                "t",
                State.RUNNING,
                run_history,
                [AttemptSnapshot(State.RUNNING)],
            )
        ]
    return ExecutionEvent(execution_id, seq, created, execution=snapshot, task_runs=runs)


@pytest.fixture(scope="module")
async def seeded(base_url: str, own_database: str) -> Seeded:
    rows = {}
    events = []
    for name, row in SEED.items():
        execution_id = base62(uuid.uuid4().int)
        events.append(_event(execution_id, row))
        namespace, flow_id, state, minutes, labels = row
        rows[name] = (
            execution_id,
            namespace,
            flow_id,
            state,
            NOW - timedelta(minutes=minutes),
            labels,
        )
    pool = await create_pool(own_database)  # migrated by the gateway
    try:
        async with pool.acquire() as conn:
            await write_batch(conn, events, [])
    finally:
        await pool.close()
    return Seeded(rows)


async def listed(http: aiohttp.ClientSession, params: Any) -> tuple[set[str], dict]:
    async with http.get("/api/v1/executions", params=params) as response:
        status, body = await answer(response)
    assert status == 200, body
    return {item["id"] for item in body["results"]}, body


# ------------------------------------------------------------------ the list's filters


async def test_each_filter_of_the_executions_list(
    http: aiohttp.ClientSession, seeded: Seeded
) -> None:
    everything = set(seeded.ids(*SEED))
    assert (await listed(http, {"size": 100}))[0] == everything
    below = everything - seeded.ids("e")
    assert (await listed(http, {"namespace": NS}))[0] == below
    assert (await listed(http, {"namespace": NS + ".sub"}))[0] == seeded.ids("c", "d")
    assert (await listed(http, {"flowId": "Report-Daily"}))[0] == seeded.ids("c", "d")
    assert (await listed(http, {"namespace": NS, "flowId": "load"}))[0] == seeded.ids(
        "a", "b", "f", "h", "i", "j"
    )
    # States: repeated, comma-separated, any case.
    assert (await listed(http, {"state": "failed"}))[0] == seeded.ids("b", "c", "j")
    both = seeded.ids("b", "c", "j", "g")
    assert (await listed(http, [("state", "FAILED"), ("state", "PAUSED")]))[0] == both
    assert (await listed(http, {"state": "FAILED,paused"}))[0] == both
    # Labels: every one given must match.
    assert (await listed(http, {"labels": "team:data"}))[0] == seeded.ids("a", "b")
    both_labels = [("labels", "team:data"), ("labels", "env:prod")]
    assert (await listed(http, both_labels))[0] == seeded.ids("a")
    # Created within [startDate, endDate].
    window = {
        "startDate": (NOW - timedelta(hours=4)).isoformat(),
        "endDate": (NOW - timedelta(minutes=90)).isoformat(),
    }
    assert (await listed(http, window))[0] == seeded.ids("b", "c")
    no_offset = (NOW - timedelta(minutes=15)).replace(tzinfo=None).isoformat()  # read as UTC
    assert (await listed(http, {"startDate": no_offset}))[0] == seeded.ids("f", "h", "i")
    # q: an id's start, or text in a flow id or namespace, in any case.
    prefix = seeded.id("a")[:8]
    assert seeded.id("a") in (await listed(http, {"q": prefix.swapcase()}))[0]
    assert (await listed(http, {"q": "report-DAILY"}))[0] == seeded.ids("c", "d")
    assert (await listed(http, {"q": NS[5:].upper() + "-OTH"}))[0] == seeded.ids("e")
    for wildcard in ("%", "_"):  # LIKE's wildcards are text here
        assert (await listed(http, {"q": wildcard}))[0] == set()
    # All at once.
    combined = {
        "namespace": NS,
        "state": "FAILED",
        "startDate": (NOW - timedelta(days=1)).isoformat(),
    }
    assert (await listed(http, combined))[0] == seeded.ids("b", "c")


async def test_the_list_pages_newest_first_with_its_total(
    http: aiohttp.ClientSession, seeded: Seeded
) -> None:
    newest = sorted(seeded.rows.values(), key=lambda row: row[4], reverse=True)  # none tie
    expected = [row[0] for row in newest if row[1] == NS or row[1].startswith(NS + ".")]
    _, first = await listed(http, {"namespace": NS, "size": 4})
    assert first["total"] == len(expected) == 9 and (first["page"], first["size"]) == (1, 4)
    _, third = await listed(http, {"namespace": NS, "size": 4, "page": 3})
    assert [r["id"] for r in first["results"]] == expected[:4]
    assert [r["id"] for r in third["results"]] == expected[8:]


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"state": "NOPE"}, "state"),
        ({"startDate": "yesterday"}, "startDate"),
        ({"endDate": "2026-13-01"}, "endDate"),
        ({"startDate": "0001-01-01T00:00:00+14:00"}, "startDate"),
        ({"labels": "no-colon"}, "no-colon"),
        ({"q": "x" * 201}, "q"),
        ([("namespace", "a"), ("namespace", "b")], "namespace"),
        ({"timeRange": "PT1H"}, "timeRange"),
        ({"filters[namespace][CONTAINS]": "x"}, "CONTAINS"),
    ],
)
async def test_a_bad_filter_is_a_400_naming_it(
    http: aiohttp.ClientSession, params: Any, named: str
) -> None:
    async with http.get("/api/v1/executions", params=params) as response:
        status, body = await answer(response)
    assert status == 400 and named in body["message"], body


# ------------------------------------------------------------------ the dashboard


async def stats(http: aiohttp.ClientSession, hours: int | None = None) -> dict:
    params = {} if hours is None else {"hours": hours}
    async with http.get("/api/v1/stats", params=params) as response:
        status, body = await answer(response)
    assert status == 200, body
    return body


async def test_stats_count_the_window_by_state_bucket_and_flow(
    http: aiohttp.ClientSession, seeded: Seeded
) -> None:
    day = await stats(http)
    assert day["bucketSeconds"] == 3600
    starts = [datetime.fromisoformat(b["start"]) for b in day["buckets"]]
    assert 24 <= len(starts) <= 49
    assert all(
        later - earlier == timedelta(hours=1) for earlier, later in itertools.pairwise(starts)
    )
    assert starts[0] == datetime.fromisoformat(day["from"])
    assert starts[-1] <= datetime.fromisoformat(day["to"]) < starts[-1] + timedelta(hours=1)
    # Everything but `j` (30 hours ago), by current state.
    expected = {"SUCCESS": 3, "FAILED": 2, "RUNNING": 1, "PAUSED": 1, "CREATED": 1, "QUEUED": 1}
    assert day["states"] == expected
    summed: dict[str, int] = {}
    for bucket in day["buckets"]:
        for state, n in bucket["counts"].items():
            summed[state] = summed.get(state, 0) + n
    assert summed == expected
    # Each execution in the bucket of its creation.
    for name in ("b", "c"):
        created = seeded.rows[name][4]
        (bucket,) = [
            b
            for b, s in zip(day["buckets"], starts, strict=True)
            if s <= created < s + timedelta(hours=1)
        ]
        assert bucket["counts"].get("FAILED", 0) >= 1
    # Failures by flow: most failures first, then by namespace and flow; totals of the window.
    assert day["failuresByFlow"] == [
        {"namespace": NS, "flowId": "load", "failed": 1, "total": 5},
        {"namespace": NS + ".sub", "flowId": "Report-Daily", "failed": 1, "total": 2},
    ]
    assert day["now"] == {"running": 1, "queued": 2, "paused": 1, "taskRunsRunning": 1}

    two_days = await stats(http, 48)
    assert two_days["bucketSeconds"] == 7200 and two_days["states"]["FAILED"] == 3
    assert two_days["failuresByFlow"][0] == {
        "namespace": NS,
        "flowId": "load",
        "failed": 2,
        "total": 6,
    }
    month = await stats(http, 720)
    assert month["bucketSeconds"] == 86400 and 24 <= len(month["buckets"]) <= 49


async def test_a_metrics_target_down_or_silent_is_listed_not_failed(
    http: aiohttp.ClientSession, down_target: str, silent_target: str
) -> None:
    started = time.monotonic()
    body = await stats(http, 1)
    took = time.monotonic() - started
    # Both were tried at once, each within the timeout.
    assert took < 2 * SCRAPE_TIMEOUT_S, took
    workers = body["workers"]
    assert workers["configured"] is True
    by_url = {service["url"]: service for service in workers["services"]}
    assert list(by_url) == [down_target, silent_target]
    for service in by_url.values():
        assert service["up"] is False and service["error"]
        assert service["service"] is None and service["slots"] is None
    assert "no answer within" in by_url[silent_target]["error"]


@pytest.mark.parametrize("hours", ["0", "721", "a day"])
async def test_stats_hours_out_of_range_is_a_400(http: aiohttp.ClientSession, hours: str) -> None:
    async with http.get("/api/v1/stats", params={"hours": hours}) as response:
        status, body = await answer(response)
    assert status == 400 and "hours" in body["message"]


# ------------------------------------------------------------------ blueprints


def example_stems() -> set[str]:
    return {path.stem for path in EXAMPLES.glob("*.yaml")}


async def test_blueprints_are_the_examples(http: aiohttp.ClientSession) -> None:
    async with http.get("/api/v1/blueprints") as response:
        status, body = await answer(response)
    assert status == 200
    assert {b["id"] for b in body["results"]} == example_stems()  # every one loads
    assert body["total"] == len(body["results"])
    hello = next(b for b in body["results"] if b["id"] == "hello")
    assert hello == {
        "id": "hello",
        "title": "The smallest useful flow - an input, three tasks, outputs passed along",
        "description": "The smallest useful flow - an input, three tasks, outputs passed along.",
        "namespace": "examples",
        "flowId": "hello",
        "taskTypes": hello["taskTypes"],
        "triggerTypes": [],
        "inputs": 1,
        "source": (EXAMPLES / "hello.yaml").read_text(),
    }
    assert hello["taskTypes"][0] == "log" and len(hello["taskTypes"]) >= 2
    webhook = next(b for b in body["results"] if b["id"] == "on-webhook")
    assert webhook["triggerTypes"] == ["webhook"]
    async with http.get("/api/v1/blueprints/hello") as response:
        assert await answer(response) == (200, hello)
    async with http.get("/api/v1/blueprints/no-such") as response:
        status, body = await answer(response)
    assert status == 404 and "no-such" in body["message"]


async def copy(
    http: aiohttp.ClientSession, blueprint: str, body: Any, **kw: Any
) -> tuple[int, Any]:
    async with http.post(f"/api/v1/blueprints/{blueprint}/copy", json=body, **kw) as response:
        return await answer(response)


async def test_a_blueprint_is_copied_into_a_namespace_once(http: aiohttp.ClientSession) -> None:
    namespace = f"test.bp{uuid.uuid4().hex[:8]}"
    status, flow = await copy(http, "hello", {"namespace": namespace})
    assert status == 201, flow
    assert (flow["namespace"], flow["id"], flow["revision"]) == (namespace, "hello", 1)
    original = (EXAMPLES / "hello.yaml").read_text()
    # Only the top-level namespace changed.
    assert flow["source"] == original.replace("namespace: examples", f"namespace: {namespace}", 1)
    async with http.get(f"/api/v1/flows/{namespace}/hello") as response:
        assert (await answer(response))[1]["source"] == flow["source"]
    status, body = await copy(http, "hello", {"namespace": namespace})
    assert status == 409 and "already exists" in body["message"]
    status, renamed = await copy(http, "hello", {"namespace": namespace, "id": "hello-two"})
    assert status == 201 and renamed["id"] == "hello-two"
    assert "\nid: hello-two\n" in "\n" + renamed["source"]
    # A namespace YAML would read as a number is written quoted: it stays text.
    digits = str(uuid.uuid4().int)[:9]
    status, numeric = await copy(http, "etl", {"namespace": digits})
    assert status == 201 and numeric["namespace"] == digits, numeric


@pytest.mark.parametrize(
    ("body", "status", "said"),
    [
        ({"namespace": "Not A Namespace"}, 422, "namespace"),
        ({"namespace": "team.ok", "id": "no spaces allowed"}, 422, "id"),
        ({}, 400, "namespace"),
        ({"namespace": 12}, 400, "namespace"),
        ({"namespace": "team.ok", "id": 3}, 400, "id"),
        (["team.ok"], 400, "JSON object"),
    ],
)
async def test_a_bad_copy_says_why(
    http: aiohttp.ClientSession, body: Any, status: int, said: str
) -> None:
    got, answered = await copy(http, "hello", body)
    assert got == status, answered
    if status == 422:  # the flow's own validation: the field is the error's path
        assert said in [error["path"] for error in answered["errors"]], answered
    else:
        assert said in answered["message"]


async def test_a_reader_reads_blueprints_and_cannot_copy(base_url: str) -> None:
    reader = {"Authorization": f"Bearer {READER_TOKEN}"}
    async with aiohttp.ClientSession(base_url, headers=reader) as http:
        async with http.get("/api/v1/blueprints/hello") as response:
            assert response.status == 200
        async with http.get("/api/v1/stats", params={"hours": 1}) as response:
            assert response.status == 200
        status, body = await copy(http, "hello", {"namespace": "test.reader"})
    assert status == 403, body


# ------------------------------------------------------------------ validation warnings

WARNED = """\
id: warned
namespace: test.ui
tasks:
  - id: x
    type: log
    message: hi
    workerGroup:
      key: gpu
"""


async def test_validate_answers_the_warnings_of_a_valid_flow(http: aiohttp.ClientSession) -> None:
    async with http.post("/api/v1/flows/validate", data=WARNED, headers=YAML) as response:
        status, body = await answer(response)
    assert status == 200 and body["valid"] is True and body["errors"] == []
    (warning,) = body["warnings"]
    assert (warning["path"], warning["line"], warning["column"]) == ("tasks[0].workerGroup", 7, 5)
    assert "workerGroup" in warning["message"]
    clean = WARNED.split("    workerGroup")[0]
    async with http.post("/api/v1/flows/validate", data=clean, headers=YAML) as response:
        assert (await answer(response))[1]["warnings"] == []
    broken = WARNED.replace("type: log", "type: no-such-type")
    async with http.post("/api/v1/flows/validate", data=broken, headers=YAML) as response:
        status, body = await answer(response)
    assert status == 200 and body["valid"] is False and body["errors"] and body["warnings"] == []


# ------------------------------------------------------------------ server local
