"""Kestra's core flowable tasks under Kestra's names and properties, driven through the
core event by event, each ending as Kestra documents (issue #13, item 1)."""

from __future__ import annotations

import textwrap
from datetime import timedelta

import pytest

from headrace.core.events import Kill, Restart, Resume, SendCommand, StartExecution
from headrace.core.state import TimerKind
from headrace.flow.errors import FlowValidationError
from headrace.flow.loader import load_flow, load_flow_with_warnings
from headrace.flow.model import Flow
from headrace.messages import CommandKind, CommandStatus, LogLevel
from headrace.states import State
from tests.unit.test_core_flowables import command
from tests.unit.test_core_helpers import (
    T0,
    Run,
    finished,
    fired,
    logs,
    outcomes,
    requests,
    timers,
    trigger,
)


def flow(tasks: str, **top: str) -> Flow:
    """A Kestra-style flow of the YAML `tasks` list (and other top-level YAML keys)."""
    extra = "".join(
        f"{key}:\n{textwrap.indent(textwrap.dedent(v), '  ')}" for key, v in top.items()
    )
    text = f"id: demo\nnamespace: company.team\ntasks:\n{textwrap.indent(textwrap.dedent(tasks), '  ')}{extra}"
    return load_flow(text, "demo.yaml")


def returns(task_id: str, fmt: str = "{{ taskrun.value }}") -> str:
    return f"- id: {task_id}\n  type: io.kestra.plugin.core.debug.Return\n  format: '{fmt}'\n"


def by_id(run: Run, task_id: str, value: str | None = None):
    assert run.execution is not None
    return next(
        r
        for r in run.execution.task_runs
        if r.task_id == task_id and (value is None or r.value == value)
    )


# ------------------------------------------------------------------ names


@pytest.mark.parametrize(
    ("name", "ours"),
    [
        ("io.kestra.plugin.core.flow.EachSequential", "flow.eachsequential"),
        ("io.kestra.core.tasks.flows.EachSequential", "flow.eachsequential"),
        ("io.kestra.plugin.core.flow.EachParallel", "flow.eachparallel"),
        ("io.kestra.core.tasks.flows.EachParallel", "flow.eachparallel"),
        ("io.kestra.core.tasks.flows.Parallel", "flow.parallel"),
        ("io.kestra.core.tasks.flows.Sequential", "flow.sequential"),
        ("io.kestra.plugin.core.flow.AllowFailure", "flow.allowfailure"),
        ("io.kestra.plugin.core.flow.WorkingDirectory", "flow.workingdirectory"),
        ("io.kestra.core.tasks.flows.Flow", "flow.subflow"),
        ("io.kestra.core.tasks.flows.Subflow", "flow.subflow"),
        ("io.kestra.core.tasks.flows.Pause", "flow.pause"),
        ("io.kestra.core.tasks.executions.Fail", "flow.fail"),
        ("io.kestra.plugin.core.execution.Exit", "flow.exit"),
    ],
)
def test_kestra_names_and_older_names_load_as_ours(name: str, ours: str) -> None:
    body = {
        "flow.eachsequential": "value: [a]\n  tasks:\n    - {id: x, type: log, message: m}",
        "flow.eachparallel": "value: [a]\n  tasks:\n    - {id: x, type: log, message: m}",
        "flow.parallel": "tasks:\n    - {id: x, type: log, message: m}",
        "flow.sequential": "tasks:\n    - {id: x, type: log, message: m}",
        "flow.allowfailure": "tasks:\n    - {id: x, type: log, message: m}",
        "flow.workingdirectory": "tasks:\n    - {id: x, type: log, message: m}",
        "flow.subflow": "namespace: a.b\n  flowId: c",
        "flow.pause": "pauseDuration: PT1S",
        "flow.fail": "errorMessage: no",
        "flow.exit": "state: WARNING",
    }[ours]
    loaded = flow(f"- id: t\n  type: {name}\n  {body}\n")
    assert loaded.tasks[0].type == ours


