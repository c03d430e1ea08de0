"""Flow and Kafka triggers without a broker: matching, loop cutting, ids and decoding."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from aiokafka import ConsumerRecord

from headrace.flow.errors import FlowValidationError
from headrace.flow.loader import load_flow
from headrace.messages import ExecutionEvent, ExecutionSnapshot, StateChange
from headrace.services.scheduler.catalog import DeclaredTrigger
from headrace.services.scheduler.flow_triggers import CHAIN_LIMIT, chain_after, starts_for
from headrace.services.scheduler.kafka_triggers import (
    UndecodableValue,
    batch_start,
    decode_value,
    message_starts,
)
from headrace.services.scheduler.kafka_values import JsonDecoder, StringDecoder
from headrace.services.scheduler.starts import TriggerStartError, build_start
from headrace.states import State

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

DOWNSTREAM = """
id: down
namespace: shop
inputs:
  - id: upstream
    type: STRING
tasks:
  - id: hello
    type: log
    message: hi
triggers:
  - id: after-orders
    type: flow
    inputs:
      upstream: "{{ trigger.executionId }}"
    preconditions:
      flows:
        - namespace: shop
          flowId: orders
          labels: {team: data}
"""


def declared(source: str, revision: int = 3) -> DeclaredTrigger:
    flow = load_flow(source, "test")
    return DeclaredTrigger(flow, revision, flow.triggers[0])


def ended(
    flow_id: str = "orders",
    state: State = State.SUCCESS,
    labels: dict[str, str] | None = None,
    trigger: dict | None = None,
    execution_id: str = "up1",
) -> ExecutionEvent:
    snapshot = ExecutionSnapshot(
        namespace="shop",
        flow_id=flow_id,
        flow_revision=2,
        state=state,
        histories=[StateChange(State.CREATED, NOW), StateChange(state, NOW)],
        inputs={},
        outputs={"total": 3},
        labels={"team": "data"} if labels is None else labels,
        trigger=trigger or {"type": "api"},
    )
    return ExecutionEvent(execution_id, 5, NOW, execution=snapshot)


def test_a_successful_upstream_starts_the_downstream_with_kestra_trigger_names() -> None:
    [start] = starts_for(ended(), [declared(DOWNSTREAM)], NOW)
    assert (start.namespace, start.flow_id, start.flow_revision) == ("shop", "down", 3)
    assert start.inputs == {"upstream": "up1"}
    assert start.trigger["executionId"] == "up1"
    assert start.trigger["outputs"] == {"total": 3}
    assert start.trigger["chain"] == ["shop/orders"]
    assert start.trigger["id"] == "after-orders"


@pytest.mark.parametrize(
    "event",
    [
        ended(state=State.FAILED),
        ended(flow_id="other"),
        ended(labels={"team": "web"}),
        ended(state=State.RUNNING),
    ],
)
def test_non_matching_ends_start_nothing(event: ExecutionEvent) -> None:
    assert starts_for(event, [declared(DOWNSTREAM)], NOW) == []


def test_the_same_end_always_names_the_same_execution() -> None:
    trigger = [declared(DOWNSTREAM)]
    first = starts_for(ended(), trigger, NOW)[0]
    again = starts_for(ended(), trigger, datetime.now(UTC))[0]
    other = starts_for(ended(execution_id="up2"), trigger, NOW)[0]
    assert first.execution_id == again.execution_id != other.execution_id


def test_a_chain_longer_than_the_limit_starts_nothing() -> None:
    chain = ["shop/orders"] * (CHAIN_LIMIT - 1)
    near = ended(trigger={"type": "flow", "chain": chain})
    assert chain_after(near.execution) == [*chain, "shop/orders"]
    assert len(starts_for(near, [declared(DOWNSTREAM)], NOW)) == 1
    over = ended(trigger={"type": "flow", "chain": [*chain, "shop/orders"]})
    assert starts_for(over, [declared(DOWNSTREAM)], NOW) == []


def test_inputs_that_do_not_fit_the_flow_are_refused() -> None:
    source = DOWNSTREAM.replace("{{ trigger.executionId }}", "{{ trigger.nothing }}")
    with pytest.raises(TriggerStartError, match="shop/down"):
        build_start(declared(source), {"type": "flow"}, ("x",), NOW)
    assert starts_for(ended(), [declared(source)], NOW) == []


KAFKA_FLOW = """
id: consume
namespace: shop
tasks:
  - id: hello
    type: log
    message: "{{ trigger.value }}"
triggers:
  - id: orders
    type: kafka
    topic: orders
    valueDeserializer: JSON
"""


def record(offset: int, value: bytes | None, partition: int = 0) -> ConsumerRecord:
    return ConsumerRecord(
        "orders", partition, offset, 1714564800000, 0, b"k", value, None, 1, 1, [("h", b"v")]
    )


def test_each_message_is_one_execution_named_by_its_offset() -> None:
    trigger = declared(KAFKA_FLOW)
    starts = message_starts(trigger, [record(7, b'{"a": 1}'), record(8, b"[2]")], NOW)
    assert [s.trigger["value"] for s in starts] == [{"a": 1}, [2]]
    assert starts[0].trigger["key"] == "k" and starts[0].trigger["headers"] == {"h": "v"}
    again = message_starts(trigger, [record(7, b'{"a": 1}')], NOW)
    assert again[0].execution_id == starts[0].execution_id != starts[1].execution_id


def test_an_undecodable_message_is_skipped_not_fatal() -> None:
    starts = message_starts(declared(KAFKA_FLOW), [record(1, b"{bad"), record(2, b"1")], NOW)
    assert [s.trigger["offset"] for s in starts] == [2]
    with pytest.raises(UndecodableValue):
        decode_value(b"\xff", StringDecoder())
    assert decode_value(None, JsonDecoder()) is None


def test_a_batch_is_one_execution_named_by_its_offset_ranges() -> None:
    trigger = declared(KAFKA_FLOW)
    records = [record(4, b"1"), record(5, b"2"), record(9, b"3", partition=1)]
    start = batch_start(trigger, records, NOW)
    assert start is not None
    assert start.trigger["count"] == 3
    assert [m["value"] for m in start.trigger["messages"]] == [1, 2, 3]
    same = batch_start(trigger, list(reversed(records)), NOW)
    shorter = batch_start(trigger, records[:2], NOW)
    assert same is not None and shorter is not None
    assert same.execution_id == start.execution_id != shorter.execution_id


def test_avro_without_a_writer_schema_is_refused_at_validation() -> None:
    # Decoding AVRO itself: tests/unit/test_kafka_avro.py.
    with pytest.raises(FlowValidationError, match="AVRO needs the writer schema"):
        load_flow(KAFKA_FLOW.replace("JSON", "AVRO"), "test")
