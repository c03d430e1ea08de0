"""Kestra's core task and flow keys: what headrace acts on (`logLevel`, `allowWarning`,
`checks`, `taskDefaults`, a list `message` for Log) and what it accepts with a warning
(`logToFile`, `workerGroup`, `sla`, ...)."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime

import pytest

from headrace import messages
from headrace.flow import load_flow, load_flow_with_warnings
from headrace.flow.errors import FlowValidationError
from headrace.messages import LogLevel, LogRecord
from headrace.states import State
from services.worker.runner import run_attempt
from tests.unit.test_core_helpers import T0, Run, finished, logs, requests, trigger


def kestra_flow(body: str) -> str:
    return "id: demo\nnamespace: company.team\n" + textwrap.dedent(body)


LOG = "io.kestra.plugin.core.log.Log"


def test_ignored_task_keys_load_with_a_warning_each_at_its_line() -> None:
    flow, warnings = load_flow_with_warnings(
        kestra_flow(f"""
        tasks:
          - id: hello
            type: {LOG}
            message: hi
            logToFile: true
            workerGroup:
              key: gpu
            taskCache:
              enabled: true
            version: "1.2.0"
        """)
    )
    assert flow.tasks[0].properties == {"message": "hi"}  # none of them reaches the connector
    found = [(w.path, w.line) for w in warnings]
    assert found == [
        ("tasks[0].logToFile", 8),
        ("tasks[0].workerGroup", 9),
        ("tasks[0].taskCache", 11),
        ("tasks[0].version", 13),
    ]
    assert "any worker runs the task" in warnings[1].message


def test_ignored_flow_keys_warn_and_a_nested_task_key_is_found_too() -> None:
    _, warnings = load_flow_with_warnings(
        kestra_flow(f"""
        revision: 7
        sla:
          - id: late
            type: MAX_DURATION
            behavior: FAIL
            duration: PT1H
        tasks:
          - id: group
            type: io.kestra.plugin.core.flow.Sequential
            tasks:
              - id: inner
                type: {LOG}
                message: hi
                logToFile: true
        """)
    )
    assert [w.path for w in warnings] == ["revision", "sla", "tasks[0].tasks[0].logToFile"]
    assert "no SLA monitor" in warnings[1].message


def test_a_flow_without_kestra_only_keys_has_no_warning() -> None:
    _, warnings = load_flow_with_warnings(
        kestra_flow(f"""
        tasks:
          - id: hello
            type: {LOG}
            message: hi
            logToFile: false
        """)
    )
    assert warnings == []


def test_task_defaults_is_kestras_older_name_of_plugin_defaults() -> None:
    flow = load_flow(
        kestra_flow(f"""
        taskDefaults:
          - type: {LOG}
            values:
              level: WARN
        tasks:
          - id: hello
            type: {LOG}
            message: hi
        """)
    )
    assert flow.tasks[0].properties["level"] == "WARN"


@pytest.mark.parametrize(
    ("extra", "reason", "line"),
    [
        ("deleted: true", "a deleted flow cannot be applied", 3),
        ("listeners:\n  - tasks: []", "listeners were removed", 4),
    ],
)
def test_deleted_flows_and_listeners_are_refused_with_the_alternative(
    extra: str, reason: str, line: int
) -> None:
    with pytest.raises(FlowValidationError) as caught:
        load_flow(kestra_flow(f"{extra}\ntasks:\n  - id: a\n    type: {LOG}\n    message: hi\n"))
    (error,) = caught.value.errors
    assert reason in error.message and error.line == line


def test_a_log_task_logs_each_message_of_a_list() -> None:
    flow = load_flow(
        kestra_flow(f"""
        tasks:
          - id: hello
            type: {LOG}
            level: WARN
            message:
              - first line
              - "second: {{{{ flow.id }}}}"
        """)
    )
    run = Run(flow)
    (request,) = requests(run.send(trigger()))
    assert request.properties["message"] == ["first line", "second: demo"]
    records = _run_on_worker(request)
    assert [(r.level, r.message) for r in records] == [
        (LogLevel.WARN, "first line"),
        (LogLevel.WARN, "second: demo"),
    ]


def test_log_level_drops_the_tasks_lines_below_it_on_the_worker() -> None:
    flow = load_flow(
        kestra_flow("""
        tasks:
          - id: script
            type: io.kestra.plugin.scripts.shell.Commands
            logLevel: WARN
            commands:
              - echo quiet
              - echo loud >&2
        """)
    )
    run = Run(flow)
    (request,) = requests(run.send(trigger()))
    assert request.log_level is LogLevel.WARN
    levels = {(r.level, r.message) for r in _run_on_worker(request)}
    assert (LogLevel.INFO, "quiet") not in levels
    assert any(message == "loud" for _, message in levels)


def test_allow_warning_turns_a_warning_end_into_success() -> None:
    flow = load_flow(
        kestra_flow(f"""
        tasks:
          - id: warned
            type: {LOG}
            message: hi
            allowWarning: true
          - id: plain
            type: {LOG}
            message: hi
        """)
    )
    run = Run(flow)
    (first,) = requests(run.send(trigger()))
    (second,) = requests(run.send(finished(first, State.WARNING)))
    run.send(finished(second))
    assert run.task_states() == {"warned": State.SUCCESS, "plain": State.SUCCESS}
    assert run.state is State.SUCCESS

    unallowed = Run(load_flow(kestra_flow(f"tasks:\n  - id: a\n    type: {LOG}\n    message: x\n")))
    (only,) = requests(unallowed.send(trigger()))
    unallowed.send(finished(only, State.WARNING))
    assert unallowed.state is State.WARNING


def test_allow_failure_and_allow_warning_together_end_success() -> None:
    flow = load_flow(
        kestra_flow(f"""
        tasks:
          - id: risky
            type: {LOG}
            message: hi
            allowFailure: true
            allowWarning: true
        """)
    )
    run = Run(flow)
    (request,) = requests(run.send(trigger()))
    run.send(finished(request, State.FAILED, error="boom"))
    assert run.task_states() == {"risky": State.SUCCESS}
    assert run.state is State.SUCCESS


CHECKED = f"""
inputs:
  - id: rows
    type: INT
