"""A flow from anyone is read within limits: size, nesting, aliases, tasks and numbers.

Each case the gateway once answered with a 500 or a stall is here first, then the
bounds on every numeric property (docs/flows.md, "Limits").
"""

from __future__ import annotations

import contextlib
import re
import time
from datetime import timedelta
from pathlib import Path

import orjson
import pytest

from headrace.flow import loader
from headrace.flow.errors import FlowError, FlowValidationError
from headrace.flow.inputs import InputValidationError, resolve_inputs
from headrace.flow.limits import (
    MAX_ALIASES,
    MAX_ATTEMPTS,
    MAX_CONCURRENCY,
    MAX_DEPTH,
    MAX_DURATION,
    MAX_FLOW_BYTES,
)
from headrace.flow.loader import load_flow
from headrace.flow.model import RetryPolicy
from headrace.flow.yaml_reader import YamlProblem, read_yaml

HEAD = "id: limits\nnamespace: tests.limits\n"
ONE_TASK = HEAD + "tasks:\n  - id: t\n    type: log\n    message: hi\n"
DOCS = Path(__file__).resolve().parents[2] / "docs"


def errors_of(text: str) -> list[FlowError]:
    with pytest.raises(FlowValidationError) as caught:
        load_flow(text, "limits.yaml")
    return caught.value.errors


def only_error(text: str) -> FlowError:
    (error,) = errors_of(text)
    return error


def cpu_seconds(text: str) -> float:
    """CPU time of one load: other processes on a shared machine do not count."""
    started = time.process_time()
    with contextlib.suppress(FlowValidationError):
        load_flow(text)
    return time.process_time() - started


# ------------------------------------------------------------------ the reported cases


@pytest.mark.parametrize("opening", ["[", "{a: "])
def test_deep_flow_style_nesting_is_an_error_not_a_recursion_error(opening: str) -> None:
    closing = "]" if opening == "[" else "}"
    depth = 5_000  # was a RecursionError after 4 s of CPU
    text = ONE_TASK + "variables:\n  x: " + opening * depth + closing * depth + "\n"
    error = only_error(text)
    assert f"nests deeper than {MAX_DEPTH} levels" in error.message
    assert error.line == 8  # the line where the limit was crossed
    assert cpu_seconds(text) < 0.5


def test_deep_block_nesting_is_an_error() -> None:
    lines = "".join("  " * (i + 1) + f"k{i}:\n" for i in range(MAX_DEPTH + 1))
    error = only_error(ONE_TASK + "variables:\n" + lines)
    assert "nests deeper" in error.message and error.line is not None


def test_a_flow_over_the_size_limit_is_refused_before_parsing() -> None:
    text = ONE_TASK + "description: " + "x" * MAX_FLOW_BYTES + "\n"
    error = only_error(text)
    assert f"over the {MAX_FLOW_BYTES} a flow may take" in error.message
    assert error.hint and "subflow" in error.hint


def test_a_long_flat_list_reads_quickly() -> None:
    # 120 KB of list items: 2.7 s of CPU (the event loop's) with the round-trip parser.
    text = ONE_TASK + "variables:\n  x: [" + ",".join(["1"] * 60_000) + "]\n"
    assert len(text) < MAX_FLOW_BYTES
    assert load_flow(text).variables["x"] == [1] * 60_000
    assert cpu_seconds(text + "# again, past the cache\n") < 1.0


def test_a_6000_task_flow_validates_quickly() -> None:
    tasks = "".join(f"  - {{id: t{i}, type: log, message: hi}}\n" for i in range(6_000))
    text = HEAD + "tasks:\n" + tasks
    assert len(text) < MAX_FLOW_BYTES
    assert len(load_flow(text).tasks) == 6_000
    # It took 4.6 s (2.4 s of CPU on an idle machine); it takes about 0.35 s now.
    assert cpu_seconds(text + "# again, past the cache\n") < 1.5


def test_too_many_aliases_are_refused() -> None:
    items = ", ".join(["*a"] * (MAX_ALIASES + 1))
    text = ONE_TASK + f"variables:\n  a: &a x\n  b: [{items}]\n"
    assert f"more than {MAX_ALIASES} aliases" in only_error(text).message


