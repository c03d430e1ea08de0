"""The worker's pure parts: offset bookkeeping and one attempt run without Kafka."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest
from aiokafka.errors import KafkaConnectionError
from pydantic import ConfigDict

from headrace.config import DEFAULT_TASK_TIMEOUT, Settings
from headrace.connectors.base import ConnectorProperties, TaskContext
from headrace.connectors.registry import connector_classes
from headrace.errors import ConfigError
from headrace.messages import LogLevel, LogRecord, TaskRequest
from headrace.secret_markers import marker
from headrace.services.worker.masking import MASK, Masker
from headrace.services.worker.offsets import OffsetTracker
from headrace.services.worker.runner import (
    MAX_LOG_LINE_BYTES,
    MAX_LOG_LINES,
    MAX_OUTPUTS_BYTES,
    oversized_outputs_error,
    run_attempt,
)
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


NONCE = "0123456789abcdef0123456789abcdef"


def request(
    type_: str,
    properties: dict[str, Any],
    timeout_ms: int | None = None,
    secret_names: tuple[str, ...] = (),
) -> TaskRequest:
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
        secret_names=list(secret_names),
        secret_nonce=NONCE if secret_names else "",
    )


class BuggyProperties(ConnectorProperties):
    pass


class BuggyConnector:
    Properties: ClassVar = BuggyProperties

    async def run(self, properties: BuggyProperties, context: TaskContext) -> dict[str, Any]:
        return {"ratio": 1 / 0}


class RecordingProperties(ConnectorProperties):
    model_config = ConfigDict(extra="allow")


class RecordingConnector:
    """Keeps the properties exactly as the task got them (outputs would be masked)."""

    Properties: ClassVar = RecordingProperties
    received: ClassVar[list[dict[str, Any]]] = []

    async def run(self, properties: RecordingProperties, context: TaskContext) -> dict[str, Any]:
        self.received.append(properties.model_dump())
        return {}


async def attempt(
    req: TaskRequest,
    secrets: dict[str, str] | None = None,
    *,
    known_secrets: tuple[str, ...] = (),
    run_nonce: str | None = "n0nce",
    default_timeout: timedelta = DEFAULT_TASK_TIMEOUT,
):
    records: list[LogRecord] = []

    async def publish(record: LogRecord) -> None:
        records.append(record)

    connectors = {**connector_classes(), "buggy": BuggyConnector, "recording": RecordingConnector}
    result = await run_attempt(
        req,
        worker_id="w1",
        publish_log=publish,
        # Secrets the task does not ask for are masked all the same.
        secrets={**(secrets or {}), **{f"K{n}": v for n, v in enumerate(known_secrets)}},
        connectors=connectors,
        run_nonce=run_nonce,
        default_timeout=default_timeout,
    )
    return result, records


async def test_a_successful_attempt_carries_outputs_and_per_run_log_ids() -> None:
    result, records = await attempt(request("shell", {"commands": ["echo a", "echo b"]}))
    assert (result.state, result.outputs, result.error) == (State.SUCCESS, {"exitCode": 0}, None)
    assert (result.execution_id, result.task_run_id, result.attempt) == ("exec-1", "run-1", 2)
    assert result.worker_id == "w1" and result.started_at <= result.ended_at
    assert [(r.id, r.message, r.level) for r in records] == [
        ("run-1:2:n0nce:1", "a", LogLevel.INFO),
        ("run-1:2:n0nce:2", "b", LogLevel.INFO),
    ]
    assert all((r.task_id, r.attempt, r.namespace) == ("task", 2, "ns") for r in records)


async def test_two_runs_of_one_attempt_log_under_different_ids() -> None:
    # A redelivered attempt runs again: its lines must not collide with the first run's
    # (the indexer ignores ids it has seen).
    req = request("log", {"message": "hi"})
    _, first = await attempt(req, run_nonce=None)
    _, second = await attempt(req, run_nonce=None)
    assert first[0].id.startswith("run-1:2:") and first[0].id.endswith(":1")
    assert first[0].id != second[0].id


async def test_unknown_type_fails() -> None:
    result, _ = await attempt(request("no.such.type", {}))
    assert result.state == State.FAILED
    assert result.error == "unknown task type 'no.such.type'"


async def test_invalid_properties_fail_naming_the_property() -> None:
    result, _ = await attempt(request("shell", {"commands": [], "colour": "red"}))
    assert result.state == State.FAILED
    assert "invalid property 'commands'" in result.error
    assert "invalid property 'colour'" in result.error


async def test_timeout_fails_and_says_where_it_came_from() -> None:
    result, _ = await attempt(request("shell", {"commands": ["sleep 30"]}, timeout_ms=200))
    assert result.state == State.FAILED
    assert result.error == (
        "timed out after PT0.2S, the task's `timeout` (set on the task or by the flow's"
        " pluginDefaults): raise it there"
    )
    assert (result.ended_at - result.started_at).total_seconds() < 5


async def test_a_task_without_timeout_gets_the_workers_default() -> None:
    result, _ = await attempt(
        request("shell", {"commands": ["sleep 30"]}),
        default_timeout=timedelta(milliseconds=300),
    )
    assert result.state == State.FAILED
    assert result.error == (
        "timed out after PT0.3S, the workers' default for a task without `timeout`"
        " (HEADRACE_WORKER_TASK_TIMEOUT=PT0.3S): set `timeout` on the task, or on every task"
        " of its type with the flow's pluginDefaults"
    )
    assert (result.ended_at - result.started_at).total_seconds() < 5
    # The task's own timeout wins over the default, longer or shorter.
    result, _ = await attempt(
        request("shell", {"commands": ["sleep 0.5"]}, timeout_ms=10_000),
        default_timeout=timedelta(milliseconds=100),
    )
    assert result.state == State.SUCCESS


def test_the_default_task_timeout_is_six_hours_and_configurable() -> None:
    assert Settings.from_env({}).worker_task_timeout == timedelta(hours=6)
    configured = Settings.from_env({"HEADRACE_WORKER_TASK_TIMEOUT": "PT20M"})
    assert configured.worker_task_timeout == timedelta(minutes=20)
    with pytest.raises(ConfigError, match=r"HEADRACE_WORKER_TASK_TIMEOUT: invalid duration '2h'"):
        Settings.from_env({"HEADRACE_WORKER_TASK_TIMEOUT": "2h"})
    with pytest.raises(ConfigError, match="must be longer than zero"):
        Settings.from_env({"HEADRACE_WORKER_TASK_TIMEOUT": "PT0S"})


async def test_a_connector_bug_fails_the_attempt_with_its_type(
    caplog: pytest.LogCaptureFixture,
) -> None:
    result, _ = await attempt(request("buggy", {}))
    assert result.state == State.FAILED
    assert result.error == "ZeroDivisionError: division by zero"
    assert any(r.exc_info for r in caplog.records)  # traceback in the worker's own log


async def test_secrets_are_resolved_and_masked() -> None:
    env = {"T": marker("TOKEN", NONCE)}
    commands = ['echo "token=$T" ; echo "$T" >&2; exit 4']
    req = request("shell", {"commands": commands, "env": env}, secret_names=("TOKEN",))
    result, records = await attempt(req, {"TOKEN": "s3cr3t"})
    assert [r.message for r in records] == [f"token={MASK}", MASK]
    assert result.error == f"exit code 4: {MASK}"


async def test_an_unknown_secret_fails_the_attempt() -> None:
    req = request("log", {"message": marker("MISSING", NONCE)}, secret_names=("MISSING",))
    result, _ = await attempt(req)
    assert result.state == State.FAILED
    assert "MISSING" in result.error


async def test_forged_markers_reach_the_task_as_plain_text() -> None:
    """The flow asked for DB (`password`); marker text that came with an input (`body`)
    names DB too, or another secret the worker has: none of it resolves."""
    forged = [
        "\x00secret:DB\x00",  # the format before nonces
        marker("DB", ""),
        marker("DB", "f" * 32),  # a guessed nonce
        marker("API_KEY", NONCE),  # the right nonce, a name the flow did not ask for
    ]
    properties = {"password": marker("DB", NONCE), "body": {"notes": forged}}
    req = request("recording", properties, secret_names=("DB",))
    RecordingConnector.received.clear()
    result, _ = await attempt(req, {"DB": "db-pass", "API_KEY": "key-123"})
    assert result.state == State.SUCCESS, result.error
    assert RecordingConnector.received == [{"password": "db-pass", "body": {"notes": forged}}]


async def test_a_request_without_a_nonce_resolves_nothing() -> None:
    # An older executor's request (no secret fields): its markers are data, not secrets.
    properties = {"password": marker("DB", "")}
    req = request("recording", properties)
    RecordingConnector.received.clear()
    result, _ = await attempt(req, {"DB": "db-pass"})
    assert result.state == State.SUCCESS, result.error
    assert RecordingConnector.received == [properties]


# --- publishing failures -------------------------------------------------------------


@pytest.mark.parametrize(
    "properties",
    [
        {"type": "log", "message": "hello"},
        {"type": "shell", "commands": ["echo one", "echo two", "sleep 30"]},
    ],
)
async def test_a_failing_log_publish_escapes_instead_of_failing_the_task(
    properties: dict[str, Any],
) -> None:
    async def publish(record: LogRecord) -> None:
        raise KafkaConnectionError("broker down")

    type_ = properties.pop("type")
    with pytest.raises(KafkaConnectionError):
        async with asyncio.timeout(10):
            await run_attempt(request(type_, properties), worker_id="w1", publish_log=publish)


class SwallowingProperties(ConnectorProperties):
    pass


class SwallowingConnector:
    """Catches whatever its log call raises: still not the task's failure."""

    Properties: ClassVar = SwallowingProperties

    async def run(self, properties: SwallowingProperties, context: TaskContext) -> dict[str, Any]:
        try:
            await context.info("hello")
        except Exception as exc:
            return {"swallowed": str(exc)}
        return {}


