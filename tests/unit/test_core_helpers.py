"""A small harness for core tests: feed events to `advance`, look at what came out.

No broker, no clock: each event is delivered at a time the test chooses.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from headrace import messages
from headrace.core.advance import Carry, advance
from headrace.core.events import (
    Command,
    EmitLog,
    Event,
    Kill,
    PublishEvent,
    RequestTask,
    Restart,
    Resume,
    SetTimer,
    Start,
    TaskFinished,
    TimerFired,
)
from headrace.core.state import Execution, Timer
from headrace.flow.model import Flow
from headrace.states import State

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def make_flow(
    *tasks: dict[str, Any],
    flow_id: str = "demo",
    errors: list[dict[str, Any]] | None = None,
    finally_: list[dict[str, Any]] | None = None,
) -> Flow:
    """A flow of `tasks`, with optional `errors` and `finally` branches."""
    return Flow.model_validate(
        {
            "id": flow_id,
            "namespace": "company.team",
            "tasks": list(tasks),
            "errors": errors or [],
            "finally": finally_ or [],
        }
    )


def log_task(task_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": task_id, "type": "log", "message": f"hello from {task_id}", **extra}


def trigger(execution_id: str = "ex1", inputs: dict[str, Any] | None = None) -> Start:
    return Start(
        messages.TriggerEvent(
            event_id=f"trigger-{execution_id}",
            execution_id=execution_id,
            namespace="company.team",
            flow_id="demo",
            flow_revision=1,
            inputs=inputs or {},
            time=T0,
            labels={"team": "data"},
            trigger={"type": "api"},
        )
    )


def finished(
    request: messages.TaskRequest,
    state: State = State.SUCCESS,
    *,
    outputs: dict[str, Any] | None = None,
    error: str | None = None,
    started_at: datetime | None = None,
    ended_at: datetime | None = None,
    run_id: str = "",
) -> TaskFinished:
    started = started_at or request.time
    return TaskFinished(
        messages.TaskResult(
            execution_id=request.execution_id,
            task_run_id=request.task_run_id,
            attempt=request.attempt,
            state=state,
            started_at=started,
            ended_at=ended_at or started + timedelta(milliseconds=10),
            outputs=outputs or {},
            error=error,
            worker_id=f"worker-of-{run_id}" if run_id else "",
            run_id=run_id,
        )
    )


def started(request: messages.TaskRequest, run_id: str, at: datetime | None = None) -> TaskFinished:
    """A worker's report that it starts run `run_id` of the request's attempt."""
    time = at or request.time
    return TaskFinished(
        messages.TaskResult(
            execution_id=request.execution_id,
            task_run_id=request.task_run_id,
            attempt=request.attempt,
            state=State.RUNNING,
            started_at=time,
            ended_at=time,
            worker_id=f"worker-of-{run_id}",
            run_id=run_id,
        )
    )


def fired(execution_id: str, timer: Timer) -> TimerFired:
    return TimerFired(
        messages.ExecutionCommand(
            command_id=f"timer:{execution_id}:{timer.task_run_id}:{timer.attempt}:{timer.kind}",
            execution_id=execution_id,
            kind=messages.CommandKind.TIMER,
            time=timer.due,
            task_run_id=timer.task_run_id,
            attempt=timer.attempt,
            payload={"timer": str(timer.kind)},
        )
    )


def requests(commands: list[Command]) -> list[messages.TaskRequest]:
    return [c.request for c in commands if isinstance(c, RequestTask)]


def events(commands: list[Command]) -> list[messages.ExecutionEvent]:
    """The changes published (execution or task run), not the commands' outcomes."""
    return [c.event for c in commands if isinstance(c, PublishEvent) and c.event.command is None]


def outcomes(commands: list[Command]) -> list[messages.CommandOutcome]:
    """The outcomes of kills, resumes, restarts, replays and probes answered."""
    return [
        c.event.command
        for c in commands
        if isinstance(c, PublishEvent) and c.event.command is not None
    ]


def logs(commands: list[Command]) -> list[messages.LogRecord]:
    return [c.record for c in commands if isinstance(c, EmitLog)]


def timers(commands: list[Command]) -> list[Timer]:
    return [c.timer for c in commands if isinstance(c, SetTimer)]


@dataclass
class Run:
    """One execution driven by hand: `send` an event, get the commands of that step."""

    flow: Flow
    execution: Execution | None = None
    history: list[Command] = field(default_factory=list)
    # Handed from step to step as the executor does within a batch (`transition.Carry`).
    carry: Carry | None = None

    def send(self, event: Event, now: datetime = T0) -> list[Command]:
        before = None if self.execution is None else self.execution.to_bytes()
        step = advance(self.execution, event, self.flow, now, self.carry)
        if self.execution is not None:
            # The core copies on write: what it was given must be left as it was.
            assert self.execution.to_bytes() == before
        # Commands answered say what they did (`outcomes`); what else the step did counts.
        effects = [
            c for c in step.commands if not (isinstance(c, PublishEvent) and c.event.command)
        ]
        if not effects and _records_command(self.execution, event):
            # A new operator command changing nothing is still recorded, and only that.
            assert step.execution is not self.execution and step.execution is not None
            assert step.execution.applied[-1] == event.command.command_id
            unrecorded = replace(step.execution, applied=self.execution.applied)
            assert unrecorded.to_bytes() == before, "a no-op may only record the command"
        elif not effects and not _reports_a_start(event) and not outcomes(step.commands):
            # (A start report may change the state alone: the run it records is internal.)
            assert step.execution is self.execution, "a no-op must return the same object"
        self.execution = step.execution
        self.history += step.commands
        return step.commands

    @property
    def state(self) -> State:
        assert self.execution is not None
        return self.execution.state

    def task_states(self) -> dict[str, State]:
        assert self.execution is not None
        return {run.task_id: run.state for run in self.execution.task_runs}


def _reports_a_start(event: Event) -> bool:
    return isinstance(event, TaskFinished) and event.result.state is State.RUNNING


def _records_command(execution: Execution | None, event: Event) -> bool:
    """Whether `advance` records `event`'s id in `applied`: a kill, resume or restart
    not applied yet, on an existing execution."""
    return (
        execution is not None
        and isinstance(event, Kill | Resume | Restart)
        and event.command.command_id not in execution.applied
    )
