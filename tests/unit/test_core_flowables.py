"""The task-run tree, walked event by event: flowables, task properties, operations."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from headrace import messages
from headrace.core.events import (
    ChildEnded,
    Kill,
    KillTask,
    Replay,
    Restart,
    Resume,
    SendCommand,
    Start,
    StartExecution,
    command_event,
)
from headrace.core.state import Execution, TimerKind
from headrace.core.tree import MAX_SUBFLOW_DEPTH
from headrace.flow.model import Flow
from headrace.messages import CommandKind, CommandStatus
from headrace.states import State
from tests.unit.test_core_helpers import (
    T0,
    Run,
    finished,
    fired,
    log_task,
    logs,
    make_flow,
    requests,
    timers,
    trigger,
)


def command(
    kind: CommandKind, task_run_id: str | None = None, **payload
) -> messages.ExecutionCommand:
    return messages.ExecutionCommand(
        f"{kind}-1", "ex1", kind, T0, task_run_id=task_run_id, payload=payload
    )


def states(run: Run) -> dict[str, State]:
    return run.task_states()


def test_sequential_runs_children_in_order_and_ends_from_them():
    run = Run(
        make_flow(
            {"id": "s", "type": "flow.sequential", "tasks": [log_task("a"), log_task("b")]},
            log_task("c"),
        )
    )
    (a,) = requests(run.send(trigger()))
    assert states(run) == {"s": State.RUNNING, "a": State.RUNNING}
    assert run.execution.task_runs[1].parent_task_run_id == run.execution.task_runs[0].id
    (b,) = requests(run.send(finished(a)))
    (c,) = requests(run.send(finished(b, State.WARNING)))
    assert states(run)["s"] is State.WARNING
    run.send(finished(c))
    assert run.state is State.WARNING


def test_parallel_respects_its_concurrency_and_fails_after_running_ones_end():
    flow = make_flow(
        {
            "id": "p",
            "type": "io.kestra.plugin.core.flow.Parallel",
            "concurrency": 2,
            "tasks": [log_task(f"t{i}") for i in range(4)],
        }
    )
    assert flow.tasks[0].type == "flow.parallel"
    run = Run(flow)
    t0, t1 = requests(run.send(trigger()))
    (t2,) = requests(run.send(finished(t0)))
    assert requests(run.send(finished(t1, State.FAILED, error="x"))) == []  # no new lane
    assert states(run)["p"] is State.RUNNING
    run.send(finished(t2))
    assert states(run)["p"] is State.FAILED and run.state is State.FAILED
    assert "t3" not in states(run)


def test_dag_starts_tasks_once_their_dependencies_succeeded():
    flow = make_flow(
        {
            "id": "d",
            "type": "flow.dag",
            "tasks": [
                {"task": log_task("a")},
                {"task": log_task("b"), "dependsOn": ["a"]},
                {"task": log_task("c"), "dependsOn": ["a"]},
                {"task": log_task("e"), "dependsOn": ["b", "c"]},
            ],
        }
    )
    run = Run(flow)
    (a,) = requests(run.send(trigger()))
    b, c = requests(run.send(finished(a)))
    assert requests(run.send(finished(b))) == []
    (e,) = requests(run.send(finished(c)))
    run.send(finished(e))
    assert run.state is State.SUCCESS


def test_if_and_switch_choose_a_branch_once():
    flow = make_flow(
        {
            "id": "check",
            "type": "flow.if",
            "condition": "{{ inputs.n > 2 }}",
            "then": [log_task("big")],
            "else": [log_task("small")],
        },
        {
            "id": "sw",
            "type": "flow.switch",
            "value": "{{ inputs.kind }}",
            "cases": {"csv": [log_task("csv")]},
            "defaults": [log_task("other")],
        },
    )
    run = Run(flow)
    (big,) = requests(run.send(trigger(inputs={"n": 3, "kind": "json"})))
    assert big.task_id == "big"
    (other,) = requests(run.send(finished(big)))
    assert other.task_id == "other"
    run.send(finished(other))
    assert run.state is State.SUCCESS
    assert run.execution.task_runs[2].outputs == {"value": "json", "defaults": True}


def test_if_with_an_empty_else_succeeds_at_once():
    flow = make_flow(
        {"id": "check", "type": "flow.if", "condition": False, "then": [log_task("x")]},
        log_task("after"),
    )
    run = Run(flow)
    (after,) = requests(run.send(trigger()))
    assert after.task_id == "after" and states(run)["check"] is State.SUCCESS


def test_foreach_gives_values_parents_and_respects_its_limit():
    flow = make_flow(
        {
            "id": "outer",
            "type": "flow.foreach",
            "values": ["x", "y"],
            "tasks": [
                {
                    "id": "inner",
                    "type": "flow.foreach",
                    "values": "{{ [1, 2, 3] }}",
                    "concurrencyLimit": 2,
                    "tasks": [
                        {
                            "id": "say",
                            "type": "log",
                            "message": "{{ parent.taskrun.value }}-{{ taskrun.value }}",
                        }
                    ],
                }
            ],
        }
    )
    run = Run(flow)
    first = requests(run.send(trigger()))
    assert [r.properties["message"] for r in first] == ["x-1", "x-2"]
    (third,) = requests(run.send(finished(first[0], outputs={"n": 1})))
    assert third.properties["message"] == "x-3"
    assert requests(run.send(finished(first[1]))) == []
    nxt = requests(run.send(finished(third)))
    assert [r.properties["message"] for r in nxt] == ["y-1", "y-2"]
    say = [r for r in run.execution.task_runs if r.task_id == "say"]
    assert [r.value for r in say] == ["1", "2", "3", "1", "2"]
    assert len({r.id for r in say}) == 5


def test_allow_failure_disabled_and_run_if():
    flow = make_flow(
        log_task("off", disabled=True),
        log_task("maybe", runIf="{{ inputs.go }}"),
        log_task("flaky", allowFailure=True),
        log_task("last"),
    )
    run = Run(flow)
    (flaky,) = requests(run.send(trigger(inputs={"go": False})))
    assert states(run) == {"maybe": State.SKIPPED, "flaky": State.RUNNING}
    (last,) = requests(run.send(finished(flaky, State.FAILED, error="meh")))
    assert states(run)["flaky"] is State.WARNING
    run.send(finished(last))
    assert run.state is State.WARNING


def test_fail_task_fails_the_execution_with_its_message():
    run = Run(make_flow({"id": "stop", "type": "flow.fail", "message": "bad {{ inputs.n }}"}))
    run.send(trigger(inputs={"n": 1}))
    assert run.state is State.FAILED
    assert run.execution.task_runs[0].attempts[0].error == "bad 1"


def test_kill_cancels_running_attempts_and_ends_killed_when_they_report():
    flow = make_flow(
        {
            "id": "p",
            "type": "flow.parallel",
            "tasks": [
                log_task("a"),
                log_task("b", retry={"type": "constant", "interval": "PT1M", "maxAttempts": 3}),
            ],
        },
        log_task("never"),
    )
    run = Run(flow)
    a, b = requests(run.send(trigger()))
    run.send(finished(b, State.FAILED, error="x"))  # b is RETRYING
    commands = run.send(Kill(command(CommandKind.KILL)))
    assert run.state is State.KILLING
    assert [c for c in commands if isinstance(c, KillTask)] == [KillTask("ex1", a.task_run_id, 1)]
    assert states(run)["b"] is State.KILLED and run.execution.timers == []
    assert run.send(Kill(command(CommandKind.KILL))) == []
    run.send(finished(a, State.KILLED))
    assert states(run) == {"p": State.KILLED, "a": State.KILLED, "b": State.KILLED}
    assert run.state is State.KILLED


def test_pause_waits_for_resume_whose_inputs_become_outputs():
    run = Run(
        make_flow(
            {"id": "wait", "type": "flow.pause"}, log_task("after", message="{{ outputs.wait.ok }}")
        )
    )
    run.send(trigger())
    assert run.state is State.PAUSED
    commands = run.send(Resume(command(CommandKind.RESUME, inputs={"ok": "yes"})))
    (after,) = requests(commands)
    assert after.properties["message"] == "yes" and run.state is State.RUNNING


def test_pause_with_a_delay_resumes_on_its_timer():
    run = Run(make_flow({"id": "wait", "type": "flow.pause", "delay": "PT1M"}, log_task("after")))
    (timer,) = timers(run.send(trigger()))
    assert timer.kind is TimerKind.PAUSE and timer.due == T0 + timedelta(minutes=1)
    (after,) = requests(run.send(fired("ex1", timer), timer.due))
    assert after.task_id == "after"


def test_subflow_starts_a_child_and_ends_from_its_result():
    flow = make_flow(
        {
            "id": "sub",
            "type": "flow.subflow",
            "namespace": "company.team",
            "flowId": "child",
            "inputs": {"n": "{{ inputs.n }}"},
        }
    )
    run = Run(flow)
    (start,) = [c for c in run.send(trigger(inputs={"n": 4})) if isinstance(c, StartExecution)]
    child = start.trigger
    assert child.inputs == {"n": 4} and child.flow_revision == 0
    assert child.trigger["parentExecutionId"] == "ex1"
    # The child, run by the same core, tells its parent when it ends.
    child_run = Run(make_flow(log_task("c"), flow_id="child"))
    (c,) = requests(child_run.send(type(trigger())(child)))
    (send,) = [
        x for x in child_run.send(finished(c, outputs={"v": 1})) if isinstance(x, SendCommand)
    ]
    assert send.command.kind is CommandKind.CHILD_ENDED and send.command.execution_id == "ex1"
    run.send(command_event(send.command))
    assert run.state is State.SUCCESS
    assert run.execution.task_runs[0].outputs == {
        "executionId": child.execution_id,
        "state": "SUCCESS",
        "outputs": {},
    }


def test_a_subflow_child_inherits_the_flow_trigger_chain():
    # A -(flow trigger)-> B -(subflow)-> A: without the chain the loop would never be cut.
    flow = make_flow(
        {"id": "sub", "type": "flow.subflow", "namespace": "company.team", "flowId": "a"}
    )
    start = trigger()
    chained = dataclasses.replace(
        start.trigger, trigger={"type": "flow", "chain": ["company.team/a"]}
    )
    (call,) = [c for c in Run(flow).send(Start(chained)) if isinstance(c, StartExecution)]
    assert call.trigger.trigger["chain"] == ["company.team/a"]
    (plain,) = [c for c in Run(flow).send(start) if isinstance(c, StartExecution)]
    assert "chain" not in plain.trigger.trigger


def test_a_flow_calling_itself_fails_at_the_subflow_depth_limit():
    flow = make_flow(
        log_task("work"),
        {"id": "again", "type": "flow.subflow", "namespace": "company.team", "flowId": "demo"},
    )
    start, depths = trigger(), []
    for _ in range(MAX_SUBFLOW_DEPTH + 1):
        run = Run(flow)
        (work,) = requests(run.send(start))
        calls = [c for c in run.send(finished(work)) if isinstance(c, StartExecution)]
        if not calls:
            break
        start = type(start)(calls[0].trigger)
        depths.append(start.trigger.trigger["depth"])
    assert depths == list(range(1, MAX_SUBFLOW_DEPTH + 1))
    # The execution at the deepest level may not call once more: its task fails, saying why.
    assert run.state is State.FAILED and run.task_states()["again"] is State.FAILED
    (error,) = [line for line in logs(run.history) if line.task_id == "again"]
    assert error.message == (
        f"task 'again': subflow company.team/demo would run {MAX_SUBFLOW_DEPTH + 1} levels"
        f" deep; the limit is {MAX_SUBFLOW_DEPTH} (a flow calling itself?)"
    )


def test_subflow_failure_is_transmitted_unless_told_otherwise():
    for transmit, expected in ((True, State.FAILED), (False, State.SUCCESS)):
        flow = make_flow(
            {
                "id": "sub",
                "type": "flow.subflow",
                "namespace": "a.b",
                "flowId": "c",
                "transmitFailed": transmit,
            }
        )
        run = Run(flow)
        (start,) = [c for c in run.send(trigger()) if isinstance(c, StartExecution)]
        payload = {"childExecutionId": start.trigger.execution_id, "state": "FAILED", "outputs": {}}
        run.send(
            ChildEnded(command(CommandKind.CHILD_ENDED, run.execution.task_runs[0].id, **payload))
        )
        assert run.state is expected


def test_restart_reruns_failed_runs_keeps_successes_and_reruns_errors():
    flow = make_flow(
        {"id": "s", "type": "flow.sequential", "tasks": [log_task("a"), log_task("b")]},
        errors=[log_task("alert")],
    )
    run = Run(flow)
    (a,) = requests(run.send(trigger()))
    (b,) = requests(run.send(finished(a, outputs={"x": 1})))
    (alert,) = requests(run.send(finished(b, State.FAILED, error="x")))
    run.send(finished(alert))
    assert run.state is State.FAILED
    (b2,) = requests(run.send(Restart(command(CommandKind.RESTART))))
    assert (b2.task_id, b2.attempt, b2.task_run_id) == ("b", 2, b.task_run_id)
    assert run.state is State.RUNNING and "alert" not in states(run)
    run.send(finished(b2))
    assert run.state is State.SUCCESS
    assert [h.state for h in run.execution.histories][-3:] == [
        State.FAILED,
        State.RUNNING,
        State.SUCCESS,
    ]


def test_restart_inside_parallel_reruns_the_failed_lane_only():
    flow = make_flow({"id": "p", "type": "flow.parallel", "tasks": [log_task("a"), log_task("b")]})
    run = Run(flow)
    a, b = requests(run.send(trigger()))
    run.send(finished(a, State.FAILED, error="x"))
    run.send(finished(b))
    assert run.state is State.FAILED
    (a2,) = requests(run.send(Restart(command(CommandKind.RESTART))))
    assert (a2.task_id, a2.attempt, a2.task_run_id) == ("a", 2, a.task_run_id)
    assert states(run) == {"p": State.RUNNING, "a": State.RUNNING, "b": State.SUCCESS}
    run.send(finished(a2))
    assert states(run)["p"] is State.SUCCESS and run.state is State.SUCCESS


def test_restart_inside_dag_reruns_the_failed_task_then_its_dependents():
    flow = make_flow(
        {
            "id": "d",
            "type": "flow.dag",
            "tasks": [
                {"task": log_task("a")},
                {"task": log_task("b"), "dependsOn": ["a"]},
                {"task": log_task("c")},
            ],
        }
    )
    run = Run(flow)
    a, c = requests(run.send(trigger()))
    run.send(finished(c))
    run.send(finished(a, State.FAILED, error="x"))
    assert run.state is State.FAILED and "b" not in states(run)
    (a2,) = requests(run.send(Restart(command(CommandKind.RESTART))))
    assert (a2.task_id, a2.attempt) == ("a", 2)
    (b,) = requests(run.send(finished(a2)))
    assert b.task_id == "b"
    run.send(finished(b))
    assert run.state is State.SUCCESS


def test_restart_of_a_nested_container_inside_parallel_reaches_the_failed_task():
    flow = make_flow(
        {
            "id": "p",
            "type": "flow.parallel",
            "tasks": [
                {"id": "s", "type": "flow.sequential", "tasks": [log_task("a"), log_task("b")]},
                log_task("c"),
            ],
        }
    )
    run = Run(flow)
    a, c = requests(run.send(trigger()))
    run.send(finished(c))
    (b,) = requests(run.send(finished(a)))
    run.send(finished(b, State.FAILED, error="x"))
    assert run.state is State.FAILED
    (b2,) = requests(run.send(Restart(command(CommandKind.RESTART))))
    assert (b2.task_id, b2.attempt) == ("b", 2)
    run.send(finished(b2))
    assert run.state is State.SUCCESS


def test_replay_seeds_a_new_execution_from_a_chosen_task_run():
    flow = make_flow(log_task("a"), log_task("b", message="{{ outputs.a.x }}"))
    run = Run(flow)
    (a,) = requests(run.send(trigger()))
    (b,) = requests(run.send(finished(a, outputs={"x": 5})))
    run.send(finished(b))
    start, answered = run.send(
        Replay(command(CommandKind.REPLAY, newExecutionId="ex2", taskRunId=b.task_run_id))
    )
    assert answered.event.command.status is CommandStatus.APPLIED
    new = Run(flow)
    (b_again,) = requests(new.send(type(trigger())(start.trigger)))
    assert b_again.properties["message"] == 5 and b_again.execution_id == "ex2"
    assert new.execution.trigger == {
        "type": "replay",
        "executionId": "ex1",
        "taskRunId": b.task_run_id,
    }
    assert states(new) == {"a": State.SUCCESS, "b": State.RUNNING}


def test_flow_outputs_are_rendered_at_the_end_and_a_failure_fails():
    good = make_flow(log_task("a"))
    good = Flow.model_validate(
        {**good.model_dump(by_alias=True), "outputs": [{"id": "x", "value": "{{ outputs.a.n }}"}]}
    )
    run = Run(good)
    (a,) = requests(run.send(trigger()))
    run.send(finished(a, outputs={"n": 3}))
    assert run.state is State.SUCCESS and run.execution.outputs == {"x": 3}
    bad = Flow.model_validate(
        {**good.model_dump(by_alias=True), "outputs": [{"id": "x", "value": "{{ nope }}"}]}
    )
    run = Run(bad)
    (a,) = requests(run.send(trigger()))
    commands = run.send(finished(a))
    assert run.state is State.FAILED
    assert "cannot render the flow's outputs" in logs(commands)[0].message


def test_tree_state_round_trips_through_bytes():
    flow = make_flow(
        {
            "id": "f",
            "type": "flow.foreach",
            "values": [1, {"k": 2}],
            "concurrencyLimit": 0,
            "tasks": [log_task("a")],
        }
    )
    run = Run(flow)
    run.send(trigger())
    restored = Execution.from_bytes(run.execution.to_bytes())
    assert restored == run.execution
    assert restored.task_runs[0].data == ["1", '{"k":2}']


def test_a_kill_that_ends_several_runs_of_one_container_ends_everything_once():
    # Found by the tree property test: the second killed pause re-settled the for-each
    # that the first one had already ended KILLED, and the execution ended twice.
    run = Run(
        make_flow(
            {
                "id": "each",
                "type": "flow.foreach",
                "values": [1, 2],
                "concurrencyLimit": 0,
                "tasks": [{"id": "wait", "type": "flow.pause"}],
            },
            log_task("after"),
        )
    )
    run.send(trigger())
    assert run.state is State.PAUSED
    run.send(Kill(command(CommandKind.KILL)))
    assert run.state is State.KILLED
    assert [h.state for h in run.execution.histories][-2:] == [State.KILLING, State.KILLED]
    for task_run in run.execution.task_runs:
        assert task_run.state is State.KILLED
        assert sum(h.state.is_terminal for h in task_run.histories) == 1


def test_nested_foreach_outputs_are_keyed_by_every_loop_value():
    flow = make_flow(
        {
            "id": "outer",
            "type": "flow.foreach",
            "values": ["a", "b"],
            "tasks": [
                {
                    "id": "inner",
                    "type": "flow.foreach",
                    "values": ["x"],
                    "tasks": [
                        {"id": "leaf", "type": "log", "message": "{{ parent.taskrun.value }}"}
                    ],
                }
            ],
        },
        {
            "id": "report",
            "type": "log",
            "message": "{{ outputs.leaf.a.x.n }}/{{ outputs.leaf.b.x.n }}",
        },
    )
    run = Run(flow)
    (first,) = requests(run.send(trigger()))
    (second,) = requests(run.send(finished(first, outputs={"n": 1})))
    (report,) = requests(run.send(finished(second, outputs={"n": 2})))
    assert report.properties["message"] == "1/2"
