"""Every Kafka topic headrace uses, as code: `headrace topics apply` makes the broker match.

Topics are keyed by execution id, but for `flow-slots` (keyed by flow). `triggers`, `task-results` and `execution-commands`
are the executor's inputs and must be co-partitioned (same partition count, same key), so
that one executor partition owns an execution's whole life.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

DAY_MS = 24 * 60 * 60 * 1000
# Kafka refuses a record batch over its topic's `max.message.bytes` (default 1 MiB + 12
# bytes). Producers batch up to this and refuse a larger message at send() (kafka.py).
MAX_MESSAGE_BYTES = 1024 * 1024
# The largest value a publisher sends: the record batch around it (61 bytes of header,
# the record's varints and a 22-character key) must still fit in MAX_MESSAGE_BYTES.
MAX_VALUE_BYTES = MAX_MESSAGE_BYTES - 1024
# The largest record, or record batch, of the executor's state table: one execution's
# whole state, or a big one's header with the task runs a batch changed (a for-each of
# MAX_FOREACH_ITEMS (10,000) items starting them all makes ~2 MB, about 195 B per task
# run), over Kafka's 1 MiB default. The executor's producer and consumer and its changelog topics
# take this much; the broker's own default (`message.max.bytes`) stays 1 MiB for the rest.
MAX_STATE_BYTES = 8 * 1024 * 1024


class Cleanup(StrEnum):
    DELETE = "delete"
    COMPACT = "compact"


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    key: str
    value_schema: str  # Avro record name(s) in `headrace.schemas`; "" for raw bytes
    retention_ms: int
    cleanup: Cleanup = Cleanup.DELETE
    # An input of the executor, co-partitioned with its state table: its partition count
    # is fixed once created (`topics apply` refuses to change it).
    fixed_partitions: bool = False
    # Set when the broker's default must not decide what the topic takes.
    max_message_bytes: int | None = None
    # Its own partition count, whatever `topics apply` is asked for the others.
    partitions: int | None = None

    def config(self) -> dict[str, str]:
        config = {"retention.ms": str(self.retention_ms), "cleanup.policy": str(self.cleanup)}
        if self.max_message_bytes is not None:
            config["max.message.bytes"] = str(self.max_message_bytes)
        return config


# What `triggers` carries comes from outside (webhook bodies, Kafka messages, upstream
# outputs): its limit is set here, the one every publisher checks a start against.
TRIGGERS = TopicSpec(
    "triggers",
    "execution id",
    "io.headrace.TriggerEvent",
    7 * DAY_MS,
    fixed_partitions=True,
    max_message_bytes=MAX_MESSAGE_BYTES,
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

# Where flow revisions are decided (changes, applied in the partition's order by every
# reader) and every trigger switch, for the executor (it never reads PostgreSQL), the
# scheduler and the gateway (which copies revisions into PostgreSQL). Compacted and kept
# forever: every record has a key of its own but fences (and an earlier release's
# revisions and retractions), so compaction only drops fences. One partition, never more: one order for every change (a reader refuses to
# start on more). Flows are few and small.
FLOWS = TopicSpec(
    "flows",
    "namespace/flowId!changeId, changes!changeId, namespace/flowId@revision!id,"
    " namespace/flowId#triggerId!id",
    "io.headrace.FlowRevision, io.headrace.FlowChange, io.headrace.FlowChangeSet,"
    " io.headrace.TriggerSwitch",
    -1,
    Cleanup.COMPACT,
    fixed_partitions=True,
    partitions=1,
)

# The executor's Faust table changelogs (`<app id>-<table>-changelog`). Faust creates them
# with the same config at start; listing them here also raises the limit of a changelog
# created before it was set. Partitioned like the executor's inputs.
EXECUTION_STATE_CHANGELOG = TopicSpec(
    "headrace-executor-executions-changelog",
    "execution id",
    "",  # a state, a big execution's header or one of its task runs (stored.py)
    -1,
    Cleanup.COMPACT,
    fixed_partitions=True,
    max_message_bytes=MAX_STATE_BYTES,
)
FLOW_SLOTS_CHANGELOG = TopicSpec(
    "headrace-executor-flow-slots-changelog",
    "namespace/flowId",
    "",  # `FlowSlots.to_bytes()`
    -1,
    Cleanup.COMPACT,
    fixed_partitions=True,
    max_message_bytes=MAX_STATE_BYTES,
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
    FLOWS,
    EXECUTION_STATE_CHANGELOG,
    FLOW_SLOTS_CHANGELOG,
)
