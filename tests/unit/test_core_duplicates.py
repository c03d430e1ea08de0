"""Redelivered commands: Kafka delivers at least once, so the same command may come twice.

Operator commands (kill, resume, restart) are remembered by id; slot answers name the
claim they answer. Each test brings the execution back to a state where the command
would act again, then redelivers it.
"""

from __future__ import annotations

from datetime import timedelta

from headrace import messages
from headrace.core.concurrency import answer_command
from headrace.core.events import Event, Kill, Restart, Resume, SlotDenied, SlotGranted
from headrace.core.slots import decide
from headrace.core.state import MAX_APPLIED_COMMANDS, Execution
from headrace.messages import CommandKind, ConcurrencyBehavior, SlotRequest
from headrace.states import State
from tests.unit.test_core_concurrency import limited_flow, slot_requests
from tests.unit.test_core_helpers import T0, Run, finished, log_task, make_flow, requests, trigger


def command(kind: CommandKind, command_id: str, **payload) -> messages.ExecutionCommand:
    return messages.ExecutionCommand(command_id, "ex1", kind, T0, payload=payload)


def test_a_redelivered_resume_does_not_resume_the_next_pause():
    run = Run(make_flow({"id": "p1", "type": "flow.pause"}, {"id": "p2", "type": "flow.pause"}))
    run.send(trigger())
    first = Resume(command(CommandKind.RESUME, "resume-1"))
    run.send(first)
    assert run.task_states() == {"p1": State.SUCCESS, "p2": State.PAUSED}
    assert run.send(first) == []
    assert run.task_states()["p2"] is State.PAUSED and run.state is State.PAUSED
    run.send(Resume(command(CommandKind.RESUME, "resume-2")))
    assert run.state is State.SUCCESS


def test_a_redelivered_restart_does_not_restart_a_second_time():
    run = Run(make_flow(log_task("a")))
    (a,) = requests(run.send(trigger()))
    run.send(finished(a, State.FAILED, error="x"))
    first = Restart(command(CommandKind.RESTART, "restart-1"))
    (a2,) = requests(run.send(first))
    run.send(finished(a2, State.FAILED, error="again"))
    assert run.state is State.FAILED
    assert run.send(first) == [] and run.state is State.FAILED
    (a3,) = requests(run.send(Restart(command(CommandKind.RESTART, "restart-2"))))
    assert a3.attempt == 3


def test_a_redelivered_kill_does_not_kill_the_restarted_execution():
    run = Run(make_flow(log_task("a")))
    run.send(trigger())
    kill = Kill(command(CommandKind.KILL, "kill-1"))
    (a,) = requests(run.history)
    run.send(kill)
    run.send(finished(a, State.KILLED))
    assert run.state is State.KILLED
    run.send(Restart(command(CommandKind.RESTART, "restart-1")))
    assert run.state is State.RUNNING
    assert run.send(kill) == [] and run.state is State.RUNNING


def _replay_batch(run: Run, batch: list[Event]) -> None:
    """Deliver `batch` once, store the state, then deliver it again on the stored state:
    at-least-once, the executor crashed after writing the table, before committing."""
    for event in batch:
        run.send(event)
    run.execution = Execution.from_bytes(run.execution.to_bytes())
    for event in batch:
        run.send(event)


def test_a_replayed_resume_that_changed_nothing_does_not_resume_a_later_pause():
    run = Run(make_flow(log_task("a"), {"id": "p2", "type": "flow.pause"}))
    (a,) = requests(run.send(trigger()))
    # A double-click: the second resume finds nothing paused (still RUNNING).
    _replay_batch(run, [Resume(command(CommandKind.RESUME, "resume-2")), finished(a)])
    assert run.task_states() == {"a": State.SUCCESS, "p2": State.PAUSED}
    assert run.state is State.PAUSED  # the approval gate still waits


def test_a_replayed_kill_that_changed_nothing_does_not_kill_the_restarted_execution():
    run = Run(make_flow(log_task("a")))
    (a,) = requests(run.send(trigger()))
    run.send(finished(a, State.FAILED, error="x"))
    assert run.state is State.FAILED
    batch: list[Event] = [
        Kill(command(CommandKind.KILL, "kill-1")),  # on an ended execution: nothing to do
        Restart(command(CommandKind.RESTART, "restart-1")),
    ]
    _replay_batch(run, batch)
    assert run.state is State.RUNNING
    assert [r.attempt for r in requests(run.history)] == [1, 2]  # one restart, no kill


def test_applied_command_ids_are_bounded_and_survive_the_table():
    run = Run(make_flow(*({"id": f"p{i}", "type": "flow.pause"} for i in range(300))))
    run.send(trigger())
    for i in range(300):
        run.send(Resume(command(CommandKind.RESUME, f"resume-{i}")))
    assert run.state is State.SUCCESS
    applied = run.execution.applied
    assert len(applied) == MAX_APPLIED_COMMANDS
    assert applied[0] == f"resume-{300 - MAX_APPLIED_COMMANDS}" and applied[-1] == "resume-299"
    assert Execution.from_bytes(run.execution.to_bytes()).applied == applied


def _world_grant(run: Run, commands) -> messages.ExecutionCommand:
    """The slot agent's answer to the ACQUIRE among `commands`, with a free slot."""
    (acquire,) = slot_requests(commands)
    (answer,) = decide(None, acquire).answers
    return answer_command(answer, acquire)


def test_a_stale_grant_for_an_earlier_claim_is_ignored():
    run = Run(limited_flow(log_task("a")))
    old_grant = _world_grant(run, run.send(trigger()))
    (a,) = requests(run.send(SlotGranted(old_grant)))
    run.send(finished(a, State.FAILED, error="x"))
    restart = run.send(Restart(command(CommandKind.RESTART, "restart-1")), T0 + timedelta(1))
    assert run.state is State.QUEUED
    # The first grant, redelivered now, answers claim 1: the slot is not ours yet.
    assert run.send(SlotGranted(old_grant)) == [] and run.state is State.QUEUED
    (a2,) = requests(run.send(SlotGranted(_world_grant(run, restart))))
    assert a2.attempt == 2 and run.state is State.RUNNING


def test_a_stale_denial_for_an_earlier_claim_is_ignored():
    run = Run(limited_flow(log_task("a"), behavior="FAIL"))
    (acquire,) = slot_requests(run.send(trigger()))
    full = decide(None, SlotRequest("other", acquire.flow_key, "ex0", acquire.kind, T0)).slots
    (refusal,) = decide(full, acquire).answers
    old_denial = answer_command(refusal, acquire)
    assert old_denial.payload["behavior"] == str(ConcurrencyBehavior.FAIL)
    run.send(SlotDenied(old_denial))
    assert run.state is State.FAILED
    run.send(Restart(command(CommandKind.RESTART, "restart-1")))
    assert run.state is State.QUEUED
    assert run.send(SlotDenied(old_denial)) == [] and run.state is State.QUEUED


def test_an_answer_naming_no_claim_is_taken_as_before():
    run = Run(limited_flow(log_task("a")))
    run.send(trigger())
    (a,) = requests(run.send(SlotGranted(command(CommandKind.SLOT_GRANTED, "old-style"))))
    assert a.task_id == "a" and run.state is State.RUNNING
