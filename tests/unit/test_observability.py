"""The pieces of metrics, probes and structured logs that need no server.

Readiness rounds, their cache and their bound; what the executor counts per execution;
the JSON log format and the ids it takes from a log call or from the task's context;
how settings and `server local` hand each process its metrics port.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import warnings

import pytest

from headrace import metrics
from headrace.config import Settings
from headrace.errors import ConfigError
from headrace.local import LocalStack, service_env
from headrace.log_format import JsonFormatter, configure, handling, reset_handling, set_handling
from headrace.readiness import Readiness
from headrace.states import State


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_readiness_names_each_failed_check_and_passes_when_all_pass() -> None:
    async def fine() -> None:
        return None

    async def refused() -> None:
        raise ConnectionRefusedError("connection refused")

    report = await Readiness({"kafka": fine, "postgresql": refused}).report()
    assert not report.ready
    assert report.body() == {
        "status": "unavailable",
        "problems": {"postgresql": "connection refused"},
    }
    assert (await Readiness({"kafka": fine}).report()).body() == {"status": "ready"}


async def test_a_check_that_never_answers_is_reported_not_waited_for() -> None:
    async def hangs() -> None:
        await asyncio.Event().wait()

    report = await Readiness({"postgresql": hangs}, timeout_s=0.01).report()
    assert report.problems == {"postgresql": "no answer within 0.01 s"}


async def test_a_report_is_reused_while_fresh_and_probes_share_one_round() -> None:
    rounds = 0
    release = asyncio.Event()

    async def counted() -> None:
        nonlocal rounds
        rounds += 1
        await release.wait()

    clock = Clock()
    readiness = Readiness({"kafka": counted}, cache_s=2.0, clock=clock)
    waiting = [asyncio.create_task(readiness.report()) for _ in range(5)]
    await asyncio.sleep(0)
    release.set()
    reports = await asyncio.gather(*waiting)
    assert rounds == 1 and all(r.ready for r in reports)
    clock.now += 1.0
    await readiness.report()
    assert rounds == 1  # still fresh
    clock.now += 1.5
    await readiness.report()
    assert rounds == 2


def test_the_executor_counts_starts_by_trigger_and_ends_by_state() -> None:
    def sample(name: str, **labels: str) -> float:
        return metrics.REGISTRY.get_sample_value(name, labels) or 0.0

    api, other = (
        sample("headrace_executions_started_total", trigger="api"),
        sample("headrace_executions_started_total", trigger="other"),
    )
    failed = sample("headrace_executions_ended_total", state="FAILED")
    metrics.count_execution(None, State.RUNNING, {"type": "api"})
    metrics.count_execution(None, State.FAILED, {"type": "a-producer's-own"})
    metrics.count_execution(State.RUNNING, State.RUNNING, {"type": "api"})  # no change
    metrics.count_execution(State.FAILED, State.FAILED, {"type": "api"})  # ended already
    metrics.count_execution(State.RUNNING, State.FAILED, {"type": "api"})
    assert sample("headrace_executions_started_total", trigger="api") == api + 1
    assert sample("headrace_executions_started_total", trigger="other") == other + 1
    assert sample("headrace_executions_ended_total", state="FAILED") == failed + 2


def test_unknown_task_types_share_one_label() -> None:
    assert metrics.task_type_label("shell", {"shell", "log"}) == "shell"
    assert metrics.task_type_label("io.evil." + "x" * 50, {"shell"}) == "other"


def record(message: str, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("headrace.test", logging.WARNING, __file__, 1, message, (), None)
    made.__dict__.update(extra)
    return made


def test_json_lines_carry_the_ids_of_the_log_call_or_of_the_context() -> None:
    formatter = JsonFormatter("worker")
    plain = json.loads(formatter.format(record("idle")))
    assert plain["service"] == "worker" and plain["level"] == "WARNING"
    assert plain["logger"] == "headrace.test" and plain["message"] == "idle"
    assert plain["time"].endswith("+00:00")
    assert "execution_id" not in plain
    with handling(execution_id="e1", task_run_id="r1", task_id="greet", attempt=2):
        entry = json.loads(formatter.format(record("running")))
        assert (entry["execution_id"], entry["task_run_id"], entry["task_id"]) == (
            "e1",
            "r1",
            "greet",
        )
        assert entry["attempt"] == 2
        # The call's own ids win over the context's.
        entry = json.loads(formatter.format(record("kill", execution_id="e2")))
        assert entry["execution_id"] == "e2" and entry["task_run_id"] == "r1"
    assert "execution_id" not in json.loads(formatter.format(record("after")))
    token = set_handling()
    set_handling(execution_id="e3")
    assert json.loads(formatter.format(record("step")))["execution_id"] == "e3"
    reset_handling(token)
    assert "execution_id" not in json.loads(formatter.format(record("batch done")))


def test_a_traceback_stays_inside_its_one_line() -> None:
    try:
        raise ValueError("broken\nacross lines")
    except ValueError:
        failed = record("failed")
        failed.exc_info = sys.exc_info()
    line = JsonFormatter("executor").format(failed)
    assert "\n" not in line
    assert "ValueError: broken" in json.loads(line)["exception"]


async def test_context_ids_stay_with_their_own_task() -> None:
    formatter = JsonFormatter("worker")
    seen: dict[str, str | None] = {}

    async def attempt(name: str) -> None:
        with handling(execution_id=name):
            await asyncio.sleep(0)  # the other attempt runs meanwhile
            seen[name] = json.loads(formatter.format(record(name))).get("execution_id")

    await asyncio.gather(attempt("a"), attempt("b"))
    assert seen == {"a": "a", "b": "b"}


def test_json_configuration_formats_warnings_too(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        configure("scheduler", "WARNING", "json")
        logging.getLogger("headrace.somewhere").warning("tick %d missed", 3)
        warnings.warn("old setting", UserWarning, stacklevel=1)
        lines = capsys.readouterr().err.splitlines()
    finally:
        logging.captureWarnings(False)
        root.handlers[:] = handlers
        root.setLevel(level)
    entries = [json.loads(line) for line in lines]
    assert entries[0]["message"] == "tick 3 missed" and entries[0]["service"] == "scheduler"
    assert "old setting" in entries[1]["message"] and entries[1]["logger"] == "py.warnings"


def test_the_metrics_port_setting_is_read_and_checked() -> None:
    assert Settings.from_env({}).metrics_port is None
    settings = Settings.from_env(
        {"HEADRACE_METRICS_PORT": "9100", "HEADRACE_METRICS_HOST": "0.0.0.0"}
    )
    assert (settings.metrics_port, settings.metrics_host) == (9100, "0.0.0.0")
    with pytest.raises(ConfigError, match="HEADRACE_METRICS_PORT: 'ninety' is not a port"):
        Settings.from_env({"HEADRACE_METRICS_PORT": "ninety"})
    with pytest.raises(ConfigError, match="HEADRACE_METRICS_PORT: 70000 is not a port"):
        Settings.from_env({"HEADRACE_METRICS_PORT": "70000"})


def test_server_local_gives_each_process_its_own_metrics_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # One port in our environment would be taken by the first service only.
    monkeypatch.setenv("HEADRACE_METRICS_PORT", "9100")
    settings = Settings(kafka_bootstrap="127.0.0.1:9092", database_url="postgresql://x/y")
    assert "HEADRACE_METRICS_PORT" not in service_env(settings, service="worker")
    stack = LocalStack(settings, metrics_port=9200)
    try:
        ports = [
            stack.metrics_port_for(name, copy)
            for name, copy in [("indexer", 1), ("executor", 1), ("worker", 1), ("worker", 2)]
        ]
        assert ports == [9200, 9201, 9202, 9203]
        assert stack.metrics_port_for("worker", 1) == 9202  # a restart keeps its port
        assert stack.metrics_port_for("gateway", 1) is None  # it serves them on its API port
        assert LocalStack(settings).metrics_port_for("worker", 1) is None
    finally:
        stack.stop()
