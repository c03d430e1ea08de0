"""The worker's pure parts: offset bookkeeping and one attempt run without Kafka."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest

from headrace.connectors.base import ConnectorProperties, TaskContext
from headrace.connectors.registry import connector_classes
from headrace.expressions import SECRET_MARKER_PREFIX, SECRET_MARKER_SUFFIX
from headrace.messages import LogLevel, LogRecord, TaskRequest
from headrace.services.worker.offsets import OffsetTracker
from headrace.services.worker.runner import MASK, run_attempt
from headrace.states import State

# --- OffsetTracker -------------------------------------------------------------------


def test_nothing_is_committable_before_anything_is_done() -> None:
    tracker = OffsetTracker()
    tracker.start("p0", 10)
    assert tracker.committable() == {}


def test_commit_position_is_one_past_the_highest_contiguous_done_offset() -> None:
    tracker = OffsetTracker()
    for offset in (10, 11, 12, 13):
        tracker.start("p0", offset)
    tracker.done("p0", 11)
    tracker.done("p0", 13)
    assert tracker.committable() == {}  # 10 still runs: committing 12 would skip it
    tracker.done("p0", 10)
    assert tracker.committable() == {"p0": 12}  # 12 still runs
    tracker.done("p0", 12)
    assert tracker.committable() == {"p0": 14}


def test_gaps_in_offsets_do_not_block_the_commit() -> None:
    # Compacted topics and transaction markers leave holes: only started offsets count.
    tracker = OffsetTracker()
    tracker.start("p0", 5)
    tracker.start("p0", 9)
    tracker.done("p0", 9)
    tracker.done("p0", 5)
    assert tracker.committable() == {"p0": 10}


def test_partitions_are_independent_and_commits_are_not_repeated() -> None:
    tracker = OffsetTracker()
    tracker.start("p0", 0)
    tracker.start("p1", 7)
    tracker.done("p1", 7)
    assert tracker.committable() == {"p1": 8}
    tracker.mark_committed({"p1": 8})
    assert tracker.committable() == {}
    tracker.done("p0", 0)
    assert tracker.committable() == {"p0": 1}
    assert tracker.committable(["p1"]) == {}


def test_forgotten_partitions_ignore_late_completions() -> None:
    tracker = OffsetTracker()
    tracker.start("p0", 3)
    tracker.forget(["p0"])
    tracker.done("p0", 3)
    tracker.done("p9", 1)  # never started: ignored
    assert tracker.committable() == {}
    assert tracker.pending_count("p0") == 0


def test_duplicate_done_is_harmless() -> None:
    tracker = OffsetTracker()
    tracker.start("p0", 1)
    tracker.start("p0", 2)
    tracker.done("p0", 1)
    tracker.done("p0", 1)
    assert tracker.committable() == {"p0": 2}
    assert tracker.pending_count("p0") == 1


# --- run_attempt ---------------------------------------------------------------------


def request(type_: str, properties: dict[str, Any], timeout_ms: int | None = None) -> TaskRequest:
    return TaskRequest(
        execution_id="exec-1",
        namespace="ns",
        flow_id="flow",
        flow_revision=1,
        task_run_id="run-1",
        task_id="task",
        attempt=2,
        type=type_,
        properties=properties,
        time=datetime.now(UTC),
        timeout_ms=timeout_ms,
    )


class BuggyProperties(ConnectorProperties):
    pass


class BuggyConnector:
    Properties: ClassVar = BuggyProperties

    async def run(self, properties: BuggyProperties, context: TaskContext) -> dict[str, Any]:
        return {"ratio": 1 / 0}


async def attempt(req: TaskRequest, secrets: dict[str, str] | None = None):
    records: list[LogRecord] = []

    async def publish(record: LogRecord) -> None:
        records.append(record)

    connectors = {**connector_classes(), "buggy": BuggyConnector}
    result = await run_attempt(
        req,
        worker_id="w1",
        publish_log=publish,
        secret_lookup=(secrets or {}).get,
        connectors=connectors,
    )
    return result, records


async def test_a_successful_attempt_carries_outputs_and_stable_log_ids() -> None:
    result, records = await attempt(request("shell", {"commands": ["echo a", "echo b"]}))
    assert (result.state, result.outputs, result.error) == (State.SUCCESS, {"exitCode": 0}, None)
    assert (result.execution_id, result.task_run_id, result.attempt) == ("exec-1", "run-1", 2)
    assert result.worker_id == "w1" and result.started_at <= result.ended_at
    assert [(r.id, r.message, r.level) for r in records] == [
        ("run-1:2:1", "a", LogLevel.INFO),
        ("run-1:2:2", "b", LogLevel.INFO),
    ]
    assert all((r.task_id, r.attempt, r.namespace) == ("task", 2, "ns") for r in records)


async def test_unknown_type_fails() -> None:
    result, _ = await attempt(request("no.such.type", {}))
    assert result.state == State.FAILED
    assert result.error == "unknown task type 'no.such.type'"


async def test_invalid_properties_fail_naming_the_property() -> None:
    result, _ = await attempt(request("shell", {"commands": [], "colour": "red"}))
    assert result.state == State.FAILED
    assert "invalid property 'commands'" in result.error
    assert "invalid property 'colour'" in result.error


async def test_timeout_fails_and_says_so() -> None:
    result, _ = await attempt(request("shell", {"commands": ["sleep 30"]}, timeout_ms=200))
    assert result.state == State.FAILED
    assert result.error == "timed out after 200 ms"
    assert (result.ended_at - result.started_at).total_seconds() < 5


async def test_a_connector_bug_fails_the_attempt_with_its_type(
    caplog: pytest.LogCaptureFixture,
) -> None:
    result, _ = await attempt(request("buggy", {}))
    assert result.state == State.FAILED
    assert result.error == "ZeroDivisionError: division by zero"
    assert any(r.exc_info for r in caplog.records)  # traceback in the worker's own log


async def test_secrets_are_resolved_and_masked() -> None:
    marker = f"{SECRET_MARKER_PREFIX}TOKEN{SECRET_MARKER_SUFFIX}"
    req = request(
        "shell", {"commands": ['echo "token=$T" ; echo "$T" >&2; exit 4'], "env": {"T": marker}}
    )
    result, records = await attempt(req, {"TOKEN": "s3cr3t"})
    assert [r.message for r in records] == [f"token={MASK}", MASK]
    assert result.error == f"exit code 4: {MASK}"


async def test_an_unknown_secret_fails_the_attempt() -> None:
    marker = f"{SECRET_MARKER_PREFIX}MISSING{SECRET_MARKER_SUFFIX}"
    result, _ = await attempt(request("log", {"message": marker}))
    assert result.state == State.FAILED
    assert "MISSING" in result.error
