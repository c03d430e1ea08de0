"""`Transition`: one step of `advance` in the making, and the moves every step shares.

It holds a copy-on-write copy of the execution and collects what to emit. Its moves
(start a task, request an attempt, fail an attempt, end a task run, end the execution)
are where the flow's order lives: a task run that ends asks `branches.next_position`
what to start next, so the main tasks, the `errors` branch and the `finally` branch
follow each other without the event handlers knowing about them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from headrace import messages
from headrace.core.branches import (
    Branch,
    branch_end,
    branch_of,
    final_state,
    next_position,
    position_of,
    task_at,
)
from headrace.core.context import render_context
from headrace.core.events import Command, EmitLog, PublishEvent, RequestTask, SetTimer
from headrace.core.ids import log_id, task_run_id
from headrace.core.retries import format_duration, retry_delay
from headrace.core.state import Attempt, Execution, TaskRun, Timer, TimerKind
from headrace.expressions import ExpressionError, render_properties
from headrace.flow.model import Flow, Task
from headrace.messages import LogLevel, StateChange
from headrace.states import State

TIMEOUT_GRACE = timedelta(seconds=30)
"""Added to a task's `timeout` before the executor gives up on an attempt. The worker
enforces `timeout_ms` itself and reports the failure; the executor's timer is only the
backstop for a worker that died, so it must not race the worker's own report."""

_EXECUTION = -1  # key of the execution among the entities a step changed
_MILLISECOND = timedelta(milliseconds=1)


@dataclass(slots=True)
class Step:
    """What `advance` returns: the new execution state and the commands to emit."""

    execution: Execution | None
    commands: list[Command]