def test_template_is_refused_naming_subflow() -> None:
    with pytest.raises(FlowValidationError) as caught:
        flow("- id: t\n  type: io.kestra.plugin.core.flow.Template\n  templateId: x\n")
    (error,) = caught.value.errors
    assert error.path == "tasks[0].type" and "io.kestra.plugin.core.flow.Subflow" in (
        error.hint or ""
    )


def test_a_template_where_a_flowable_wants_a_number_is_refused_at_load() -> None:
    with pytest.raises(FlowValidationError) as caught:
        flow(
            "- id: p\n  type: io.kestra.plugin.core.flow.Parallel\n  concurrent: '{{ 2 }}'\n"
            "  tasks:\n    - {id: x, type: log, message: m}\n"
        )
    assert caught.value.errors[0].path == "tasks[0].concurrent"


# ------------------------------------------------------------- Parallel, Dag


def test_parallel_concurrent_limits_running_tasks_and_zero_is_no_limit() -> None:
    tasks = "".join(returns(f"t{i}", "x") for i in range(3))
    one = Run(
        flow(
            "- id: p\n  type: io.kestra.plugin.core.flow.Parallel\n  concurrent: 1\n  tasks:\n"
            + textwrap.indent(tasks, "    ")
        )
    )
    (t0,) = requests(one.send(trigger()))
    (t1,) = requests(one.send(finished(t0)))
    assert t1.task_id == "t1"
    unlimited = Run(
        flow(
            "- id: p\n  type: io.kestra.plugin.core.flow.Parallel\n  concurrent: 0\n  tasks:\n"
            + textwrap.indent(tasks, "    ")
        )
    )
    assert len(requests(unlimited.send(trigger()))) == 3


def test_concurrent_and_concurrency_together_are_refused() -> None:
    with pytest.raises(FlowValidationError, match="not both"):
        flow(
            "- id: p\n  type: io.kestra.plugin.core.flow.Parallel\n  concurrent: 1\n"
            "  concurrency: 2\n  tasks:\n    - {id: x, type: log, message: m}\n"
        )


def test_dag_takes_kestras_concurrent() -> None:
    run = Run(
        flow(
            """
            - id: dag
              type: io.kestra.plugin.core.flow.Dag
              concurrent: 1
              tasks:
                - task: {id: a, type: log, message: a}
                - task: {id: b, type: log, message: b}
            """
        )
    )
    (a,) = requests(run.send(trigger()))
    (b,) = requests(run.send(finished(a)))
    run.send(finished(b))
    assert (a.task_id, b.task_id, run.state) == ("a", "b", State.SUCCESS)


# --------------------------------------------------- EachSequential / Parallel


RETURN = "io.kestra.plugin.core.debug.Return"


def test_each_sequential_runs_items_in_order_each_distinct_item_once() -> None:
    run = Run(
        flow(
            f"""
            - id: each
              type: io.kestra.plugin.core.flow.EachSequential
              value: '["a", "b", "a", {{"k": 1}}]'
              tasks:
                - {{id: first, type: {RETURN}, format: "{{{{ taskrun.value }}}}"}}
                - {{id: second, type: {RETURN}, format: "{{{{ taskrun.value }}}}"}}
            - {{id: after, type: {RETURN}, format: "{{{{ outputs.first['b'].value }}}}"}}
            """
        )
    )
    seen = []
    pending = requests(run.send(trigger()))
    while pending:
        (request,) = pending
        seen.append((request.task_id, request.properties["format"]))
        value = {"value": request.properties["format"]}
        pending = requests(run.send(finished(request, outputs=value)))
    assert seen == [
        ("first", "a"),
        ("second", "a"),
        ("first", "b"),
        ("second", "b"),
        ("first", '{"k":1}'),  # an object item is its JSON text, as in Kestra
        ("second", '{"k":1}'),
        ("after", "b"),  # outputs keyed by the item's value
    ]
    assert run.state is State.SUCCESS


EACH_PARALLEL = f"""
- id: each
  type: io.kestra.plugin.core.flow.EachParallel
  value: ["x", "y"]
  tasks:
    - {{id: one, type: {RETURN}, format: "{{{{ taskrun.value }}}}"}}
    - {{id: two, type: {RETURN}, format: "{{{{ taskrun.value }}}}"}}
"""