async def test_a_swallowed_publish_failure_still_escapes() -> None:
    async def publish(record: LogRecord) -> None:
        raise KafkaConnectionError("broker down")

    with pytest.raises(KafkaConnectionError):
        await run_attempt(
            request("swallow", {}),
            worker_id="w1",
            publish_log=publish,
            connectors={"swallow": SwallowingConnector},
        )


# --- what is published is safe ---------------------------------------------------------


async def test_every_known_secret_is_masked_in_logs_error_and_outputs() -> None:
    # The task references no secret: the worker's secrets are masked all the same.
    script = """
import sys
from headrace.task import outputs
print("password is hunter22, short one is ab")
outputs(nested={"list": ["x hunter22 y", 3], "hunter22": True}, plain="hunter22")
print("bad hunter22", file=sys.stderr)
sys.exit(2)
"""
    result, records = await attempt(
        request("python", {"script": script}), known_secrets=("hunter22", "ab", "")
    )
    assert records[0].message == f"password is {MASK}, short one is ab"  # "ab" too short
    assert result.state == State.FAILED
    assert result.error == f"exit code 2: bad {MASK}"
    assert all("hunter22" not in r.message for r in records)

    ok = script.replace("sys.exit(2)", "")
    result, _ = await attempt(request("python", {"script": ok}), known_secrets=("hunter22",))
    assert result.outputs == {
        "nested": {"list": [f"x {MASK} y", 3], MASK: True},
        "plain": MASK,
        "exitCode": 0,
    }


