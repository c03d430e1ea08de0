"""The `errors` and `finally` branches, walked event by event (Kestra's semantics).

Main tasks in sequence; on a failure the `errors` tasks; then, always, the `finally`
tasks. The execution stays RUNNING until the last of them and ends FAILED if any task
run failed.
"""

from __future__ import annotations

from datetime import timedelta

from headrace.core.ids import task_run_id
from headrace.core.state import Execution, TimerKind
from headrace.messages import LogLevel
from headrace.states import State
from tests.unit.test_core_helpers import (
    T0,
    Run,
    events,
    finished,
    fired,
    log_task,
    logs,
    make_flow,
    requests,
    timers,
    trigger,
)

SECOND = timedelta(seconds=1)


def _ids(run: Run) -> list[str]:
    return [task_run.task_id for task_run in run.execution.task_runs]


def _execution_states(run: Run) -> list[State]:
    return [e.execution.state for e in events(run.history) if e.execution is not None]


def test_a_failure_runs_the_errors_branch_then_ends_failed():
    flow = make_flow(
        log_task("extract"),
        log_task("load"),
        log_task("report"),
        errors=[
            {
                "id": "alert",
                "type": "log",
                "message": "{{ flow.id }} failed: {{ execution.id }} after {{ outputs.extract.rows }}",
            },
            log_task("page"),
        ],
    )
    run = Run(flow)
    (extract,) = requests(run.send(trigger()))
    (load,) = requests(run.send(finished(extract, outputs={"rows": 12}), T0 + SECOND))

    commands = run.send(finished(load, State.FAILED, error="disk full"), T0 + 2 * SECOND)
    # The errors branch starts in the same step; `report` never runs.
    (alert,) = requests(commands)
    assert alert.task_id == "alert"
    assert alert.properties == {"message": "demo failed: ex1 after 12"}
    assert alert.task_run_id == task_run_id("ex1", "alert")
    assert run.state is State.RUNNING
    assert run.task_states() == {
        "extract": State.SUCCESS,
        "load": State.FAILED,
        "alert": State.RUNNING,
    }
    (error,) = logs(commands)
    assert error.message == "task 'load' failed: disk full" and error.task_id == "load"

    (page,) = requests(run.send(finished(alert), T0 + 3 * SECOND))
    assert page.task_id == "page" and run.state is State.RUNNING

    commands = run.send(finished(page), T0 + 4 * SECOND)
    assert requests(commands) == []
    assert run.state is State.FAILED
    assert _ids(run) == ["extract", "load", "alert", "page"]
    # RUNNING once, then FAILED once: no terminal state before the errors branch ended.
    assert _execution_states(run) == [State.RUNNING, State.FAILED]
    assert run.execution.outputs == {}


def test_success_skips_the_errors_branch():
    flow = make_flow(log_task("a"), errors=[log_task("alert")])
    run = Run(flow)
    (request,) = requests(run.send(trigger()))
    commands = run.send(finished(request))
    assert requests(commands) == []
    assert run.state is State.SUCCESS
    assert _ids(run) == ["a"]


def test_finally_runs_after_a_success():
    flow = make_flow(
        log_task("a"),
        errors=[log_task("alert")],
        finally_=[
            {"id": "cleanup", "type": "log", "message": "a said {{ outputs.a.x }}"},
            log_task("notify"),
        ],
    )
    run = Run(flow)
    (a,) = requests(run.send(trigger()))
    (cleanup,) = requests(run.send(finished(a, outputs={"x": "hi"})))
    assert cleanup.properties == {"message": "a said hi"}
    assert run.state is State.RUNNING
    (notify,) = requests(run.send(finished(cleanup)))
    run.send(finished(notify))
    assert run.state is State.SUCCESS
    assert _ids(run) == ["a", "cleanup", "notify"]


def test_finally_runs_after_a_failure_and_the_errors_branch():
    flow = make_flow(
        log_task("a"),
        log_task("b"),
        errors=[log_task("alert")],
        finally_=[log_task("cleanup")],
    )
    run = Run(flow)
    (a,) = requests(run.send(trigger()))
    (alert,) = requests(run.send(finished(a, State.FAILED, error="boom")))
    (cleanup,) = requests(run.send(finished(alert)))
    assert cleanup.task_id == "cleanup" and run.state is State.RUNNING
    run.send(finished(cleanup))
    assert run.state is State.FAILED
    assert _ids(run) == ["a", "alert", "cleanup"]
    assert run.task_states()["cleanup"] is State.SUCCESS


def test_finally_runs_after_a_failure_without_errors_branch():
    run = Run(make_flow(log_task("a"), finally_=[log_task("cleanup")]))
    (a,) = requests(run.send(trigger()))
    (cleanup,) = requests(run.send(finished(a, State.FAILED, error="boom")))
    run.send(finished(cleanup))
    assert run.state is State.FAILED
    assert _ids(run) == ["a", "cleanup"]


def test_a_failing_finally_task_fails_a_successful_execution():
    flow = make_flow(log_task("a"), finally_=[log_task("cleanup"), log_task("notify")])
    run = Run(flow)
    (a,) = requests(run.send(trigger()))
    (cleanup,) = requests(run.send(finished(a)))
    commands = run.send(finished(cleanup, State.FAILED, error="rm: denied"))
    # The finally branch stops at its first failure, and says what it skipped.
    assert requests(commands) == []
    assert run.state is State.FAILED
    assert _ids(run) == ["a", "cleanup"]
    failure, skipped = logs(commands)
    assert (
        failure.level is LogLevel.ERROR and failure.message == "task 'cleanup' failed: rm: denied"
    )
    assert skipped.level is LogLevel.WARN
    assert skipped.message == "finally branch stopped after 'cleanup' failed; skipped: 'notify'"
    assert _execution_states(run) == [State.RUNNING, State.FAILED]


