"""Events per second through the pure executor core, as the executor applies them.

    python benchmarks/core.py [--executions N] [--repeats K]

Each event: decode the stored state, `advance`, encode the new state, Avro-encode every
message the step emits; a three-task `log` flow with templated messages, driven from
Start to SUCCESS. No broker, no Faust: the core's own cost, to compare commits
(`git stash` or a worktree of the older commit on PYTHONPATH).
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime, timedelta

from headrace import codec, messages
from headrace.core.advance import advance
from headrace.core.events import Event, RequestTask, Start, TaskFinished
from headrace.core.state import Execution
from headrace.flow.loader import load_flow
from headrace.states import State

FLOW = load_flow(
    """
id: bench
namespace: benchmarks
inputs:
  - {id: n, type: INT, defaults: 1}
tasks:
  - {id: a, type: log, message: "hello {{ inputs.n }}"}
  - {id: b, type: log, message: "{{ execution.id }} after a"}
  - {id: c, type: log, message: plain}
""",
    "bench.yaml",
)
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def start(execution_id: str) -> Start:
    return Start(
        messages.TriggerEvent(
            event_id=f"t-{execution_id}",
            execution_id=execution_id,
            namespace="benchmarks",
            flow_id="bench",
            flow_revision=1,
            inputs={"n": 1},
            time=T0,
            labels={},
            trigger={"type": "api"},
        )
    )


def result(request: messages.TaskRequest) -> TaskFinished:
    return TaskFinished(
        messages.TaskResult(
            execution_id=request.execution_id,
            task_run_id=request.task_run_id,
            attempt=request.attempt,
            state=State.SUCCESS,
            started_at=request.time,
            ended_at=request.time + timedelta(milliseconds=5),
            outputs={},
            error=None,
        )
    )


def run_one(execution_id: str) -> int:
    """Drive one execution to its end; returns the number of events applied."""
    stored: bytes | None = None
    pending: list[Event] = [start(execution_id)]
    applied = 0
    while pending:
        execution = None if stored is None else Execution.from_bytes(stored)
        step = advance(execution, pending.pop(), FLOW, T0)
        applied += 1
        stored = step.execution.to_bytes()
        for command in step.commands:
            for name in ("request", "event", "record", "trigger", "command"):
                message = getattr(command, name, None)
                if message is not None:
                    codec.encode(message)
            if isinstance(command, RequestTask):
                pending.append(result(command.request))
    return applied


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executions", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    best = float("inf")
    events = 0
    for _ in range(args.repeats):
        began = time.perf_counter()
        events = sum(run_one(f"ex{i}") for i in range(args.executions))
        best = min(best, time.perf_counter() - began)
    print(f"    executions: {args.executions}")
    print(f"        events: {events}")
    print(f"  events_per_s: {events / best:,.0f}  (best of {args.repeats})")


if __name__ == "__main__":
    main()