def test_each_parallel_runs_every_task_of_every_item_at_once() -> None:
    run = Run(flow(EACH_PARALLEL))
    started = requests(run.send(trigger()))
    # Kestra: "all 6 tasks will be computed in parallel without any order guarantee".
    assert sorted((r.task_id, r.properties["format"]) for r in started) == [
        ("one", "x"),
        ("one", "y"),
        ("two", "x"),
        ("two", "y"),
    ]
    for request in started[:-1]:
        run.send(finished(request))
    assert by_id(run, "each").state is State.RUNNING
    run.send(finished(started[-1], State.WARNING))
    assert (by_id(run, "each").state, run.state) == (State.WARNING, State.WARNING)


def test_each_parallel_concurrent_counts_task_runs() -> None:
    run = Run(flow(EACH_PARALLEL.replace("  tasks:", "  concurrent: 3\n  tasks:")))
    first = requests(run.send(trigger()))
    assert len(first) == 3
    (last,) = requests(run.send(finished(first[0])))
    assert (last.task_id, last.properties["format"]) == ("two", "y")


def test_each_with_a_null_item_fails_the_task() -> None:
    run = Run(
        flow(
            "- id: each\n  type: io.kestra.plugin.core.flow.EachSequential\n"
            "  value: '[1, null]'\n  tasks:\n    - {id: x, type: log, message: m}\n"
        )
    )
    commands = run.send(trigger())
    assert run.state is State.FAILED
    assert any("null item" in record.message for record in logs(commands))


# ------------------------------------------------------------ errors / finally


def test_a_flowables_errors_run_when_a_child_fails_then_finally_and_it_ends_failed() -> None:
    run = Run(
        flow(
            """
            - id: seq
              type: io.kestra.plugin.core.flow.Sequential
              tasks:
                - {id: boom, type: log, message: boom}
                - {id: skipped, type: log, message: never}
              errors:
                - {id: caught, type: log, message: "caught"}
              finally:
                - {id: cleanup, type: log, message: "cleanup"}
            - {id: next, type: log, message: not reached}
            """
        )
    )
    (boom,) = requests(run.send(trigger()))
    (caught,) = requests(run.send(finished(boom, State.FAILED, error="exit 1")))
    assert caught.task_id == "caught"
    assert by_id(run, "caught").parent_task_run_id == by_id(run, "seq").id
    (cleanup,) = requests(run.send(finished(caught)))
    assert cleanup.task_id == "cleanup"
    run.send(finished(cleanup))
    assert by_id(run, "seq").state is State.FAILED and run.state is State.FAILED
    assert "skipped" not in run.task_states() and "next" not in run.task_states()


def test_a_flowables_finally_runs_after_success_and_a_failing_finally_fails_it() -> None:
    run = Run(
        flow(
            """
            - id: par
              type: io.kestra.plugin.core.flow.Parallel
              tasks:
                - {id: a, type: log, message: a}
              errors:
                - {id: never, type: log, message: never}
              finally:
                - {id: cleanup, type: log, message: cleanup}
            """
        )
    )
    (a,) = requests(run.send(trigger()))
    (cleanup,) = requests(run.send(finished(a)))
    run.send(finished(cleanup, State.FAILED, error="no"))
    assert by_id(run, "par").state is State.FAILED and "never" not in run.task_states()


def test_restart_reruns_a_failed_flowable_and_its_errors_afresh() -> None:
    run = Run(
        flow(
            """
            - id: seq
              type: io.kestra.plugin.core.flow.Sequential
              tasks:
                - {id: boom, type: log, message: boom}
              errors:
                - {id: caught, type: log, message: caught}
            """
        )
    )
    (boom,) = requests(run.send(trigger()))
    (caught,) = requests(run.send(finished(boom, State.FAILED)))
    run.send(finished(caught))
    first_caught = by_id(run, "caught").id
    (again,) = requests(run.send(Restart(command(CommandKind.RESTART))))
    assert again.task_id == "boom" and "caught" not in run.task_states()
    (caught_again,) = requests(run.send(finished(again, State.FAILED)))
    assert by_id(run, "caught").id != first_caught  # a new run, as the flow's errors get
    run.send(finished(caught_again))
    assert run.state is State.FAILED


