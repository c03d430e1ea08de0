"""Every Kafka topic headrace uses, as code: `headrace topics apply` makes the broker match.

Topics are keyed by execution id, but for `flow-slots` (keyed by flow). `triggers`, `task-results` and `execution-commands`
are the executor's inputs and must be co-partitioned (same partition count, same key), so
that one executor partition owns an execution's whole life.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

DAY_MS = 24 * 60 * 60 * 1000


class Cleanup(StrEnum):
    DELETE = "delete"
    COMPACT = "compact"


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    key: str
    value_schema: str  # Avro record name in `headrace.schemas`
    retention_ms: int
    cleanup: Cleanup = Cleanup.DELETE
    # An input of the executor, co-partitioned with its state table: its partition count
    # is fixed once created (`topics apply` refuses to change it).
    fixed_partitions: bool = False

    def config(self) -> dict[str, str]:
        return {"retention.ms": str(self.retention_ms), "cleanup.policy": str(self.cleanup)}


TRIGGERS = TopicSpec(
    "triggers", "execution id", "io.headrace.TriggerEvent", 7 * DAY_MS, fixed_partitions=True
)
TASK_RESULTS = TopicSpec(
    "task-results", "execution id", "io.headrace.TaskResult", 7 * DAY_MS, fixed_partitions=True
)
EXECUTION_COMMANDS = TopicSpec(
    "execution-commands",
    "execution id",
    "io.headrace.ExecutionCommand",
    7 * DAY_MS,
    fixed_partitions=True,
)
TASK_REQUESTS = TopicSpec("task-requests", "execution id", "io.headrace.TaskRequest", 7 * DAY_MS)
EXECUTIONS = TopicSpec("executions", "execution id", "io.headrace.ExecutionEvent", 7 * DAY_MS)
LOGS = TopicSpec("logs", "execution id", "io.headrace.LogRecord", 7 * DAY_MS)
# Kills matter only while the attempt may still run: a day of retention is plenty.
TASK_CONTROL = TopicSpec("task-control", "execution id", "io.headrace.TaskKill", DAY_MS)

# Keyed by flow, not execution: one partition owns a flow's concurrency slots.
FLOW_SLOTS = TopicSpec(
    "flow-slots", "namespace/flowId", "io.headrace.SlotRequest", 7 * DAY_MS, fixed_partitions=True
)

ALL_TOPICS: tuple[TopicSpec, ...] = (
    TRIGGERS,
    TASK_RESULTS,
    EXECUTION_COMMANDS,
    TASK_REQUESTS,
    EXECUTIONS,
    LOGS,
    TASK_CONTROL,
    FLOW_SLOTS,
)