def test_a_failing_errors_task_skips_the_rest_of_its_branch_but_not_finally():
    flow = make_flow(
        log_task("a"),
        errors=[log_task("alert"), log_task("page"), log_task("mail")],
        finally_=[log_task("cleanup")],
    )
    run = Run(flow)
    (a,) = requests(run.send(trigger()))
    (alert,) = requests(run.send(finished(a, State.FAILED, error="boom")))
    commands = run.send(finished(alert, State.FAILED, error="slack down"))
    (cleanup,) = requests(commands)
    assert cleanup.task_id == "cleanup"
    assert [record.message for record in logs(commands)] == [
        "task 'alert' failed: slack down",
        "errors branch stopped after 'alert' failed; skipped: 'page', 'mail'",
    ]
    run.send(finished(cleanup))
    assert run.state is State.FAILED
    assert _ids(run) == ["a", "alert", "cleanup"]


def test_the_execution_fails_whatever_the_errors_branch_does():
    run = Run(make_flow(log_task("a"), errors=[log_task("alert")]))
    (a,) = requests(run.send(trigger()))
    (alert,) = requests(run.send(finished(a, State.FAILED, error="boom")))
    run.send(finished(alert, State.WARNING))
    assert run.state is State.FAILED


def test_a_warning_main_task_and_a_good_finally_end_in_warning():
    run = Run(make_flow(log_task("a"), errors=[log_task("alert")], finally_=[log_task("f")]))
    (a,) = requests(run.send(trigger()))
    (f,) = requests(run.send(finished(a, State.WARNING)))
    run.send(finished(f))
    assert run.state is State.WARNING
    assert _ids(run) == ["a", "f"]


def test_main_retries_are_exhausted_before_the_errors_branch_and_errors_tasks_retry_too():
    retry = {"type": "constant", "interval": "PT1S", "maxAttempts": 2}
    run = Run(make_flow(log_task("a", retry=retry), errors=[log_task("alert", retry=retry)]))
    (a,) = requests(run.send(trigger()))
    (retry_a,) = timers(run.send(finished(a, State.FAILED, error="e")))
    assert run.task_states() == {"a": State.RETRYING}  # no errors task while a retries
    (a2,) = requests(run.send(fired("ex1", retry_a), retry_a.due))
    (alert,) = requests(run.send(finished(a2, State.FAILED, error="e"), retry_a.due))
    (retry_alert,) = timers(run.send(finished(alert, State.FAILED, error="e"), retry_a.due))
    assert retry_alert.kind is TimerKind.RETRY and retry_alert.attempt == 2
    assert run.state is State.RUNNING
    (alert2,) = requests(run.send(fired("ex1", retry_alert), retry_alert.due))
    assert (alert2.task_id, alert2.attempt) == ("alert", 2)
    run.send(finished(alert2), retry_alert.due)
    assert run.state is State.FAILED
    assert [len(task_run.attempts) for task_run in run.execution.task_runs] == [2, 2]


def test_a_silent_finally_task_times_out():
    run = Run(make_flow(log_task("a"), finally_=[log_task("cleanup", timeout="PT5S")]))
    (a,) = requests(run.send(trigger()))
    commands = run.send(finished(a))
    (timeout,) = timers(commands)
    commands = run.send(fired("ex1", timeout), timeout.due)
    assert run.state is State.FAILED
    assert logs(commands)[0].message.startswith("task 'cleanup' failed: timed out")
    assert run.execution.timers == []


def test_a_render_error_at_start_goes_straight_to_the_errors_branch():
    flow = make_flow(
        {"id": "a", "type": "log", "message": "{{ inputs.nope }}"},
        errors=[{"id": "alert", "type": "log", "message": "failed: {{ execution.id }}"}],
    )
    run = Run(flow)
    commands = run.send(trigger())
    (alert,) = requests(commands)
    assert alert.properties == {"message": "failed: ex1"}
    assert run.state is State.RUNNING
    assert run.task_states() == {"a": State.FAILED, "alert": State.RUNNING}
    run.send(finished(alert))
    assert run.state is State.FAILED


def test_a_render_error_in_the_errors_branch_moves_on_to_finally():
    flow = make_flow(
        log_task("a"),
        errors=[{"id": "alert", "type": "log", "message": "{{ outputs.a.x }}"}],
        finally_=[log_task("cleanup")],
    )
    run = Run(flow)
    (a,) = requests(run.send(trigger()))
    # `a` failed, so it has no outputs: the errors task cannot render.
    commands = run.send(finished(a, State.FAILED, error="boom"))
    (cleanup,) = requests(commands)
    assert cleanup.task_id == "cleanup"
    assert run.task_states() == {"a": State.FAILED, "alert": State.FAILED, "cleanup": State.RUNNING}
    run.send(finished(cleanup))
    assert run.state is State.FAILED


def test_the_errors_branch_survives_a_round_trip_through_bytes():
    run = Run(make_flow(log_task("a"), errors=[log_task("e1"), log_task("e2")]))
    (a,) = requests(run.send(trigger()))
    (e1,) = requests(run.send(finished(a, State.FAILED, error="boom")))
    run.execution = Execution.from_bytes(run.execution.to_bytes())
    (e2,) = requests(run.send(finished(e1)))
    assert e2.task_id == "e2"
    # Replays of results from the main branch change nothing.
    assert run.send(finished(a, State.FAILED, error="boom")) == []
    run.send(finished(e2))
    assert run.state is State.FAILED