# ------------------------------------------------- AllowFailure, WorkingDirectory


def test_allow_failure_stops_its_tasks_ends_warning_and_the_flow_goes_on() -> None:
    run = Run(
        flow(
            """
            - id: allowed
              type: io.kestra.plugin.core.flow.AllowFailure
              tasks:
                - {id: ko, type: log, message: ko}
                - {id: not-run, type: log, message: no}
            - {id: last, type: log, message: goes on}
            """
        )
    )
    (ko,) = requests(run.send(trigger()))
    (last,) = requests(run.send(finished(ko, State.FAILED, error="exit 1")))
    assert last.task_id == "last" and by_id(run, "allowed").state is State.WARNING
    assert by_id(run, "ko").state is State.FAILED and "not-run" not in run.task_states()
    run.send(finished(last))
    assert run.state is State.WARNING


def test_working_directory_runs_its_tasks_in_sequence_with_a_warning() -> None:
    text = textwrap.dedent(
        """
        id: wd
        namespace: company.team
        tasks:
          - id: wd
            type: io.kestra.plugin.core.flow.WorkingDirectory
            inputFiles:
              a.txt: hello
            tasks:
              - {id: write, type: log, message: w}
              - {id: read, type: log, message: r}
        """
    )
    loaded, warnings = load_flow_with_warnings(text, "wd.yaml")
    assert [w.path for w in warnings] == ["tasks[0].type", "tasks[0].inputFiles"]
    assert "each in a fresh directory" in warnings[0].message
    assert "outputFiles" in warnings[0].message and warnings[0].line == 6
    run = Run(loaded)
    (write,) = requests(run.send(trigger()))
    (read,) = requests(run.send(finished(write)))
    run.send(finished(read))
    assert (write.task_id, read.task_id, run.state) == ("write", "read", State.SUCCESS)


# ------------------------------------------------------------------- Pause


PAUSE_WITH_INPUTS = """
- id: approval
  type: io.kestra.plugin.core.flow.Pause
  onResume:
    - id: approved
      type: BOOLEAN
      defaults: true
    - id: reason
      type: STRING
- id: log
  type: io.kestra.plugin.core.log.Log
  message: "{{ outputs.approval.onResume.reason }}"
"""


def test_pause_on_resume_inputs_are_validated_coerced_and_read_as_on_resume() -> None:
    run = Run(flow(PAUSE_WITH_INPUTS))
    run.send(trigger())
    assert run.state is State.PAUSED
    bad = run.send(Resume(command(CommandKind.RESUME, inputs={"approved": "maybe"})))
    (refused,) = outcomes(bad)
    assert refused.status is CommandStatus.IGNORED and run.state is State.PAUSED
    assert "'approved'" in (refused.reason or "") and "'reason': required" in (refused.reason or "")
    resumed = run.send(
        Resume(messages_command("resume-2", inputs={"approved": "false", "reason": "too late"}))
    )
    (log,) = requests(resumed)
    assert log.properties["message"] == "too late"
    pause = by_id(run, "approval")
    assert pause.state is State.SUCCESS
    assert pause.outputs["onResume"] == {"approved": False, "reason": "too late"}
    assert pause.outputs["resumed"]["to"] == "SUCCESS"


def messages_command(command_id: str, **payload):
    from headrace import messages

    return messages.ExecutionCommand(command_id, "ex1", CommandKind.RESUME, T0, payload=payload)


def test_a_pause_without_on_resume_keeps_its_inputs_at_the_top_too() -> None:
    run = Run(flow("- {id: wait, type: io.kestra.plugin.core.flow.Pause}\n"))
    run.send(trigger())
    run.send(Resume(command(CommandKind.RESUME, inputs={"ok": "yes"})))
    outputs = by_id(run, "wait").outputs
    assert outputs["ok"] == "yes" and outputs["onResume"] == {"ok": "yes"}