checks:
  - when: "{{{{ inputs.rows > 0 }}}}"
    message: at least one row
    behavior: __BEHAVIOR__
tasks:
  - id: load
    type: {LOG}
    message: "{{{{ inputs.rows }}}} rows"
"""


@pytest.mark.parametrize("behavior", ["BLOCK_EXECUTION", "FAIL_EXECUTION"])
def test_a_false_blocking_check_fails_the_execution_before_any_task(behavior: str) -> None:
    run = Run(load_flow(kestra_flow(CHECKED.replace("__BEHAVIOR__", behavior))))
    commands = run.send(trigger(inputs={"rows": 0}))
    assert requests(commands) == []
    assert run.state is State.FAILED
    assert run.execution is not None and run.execution.task_runs == []
    (line,) = logs(commands)
    assert (line.level, line.message) == (LogLevel.ERROR, "check failed: at least one row")


def test_a_true_check_lets_the_execution_run() -> None:
    run = Run(load_flow(kestra_flow(CHECKED.replace("__BEHAVIOR__", "BLOCK_EXECUTION"))))
    (request,) = requests(run.send(trigger(inputs={"rows": 3})))
    run.send(finished(request))
    assert run.state is State.SUCCESS


def test_a_false_create_execution_check_warns_and_runs() -> None:
    run = Run(load_flow(kestra_flow(CHECKED.replace("__BEHAVIOR__", "CREATE_EXECUTION"))))
    commands = run.send(trigger(inputs={"rows": 0}))
    (request,) = requests(commands)
    assert [(r.level, r.message) for r in logs(commands)] == [
        (LogLevel.WARN, "check failed: at least one row")
    ]
    run.send(finished(request))
    assert run.state is State.SUCCESS


def test_a_check_that_cannot_render_counts_as_false() -> None:
    source = kestra_flow(CHECKED.replace("__BEHAVIOR__", "BLOCK_EXECUTION")).replace(
        "inputs.rows > 0", "inputs.missing > 0"
    )
    run = Run(load_flow(source))
    commands = run.send(trigger(inputs={"rows": 5}))
    assert run.state is State.FAILED
    (line,) = logs(commands)
    assert line.message.startswith("check failed: at least one row (cannot render")


def test_a_check_with_bad_template_syntax_is_refused_at_its_line() -> None:
    source = kestra_flow(CHECKED.replace("__BEHAVIOR__", "BLOCK_EXECUTION")).replace(
        "inputs.rows > 0", "inputs.rows >"
    )
    with pytest.raises(FlowValidationError) as caught:
        load_flow(source)
    (error,) = caught.value.errors
    assert (error.path, error.line) == ("checks[0].when", 8)
    assert "template syntax error" in error.message


def _run_on_worker(request: messages.TaskRequest) -> list[LogRecord]:
    import asyncio

    records: list[LogRecord] = []

    async def publish(record: LogRecord) -> None:
        records.append(record)

    async def run() -> messages.TaskResult:
        return await run_attempt(request, worker_id="w1", publish_log=publish)

    result = asyncio.run(run())
    assert result.state is State.SUCCESS, result.error
    assert all(r.time <= datetime.now(UTC) for r in records)
    return records


@pytest.mark.parametrize(
    ("behavior", "refused"),
    [("BLOCK_EXECUTION", True), ("FAIL_EXECUTION", False), ("CREATE_EXECUTION", False)],
)
def test_only_a_blocking_check_refuses_the_start_itself(behavior: str, refused: bool) -> None:
    """Every path that starts an execution goes through `admit`: a BLOCK_EXECUTION check
    refuses there and nothing is created; the others are the executor's to apply."""
    from headrace.admission import Refusal, StartRefused, admit

    flow = load_flow(kestra_flow(CHECKED.replace("__BEHAVIOR__", behavior)))

    def start(rows: int):
        return admit(
            flow,
            1,
            execution_id="ex1",
            inputs={"rows": rows},
            trigger={"type": "api"},
            time=datetime(2026, 12, 7, tzinfo=UTC),
        )

    assert start(2).event.inputs == {"rows": 2}
    if not refused:
        assert start(0).event.inputs == {"rows": 0}
        return
    with pytest.raises(StartRefused) as caught:
        start(0)
    assert caught.value.refusal is Refusal.BLOCKED
    assert str(caught.value) == "flow company.team/demo refused the start: at least one row"