def test_too_many_tasks_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader, "MAX_TASKS", 3)
    nested = (
        "  - id: p\n    type: flow.parallel\n    tasks:\n"
        "      - {id: a, type: log, message: hi}\n      - {id: b, type: log, message: hi}\n"
    )
    text = HEAD + "tasks:\n" + nested + "finally:\n  - {id: c, type: log, message: hi}\n"
    error = only_error(text)
    assert error.message == "the flow has 4 tasks, more than the 3 a flow may have"
    assert (error.path, error.line) == ("tasks", 3)


def test_max_attempts_beyond_64_bits_is_refused_where_it_is_written() -> None:
    # Was saved, then every read of the flow answered 500 (orjson cannot write it).
    text = (
        ONE_TASK
        + "    retry: {type: constant, interval: PT1S, maxAttempts: 99999999999999999999999}\n"
    )
    error = only_error(text)
    assert "beyond 64 bits" in error.message
    assert (error.line, error.column) == (7, 58)


@pytest.mark.parametrize("number", [".inf", "-.inf", ".nan", "-99999999999999999999"])
def test_numbers_json_cannot_carry_are_refused_anywhere(number: str) -> None:
    error = only_error(ONE_TASK + f"variables:\n  deep: [{{x: {number}}}]\n")
    assert error.line == 8
    assert "64 bits" in error.message or "not a finite number" in error.message


# ----------------------------------------------------------------------- numeric bounds

RETRY = "    retry: {{type: exponential, interval: PT1S, maxAttempts: {n}, delayFactor: {f}}}\n"


@pytest.mark.parametrize(
    ("extra", "path", "says"),
    [
        (RETRY.format(n=MAX_ATTEMPTS + 1, f=2), "tasks[0].retry.maxAttempts", "less than or equal"),
        (RETRY.format(n=3, f=1), "tasks[0].retry.delayFactor", "greater than 1"),
        ("    timeout: P400D\n", "tasks[0].timeout", "366 days"),
        ("    timeout: P99999999999D\n", "tasks[0].timeout", "366 days"),
        ("    timeout: PT99999999999999999999S\n", "tasks[0].timeout", "366 days"),
        (f"concurrency: {{limit: {MAX_CONCURRENCY + 1}}}\n", "concurrency.limit", "less than"),
        (
            "inputs:\n  - {id: d, type: DATETIME, after: '0001-01-01T00:00:00+01:00'}\n",
            "inputs[0].after",
            "out of range",
        ),
        (
            "inputs:\n  - {id: d, type: DATETIME, defaults: '0001-01-01T00:00:00+05:00'}\n",
            "inputs[0].defaults",
            "out of range",
        ),
        ("inputs:\n  - {id: n, type: INT, defaults: 9223372036854775807.0}\n", "inputs", "range"),
    ],
)
def test_numeric_properties_have_bounds(extra: str, path: str, says: str) -> None:
    errors = errors_of(ONE_TASK + extra)
    assert any(e.path.startswith(path) and says in e.message for e in errors), errors


@pytest.mark.parametrize(
    ("container", "key"),
    [
        ("flow.parallel", "concurrency"),
        ("flow.dag", "concurrency"),
        ("flow.foreach", "concurrencyLimit"),
    ],
)
def test_flowable_concurrency_is_bounded(container: str, key: str) -> None:
    child = "{id: c, type: log, message: hi}"
    children = f"[{{task: {child}}}]" if container == "flow.dag" else f"[{child}]"
    values = "\n    values: [1]" if container == "flow.foreach" else ""
    task = f"  - id: box\n    type: {container}{values}\n    tasks: {children}\n"
    at_limit = HEAD + "tasks:\n" + task + f"    {key}: {MAX_CONCURRENCY}\n"
    load_flow(at_limit)
    error = only_error(HEAD + "tasks:\n" + task + f"    {key}: {MAX_CONCURRENCY + 1}\n")
    assert error.path == f"tasks[0].{key}" and "less than or equal" in error.message


def test_a_kafka_batch_is_bounded() -> None:
    trigger = "triggers:\n  - id: k\n    type: kafka\n    topic: t\n    batch: {maxRecords: %d}\n"
    load_flow(ONE_TASK + trigger % MAX_CONCURRENCY)
    error = only_error(ONE_TASK + trigger % (MAX_CONCURRENCY + 1))
    assert error.path == "triggers[0].batch.maxRecords"