@pytest.mark.parametrize(
    ("behavior", "pause_state", "execution_state"),
    [
        ("RESUME", State.SUCCESS, State.SUCCESS),
        ("WARN", State.WARNING, State.WARNING),
        ("FAIL", State.FAILED, State.FAILED),
        ("CANCEL", State.CANCELLED, State.CANCELLED),
    ],
)
def test_pause_duration_ends_as_its_behavior_says(
    behavior: str, pause_state: State, execution_state: State
) -> None:
    run = Run(
        flow(
            f"- id: wait\n  type: io.kestra.plugin.core.flow.Pause\n  pauseDuration: PT5M\n"
            f"  behavior: {behavior}\n- {{id: after, type: log, message: after}}\n"
        )
    )
    (timer,) = timers(run.send(trigger()))
    assert timer.kind is TimerKind.PAUSE and timer.due == T0 + timedelta(minutes=5)
    after = requests(run.send(fired("ex1", timer), timer.due))
    assert by_id(run, "wait").state is pause_state
    if after:
        run.send(finished(after[0]))
    assert run.state is execution_state
    assert ("after" in run.task_states()) is (execution_state in (State.SUCCESS, State.WARNING))


def test_a_resume_before_the_duration_always_succeeds() -> None:
    run = Run(
        flow(
            "- id: wait\n  type: io.kestra.plugin.core.flow.Pause\n  pauseDuration: PT5M\n"
            "  behavior: FAIL\n"
        )
    )
    run.send(trigger())
    run.send(Resume(command(CommandKind.RESUME)))
    assert run.state is State.SUCCESS and run.execution.timers == []


def test_a_pause_timeout_without_duration_fails_it_when_not_resumed() -> None:
    run = Run(flow("- id: wait\n  type: io.kestra.plugin.core.flow.Pause\n  timeout: PT1H\n"))
    (timer,) = timers(run.send(trigger()))
    run.send(fired("ex1", timer), timer.due)
    assert by_id(run, "wait").state is State.FAILED and run.state is State.FAILED


def test_pause_tasks_run_after_the_resume_inside_the_pause() -> None:
    run = Run(
        flow(
            """
            - id: pause
              type: io.kestra.core.tasks.flows.Pause
              tasks:
                - {id: post, type: log, message: "{{ outputs.pause.onResume.who }}"}
              errors:
                - {id: caught, type: log, message: caught}
            - {id: last, type: log, message: last}
            """
        )
    )
    assert requests(run.send(trigger())) == [] and run.state is State.PAUSED
    (post,) = requests(run.send(Resume(command(CommandKind.RESUME, inputs={"who": "ada"}))))
    assert post.properties["message"] == "ada" and run.state is State.RUNNING
    assert by_id(run, "pause").state is State.RUNNING
    assert by_id(run, "post").parent_task_run_id == by_id(run, "pause").id
    (caught,) = requests(run.send(finished(post, State.FAILED)))
    run.send(finished(caught))
    assert by_id(run, "pause").state is State.FAILED and run.state is State.FAILED


def test_a_kill_ends_a_pause_that_runs_its_tasks_from_them() -> None:
    run = Run(
        flow(
            "- id: pause\n  type: io.kestra.plugin.core.flow.Pause\n  tasks:\n"
            "    - {id: post, type: log, message: m}\n"
        )
    )
    run.send(trigger())
    (post,) = requests(run.send(Resume(command(CommandKind.RESUME))))
    run.send(Kill(command(CommandKind.KILL)))
    assert by_id(run, "pause").state is State.RUNNING  # waits for its task's end
    run.send(finished(post, State.KILLED))
    assert by_id(run, "pause").state is State.KILLED and run.state is State.KILLED


# ------------------------------------------------------------- Fail, Exit


def test_fail_with_a_condition_fails_only_when_it_is_true() -> None:
    for rows, expected in ((0, State.FAILED), (3, State.SUCCESS)):
        run = Run(
            flow(
                """
                - id: check
                  type: io.kestra.plugin.core.execution.Fail
                  condition: "{{ inputs.rows == 0 }}"
                  errorMessage: "no rows for {{ execution.id }}"
                """
            )
        )
        commands = run.send(trigger(inputs={"rows": rows}))
        assert run.state is expected
        failed = [r.message for r in logs(commands) if r.level is LogLevel.ERROR]
        assert failed == ([] if rows else ["task 'check' failed: no rows for ex1"])


