"""`advance`: one event in, the new execution state and the commands to emit out.

All flow semantics live in the core, and nothing else does: no I/O, no clock, no
randomness (`now` and every id come in, or are derived from ids that came in), so
replaying the same events gives byte-identical output. The executor's Faust agent is a
thin shell: decode, load, `advance`, store, produce.

The input execution is never mutated: the result is a copy (copy-on-write of the lists
and task runs a step touches). An event that changes nothing returns the very same
execution object and no commands, so callers can skip the table write with `is`; the
exception is a new kill, resume or restart: its id is recorded in `applied` (a copy).

This module has one handler per event; `tree` holds the task-run tree's semantics
(containers, lanes, errors/finally) and `transition.Transition` the primitives.

Events published per step: one `ExecutionEvent` per changed entity (the execution, or
one task run), holding its state after the step; its `histories` carry every state it
went through, so coalescing CREATED -> RUNNING into one event loses nothing.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from headrace import messages
from headrace.core import outcomes, tree
from headrace.core.checks import failed_checks
from headrace.core.concurrency import answers_current_claim
from headrace.core.events import (
    Abort,
    ChildEnded,
    Event,
    Kill,
    KillTask,
    Probe,
    Replay,
    Restart,
    Resume,
    SlotDenied,
    SlotGranted,
    Start,
    StartExecution,
    TaskFinished,
    TimerFired,
)
from headrace.core.ids import command_id, derive_id, task_run_id
from headrace.core.retries import RETRIED_AS, chain_of, format_duration, retried_trigger
from headrace.core.state import (
    MAX_APPLIED_COMMANDS,
    Attempt,
    Execution,
    TaskRun,
    Timer,
    TimerKind,
)
from headrace.core.transition import TIMEOUT_GRACE, Carry, Step, Transition, carrying
from headrace.flow import flowables as f
from headrace.flow.model import Flow
from headrace.messages import CommandKind, LogLevel, StateChange
from headrace.states import State

__all__ = ["TIMEOUT_GRACE", "Carry", "Step", "advance"]

_SUCCEEDED = (State.SUCCESS, State.WARNING, State.SKIPPED)


def advance(
    execution: Execution | None,
    event: Event,
    flow: Flow,
    now: datetime,
    carry: Carry | None = None,
) -> Step:
    """Apply `event` to `execution` (None before its `Start`) of `flow`, at time `now`.

    Kills, resumes, restarts, replays and probes are answered: the step ends with their
    `CommandOutcome` on `executions` (see `outcomes`). `carry`: what the previous step of
    this execution learnt of its task runs, handed on (`transition.Carry`): the same
    result, sooner."""
    with carrying(carry):
        return _advance(execution, event, flow, now)


def _advance(execution: Execution | None, event: Event, flow: Flow, now: datetime) -> Step:
    if execution is None or not isinstance(event, _ANSWERED):
        return _dispatch(execution, event, flow, now)
    if isinstance(event, Probe):
        return outcomes.probe(event.command, Transition(execution, flow, now))
    command = event.command
    if not isinstance(event, _ONCE):
        return outcomes.answer(command, execution, _dispatch(execution, event, flow, now), now)
    if command.command_id in execution.applied:
        return Step(execution, [])  # a redelivery: applied and answered already
    step = _dispatch(execution, event, flow, now)
    applied = [*execution.applied, command.command_id][-MAX_APPLIED_COMMANDS:]
    if step.execution is execution:
        # Recorded even when it changed nothing (a resume while RUNNING, a kill once
        # ended): on a replay of the batch it would otherwise act on a later state
        # (resume the next pause, kill the restarted run). A copy: never mutate the input.
        step = Step(replace(execution, applied=applied), step.commands, step.refusal)
    else:
        assert step.execution is not None  # these commands never delete an execution
        step.execution.applied = applied  # a fresh copy made by the step
    return outcomes.answer(command, execution, step, now)


# Operator commands are remembered by id: their effect depends on a state that comes
# back (paused again, failed again after a restart), so state checks alone cannot tell
# a redelivery from a new command. Other events carry their own staleness check (task
# run id + attempt, pending timer, child execution id, slot claim).
_ONCE = (Kill, Resume, Restart)
# The commands whose outcome is published (`messages.ANSWERED_COMMANDS`).
_ANSWERED = (Kill, Resume, Restart, Replay, Probe)


def _dispatch(execution: Execution | None, event: Event, flow: Flow, now: datetime) -> Step:
    if isinstance(event, Abort):
        return _abort(execution, event, flow, now)
    if isinstance(event, Start):
        if execution is not None:  # a redelivered trigger
            return Step(execution, [])
        return _start(event.trigger, flow, now)
    if execution is None:
        return Step(execution, [])
    match event:
        case Replay(command=command):
            return _replay(execution, command, flow, now)
        case Restart():
            if execution.state not in (State.FAILED, State.KILLED):
                return Step(execution, [])
            return _restart(execution, flow, now)
        case TaskFinished(result=result) if result.state is State.RUNNING:
            # Before the terminal check: a run starting once its execution ended is killed.
            return _task_started(execution, result, flow, now)
    if execution.state.is_terminal:
        return Step(execution, [])
    match event:
        case TaskFinished(result=result):
            return _task_finished(execution, result, flow, now)
        case TimerFired(command=command):
            return _timer_fired(execution, command, flow, now)
        case Kill():
            return _kill(execution, flow, now)
        case Resume(command=command):
            return _resume(execution, command, flow, now)
        case ChildEnded(command=command):
            return _child_ended(execution, command, flow, now)
        case SlotGranted(command=command):
            return _slot_granted(execution, command, flow, now)
        case SlotDenied(command=command):
            return _slot_denied(execution, command, flow, now)
    raise TypeError(f"not a core event: {event!r}")


def _start(trigger: messages.TriggerEvent, flow: Flow, now: datetime) -> Step:
    seed = trigger.trigger.get("seed") if trigger.trigger.get("type") == "replay" else None
    step = Transition(new_execution(trigger, flow, now), flow, now, fresh=True)
    if flow.checks and _checks_block(step):
        return step.finish()
    queued = flow.concurrency is not None
    if queued:
        step.queue_for_slot()  # nothing starts before the slot is granted
    else:
        step.set_execution_state(State.RUNNING)
    for entry in seed or []:
        step.add_task_run(
            TaskRun(
                id=entry["id"],
                task_id=entry["taskId"],
                state=State(entry["state"]),
                histories=[StateChange(State(entry["state"]), now)],
                attempts=[],
                outputs=entry.get("outputs") or {},
                parent_task_run_id=entry.get("parentTaskRunId"),
                value=entry.get("value"),
                iteration=entry.get("iteration"),
                data=entry.get("data"),
            )
        )
    if not queued:
        tree.settle_root(step)
    return step.finish()


def _checks_block(step: Transition) -> bool:
    """Log each false check of the flow; end the execution FAILED if one of them blocks."""
    failed = failed_checks(step.flow.checks, tree.context_for(step, None))
    for check in failed:
        level = LogLevel.ERROR if check.blocks else LogLevel.WARN
        step.log(level, f"check failed: {check.reason}", None, None)
    if any(check.blocks for check in failed):
        tree.end_execution(step, State.FAILED)
        return True
    return False


def new_execution(trigger: messages.TriggerEvent, flow: Flow, now: datetime) -> Execution:
    """The execution a trigger creates, CREATED, before anything runs."""
    return Execution(
        id=trigger.execution_id,
        namespace=trigger.namespace,
        flow_id=trigger.flow_id,
        flow_revision=trigger.flow_revision,
        inputs=trigger.inputs,
        labels={**flow.labels, **trigger.labels},  # the trigger's own labels win
        # A replay's seed is only needed now: keep the stored trigger small.
        trigger={k: v for k, v in trigger.trigger.items() if k != "seed"},
        state=State.CREATED,
        histories=[StateChange(State.CREATED, now)],
        task_runs=[],
        outputs={},
        seq=0,
        timers=[],
        created_at=now,
    )


def _slot_granted(
    execution: Execution, command: messages.ExecutionCommand, flow: Flow, now: datetime
) -> Step:
    if execution.state is not State.QUEUED or not answers_current_claim(execution, command):
        return Step(execution, [])  # a duplicate or late grant, or one for an earlier claim
    step = Transition(execution, flow, now)
    histories = execution.histories
    if len(histories) >= 2 and histories[-2].state.is_terminal:
        _rerun(step)  # queued by a restart
    else:
        step.set_execution_state(State.RUNNING)
        tree.settle_root(step)
    return step.finish()


def _slot_denied(
    execution: Execution, command: messages.ExecutionCommand, flow: Flow, now: datetime
) -> Step:
    if execution.state is not State.QUEUED or not answers_current_claim(execution, command):
        return Step(execution, [])  # a duplicate, or an answer to an earlier claim
    step = Transition(execution, flow, now)
    limit = flow.concurrency.limit if flow.concurrency is not None else 1
    if command.payload.get("behavior") == "FAIL":
        step.log(LogLevel.ERROR, f"concurrency limit of {limit} reached", None, None)
        tree.end_execution(step, State.FAILED)
    else:
        step.log(LogLevel.WARN, f"concurrency limit of {limit} reached: cancelled", None, None)
        tree.end_execution(step, State.CANCELLED)
    return step.finish()


def _task_started(
    execution: Execution, result: messages.TaskResult, flow: Flow, now: datetime
) -> Step:
    """A worker starts a run of an attempt. The first run reported is the attempt's own;
    another one means the request was redelivered because the first run's worker
    stopped: that run ends FAILED as lost and the new one is a new entry of the same
    attempt (not counted as a retry). A run of an attempt that is over (a redelivery
    after its result, before the worker committed) is killed at once."""
    step = Transition(execution, flow, now)
    index = step.find(result.task_run_id)
    run = None if index is None else execution.task_runs[index]
    current = run.attempts[-1] if run is not None and run.attempts else None
    if (
        index is None
        or run is None
        or current is None
        or execution.state.is_terminal
        or run.state is not State.RUNNING
        or current.number != result.attempt
        or current.state is not State.RUNNING
        or step.task_of(index).type in f.PROPERTY_MODELS
    ):
        if not result.run_id:
            return Step(execution, [])
        kill = KillTask(execution.id, result.task_run_id, result.attempt, result.run_id)
        return Step(execution, [kill])
    if current.run_id == result.run_id:
        return Step(execution, [])  # reported twice
    if any(entry.run_id == result.run_id for entry in run.attempts[:-1]):
        # A run given up on as lost, reported again (a redelivered event): it stays dead.
        kill = KillTask(execution.id, result.task_run_id, result.attempt, result.run_id)
        return Step(execution, [kill])
    writable = step.task_run(index)
    started = Attempt(
        current.number,
        State.RUNNING,
        result.started_at,
        None,
        None,
        run_id=result.run_id,
        worker_id=result.worker_id,
    )
    if current.run_id is None:
        writable.attempts[-1] = started  # recorded in the state only: nothing to publish
    else:
        lost = (
            f"lost: worker {current.worker_id or '?'} stopped while running it"
            f" (redelivered to worker {result.worker_id or '?'})"
        )
        # It keeps its run id: a late report of that run is recognised, and killed.
        writable.attempts[-1] = Attempt(
            current.number, State.FAILED, current.started_at, now, lost, run_id=current.run_id
        )
        writable.attempts.append(started)
        step.changed(index)
        step.log(
            LogLevel.WARN,
            f"attempt {current.number} {lost}; it runs again, not counted as a retry",
            index,
            current.number,
        )
        # Its worker may live on, cut off from the broker: it must not go on beside this run.
        step.emit(KillTask(execution.id, run.id, current.number, current.run_id))
    if step.killing:
        # Killed before this worker could hear of it: stop this run too.
        step.emit(KillTask(execution.id, run.id, current.number, result.run_id))
    timeout = step.task_of(index).timeout
    if timeout is not None:
        # The backstop counts from the run's start: a request that waited for a free
        # worker slot, or a re-run, must not be failed while within its own timeout.
        step.remove_timer(TimerKind.TIMEOUT, run.id, current.number)
        step.set_timer(
            Timer(now + timeout + TIMEOUT_GRACE, TimerKind.TIMEOUT, run.id, current.number)
        )
    return step.finish()


def _task_finished(
    execution: Execution, result: messages.TaskResult, flow: Flow, now: datetime
) -> Step:
    step = Transition(execution, flow, now)
    index = step.find(result.task_run_id)
    if index is None or not result.state.is_terminal:
        return Step(execution, [])
    task_run = execution.task_runs[index]
    current = task_run.attempts[-1] if task_run.attempts else None
    if (
        task_run.state is not State.RUNNING
        or current is None
        or current.number != result.attempt
        or current.state is not State.RUNNING
        # A run given up on as lost: only the run that replaced it counts now.
        or (result.run_id and current.run_id and result.run_id != current.run_id)
        or step.task_of(index).type in f.PROPERTY_MODELS  # the core runs these itself
    ):
        return Step(execution, [])  # a duplicate, or a result for an attempt we gave up on

    step.remove_timer(TimerKind.TIMEOUT, task_run.id, result.attempt)
    writable = step.task_run(index)
    writable.attempts[-1] = Attempt(
        result.attempt, result.state, result.started_at, result.ended_at, result.error
    )
    if step.killing:
        step.set_task_run_state(index, State.KILLED)
    elif result.state in (State.SUCCESS, State.WARNING):
        writable.outputs = result.outputs
        # warningOnRetry first, then allowWarning (in end_run): Kestra's worker order.
        tree.end_run(step, index, tree.succeeded_state(step, index, result.state))
    else:
        tree.attempt_failed(step, index, result.error or f"attempt ended {result.state}")
    tree.settle_parent(step, index)
    return step.finish()


def _timer_fired(
    execution: Execution, command: messages.ExecutionCommand, flow: Flow, now: datetime
) -> Step:
    if command.kind != CommandKind.TIMER:
        return Step(execution, [])
    kind = command.payload.get("timer")
    timer = next(
        (
            timer
            for timer in execution.timers
            if timer.kind == kind
            and timer.task_run_id == command.task_run_id
            and timer.attempt == command.attempt
        ),
        None,
    )
    step = Transition(execution, flow, now)
    index = step.find(command.task_run_id)
    if timer is None or index is None or timer.due > command.time:
        # Fired twice, no longer wanted, or an earlier timer of the same key that was
        # moved later (a timeout backstop reset when its run started): not due yet.
        return Step(execution, [])

    step.remove_timer(timer.kind, timer.task_run_id, timer.attempt)
    task_run = execution.task_runs[index]
    current = task_run.attempts[-1]
    if timer.kind is TimerKind.RETRY:
        if task_run.state is State.RETRYING and current.number == timer.attempt - 1:
            governing = tree.retry_of(step, index)
            if governing is not None and governing.new_execution:
                _retry_as_new_execution(step, index, timer.attempt)
                return step.finish()
            tree.retry_attempt(step, index, timer.attempt)
    elif timer.kind is TimerKind.PAUSE:
        if task_run.state is State.PAUSED and current.number == timer.attempt:
            tree.pause_elapsed(step, index)
    elif (
        task_run.state is State.RUNNING
        and current.number == timer.attempt
        and current.state is State.RUNNING
    ):
        timeout = step.task_of(index).timeout or timedelta(0)
        error = (
            f"timed out: no result within {format_duration(timeout)}"
            f" (+{format_duration(TIMEOUT_GRACE)} grace)"
        )
        step.task_run(index).attempts[-1] = Attempt(
            current.number, State.FAILED, current.started_at, now, error
        )
        # The worker may still be running it (hung, or partitioned away): stop it, so a
        # retry does not run beside it.
        step.emit(KillTask(execution.id, task_run.id, current.number))
        tree.attempt_failed(step, index, error)
    tree.settle_parent(step, index)
    return step.finish()


def _kill(execution: Execution, flow: Flow, now: datetime) -> Step:
    if execution.state is State.KILLING:
        return Step(execution, [])
    step = Transition(execution, flow, now)
    tree.start_kill(step)
    if not step.execution.state.is_terminal:
        tree.settle_root(step)
    return step.finish()


_cancel = tree.cancel_run


def _abort(execution: Execution | None, event: Abort, flow: Flow, now: datetime) -> Step:
    """End the execution FAILED at once: every open task run fails, work under way is
    cancelled, and `reason` is logged. Touches nothing that renders or evaluates: the
    step that failed may have failed there."""
    if execution is None:
        if event.trigger is None:
            return Step(execution, [])
        step = Transition(new_execution(event.trigger, flow, now), flow, now, fresh=True)
    elif execution.state.is_terminal:
        return Step(execution, [])  # the failed event changed nothing: it stays ended
    else:
        step = Transition(execution, flow, now)
    _fail_open_runs(step, "aborted")
    step.log(LogLevel.ERROR, event.reason, None, None)
    tree.end_execution(step, State.FAILED)
    return step.finish()


def _fail_open_runs(step: Transition, why: str) -> None:
    """End every task run not over yet FAILED, cancelling the work under way."""
    for index, run in enumerate(step.execution.task_runs):
        if run.state.is_terminal:
            continue
        _cancel(step, index)  # its result, if one comes, finds the run ended: ignored
        current = run.attempts[-1] if run.attempts else None
        if current is not None and not current.state.is_terminal:
            step.task_run(index).attempts[-1] = Attempt(
                current.number, State.FAILED, current.started_at, step.now, why
            )
        step.set_task_run_state(index, State.FAILED)


def _retry_as_new_execution(step: Transition, index: int, number: int) -> None:
    """CREATE_NEW_EXECUTION: this execution ends FAILED at once (Kestra ends it RETRIED:
    no `errors` or `finally` run) and the next execution of the chain starts, of the
    same flow revision, with the same inputs and labels, from the first task."""
    execution = step.execution
    run = execution.task_runs[index]
    chain = chain_of(execution.id, execution.trigger, execution.created_at)
    new_id = derive_id(execution.id, "retry", run.id, number)
    _fail_open_runs(step, f"retried as execution {new_id}")
    step.log(
        LogLevel.WARN,
        f"task {run.task_id!r} failed; the flow is retried as execution {new_id}"
        f" (attempt {chain.attempt + 1} of the executions of {chain.original_id})",
        index,
        None,
    )
    # Marked so that Flow triggers and `stopAfter` wait for the end of the chain.
    step.execution.trigger = {**execution.trigger, RETRIED_AS: new_id}
    tree.end_execution(step, State.FAILED)
    step.emit(
        StartExecution(
            messages.TriggerEvent(
                event_id=command_id(new_id, "retry"),
                execution_id=new_id,
                namespace=execution.namespace,
                flow_id=execution.flow_id,
                flow_revision=execution.flow_revision,
                inputs=execution.inputs,
                time=step.now,
                labels=execution.labels,
                trigger=retried_trigger(execution.trigger, execution.id, chain),
            )
        )
    )


def _resume(
    execution: Execution, command: messages.ExecutionCommand, flow: Flow, now: datetime
) -> Step:
    targets = [
        run.id
        for run in execution.task_runs
        if run.state is State.PAUSED
        and (command.task_run_id is None or run.id == command.task_run_id)
    ]
    if not targets or execution.state is State.KILLING:
        return Step(execution, [])
    inputs = command.payload.get("inputs")
    given: dict[str, Any] = inputs if isinstance(inputs, dict) else {}
    step = Transition(execution, flow, now)
    resumed = []
    for run_id in targets:
        index = step.find(run_id)
        assert index is not None
        try:  # every pause first: a resume is applied to all of them or to none
            resumed.append((index, tree.resume_inputs(step, index, given)))
        except ValueError as exc:
            return Step(execution, [], refusal=f"pause {step.task_of(index).id!r}: {exc}")
    for index, outputs in resumed:
        if step.execution.task_runs[index].state is State.PAUSED:  # not ended by another
            tree.resume(step, index, outputs)
            tree.settle_parent(step, index)
    return step.finish()


def _child_ended(
    execution: Execution, command: messages.ExecutionCommand, flow: Flow, now: datetime
) -> Step:
    step = Transition(execution, flow, now)
    index = step.find(command.task_run_id)
    if index is None:
        return Step(execution, [])
    run = execution.task_runs[index]
    child = command.payload.get("childExecutionId")
    if (
        step.task_of(index).type != f.SUBFLOW
        or run.state is not State.RUNNING
        or run.outputs.get("executionId") != child
    ):
        return Step(execution, [])  # a stale child (before a restart), or a duplicate
    properties = step.node_of(index).properties
    assert isinstance(properties, f.SubflowProperties)
    child_state = State(command.payload.get("state", "FAILED"))
    writable = step.task_run(index)
    writable.outputs = {
        "executionId": child,
        "state": str(child_state),
        "outputs": command.payload.get("outputs") or {},
    }
    current = writable.attempts[-1]
    # The calling task's `outputs` that did not render over the child fail it (Kestra).
    unrendered = command.payload.get("outputsError")
    if isinstance(unrendered, str):
        end_state = State.FAILED
    elif child_state in (State.SUCCESS, State.WARNING):
        end_state = child_state
    else:
        end_state = State.FAILED if properties.transmit_failed else State.SUCCESS
    writable.attempts[-1] = Attempt(current.number, end_state, current.started_at, now)
    if isinstance(unrendered, str):
        tree.attempt_failed(step, index, f"subflow execution {child}: outputs {unrendered}")
    elif end_state is State.FAILED:
        tree.attempt_failed(step, index, f"subflow execution {child} ended {child_state}")
    else:
        tree.end_run(step, index, end_state)  # applies allowWarning
    tree.settle_parent(step, index)
    return step.finish()


def _restart(execution: Execution, flow: Flow, now: datetime) -> Step:
    step = Transition(execution, flow, now)
    if flow.concurrency is not None:
        step.queue_for_slot()  # `_rerun` once the slot is granted
    else:
        _rerun(step)
    return step.finish()


def _rerun(step: Transition) -> None:
    """Run the failed task runs of an ended execution again (RUNNING from here)."""
    execution = step.execution
    # The errors and finally branches run afresh (new ids: `Transition.generation`).
    plan = step.plan
    runs = execution.task_runs
    # A failed flowable's own errors/finally run again too, as the flow's do.
    branch_roots = {
        i
        for i, run in enumerate(runs)
        if plan.node(run.task_id).branch in ("errors", "finally", "afterExecution")
        and (run.parent_task_run_id is None or _parent_failed(step, run.parent_task_run_id))
    }
    doomed = set(branch_roots)
    for i, run in enumerate(execution.task_runs):
        parent = step.find(run.parent_task_run_id)
        if parent in doomed:
            doomed.add(i)  # parents come before their children in the list
    step.set_execution_state(State.RUNNING)
    step.drop_task_runs(doomed)
    for index, run in enumerate(step.execution.task_runs):
        if run.parent_task_run_id is None and run.state in tree.FAILED_STATES:
            _restart_run(step, index)
    tree.settle_root(step)


def _parent_failed(step: Transition, parent_id: str) -> bool:
    parent = step.find(parent_id)
    return parent is not None and step.execution.task_runs[parent].state in tree.FAILED_STATES


def _restart_run(step: Transition, index: int) -> None:
    run = step.execution.task_runs[index]
    task = step.task_of(index)
    # A pause that was resumed (`data`: how) failed in its own tasks: they run again.
    resumed = task.type == f.PAUSE and run.data in ("SUCCESS", "WARNING")
    # Sequential, parallel and dag take no decision (their `data` stays None): only an
    # if/switch/for-each without one failed before deciding and must decide again.
    if resumed or (
        task.type in f.CONTAINERS and (run.data is not None or task.type not in f.DECIDING)
    ):
        step.set_task_run_state(index, State.RUNNING)
        for child in step.children(index):
            if step.execution.task_runs[child].state in tree.FAILED_STATES:
                _restart_run(step, child)
        state = tree.evaluate(step, index)
        if state is not None:
            tree.end_run(step, index, state)
        return
    if task.type in f.CONTAINERS:  # its decision failed: take it again
        tree.open_container(step, index)
        return
    number = run.attempts[-1].number + 1 if run.attempts else 1
    writable = step.task_run(index)
    if task.type not in f.PROPERTY_MODELS:
        # Retries count again from here. The number, not the count of entries: a run lost
        # with its worker adds an entry, not an attempt.
        writable.data = run.attempts[-1].number if run.attempts else 0
    step.set_task_run_state(index, State.CREATED)
    tree.begin(step, index, number)


def _replay(
    execution: Execution, command: messages.ExecutionCommand, flow: Flow, now: datetime
) -> Step:
    new_id = command.payload.get("newExecutionId")
    chosen_id = command.payload.get("taskRunId")
    step = Transition(execution, flow, now)
    chosen = step.find(chosen_id)
    if not isinstance(new_id, str) or chosen is None:
        return Step(execution, [])
    runs = execution.task_runs
    related = {chosen}  # the chosen run, its ancestors and its descendants run again
    parent = step.parent_index(chosen)
    while parent is not None:
        related.add(parent)
        parent = step.parent_index(parent)
    new_ids: dict[str, str] = {}
    kept: set[int] = set()
    seed: list[dict[str, Any]] = []
    for i, run in enumerate(runs):
        parent_index = step.find(run.parent_task_run_id)
        new_parent = None if run.parent_task_run_id is None else new_ids[run.parent_task_run_id]
        new_ids[run.id] = task_run_id(new_id, run.task_id, new_parent, run.iteration)
        keep = (
            run.state in _SUCCEEDED
            and i not in related
            and (i < chosen or parent_index in kept)
            and not _under(step, i, chosen)
        )
        if keep:
            kept.add(i)
            entry: dict[str, Any] = {
                "id": new_ids[run.id],
                "taskId": run.task_id,
                "state": str(run.state),
                "outputs": run.outputs,
            }
            for key, value in (
                ("parentTaskRunId", new_parent),
                ("value", run.value),
                ("iteration", run.iteration),
                ("data", run.data),
            ):
                if value is not None:
                    entry[key] = value
            seed.append(entry)
    # Size: this one message grows with the number of kept task runs. Replay is rare and
    # user-initiated, so that is accepted here (design rule: messages stay bounded).
    trigger = messages.TriggerEvent(
        event_id=command_id(new_id, "replay"),
        execution_id=new_id,
        namespace=execution.namespace,
        flow_id=execution.flow_id,
        flow_revision=execution.flow_revision,
        inputs=execution.inputs,
        time=now,
        labels=execution.labels,
        trigger={
            "type": "replay",
            "executionId": execution.id,
            "taskRunId": chosen_id,
            "seed": seed,
        },
    )
    return Step(execution, [StartExecution(trigger)])


def _under(step: Transition, index: int, ancestor: int) -> bool:
    current = step.parent_index(index)
    while current is not None:
        if current == ancestor:
            return True
        current = step.parent_index(current)
    return False
