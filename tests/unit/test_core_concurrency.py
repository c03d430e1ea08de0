"""Flow concurrency limits, as the execution lives them: QUEUED, granted or denied, released.

The slots themselves are `core.slots.decide`; the last tests join both pure halves the way
the executor and the `flow-slots` agent do, through `concurrency.answer_command`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from headrace import messages
from headrace.core.concurrency import answer_command
from headrace.core.events import (
    Command,
    Kill,
    Restart,
    SendCommand,
    command_event,
)
from headrace.core.events import RequestSlot as RequestSlotCommand
from headrace.core.slots import FlowSlots, decide
from headrace.flow.model import Flow
from headrace.messages import (
    CommandKind,
    ConcurrencyBehavior,
    LogLevel,
    SlotRequest,
    SlotRequestKind,
)
from headrace.states import State
from tests.unit.test_core_helpers import (
    T0,
    Run,
    events,
    finished,
    log_task,
    logs,
    requests,
    trigger,
)

ACQUIRE, RELEASE = SlotRequestKind.ACQUIRE, SlotRequestKind.RELEASE


def limited_flow(
    *tasks: dict[str, Any], limit: int = 1, behavior: str = "QUEUE", **extra: Any
) -> Flow:
    return Flow.model_validate(
        {
            "id": "demo",
            "namespace": "company.team",
            "concurrency": {"limit": limit, "behavior": behavior},
            "tasks": list(tasks) or [log_task("a")],
            **extra,
        }
    )


def slot_requests(commands: list[Command]) -> list[SlotRequest]:
    return [c.request for c in commands if isinstance(c, RequestSlotCommand)]


def command(kind: CommandKind, execution_id: str = "ex1", **payload: Any):
    return command_event(
        messages.ExecutionCommand(f"{kind}-{execution_id}", execution_id, kind, T0, payload=payload)
    )


def granted(execution_id: str = "ex1"):
    return command(CommandKind.SLOT_GRANTED, execution_id)


def denied(behavior: str, execution_id: str = "ex1"):
    return command(CommandKind.SLOT_DENIED, execution_id, behavior=behavior)


def history(run: Run) -> list[State]:
    return [change.state for change in run.execution.histories]


def test_a_limited_flow_starts_queued_and_asks_for_a_slot():
    run = Run(limited_flow(limit=2, behavior="FAIL"))
    commands = run.send(trigger())
    assert run.state is State.QUEUED and history(run) == [State.CREATED, State.QUEUED]
    assert requests(commands) == [] and run.execution.task_runs == []
    (published,) = events(commands)
    assert published.seq == 1 and published.execution.state is State.QUEUED
    (acquire,) = slot_requests(commands)
    assert (acquire.kind, acquire.flow_key, acquire.execution_id) == (
        ACQUIRE,
        "company.team/demo",
        "ex1",
    )
    assert (acquire.limit, acquire.behavior, acquire.time) == (2, ConcurrencyBehavior.FAIL, T0)
    again = Run(limited_flow(limit=2, behavior="FAIL"))
    assert slot_requests(again.send(trigger())) == [acquire]  # deterministic request id


def test_a_flow_without_concurrency_never_asks_for_a_slot():
    run = Run(
        Flow.model_validate({"id": "demo", "namespace": "company.team", "tasks": [log_task("a")]})
    )
    (request,) = requests(run.send(trigger()))
    run.send(finished(request))
    assert run.state is State.SUCCESS and slot_requests(run.history) == []
    assert history(run) == [State.CREATED, State.RUNNING, State.SUCCESS]


def test_granted_it_runs_like_any_start_and_gives_the_slot_back_once_at_the_end():
    run = Run(limited_flow(log_task("a"), log_task("b")))
    run.send(trigger())
    commands = run.send(granted(), T0 + timedelta(seconds=1))
    assert run.state is State.RUNNING
    (a,) = requests(commands)
    assert a.task_id == "a" and slot_requests(commands) == []
    # A redelivered grant, or one arriving late, changes nothing.
    assert run.send(granted()) == []
    (b,) = requests(run.send(finished(a)))
    assert len(slot_requests(run.history)) == 1  # the acquire only, while running
    commands = run.send(finished(b))
    assert run.state is State.SUCCESS
    (release,) = slot_requests(commands)
    assert (release.kind, release.execution_id, release.flow_key) == (
        RELEASE,
        "ex1",
        "company.team/demo",
    )
    acquire = slot_requests(run.history)[0]
    assert release.request_id != acquire.request_id
    assert run.send(granted()) == []  # after the end: ignored
    assert history(run) == [State.CREATED, State.QUEUED, State.RUNNING, State.SUCCESS]


def test_denied_with_cancel_ends_cancelled_and_with_fail_ends_failed_with_an_error_log():
    cancelled = Run(limited_flow(limit=3, behavior="CANCEL"))
    cancelled.send(trigger())
    commands = cancelled.send(denied("CANCEL"))
    assert cancelled.state is State.CANCELLED
    assert history(cancelled) == [State.CREATED, State.QUEUED, State.CANCELLED]
    assert [r.kind for r in slot_requests(commands)] == [RELEASE]
    assert requests(cancelled.history) == []

    failed = Run(limited_flow(limit=3, behavior="FAIL"))
    failed.send(trigger())
    commands = failed.send(denied("FAIL"))
    assert failed.state is State.FAILED
    (line,) = logs(commands)
    assert line.level is LogLevel.ERROR and line.message == "concurrency limit of 3 reached"
    assert [r.kind for r in slot_requests(commands)] == [RELEASE]
    # Both are ends: a second answer changes nothing.
    assert failed.send(denied("FAIL")) == [] and failed.send(granted()) == []
    assert cancelled.send(denied("CANCEL")) == []


def test_a_denial_after_the_grant_is_ignored():
    run = Run(limited_flow())
    run.send(trigger())
    run.send(granted())
    assert run.send(denied("FAIL")) == []
    assert run.state is State.RUNNING


def test_killed_while_queued_it_ends_killed_at_once_and_leaves_the_queue():
    run = Run(limited_flow())
    run.send(trigger())
    commands = run.send(Kill(command(CommandKind.KILL).command))
    assert run.state is State.KILLED
    assert [r.kind for r in slot_requests(commands)] == [RELEASE]
    assert run.send(granted()) == []  # a grant racing the kill: its release follows it
    assert run.send(Kill(command(CommandKind.KILL).command)) == []
    assert len(slot_requests(run.history)) == 2


def test_killed_while_running_it_gives_the_slot_back_when_killed():
    run = Run(limited_flow())
    run.send(trigger())
    (a,) = requests(run.send(granted()))
    commands = run.send(Kill(command(CommandKind.KILL).command))
    assert run.state is State.KILLING and slot_requests(commands) == []
    commands = run.send(finished(a, State.KILLED))
    assert run.state is State.KILLED
    assert [r.kind for r in slot_requests(commands)] == [RELEASE]


def test_a_denied_subflow_child_tells_its_parent():
    run = Run(limited_flow(behavior="CANCEL"))
    start = trigger("child")
    start.trigger.trigger = {
        "type": "subflow",
        "parentExecutionId": "parent",
        "parentTaskRunId": "tr1",
    }
    run.send(start)
    commands = run.send(denied("CANCEL", "child"))
    (notice,) = [c.command for c in commands if isinstance(c, SendCommand)]
    assert (notice.execution_id, notice.kind, notice.task_run_id) == (
        "parent",
        CommandKind.CHILD_ENDED,
        "tr1",
    )
    assert notice.payload["state"] == "CANCELLED"


def test_a_restart_queues_again_and_reruns_only_once_granted():
    run = Run(limited_flow(log_task("a"), log_task("b")))
    run.send(trigger())
    (a,) = requests(run.send(granted()))
    (b,) = requests(run.send(finished(a)))
    run.send(finished(b, State.FAILED, error="boom"))
    assert run.state is State.FAILED
    first_acquire, first_release = slot_requests(run.history)

    commands = run.send(Restart(command(CommandKind.RESTART).command), T0 + timedelta(minutes=1))
    assert run.state is State.QUEUED and requests(commands) == []
    (acquire,) = slot_requests(commands)
    assert acquire.kind is ACQUIRE and acquire.request_id not in (
        first_acquire.request_id,
        first_release.request_id,
    )
    assert run.send(Restart(command(CommandKind.RESTART).command)) == []  # queued: not ended

    (again,) = requests(run.send(granted()))
    assert (again.task_id, again.attempt) == ("b", 2)
    assert run.task_states() == {"a": State.SUCCESS, "b": State.RUNNING}
    commands = run.send(finished(again))
    assert run.state is State.SUCCESS
    (release,) = slot_requests(commands)
    assert release.kind is RELEASE and release.request_id != first_release.request_id
    assert history(run)[-4:] == [State.FAILED, State.QUEUED, State.RUNNING, State.SUCCESS]


def test_a_restart_reruns_the_errors_branch_afresh_after_the_grant():
    run = Run(limited_flow(log_task("a"), errors=[log_task("e")]))
    run.send(trigger())
    (a,) = requests(run.send(granted()))
    (e,) = requests(run.send(finished(a, State.FAILED, error="boom")))
    run.send(finished(e))
    assert run.state is State.FAILED
    run.send(Restart(command(CommandKind.RESTART).command))
    assert [r.task_id for r in run.execution.task_runs] == ["a", "e"]  # untouched while queued
    (a2,) = requests(run.send(granted()))
    assert a2.task_id == "a" and [r.task_id for r in run.execution.task_runs] == ["a"]
    (e2,) = requests(run.send(finished(a2, State.FAILED, error="again")))
    assert e2.task_run_id != e.task_run_id  # a new generation of the errors branch


def test_a_restart_after_a_denial_asks_again_and_runs_from_the_start():
    run = Run(limited_flow(log_task("a"), behavior="FAIL"))
    run.send(trigger())
    run.send(denied("FAIL"))
    run.send(Restart(command(CommandKind.RESTART).command))
    assert run.state is State.QUEUED
    (a,) = requests(run.send(granted()))
    run.send(finished(a))
    assert run.state is State.SUCCESS
    kinds = [r.kind for r in slot_requests(run.history)]
    assert kinds == [ACQUIRE, RELEASE, ACQUIRE, RELEASE]
    assert len({r.request_id for r in slot_requests(run.history)}) == 4


# ------------------------------------------- both halves: executions and flow slots


class FlowSlotsWorld:
    """Executions of one limited flow and their `flow-slots` partition, wired by hand."""

    def __init__(self, flow: Flow) -> None:
        self.flow = flow
        self.runs: dict[str, Run] = {}
        self.slots: FlowSlots | None = None

    def send(self, execution_id: str, event) -> None:
        run = self.runs.setdefault(execution_id, Run(self.flow))
        for request in slot_requests(run.send(event)):
            step = decide(self.slots, request)
            self.slots = step.slots
            for answer in step.answers:
                self.send(answer.execution_id, command_event(answer_command(answer, request)))

    def states(self) -> dict[str, State]:
        return {execution_id: run.state for execution_id, run in self.runs.items()}

    def finish(self, execution_id: str) -> None:
        (request,) = [
            r
            for r in requests(self.runs[execution_id].history)
            if self.runs[execution_id].task_states()[r.task_id] is State.RUNNING
        ]
        self.send(execution_id, finished(request))


def test_with_a_limit_of_one_executions_run_one_after_the_other_in_order():
    world = FlowSlotsWorld(limited_flow(limit=1))
    for execution_id in ("ex1", "ex2", "ex3"):
        world.send(execution_id, trigger(execution_id))
    assert world.states() == {"ex1": State.RUNNING, "ex2": State.QUEUED, "ex3": State.QUEUED}
    world.send("ex2", Kill(command(CommandKind.KILL, "ex2").command))
    assert world.states()["ex2"] is State.KILLED and world.slots.queue == ("ex3",)
    world.finish("ex1")
    assert world.states() == {"ex1": State.SUCCESS, "ex2": State.KILLED, "ex3": State.RUNNING}
    world.finish("ex3")
    # Every slot given back, and the claims they were held on remembered.
    assert (world.slots.holders, world.slots.queue, world.slots.granted) == ((), (), {})
    assert len(world.slots.released) == 2  # ex1's and ex3's


def test_with_cancel_behavior_the_extra_execution_is_cancelled():
    world = FlowSlotsWorld(limited_flow(limit=2, behavior="CANCEL"))
    for execution_id in ("ex1", "ex2", "ex3"):
        world.send(execution_id, trigger(execution_id))
    assert world.states() == {"ex1": State.RUNNING, "ex2": State.RUNNING, "ex3": State.CANCELLED}
    assert world.slots.holders == ("ex1", "ex2")


def test_answer_commands_are_deterministic_and_carry_the_behavior():
    request = SlotRequest(
        "r1", "company.team/demo", "ex1", ACQUIRE, T0, 1, ConcurrencyBehavior.FAIL
    )
    step = decide(FlowSlots(1, ("ex0",)), request)
    (answer,) = step.answers
    first, again = answer_command(answer, request), answer_command(answer, request)
    assert first == again and first.kind is CommandKind.SLOT_DENIED
    assert first.payload == {"behavior": "FAIL", "claim": "r1"} and first.execution_id == "ex1"