def test_values_at_the_limits_load_and_write_as_json() -> None:
    days = MAX_DURATION.days
    text = ONE_TASK + (
        f"    retry: {{type: exponential, interval: P{days}D, maxAttempts: {MAX_ATTEMPTS}}}\n"
        f"    timeout: P{days}D\n"
        f"concurrency: {{limit: {MAX_CONCURRENCY}}}\n"
        "variables: {big: 9223372036854775807, small: -9223372036854775808}\n"
    )
    flow = load_flow(text)
    assert flow.tasks[0].retry is not None and flow.tasks[0].retry.max_attempts == MAX_ATTEMPTS
    orjson.dumps(flow.model_dump(mode="json", by_alias=True))  # what the gateway serves


def test_exponential_waits_are_capped_and_never_overflow() -> None:
    policy = RetryPolicy.model_validate(
        {"type": "exponential", "interval": "P1D", "delayFactor": 1e300, "maxAttempts": 1000}
    )
    assert policy.delay_before(1000) == MAX_DURATION
    capped = policy.model_copy(update={"max_interval": timedelta(hours=1)})
    assert capped.delay_before(1000) == timedelta(hours=1)
    assert policy.delay_before(2) == timedelta(days=1)


def test_an_out_of_range_datetime_input_is_an_input_error() -> None:
    flow = load_flow(ONE_TASK + "inputs:\n  - {id: d, type: DATETIME}\n")
    with pytest.raises(InputValidationError, match="out of range"):
        resolve_inputs(flow, {"d": "0001-01-01T00:00:00+05:00"})
    assert resolve_inputs(flow, {"d": "9999-12-31T23:59:59Z"}) == {"d": "9999-12-31T23:59:59+00:00"}


# ------------------------------------------------------------------- the YAML reader


def test_merge_keys_and_their_positions() -> None:
    document = read_yaml("base: &b {x: 1, y: 2}\nc:\n  <<: *b\n  y: 3\n")
    assert document.data == {"base": {"x": 1, "y": 2}, "c": {"x": 1, "y": 3}}
    assert document.marks.position(("c", "y")) == (4, 6)  # type: ignore[union-attr]
    assert document.marks.position(("c", "x")) == (1, 14)  # type: ignore[union-attr]


@pytest.mark.parametrize("text", ["a: !!python/object:os.system x\n", "a: !custom {b: 1}\n"])
def test_unknown_tags_are_refused(text: str) -> None:
    with pytest.raises(YamlProblem, match="unsupported tag"):
        read_yaml(text)


def test_the_pure_python_parser_reads_the_same_values() -> None:
    """Where ruamel.yaml.clib is missing, the pure parser runs: same values, same marks."""
    blocks = re.findall(r"```yaml[^\n]*\n(.*?)```", (DOCS / "flows.md").read_text(), re.S)
    texts = [part for block in blocks for part in block.split("\n---\n")]
    texts.append("%YAML 1.1\n---\na: yes\nb: 010\nc: 2024-01-01\n")
    assert len(texts) > 40
    for text in texts:
        fast, pure = read_yaml(text), read_yaml(text, pure=True)
        assert fast.data == pure.data, text
        assert fast.marks == pure.marks, text
    assert read_yaml(texts[-1]).data == {"a": True, "b": 8, "c": "2024-01-01"}


def test_the_documented_limits_are_the_enforced_ones() -> None:
    from headrace.flow import limits

    section = (DOCS / "flows.md").read_text().split("## Limits", 1)[1].split("\n## ", 1)[0]
    for text in (
        f"| {limits.MAX_FLOW_BYTES // 1024} KiB (UTF-8) |",
        f"| {limits.MAX_DEPTH} levels |",
        f"| {limits.MAX_NODES:,} |",
        f"| {limits.MAX_ALIASES:,} |",
        f"| {limits.MAX_TASKS:,} |",
        f"| 1 to {limits.MAX_ATTEMPTS:,} |",
        f"| {limits.MAX_DURATION.days} days |",
        f"| {limits.MAX_CONCURRENCY:,} |",
    ):
        assert text in section, text
