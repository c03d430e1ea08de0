"""Events per second through the executor's shell (`ExecutorRuntime.process_batch`).

    python benchmarks/runtime.py [--executions N] [--batch B] [--repeats K]

What `core.py` measures plus the shell around it: decoding inputs, the table read and
write, encoding and handing every command to the producer, the batch's bookkeeping
(metrics and log context included). The producer acknowledges at once and the table
is a dict: no broker, no RocksDB, so the figure moves only with the shell's own code.
Compare two commits by running it from outside the checkout against each
(`pip install --no-deps --target DIR` of the older one, then `PYTHONPATH=DIR`).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from headrace import codec, messages
from headrace.flow.loader import load_flow
from headrace.services.executor.runtime import ExecutorRuntime, InputEvent, StateTable
from headrace.services.executor.store import DictStore
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


class Producer:
    """Acknowledges every send at once; keeps the task requests to answer them."""

    def __init__(self) -> None:
        self.requests: list[messages.TaskRequest] = []

    async def send(self, topic, key, value, partition, timestamp, headers) -> asyncio.Future:
        if topic == "task-requests":
            self.requests.append(codec.decode(value))
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def send_together(self, topic, partition, records) -> asyncio.Future:
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


class Flows:
    async def get(self, namespace: str, flow_id: str, revision: int) -> Any:
        return FLOW

    async def latest_revision(self, namespace: str, flow_id: str) -> int | None:
        return 1


def start(execution_id: str) -> InputEvent:
    event = messages.TriggerEvent(
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
    return InputEvent(execution_id.encode(), codec.encode(event), 0)


def result(request: messages.TaskRequest) -> InputEvent:
    finished = messages.TaskResult(
        execution_id=request.execution_id,
        task_run_id=request.task_run_id,
        attempt=request.attempt,
        state=State.SUCCESS,
        started_at=request.time,
        ended_at=request.time + timedelta(milliseconds=5),
    )
    return InputEvent(request.execution_id.encode(), codec.encode(finished), 0)


async def run(executions: int, batch: int) -> tuple[int, float]:
    """Every execution started, then their results fed back batch by batch until none
    is left: (events applied, seconds in `process_batch`)."""
    producer = Producer()
    runtime = ExecutorRuntime(
        StateTable(DictStore({}), "state-changelog"),
        StateTable(DictStore({}), "slots-changelog"),
        Flows(),
        producer,
    )
    pending = [start(f"ex{i}") for i in range(executions)]
    events, spent = 0, 0.0
    while pending:
        todo, pending = pending[:batch], pending[batch:]
        began = time.process_time()
        await runtime.process_batch(todo)
        spent += time.process_time() - began
        events += len(todo)
        pending += [result(request) for request in producer.requests]
        producer.requests.clear()
    return events, spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executions", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    best = float("inf")
    events = 0
    for _ in range(args.repeats):
        events, spent = asyncio.run(run(args.executions, args.batch))
        best = min(best, spent)
    print(f"    executions: {args.executions}")
    print(f"        events: {events}")
    print(f"  events_per_s: {events / best:,.0f}  (best of {args.repeats})")


if __name__ == "__main__":
    main()
