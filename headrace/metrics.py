"""The Prometheus metrics of every service, defined in one place (docs/operations.md).

Each process exports what it measured itself: the gateway on its API port (`/metrics`),
the other services on `HEADRACE_METRICS_PORT` (`headrace.service_http`). Metrics live in
prometheus-client's default registry, beside its process and Python collectors (CPU,
memory, open files, garbage collection).

Labels are bounded on purpose: a task type, a state, a trigger type, a topic, a
partition, a consumer group, an HTTP status, never an execution or task run id. Values
that come from outside our code (a trigger type a producer wrote, a task type no
connector has) are folded into `other`.

Counting costs little on hot paths: a counter's child per label value is looked up once
and kept (`_Children`), and an observation is ~0.5 µs (measured against the executor's
batches: docs/benchmarks.md).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Collection, Iterator
from typing import Any

from aiokafka import AIOKafkaConsumer
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from headrace import __version__
from headrace.states import State

log = logging.getLogger(__name__)

# The trigger types our code writes into a start (`TriggerEvent.trigger["type"]`);
# anything else (a producer's own) is counted as `other`.
TRIGGER_TYPES = frozenset(
    {"api", "webhook", "schedule", "flow", "kafka", "subflow", "replay", "producer"}
)
OTHER = "other"

INFO = Gauge(
    "headrace_info",
    "Always 1: which headrace service and version this process runs.",
    ["service", "version"],
)

EXECUTIONS_STARTED = Counter(
    "headrace_executions_started",
    "Executions the executor created, by the type of the trigger that started them "
    "(a start delivered twice is counted once).",
    ["trigger"],
)
EXECUTIONS_ENDED = Counter(
    "headrace_executions_ended",
    "Executions that reached a final state in this executor, by that state "
    "(a restarted execution that ends again is counted again).",
    ["state"],
)
EXECUTOR_BATCH_EVENTS = Histogram(
    "headrace_executor_batch_events",
    "Input events per executor batch (triggers, task results, commands).",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
)
EXECUTOR_BATCH_SECONDS = Histogram(
    "headrace_executor_batch_duration_seconds",
    "Time to handle one executor batch: decode, advance, produce and wait for the "
    "broker's acknowledgements, store the states.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
EXECUTOR_STEP_SECONDS = Histogram(
    "headrace_executor_step_duration_seconds",
    "Time of one step of the executor's core: one input event applied to one execution (no I/O).",
    buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1),
)
TASK_ATTEMPT_SECONDS = Histogram(
    "headrace_task_attempt_duration_seconds",
    "Duration of task attempts run by this worker, by task type and final state "
    "(SUCCESS, FAILED, KILLED).",
    ["type", "state"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600, 7200, 21600),
)
WORKER_SLOTS = Gauge(
    "headrace_worker_slots",
    "Attempts this worker runs at once at most (HEADRACE_WORKER_CONCURRENCY).",
)
WORKER_SLOTS_IN_USE = Gauge(
    "headrace_worker_slots_in_use",
    "Attempts whose task is running on this worker now.",
)
WEBHOOK_REQUESTS = Counter(
    "headrace_webhook_requests",
    "Webhook calls answered by this gateway, by HTTP status.",
    ["status"],
)


def trigger_label(trigger: dict[str, Any]) -> str:
    kind = trigger.get("type")
    return kind if kind in TRIGGER_TYPES else OTHER


class _Children:
    """A labelled counter's children by label value, looked up once each."""

    def __init__(self, metric: Counter, label: Callable[[Any], str] = str) -> None:
        self._metric = metric
        self._label = label
        self._children: dict[Any, Any] = {}

    def inc(self, value: Any) -> None:
        child = self._children.get(value)
        if child is None:
            child = self._children[value] = self._metric.labels(self._label(value))
        child.inc()


ENDED = _Children(EXECUTIONS_ENDED)
STARTED = _Children(EXECUTIONS_STARTED)


def count_execution(was: State | None, now: State, trigger: dict[str, Any]) -> None:
    """An executor batch took an execution from `was` (None: it did not exist) to `now`."""
    if was is None:
        STARTED.inc(trigger_label(trigger))
    if now.is_terminal and (was is None or not was.is_terminal):
        ENDED.inc(now.value)


def task_type_label(task_type: str, known: Collection[str]) -> str:
    return task_type if task_type in known else OTHER


# --- consumer lag ----------------------------------------------------------------------

# Consumers whose lag `/metrics` reports, with the topics to report (None: all of them).
_WATCHED: weakref.WeakKeyDictionary[AIOKafkaConsumer, frozenset[str] | None] = (
    weakref.WeakKeyDictionary()
)


def watch_lag(consumer: AIOKafkaConsumer, topics: Collection[str] | None = None) -> None:
    """Report `consumer`'s lag on its assigned partitions (of `topics`, if given) for as
    long as it lives."""
    _WATCHED[consumer] = None if topics is None else frozenset(topics)


def consumer_lags() -> dict[tuple[str, str, int], int]:
    """(group, topic, partition) -> records the broker had that the consumer had not
    fetched, at its last fetch: the partition's high watermark (as the last fetch
    response gave it) less the consumer's position. Both are the consumer's own
    bookkeeping: no request is sent.

    On Apache Kafka this is exact up to one fetch. The embedded broker reports the high
    watermark wrong (the base offset of the partition's last record batch plus one:
    docs/architecture.md), so there it is a lower bound that may miss the records of the
    last batch; 0 still means caught up. Two consumers of one group in one process (a
    rebalance) report the larger lag."""
    lags: dict[tuple[str, str, int], int] = {}
    for consumer, topics in list(_WATCHED.items()):
        try:
            subscription = consumer._subscription.subscription
            if subscription is None or subscription.assignment is None:
                continue
            assignment = subscription.assignment
            group = consumer._group_id or ""
            for tp in assignment.tps:
                if topics is not None and tp.topic not in topics:
                    continue
                state = assignment.state_value(tp)
                if state.highwater is None or not state.has_valid_position:
                    continue  # nothing fetched yet: unknown, not zero
                key = (group, tp.topic, tp.partition)
                lags[key] = max(lags.get(key, 0), state.highwater - state.position, 0)
        except Exception:  # a consumer mid-rebalance or closing: skip it this scrape
            log.debug("no lag for a consumer this scrape", exc_info=True)
    return lags


class _LagCollector(Collector):
    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "headrace_consumer_lag_records",
            "Records on a partition this process's consumer has not fetched yet, at its "
            "last fetch (a lower bound on the embedded broker). group is empty for "
            "readers outside a group (the flows topic's readers, the kill listener).",
            labels=["group", "topic", "partition"],
        )
        for (group, topic, partition), lag in sorted(consumer_lags().items()):
            family.add_metric([group, topic, str(partition)], lag)
        yield family


REGISTRY.register(_LagCollector())


def mark_service(service: str) -> None:
    INFO.labels(service, __version__).set(1)


def exposition() -> bytes:
    """Every metric of this process, as Prometheus text."""
    return generate_latest(REGISTRY)