@pytest.mark.parametrize(
    ("task_type", "alternative"),
    [
        ("io.kestra.plugin.core.kv.Set", "no key-value store"),
        ("io.kestra.plugin.core.flow.ForEachItem", "flow.subflow"),
        ("io.kestra.plugin.core.trigger.Toggle", "headrace trigger enable|disable"),
        ("io.kestra.core.tasks.states.Set", "no key-value store"),  # its name before 0.17
    ],
)
def test_kestra_core_types_headrace_leaves_out_are_refused_naming_the_alternative(
    task_type: str, alternative: str
) -> None:
    with pytest.raises(FlowValidationError) as caught:
        load_flow(kestra_flow(f"tasks:\n  - id: a\n    type: {task_type}\n    key: k\n"))
    (error,) = caught.value.errors
    assert (error.path, error.line) == ("tasks[0].type", 5)
    assert error.message.startswith(f"Kestra's {task_type.rsplit('.', 1)[-1]} is not run")
    assert alternative in error.message


def test_a_kestra_flow_id_with_a_dot_is_refused_naming_a_replacement() -> None:
    source = f"id: sales.daily\nnamespace: company.team\ntasks:\n  - id: a\n    type: {LOG}\n    message: x\n"
    with pytest.raises(FlowValidationError) as caught:
        load_flow(source)
    (error,) = caught.value.errors
    assert (error.path, error.line) == ("id", 1)
    assert error.hint is not None and error.hint.endswith("e.g. 'sales_daily'")


