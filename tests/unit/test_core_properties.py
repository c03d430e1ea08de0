"""Property-based: random flows against a random, unreliable world.

The world answers each requested attempt with SUCCESS or FAILED (or never, when the
task has a timeout), and delivers results and timer firings in any order, replaying
some of what it already delivered (at-least-once delivery). Whatever it does, the
execution ends exactly once, in order, within its retry budget, deterministically.

Flows sometimes carry `errors` and `finally` branches (task ids `e0…`, `f0…`): the task
runs must always read as a main prefix, then errors tasks only after a main failure,
then finally tasks only once the main tasks (and the errors branch) are over.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import event as label
from hypothesis import strategies as st

from headrace.core.events import Event, PublishEvent, RequestTask, SetTimer, TaskFinished
from headrace.core.state import Execution, TaskRun
from headrace.flow.model import Flow, Task
from headrace.states import State
from tests.unit.test_core_helpers import (
    T0,
    Run,
    events,
    finished,
    fired,
    logs,
    make_flow,
    trigger,
)

MAX_STEPS = 600  # far more than the largest flow needs: 12 tasks x 5 attempts x 3 events
MAX_REPLAYS = 30
SUCCEEDED = (State.SUCCESS, State.WARNING)


@st.composite
def retry_policies(draw: st.DrawFn) -> dict[str, Any] | None:
    if draw(st.integers(0, 3)) == 0:
        return None
    policy: dict[str, Any] = {
        "type": draw(st.sampled_from(["constant", "exponential"])),
        "interval": timedelta(milliseconds=draw(st.integers(1, 5_000))),
        "maxAttempts": draw(st.integers(1, 5)),
    }
    if draw(st.integers(0, 3)) == 3:
        policy["maxDuration"] = timedelta(seconds=draw(st.integers(0, 20)))
    if draw(st.booleans()):
        policy["maxInterval"] = timedelta(milliseconds=draw(st.integers(1, 3_000)))
    return policy


@st.composite
def tasks(draw: st.DrawFn, prefix: str, count: int) -> list[dict[str, Any]]:
    result = []
    for i in range(count):
        # Some tasks read a main task's output: when that task did not succeed (or has
        # not run), rendering fails, which must fail the task run like any failure.
        message = f"step {i}"
        if draw(st.integers(0, 2)) == 0:
            source = draw(st.integers(0, i - 1)) if prefix == "t" and i > 0 else 0
            message = f"{{{{ outputs.t{source}.n }}}} in {{{{ execution.id }}}}"
        task: dict[str, Any] = {"id": f"{prefix}{i}", "type": "log", "message": message}
        if (retry := draw(retry_policies())) is not None:
            task["retry"] = retry
        if draw(st.booleans()):
            task["timeout"] = timedelta(seconds=draw(st.integers(1, 60)))
        result.append(task)
    return result


@st.composite
def flows(draw: st.DrawFn) -> Flow:
    # Shrinks towards flows without branches.
    main = draw(tasks("t", draw(st.integers(1, 6))))
    errors = draw(tasks("e", draw(st.integers(0, 3))))
    finally_ = draw(tasks("f", draw(st.integers(0, 3))))
    return make_flow(*main, errors=errors, finally_=finally_)


def branch_runs(execution: Execution) -> dict[str, list[TaskRun]]:
    """The task runs by branch: "t" main, "e" errors, "f" finally (from the id prefix)."""
    runs: dict[str, list[TaskRun]] = {"t": [], "e": [], "f": []}
    for task_run in execution.task_runs:
        runs[task_run.task_id[0]].append(task_run)
    return runs


def check_order(flow: Flow, execution: Execution) -> None:
    """The task runs so far are a sequential run of main, then errors, then finally."""
    runs = branch_runs(execution)
    assert execution.task_runs == [*runs["t"], *runs["e"], *runs["f"]], "branches interleaved"
    for prefix, expected in (("t", flow.tasks), ("e", flow.errors), ("f", flow.finally_)):
        # Each branch runs a prefix of its tasks, in order, each one after the previous
        # one succeeded, and at most once.
        assert [run.task_id for run in runs[prefix]] == [t.id for t in expected][
            : len(runs[prefix])
        ], "out of order"
        assert all(run.state in SUCCEEDED for run in runs[prefix][:-1]), "ran after a failure"
    # Only the last task run may still be going.
    assert all(run.state.is_terminal for run in execution.task_runs[:-1])
    main, errors, finally_ = runs["t"], runs["e"], runs["f"]
    main_failed = main[-1].state is State.FAILED
    if errors:
        assert main_failed, "errors tasks ran although the main tasks succeeded"
    if finally_:
        assert main_failed or (len(main) == len(flow.tasks) and main[-1].state in SUCCEEDED)
        if main_failed and flow.errors:
            assert errors and errors[-1].state.is_terminal, "finally before the errors branch"
            assert errors[-1].state is State.FAILED or len(errors) == len(flow.errors)


def max_attempts(task: Task) -> int:
    return task.retry.max_attempts if task.retry else 1


@dataclass
class World:
    """Drives one execution; records every (event, time) it delivered, in order."""

    flow: Flow
    data: st.DataObject
    run: Run = field(init=False)
    now: datetime = T0
    pending: list[Event] = field(default_factory=list)
    delivered: list[Event] = field(default_factory=list)
    trace: list[tuple[Event, datetime]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.run = Run(self.flow)

    def deliver(self, event: Event, *, replay: bool = False) -> None:
        if isinstance(event, TaskFinished):
            self.now += timedelta(milliseconds=self.data.draw(st.integers(0, 3_000)))
        elif not isinstance(event, type(trigger())):
            self.now = max(self.now, event.command.time)  # a timer fires when due
        was_terminal = self.run.execution is not None and self.run.execution.state.is_terminal
        commands = self.run.send(event, self.now)
        self.trace.append((event, self.now))
        self.delivered.append(event)
        if was_terminal or replay:
            assert commands == [], "an ended execution, or a replayed event, emits nothing"
        self.check_step(commands)
        for command in commands:
            if isinstance(command, RequestTask):
                self.answer(command)
            elif isinstance(command, SetTimer):
                self.pending.append(fired(command.execution_id, command.timer))

    def answer(self, command: RequestTask) -> None:
        request = command.request
        # Mostly successes, so that long flows get to their end; shrinks towards success.
        roll = self.data.draw(st.integers(0, 9))
        if roll < 6:
            index = int(request.task_id[1:])
            self.pending.append(finished(request, outputs={"n": index}))
        elif roll < 9 or not request.timeout_ms:
            self.pending.append(finished(request, State.FAILED, error="boom"))
        # "silent": the worker died; only the timeout timer will tell.

    def check_step(self, commands: list) -> None:
        execution = self.run.execution
        assert execution is not None
        check_order(self.flow, execution)
        for command in commands:
            if isinstance(command, RequestTask):
                # Sequential: a request is always for the newest task run.
                last = execution.task_runs[-1]
                assert command.request.task_run_id == last.id
                assert command.request.task_id == last.task_id
                task = self.flow.task(last.task_id)
                assert command.request.attempt <= max_attempts(task)
        if not execution.state.is_terminal:
            assert not execution.task_runs[-1].state.is_terminal, "stalled: nothing running"
        for task_run in execution.task_runs:
            assert len(task_run.attempts) <= max_attempts(self.flow.task(task_run.task_id))

    def play(self) -> None:
        self.deliver(trigger())
        replays = 0
        for _ in range(MAX_STEPS):
            if not self.pending:
                return
            # 5, not 0, means "replay": hypothesis shrinks towards 0, i.e. fewer replays.
            if replays < MAX_REPLAYS and self.data.draw(st.integers(0, 5)) == 5:
                replays += 1
                replay = self.data.draw(st.sampled_from(self.delivered))
                self.deliver(replay, replay=True)
                continue
            index = self.data.draw(st.integers(0, len(self.pending) - 1))
            self.deliver(self.pending.pop(index))
        raise AssertionError("the world still had events to deliver after MAX_STEPS")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flow=flows(), data=st.data())
def test_any_world_ends_the_execution_once_in_order_and_deterministically(flow, data):
    world = World(flow, data)
    world.play()
    execution = world.run.execution
    history = world.run.history

    label(f"execution {execution.state}")
    label(f"{sum(len(run.attempts) > 1 for run in execution.task_runs)} task runs retried")
    label(f"{len(log_ids := [record.id for record in logs(history)])} log lines")

    # Exactly one terminal state, reached, with nothing left waiting.
    assert execution.state.is_terminal
    assert execution.timers == []
    ended = [e for e in events(history) if e.execution and e.execution.state.is_terminal]
    assert len(ended) == 1 and ended[0].execution.state is execution.state
    runs = branch_runs(execution)
    label(f"{len(runs['e'])} errors runs, {len(runs['f'])} finally runs")
    # Every branch that had to run did run; the end state follows from the task runs.
    if runs["t"][-1].state is State.FAILED:
        assert bool(runs["e"]) == bool(flow.errors)
    else:
        assert len(runs["t"]) == len(flow.tasks) and runs["e"] == []
    assert bool(runs["f"]) == bool(flow.finally_)
    if runs["f"] and runs["f"][-1].state is not State.FAILED:
        assert len(runs["f"]) == len(flow.finally_)
    assert all(run.state.is_terminal for run in execution.task_runs)
    if any(run.state is State.FAILED for run in execution.task_runs):
        assert execution.state is State.FAILED
    else:
        assert execution.state is State.SUCCESS
        assert [run.state for run in execution.task_runs] == [State.SUCCESS] * (
            len(flow.tasks) + len(flow.finally_)
        )
    # While any branch ran, the execution said RUNNING: one RUNNING, then its end.
    assert [change.state for change in execution.histories] == [
        State.CREATED,
        State.RUNNING,
        execution.state,
    ]

    # seq grows by one per event; ids of log lines never repeat.
    seqs = [c.event.seq for c in history if isinstance(c, PublishEvent)]
    assert seqs == list(range(1, len(seqs) + 1)) and execution.seq == len(seqs)
    assert len(log_ids) == len(set(log_ids))

    # Replaying the same events gives the same commands and the same stored bytes.
    replay = Run(flow)
    for event, now in world.trace:
        replay.send(event, now)
    assert replay.history == history
    assert replay.execution.to_bytes() == execution.to_bytes()