class Transition:
    """One step in the making: a writable copy of the execution and what to emit."""

    __slots__ = ("_changed", "_commands", "_logs", "_writable", "execution", "flow", "now")

    def __init__(self, execution: Execution, flow: Flow, now: datetime, fresh: bool = False):
        self.execution = execution if fresh else _shallow_copy(execution)
        self.flow = flow
        self.now = now
        # Entities changed (task-run index or _EXECUTION), in order of first change: a
        # dict keeps insertion order and ignores repeats.
        self._changed: dict[int, None] = {}
        self._writable: set[int] = set()
        self._logs: list[tuple[messages.LogLevel, str, int, int]] = []
        self._commands: list[Command] = []

    def changed(self, key: int) -> None:
        self._changed.setdefault(key)

    def task_of(self, index: int) -> Task:
        """The flow's task that the task run at `index` runs."""
        return task_at(self.flow, position_of(self.flow, self.execution.task_runs[index].task_id))

    def task_run(self, index: int) -> TaskRun:
        """The task run at `index`, copied on first write so the input stays untouched."""
        if index not in self._writable:
            old = self.execution.task_runs[index]
            self.execution.task_runs[index] = TaskRun(
                old.id,
                old.task_id,
                old.state,
                list(old.histories),
                list(old.attempts),  # Attempt objects are replaced, never mutated
                old.outputs,
                old.parent_task_run_id,
                old.value,
            )
            self._writable.add(index)
        return self.execution.task_runs[index]

    def set_execution_state(self, state: State) -> None:
        execution = self.execution
        execution.state = state
        execution.histories.append(StateChange(state, self.now))
        if state.is_terminal:
            execution.timers.clear()  # nothing is waited for any more: keep idle state small
        self.changed(_EXECUTION)

    def set_task_run_state(self, index: int, state: State) -> None:
        task_run = self.task_run(index)
        task_run.state = state
        task_run.histories.append(StateChange(state, self.now))
        self.changed(index)

    def set_timer(self, timer: Timer) -> None:
        self.execution.timers.append(timer)
        self._commands.append(SetTimer(self.execution.id, timer))

    def remove_timer(self, kind: TimerKind, task_run_id: str, attempt: int) -> None:
        timers = self.execution.timers
        for i, timer in enumerate(timers):
            if timer.kind is kind and timer.task_run_id == task_run_id and timer.attempt == attempt:
                del timers[i]
                return

    def log(self, level: LogLevel, message: str, index: int, attempt: int) -> None:
        self._logs.append((level, message, index, attempt))

    def start_task(self, position: int) -> None:
        """Create the task run of the task at `position` and request its first attempt."""
        execution = self.execution
        task = task_at(self.flow, position)
        index = len(execution.task_runs)
        execution.task_runs.append(
            TaskRun(
                id=task_run_id(execution.id, position),
                task_id=task.id,
                state=State.CREATED,
                histories=[StateChange(State.CREATED, self.now)],
                attempts=[],
                outputs={},
            )
        )
        self._writable.add(index)
        self.changed(index)
        self.request_attempt(index, 1)

    def request_attempt(self, index: int, number: int) -> None:
        execution = self.execution
        task = self.task_of(index)
        task_run = self.task_run(index)
        try:
            properties = render_properties(
                task.properties, render_context(execution, task_run, number)
            )
        except ExpressionError as exc:
            # Rendering is deterministic: another attempt would fail the same way.
            error = f"task {task.id!r}: cannot render property {exc.path!r}: {exc.reason}"
            task_run.attempts.append(Attempt(number, State.FAILED, self.now, self.now, error))
            self.set_task_run_state(index, State.FAILED)
            self.log(LogLevel.ERROR, error, index, number)
            self.task_run_ended(index)
            return

        task_run.attempts.append(Attempt(number, State.RUNNING, self.now, None, None))
        self.set_task_run_state(index, State.RUNNING)
        timeout_ms = None if task.timeout is None else task.timeout // _MILLISECOND
        self._commands.append(
            RequestTask(
                messages.TaskRequest(
                    execution_id=execution.id,
                    namespace=execution.namespace,
                    flow_id=execution.flow_id,
                    flow_revision=execution.flow_revision,
                    task_run_id=task_run.id,
                    task_id=task.id,
                    attempt=number,
                    type=task.type,
                    properties=properties,
                    time=self.now,
                    timeout_ms=timeout_ms,
                )
            )
        )
        if task.timeout is not None:
            due = self.now + task.timeout + TIMEOUT_GRACE
            self.set_timer(Timer(due, TimerKind.TIMEOUT, task_run.id, number))

    def attempt_failed(self, index: int, error: str) -> None:
        """The current attempt has just failed: retry it later, or fail the task run."""
        task = self.task_of(index)
        task_run = self.task_run(index)
        number = task_run.attempts[-1].number
        first_started_at = task_run.attempts[0].started_at or task_run.histories[0].date
        delay = retry_delay(task.retry, number, first_started_at, self.now)
        if task.retry is not None and delay is not None:
            self.set_task_run_state(index, State.RETRYING)
            self.set_timer(Timer(self.now + delay, TimerKind.RETRY, task_run.id, number + 1))
            self.log(
                LogLevel.WARN,
                f"attempt {number} of {task.retry.max_attempts} failed: {error};"
                f" retrying in {format_duration(delay)}",
                index,
                number,
            )
            return
        self.set_task_run_state(index, State.FAILED)
        attempts = f" after {number} attempts" if number > 1 else ""
        self.log(LogLevel.ERROR, f"task {task.id!r} failed{attempts}: {error}", index, number)
        self.task_run_ended(index)

    def task_run_ended(self, index: int) -> None:
        """The task run at `index` has reached its end state: start what follows, or end."""
        task_run = self.execution.task_runs[index]
        failed = task_run.state is State.FAILED
        position = position_of(self.flow, task_run.task_id)
        branch = branch_of(self.flow, position)
        if failed and branch is not Branch.MAIN:
            rest = range(position + 1, branch_end(self.flow, branch))
            skipped = [task_at(self.flow, later).id for later in rest]
            if skipped:
                self.log(
                    LogLevel.WARN,
                    f"{branch} branch stopped after {task_run.task_id!r} failed;"
                    f" skipped: {', '.join(map(repr, skipped))}",
                    index,
                    task_run.attempts[-1].number,
                )
        following = next_position(self.flow, position, failed)
        if following is None:
            self.set_execution_state(final_state(self.execution.task_runs))
        else:
            self.start_task(following)

    def finish(self) -> Step:
        execution = self.execution
        now = self.now
        commands: list[Command] = []
        for key in self._changed:
            execution.seq += 1
            if key == _EXECUTION:
                event = messages.ExecutionEvent(
                    execution.id, execution.seq, now, execution=execution.snapshot()
                )
            else:
                event = messages.ExecutionEvent(
                    execution.id, execution.seq, now, task_run=execution.task_runs[key].snapshot()
                )
            commands.append(PublishEvent(event))
        for ordinal, (level, message, index, attempt) in enumerate(self._logs):
            task_run = execution.task_runs[index]
            commands.append(
                EmitLog(
                    messages.LogRecord(
                        # Every step that logs also publishes an event, so its final seq
                        # is unique to it.
                        id=log_id(execution.id, execution.seq, ordinal),
                        execution_id=execution.id,
                        namespace=execution.namespace,
                        flow_id=execution.flow_id,
                        time=now,
                        level=level,
                        message=message,
                        task_run_id=task_run.id,
                        task_id=task_run.task_id,
                        attempt=attempt,
                    )
                )
            )
        commands += self._commands
        return Step(execution, commands)


def _shallow_copy(execution: Execution) -> Execution:
    return Execution(
        id=execution.id,
        namespace=execution.namespace,
        flow_id=execution.flow_id,
        flow_revision=execution.flow_revision,
        inputs=execution.inputs,
        labels=execution.labels,
        trigger=execution.trigger,
        state=execution.state,
        histories=list(execution.histories),
        task_runs=list(execution.task_runs),
        outputs=execution.outputs,
        seq=execution.seq,
        timers=list(execution.timers),
        created_at=execution.created_at,
    )