def test_kestras_context_variables_are_there() -> None:
    flow = load_flow(
        kestra_flow("""
        tasks:
          - id: make
            type: io.kestra.plugin.scripts.shell.Commands
            commands: ["echo hi"]
          - id: show
            type: io.kestra.plugin.core.debug.Return
            format: >-
              {{ task.id }}/{{ task.type }}/{{ taskrun.attemptsCount }}/{{ taskrun.startDate }}
              /{{ execution.originalId }}/{{ flow.tenantId }}/{{ workingDir }}
              /{{ outputs.make.vars.word }}={{ outputs.make.word }}
        """)
    )
    run = Run(flow)
    (make,) = requests(run.send(trigger()))
    (show,) = requests(run.send(finished(make, outputs={"exitCode": 0, "word": "w"})))
    assert show.properties["format"] == (f"show/return/0/{T0.isoformat()} /ex1/main/. /w=w")


def test_parent_and_iteration_inside_a_for_each_as_kestra_documents() -> None:
    """Kestra's ForEach example: `parent.taskrun.value` in a task of an If in the loop."""
    flow = load_flow(
        kestra_flow("""
        tasks:
          - id: for_each
            type: io.kestra.plugin.core.flow.ForEach
            values: ["value 1", "value 2"]
            tasks:
              - id: before_if
                type: io.kestra.plugin.core.debug.Return
                format: "Before if {{ taskrun.value }} #{{ taskrun.iteration }}"
              - id: if
                type: io.kestra.plugin.core.flow.If
                condition: '{{ taskrun.value == "value 2" }}'
                then:
                  - id: after_if
                    type: io.kestra.plugin.core.debug.Return
                    format: "After if {{ parent.taskrun.value }}"
        """)
    )
    run = Run(flow)
    first = requests(run.send(trigger()))
    assert [r.properties["format"] for r in first] == ["Before if value 1 #0"]
    (second,) = requests(run.send(finished(first[0])))
    assert second.properties["format"] == "Before if value 2 #1"
    (after,) = requests(run.send(finished(second)))
    assert after.properties["format"] == "After if value 2"


def test_a_scripts_task_runner_and_container_image_load_with_a_warning_each() -> None:
    flow, warnings = load_flow_with_warnings(
        kestra_flow("""
        tasks:
          - id: script
            type: io.kestra.plugin.scripts.python.Script
            containerImage: python:3.12-slim
            taskRunner:
              type: io.kestra.plugin.scripts.runner.docker.Docker
            script: print("hi")
        """)
    )
    assert flow.tasks[0].properties["containerImage"] == "python:3.12-slim"  # kept, unused
    assert [(w.path, w.line) for w in warnings] == [
        ("tasks[0].containerImage", 7),
        ("tasks[0].taskRunner", 8),
    ]
    assert "runs the script as a process of the worker" in warnings[0].message


@pytest.mark.parametrize(
    ("kestra_type", "instead"),
    [("DATE", "use DATETIME"), ("YAML", "use JSON"), ("SECRET", "secret('NAME')")],
)
def test_kestras_input_types_headrace_lacks_are_refused_naming_the_alternative(
    kestra_type: str, instead: str
) -> None:
    source = kestra_flow(f"""
        inputs:
          - id: x
            type: {kestra_type}
        tasks:
          - id: a
            type: {LOG}
            message: hi
        """)
    with pytest.raises(FlowValidationError) as caught:
        load_flow(source)
    (error,) = caught.value.errors
    assert error.path == "inputs[0].type" and instead in error.message


def test_kestras_bool_input_is_a_boolean() -> None:
    flow = load_flow(
        kestra_flow(f"""
        inputs:
          - id: flag
            type: BOOL
        tasks:
          - id: a
            type: {LOG}
            message: hi
        """)
    )
    assert flow.inputs[0].type == "BOOLEAN"