@pytest.mark.parametrize("state", ["SUCCESS", "WARNING", "FAILED", "KILLED", "CANCELED"])
def test_exit_ends_the_execution_in_its_state_and_stops_what_runs(state: str) -> None:
    run = Run(
        flow(
            f"""
            - id: par
              type: io.kestra.plugin.core.flow.Parallel
              tasks:
                - {{id: slow, type: log, message: slow}}
                - id: stop
                  type: io.kestra.plugin.core.execution.Exit
                  state: {state}
            - {{id: never, type: log, message: never}}
            """
        )
    )
    (slow,) = requests(run.send(trigger()))
    assert run.state is State.KILLING  # the running task is being cancelled
    run.send(finished(slow, State.KILLED))
    expected = State.CANCELLED if state == "CANCELED" else State(state)
    assert run.state is expected and by_id(run, "stop").state is expected
    assert "never" not in run.task_states()


# ---------------------------------------------------------------- Subflow


def _child_ended(run: Run, start: StartExecution, child_flow: Flow, state: State):
    """Run the child to its end with the same core and hand its CHILD_ENDED back."""
    child = Run(child_flow)
    (task,) = requests(child.send(type(trigger())(start.trigger)))
    sent = [
        c
        for c in child.send(finished(task, state, outputs={"value": 7}))
        if isinstance(c, SendCommand)
    ]
    from headrace.core.events import command_event

    (send,) = sent
    return run.send(command_event(send.command))


def test_subflow_outputs_render_over_the_child_and_labels_are_inherited() -> None:
    parent = flow(
        """
        - id: call
          type: io.kestra.plugin.core.flow.Subflow
          namespace: company.team
          flowId: child
          revision: 3
          inheritLabels: true
          labels: {caller: demo}
          outputs:
            doubled: "{{ outputs.produce.value * 2 }}"
        - {id: report, type: log, message: "{{ outputs.call.outputs.doubled }}"}
        """
    )
    run = Run(parent)
    (start,) = [c for c in run.send(trigger()) if isinstance(c, StartExecution)]
    assert start.trigger.labels == {"team": "data", "caller": "demo"}
    assert start.trigger.flow_revision == 3
    child = load_flow(
        "id: child\nnamespace: company.team\ntasks:\n"
        "  - {id: produce, type: io.kestra.plugin.core.debug.Return, format: x}\n"
    )
    (report,) = requests(_child_ended(run, start, child, State.SUCCESS))
    assert str(report.properties["message"]) == "14"
    assert by_id(run, "call").outputs["outputs"] == {"doubled": 14}


def test_subflow_outputs_that_do_not_render_fail_the_task() -> None:
    run = Run(
        flow(
            "- id: call\n  type: io.kestra.plugin.core.flow.Subflow\n  namespace: company.team\n"
            "  flowId: child\n  outputs:\n    x: '{{ outputs.missing.value }}'\n"
        )
    )
    (start,) = [c for c in run.send(trigger()) if isinstance(c, StartExecution)]
    child = load_flow(
        "id: child\nnamespace: company.team\ntasks:\n  - {id: t, type: log, message: m}\n"
    )
    _child_ended(run, start, child, State.SUCCESS)
    assert by_id(run, "call").state is State.FAILED and run.state is State.FAILED


def test_subflow_schedule_date_and_retry_failed_load_with_warnings() -> None:
    text = (
        "id: s\nnamespace: company.team\ntasks:\n  - id: call\n"
        "    type: io.kestra.plugin.core.flow.Subflow\n    namespace: a.b\n    flowId: c\n"
        "    scheduleDate: '{{ now() }}'\n    restartBehavior: RETRY_FAILED\n"
    )
    _, warnings = load_flow_with_warnings(text)
    assert [w.path for w in warnings] == ["tasks[0].scheduleDate", "tasks[0].restartBehavior"]
    assert "starts at once" in warnings[0].message and "NEW_EXECUTION" in warnings[1].message
