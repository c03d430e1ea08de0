"""Every kill, resume, restart, replay and probe is answered: what it did, or why not.

The gateway tells the caller from these answers; the watchdog records what a probe found.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from headrace import messages
from headrace.core.events import Kill, Probe, Replay, Restart, Resume
from headrace.core.state import Execution
from headrace.messages import CommandKind, CommandStatus
from headrace.states import State
from tests.unit.test_core_helpers import (
    T0,
    Run,
    events,
    finished,
    log_task,
    make_flow,
    outcomes,
    requests,
    trigger,
)

PAUSE = {"id": "approve", "type": "flow.pause"}


def command(kind: CommandKind, command_id: str = "c1", **payload) -> messages.ExecutionCommand:
    return messages.ExecutionCommand(command_id, "ex1", kind, T0, payload=payload)


def answer(commands: list) -> messages.CommandOutcome:
    (outcome,) = outcomes(commands)
    return outcome


def running() -> tuple[Run, messages.TaskRequest]:
    run = Run(make_flow(log_task("a"), log_task("b")))
    (request,) = requests(run.send(trigger()))
    return run, request


def test_a_kill_that_takes_effect_is_applied_and_says_the_new_state() -> None:
    run, _ = running()
    outcome = answer(run.send(Kill(command(CommandKind.KILL))))
    assert outcome == messages.CommandOutcome(
        "c1", CommandKind.KILL, CommandStatus.APPLIED, None, State.KILLING
    )


def test_commands_an_ended_execution_cannot_take_are_ignored_saying_why() -> None:
    run, request = running()
    (b,) = requests(run.send(finished(request)))
    run.send(finished(b))
    assert run.state is State.SUCCESS
    kill = answer(run.send(Kill(command(CommandKind.KILL, "k"))))
    assert (kill.status, kill.reason) == (
        CommandStatus.IGNORED,
        "the execution already ended SUCCESS",
    )
    restart = answer(run.send(Restart(command(CommandKind.RESTART, "r"))))
    assert restart.status is CommandStatus.IGNORED
    assert restart.reason == "the execution is SUCCESS: only FAILED or KILLED executions restart"
    replay = answer(run.send(Replay(command(CommandKind.REPLAY, "p", newExecutionId="ex2"))))
    assert replay.status is CommandStatus.IGNORED and "no task run" in replay.reason


def test_a_resume_is_applied_only_to_a_paused_execution() -> None:
    run = Run(make_flow(log_task("a"), PAUSE))
    (a,) = requests(run.send(trigger()))
    early = answer(run.send(Resume(command(CommandKind.RESUME, "early"))))
    assert (early.status, early.reason) == (
        CommandStatus.IGNORED,
        "the execution is RUNNING, not PAUSED",
    )
    run.send(finished(a))
    assert run.state is State.PAUSED
    resumed = run.send(Resume(command(CommandKind.RESUME, "late")))
    assert answer(resumed).status is CommandStatus.APPLIED
    assert events(resumed), "the resume's changes are published besides its answer"


def test_a_redelivered_command_is_not_answered_twice() -> None:
    run, _ = running()
    run.send(Kill(command(CommandKind.KILL, "k")))
    assert run.send(Kill(command(CommandKind.KILL, "k"))) == []


def test_a_probe_of_an_execution_that_waits_for_its_worker_finds_nothing_wrong() -> None:
    run, _ = running()
    commands = run.send(Probe(command(CommandKind.PROBE, "p", indexState="RUNNING")))
    assert answer(commands) == messages.CommandOutcome(
        "p", CommandKind.PROBE, CommandStatus.APPLIED, None, State.RUNNING
    )
    assert events(commands) == []  # the index agrees: nothing republished


def test_a_probe_republishes_the_execution_when_the_index_shows_another_state() -> None:
    run, request = running()
    (b,) = requests(run.send(finished(request)))
    run.send(finished(b))
    seq = run.execution.seq
    commands = run.send(Probe(command(CommandKind.PROBE, "p", indexState="RUNNING")))
    (republished,) = events(commands)
    assert republished.seq == seq + 1 and republished.execution.state is State.SUCCESS
    assert answer(commands).state is State.SUCCESS and answer(commands).reason is None


def test_a_paused_execution_is_not_stuck() -> None:
    run = Run(make_flow(PAUSE))
    run.send(trigger())
    assert run.state is State.PAUSED
    assert answer(run.send(Probe(command(CommandKind.PROBE, "p")))).reason is None


def test_a_running_execution_with_nothing_pending_is_reported_stuck() -> None:
    run, request = running()
    run.send(finished(request))
    # What no event sequence should produce: every task run ended, still RUNNING, no timer.
    ended_runs = [replace(r, state=State.SUCCESS) for r in run.execution.task_runs]
    run.execution = Execution.from_bytes(
        replace(run.execution, task_runs=ended_runs, timers=[]).to_bytes()
    )
    outcome = answer(run.send(Probe(command(CommandKind.PROBE, "p", indexState="RUNNING"))))
    assert outcome.status is CommandStatus.APPLIED and outcome.state is State.RUNNING
    assert outcome.reason is not None and "nothing can move it" in outcome.reason


def test_a_timer_long_overdue_is_reported() -> None:
    run = Run(
        make_flow(log_task("a", retry={"type": "constant", "interval": "PT1M", "maxAttempts": 3}))
    )
    (request,) = requests(run.send(trigger()))
    run.send(finished(request, State.FAILED, error="boom"))
    assert run.execution.timers, "a retry waits for its timer"
    soon = answer(run.send(Probe(command(CommandKind.PROBE, "p1")), T0 + timedelta(minutes=2)))
    assert soon.reason is None
    late = answer(run.send(Probe(command(CommandKind.PROBE, "p2")), T0 + timedelta(minutes=10)))
    assert late.reason is not None and "never fired" in late.reason
