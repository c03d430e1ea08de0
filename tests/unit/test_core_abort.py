"""`Abort`: the executor could not apply an event, so the execution ends FAILED, saying why."""

from __future__ import annotations

from headrace.core.events import Abort, KillTask, SendCommand
from headrace.messages import CommandKind, LogLevel, SlotRequestKind
from headrace.states import State
from tests.unit.test_core_concurrency import limited_flow, slot_requests
from tests.unit.test_core_helpers import (
    Run,
    events,
    finished,
    log_task,
    logs,
    make_flow,
    requests,
    trigger,
)


def test_abort_fails_every_open_run_cancels_work_and_says_why():
    flow = make_flow(
        {
            "id": "p",
            "type": "flow.parallel",
            "tasks": [
                log_task("work", timeout="PT1M"),
                {"id": "child", "type": "flow.subflow", "namespace": "n", "flowId": "f"},
            ],
        },
        log_task("after"),
    )
    run = Run(flow)
    (work,) = requests(run.send(trigger()))
    assert run.execution.timers  # the timeout backstop
    commands = run.send(Abort("internal error: RecursionError"))
    assert run.state is State.FAILED and run.execution.timers == []
    assert run.task_states() == {"p": State.FAILED, "work": State.FAILED, "child": State.FAILED}
    assert [c for c in commands if isinstance(c, KillTask)] == [
        KillTask("ex1", work.task_run_id, 1)
    ]
    (kill_child,) = [c.command for c in commands if isinstance(c, SendCommand)]
    assert kill_child.kind is CommandKind.KILL
    assert kill_child.execution_id == run.execution.task_runs[2].outputs["executionId"]
    (line,) = logs(commands)
    assert (line.level, line.message) == (LogLevel.ERROR, "internal error: RecursionError")
    (published,) = events(commands)
    assert published.execution.state is State.FAILED
    assert {r.task_id for r in published.task_runs} == {"p", "work", "child"}
    # The cancelled attempt's result comes later and changes nothing.
    assert run.send(finished(work, State.KILLED)) == []


def test_abort_of_an_ended_execution_changes_nothing():
    run = Run(make_flow(log_task("a")))
    (a,) = requests(run.send(trigger()))
    run.send(finished(a))
    assert run.send(Abort("late")) == [] and run.state is State.SUCCESS


def test_abort_of_a_start_records_the_execution_failed_and_tells_a_parent():
    start = trigger("child")
    start.trigger.trigger = {
        "type": "subflow",
        "parentExecutionId": "parent",
        "parentTaskRunId": "tr1",
    }
    run = Run(make_flow(log_task("a")))
    commands = run.send(Abort("internal error", start.trigger))
    assert run.state is State.FAILED and run.execution.id == "child"
    assert [h.state for h in run.execution.histories] == [State.CREATED, State.FAILED]
    assert run.execution.task_runs == [] and requests(commands) == []
    (notice,) = [c.command for c in commands if isinstance(c, SendCommand)]
    assert (notice.execution_id, notice.kind, notice.payload["state"]) == (
        "parent",
        CommandKind.CHILD_ENDED,
        "FAILED",
    )
    assert run.send(Abort("without a trigger")) == []  # and nothing to abort any more


def test_abort_without_an_execution_or_a_trigger_does_nothing():
    run = Run(make_flow(log_task("a")))
    assert run.send(Abort("no execution")) == [] and run.execution is None


def test_abort_of_a_queued_execution_gives_its_slot_claim_back():
    run = Run(limited_flow(log_task("a")))
    run.send(trigger())
    commands = run.send(Abort("boom"))
    assert run.state is State.FAILED
    assert [r.kind for r in slot_requests(commands)] == [SlotRequestKind.RELEASE]
