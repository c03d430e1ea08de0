"""Kestra's `afterExecution`: tasks run once the execution's end state is known; they
read it as `{{ execution.state }}` and their own failures do not change it."""

from __future__ import annotations

import textwrap

import pytest

from headrace import messages
from headrace.core.events import Kill, Restart
from headrace.flow import load_flow
from headrace.flow.errors import FlowValidationError
from headrace.messages import CommandKind
from headrace.states import State
from tests.unit.test_core_helpers import T0, Run, finished, requests, trigger

FLOW = """
id: demo
namespace: company.team
tasks:
  - id: work
    type: io.kestra.plugin.core.log.Log
    message: working
errors:
  - id: alert
    type: io.kestra.plugin.core.log.Log
    message: "state while in errors: {{ execution.state }}"
finally:
  - id: cleanup
    type: io.kestra.plugin.core.log.Log
    message: cleanup
afterExecution:
  - id: on_success
    type: io.kestra.plugin.core.log.Log
    runIf: "{{ execution.state == 'SUCCESS' }}"
    message: "succeeded"
  - id: on_failure
    type: io.kestra.plugin.core.log.Log
    runIf: "{{ execution.state == 'FAILED' }}"
    message: "ended {{ execution.state }}"
"""


def run_flow() -> Run:
    return Run(load_flow(textwrap.dedent(FLOW)))


def test_after_a_success_the_tasks_see_success_and_run_after_finally() -> None:
    run = run_flow()
    (work,) = requests(run.send(trigger()))
    (cleanup,) = requests(run.send(finished(work)))
    assert cleanup.task_id == "cleanup"
    (after,) = requests(run.send(finished(cleanup)))
    assert (after.task_id, after.properties["message"]) == ("on_success", "succeeded")
    assert run.state is State.RUNNING  # the end waits for afterExecution
    run.send(finished(after))
    assert run.state is State.SUCCESS
    assert run.task_states()["on_failure"] is State.SKIPPED


def test_after_a_failure_errors_then_finally_then_after_execution_see_failed() -> None:
    run = run_flow()
    (work,) = requests(run.send(trigger()))
    (alert,) = requests(run.send(finished(work, State.FAILED, error="boom")))
    assert alert.properties["message"] == "state while in errors: RUNNING"
    (cleanup,) = requests(run.send(finished(alert)))
    requests_now = requests(run.send(finished(cleanup)))
    (after,) = requests_now
    assert (after.task_id, after.properties["message"]) == ("on_failure", "ended FAILED")
    run.send(finished(after))
    assert run.state is State.FAILED
    assert run.task_states()["on_success"] is State.SKIPPED


def test_a_failed_after_execution_task_does_not_change_the_end_state() -> None:
    run = run_flow()
    (work,) = requests(run.send(trigger()))
    (cleanup,) = requests(run.send(finished(work)))
    (after,) = requests(run.send(finished(cleanup)))
    run.send(finished(after, State.FAILED, error="slack is down"))
    assert run.state is State.SUCCESS
    assert run.task_states()["on_success"] is State.FAILED


def test_a_kill_ends_the_execution_without_after_execution() -> None:
    run = run_flow()
    (work,) = requests(run.send(trigger()))
    command = messages.ExecutionCommand(
        command_id="kill-1", execution_id="ex1", kind=CommandKind.KILL, time=T0
    )
    run.send(Kill(command))
    run.send(finished(work, State.KILLED))
    assert run.state is State.KILLED
    assert set(run.task_states()) == {"work"}


def test_task_ids_are_unique_across_after_execution_too() -> None:
    source = textwrap.dedent(FLOW).replace("id: on_failure", "id: work")
    with pytest.raises(FlowValidationError) as caught:
        load_flow(source)
    assert [e.message for e in caught.value.errors] == ["duplicate task id 'work'"]


def test_a_restart_runs_after_execution_afresh_and_a_late_result_of_the_old_run_is_ignored() -> (
    None
):
    run = run_flow()
    (work,) = requests(run.send(trigger()))
    (alert,) = requests(run.send(finished(work, State.FAILED, error="boom")))
    (cleanup,) = requests(run.send(finished(alert)))
    (first_after,) = requests(run.send(finished(cleanup)))
    run.send(finished(first_after))
    assert run.state is State.FAILED
    restart = messages.ExecutionCommand(
        command_id="restart-1", execution_id="ex1", kind=CommandKind.RESTART, time=T0
    )
    (work_again,) = requests(run.send(Restart(restart)))
    (cleanup_again,) = requests(run.send(finished(work_again)))
    (second_after,) = requests(run.send(finished(cleanup_again)))
    assert second_after.task_id == "on_success"
    assert second_after.task_run_id != first_after.task_run_id
    assert run.send(finished(first_after)) == []  # the earlier run's result, redelivered
    assert run.state is State.RUNNING
    run.send(finished(second_after))
    assert run.state is State.SUCCESS