def test_masker_ignores_empty_and_very_short_values() -> None:
    mask = Masker(["", "a", "ab", "abc"])
    assert mask("a ab abc abcd") == f"a ab {MASK} {MASK}d"


async def test_nul_characters_are_replaced_everywhere() -> None:
    script = r"""
import sys
from headrace.task import outputs
print("a\x00b")
outputs(**{"k\x00": ["v\x00"]})
"""
    result, records = await attempt(request("python", {"script": script}))
    assert records[0].message == "a\ufffdb"
    assert result.outputs == {"k\ufffd": ["v\ufffd"], "exitCode": 0}

    failing = request("shell", {"commands": [r"printf 'bad\000thing\n' >&2", "exit 1"]})
    result, _ = await attempt(failing)
    assert result.error == "exit code 1: bad\ufffdthing"


async def test_outputs_over_the_limit_fail_the_attempt() -> None:
    script = f"from headrace.task import outputs\noutputs(blob='x' * {MAX_OUTPUTS_BYTES})\n"
    result, _ = await attempt(request("python", {"script": script}))
    assert result.state == State.FAILED
    assert result.outputs == {}
    assert result.error.startswith("outputs are 256.0 KiB, over the 256 KiB limit: ")


def test_oversized_outputs_message() -> None:
    assert oversized_outputs_error(3_200_000) == (
        "outputs are 3.2 MB, over the 256 KiB limit: write large data to a file or a table"
        " and pass its location"
    )


async def test_log_volume_is_capped() -> None:
    script = f"""
print("é" * {MAX_LOG_LINE_BYTES})
for n in range({MAX_LOG_LINES + 50}):
    print(n)
"""
    result, records = await attempt(request("python", {"script": script}))
    assert result.state == State.SUCCESS
    assert len(records) == MAX_LOG_LINES + 1
    long_line = records[0].message
    assert long_line.startswith("é" * (MAX_LOG_LINE_BYTES // 2))
    assert long_line.endswith(f"[line truncated: {2 * MAX_LOG_LINE_BYTES} bytes, at most 16384]")
    assert len(long_line.encode()) < MAX_LOG_LINE_BYTES + 100
    assert records[-2].message == str(MAX_LOG_LINES - 2)
    assert (records[-1].level, records[-1].message) == (
        LogLevel.WARN,
        "log output truncated after 10000 lines",
    )
