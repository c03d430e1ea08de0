"""Flow and Kafka triggers without a broker: matching, loop cutting, ids and decoding."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import ConsumerRecord, TopicPartition
from hypothesis import given, settings
from hypothesis import strategies as st

from headrace.flow.errors import FlowValidationError
from headrace.flow.loader import load_flow
from headrace.flow.triggers import KafkaBatch
from headrace.kafka_values import JsonDecoder, StringDecoder
from headrace.messages import ExecutionEvent, ExecutionSnapshot, StateChange
from headrace.services.scheduler.catalog import DeclaredTrigger
from headrace.services.scheduler.flow_triggers import CHAIN_LIMIT, chain_after, starts_for
from headrace.services.scheduler.kafka_triggers import (
    MAX_BATCH_DATA_BYTES,
    Batch,
    Batcher,
    ReadMessage,
    UndecodableValue,
    batch_start,
    decode_value,
    default_group_id,
    message_starts,
    read_message,
)
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


T0_MS = 1714564800000  # a record timestamp: 2024-05-01T12:00:00Z


def record(
    offset: int, value: bytes | None, partition: int = 0, timestamp: int | None = None
) -> ConsumerRecord:
    # One message per second by default: offset 7 was stamped 7 s after T0_MS.
    stamp = T0_MS + offset * 1000 if timestamp is None else timestamp
    return ConsumerRecord(
        "orders", partition, offset, stamp, 0, b"k", value, None, 1, 1, [("h", b"v")]
    )


def test_each_message_is_one_execution_named_by_its_offset() -> None:
    trigger = declared(KAFKA_FLOW)
    starts = message_starts(trigger, [record(7, b'{"a": 1}'), record(8, b"[2]")], NOW)
    assert [s.trigger["value"] for s in starts] == [{"a": 1}, [2]]
    assert starts[0].trigger["key"] == "k" and starts[0].trigger["headers"] == {"h": "v"}
    again = message_starts(trigger, [record(7, b'{"a": 1}')], NOW)
    assert again[0].execution_id == starts[0].execution_id != starts[1].execution_id


def test_a_recreated_topic_s_offsets_name_new_executions() -> None:
    # Same topic, partition and offset, another message (a recreated topic, or another
    # cluster): its timestamp tells them apart.
    trigger = declared(KAFKA_FLOW)
    [old] = message_starts(trigger, [record(0, b"1", timestamp=T0_MS)], NOW)
    [new] = message_starts(trigger, [record(0, b"1", timestamp=T0_MS + 86_400_000)], NOW)
    assert old.execution_id != new.execution_id


def test_an_undecodable_message_is_skipped_not_fatal() -> None:
    starts = message_starts(declared(KAFKA_FLOW), [record(1, b"{bad"), record(2, b"1")], NOW)
    assert [s.trigger["offset"] for s in starts] == [2]
    with pytest.raises(UndecodableValue):
        decode_value(b"\xff", StringDecoder())
    assert decode_value(None, JsonDecoder()) is None


class HugeIntegers(JsonDecoder):
    """Values with an integer beyond 64 bits, as a decoder could give (JSON's gives floats)."""

    def decode(self, raw: bytes) -> Any:
        return {"n": 2**70} if raw == b"huge" else super().decode(raw)


def test_a_value_no_start_can_carry_is_skipped_alone() -> None:
    trigger = declared(KAFKA_FLOW)
    records = [record(1, b"huge"), record(2, b"1")]
    starts = message_starts(trigger, records, NOW, HugeIntegers())
    assert [s.trigger["offset"] for s in starts] == [2]
    batcher = Batcher(KafkaBatch(max_records=2))
    [batch] = batcher.add([read_message(r, HugeIntegers()) for r in records], now=0.0)
    assert (batch.records, [m["offset"] for m in batch.messages]) == (2, [2])


def test_default_group_ids_differ_for_different_triggers() -> None:
    # Ids may hold '-': these two read the same once joined with '-'.
    first = default_group_id("shop", "orders-eu", "new")
    second = default_group_id("shop", "orders", "eu-new")
    assert first != second
    assert first.startswith("headrace-trigger-shop-orders-eu-new-")
    assert first == default_group_id("shop", "orders-eu", "new")


BATCH_FLOW = KAFKA_FLOW + "    batch: {maxRecords: 3, maxDuration: PT10S}\n"


def read(*records: ConsumerRecord) -> list[ReadMessage]:
    return [read_message(r, JsonDecoder()) for r in records]


def batches_of(batcher: Batcher, records: list[ConsumerRecord], chunk: int) -> list[Batch]:
    """Feed `records` `chunk` at a time (as fetches would), the clock standing still."""
    done = []
    for i in range(0, len(records), chunk):
        done += batcher.add(read(*records[i : i + chunk]), now=0.0)
    return done


def spans(batches: list[Batch]) -> list[tuple[int, int, int]]:
    return [(b.partition, b.first_offset, b.last_offset) for b in batches]


def test_a_batch_is_one_execution_of_one_partition() -> None:
    trigger = declared(BATCH_FLOW)
    batcher = Batcher(KafkaBatch(max_records=3))
    records = [record(4, b"1"), record(9, b"3", partition=1), record(5, b"2")]
    assert batcher.add(read(*records), now=0.0) == []
    first, second = batcher.due(now=5.0)  # every open batch is due
    start = batch_start(trigger, first, NOW)
    assert start is not None
    assert (start.trigger["partition"], start.trigger["count"]) == (0, 2)
    assert [m["value"] for m in start.trigger["messages"]] == [1, 2]
    other = batch_start(trigger, second, NOW)
    assert other is not None and other.trigger["messages"][0]["offset"] == 9
    assert start.execution_id != other.execution_id


def test_batches_end_at_max_records_or_at_the_first_record_out_of_the_window() -> None:
    records = [record(n, b"1") for n in range(8)]  # stamped one second apart
    batcher = Batcher(KafkaBatch(max_records=3, max_duration=timedelta(seconds=2.5)))
    assert spans(batches_of(batcher, records, chunk=8)) == [(0, 0, 2), (0, 3, 5)]
    batcher = Batcher(KafkaBatch(max_records=10, max_duration=timedelta(seconds=2)))
    # 2 s after 0 is out of 0's window: it starts the next batch.
    assert spans(batches_of(batcher, records, chunk=8)) == [(0, 0, 1), (0, 2, 3), (0, 4, 5)]
    assert spans(batcher.due(now=10**6)) == [(0, 6, 7)]


def test_a_batch_is_cut_before_its_messages_outgrow_a_start() -> None:
    big = b'"' + b"x" * (MAX_BATCH_DATA_BYTES // 3) + b'"'
    records = [record(n, big, timestamp=T0_MS) for n in range(7)]
    batcher = Batcher(KafkaBatch(max_records=100))
    done = batches_of(batcher, records, chunk=7) + batcher.due(now=10**6)
    assert spans(done) == [(0, 0, 1), (0, 2, 3), (0, 4, 5), (0, 6, 6)]
    assert all(b.data_bytes <= MAX_BATCH_DATA_BYTES for b in done)
    # One message above the cap still makes a batch, of its own.
    huge = record(7, b'"' + b"x" * MAX_BATCH_DATA_BYTES + b'"', timestamp=T0_MS)
    assert spans(batcher.add(read(huge, record(8, b"1", timestamp=T0_MS)), now=0.0)) == [(0, 7, 7)]


@settings(max_examples=200, deadline=None)
@given(
    gaps=st.lists(st.integers(0, 3000), min_size=1, max_size=40),
    max_records=st.integers(1, 6),
    chunk=st.integers(1, 10),
    other_chunk=st.integers(1, 10),
    replay=st.integers(0, 40),
)
def test_a_re_read_from_any_batch_start_cuts_the_same_batches(
    gaps: list[int], max_records: int, chunk: int, other_chunk: int, replay: int
) -> None:
    """However the records come in fetches, and from whichever batch a re-read starts
    (the last commit), the batches, hence the execution ids, are the same."""
    stamps = [T0_MS + sum(gaps[: n + 1]) for n in range(len(gaps))]
    records = [record(n, b"1", timestamp=stamp) for n, stamp in enumerate(stamps)]
    spec = KafkaBatch(max_records=max_records, max_duration=timedelta(seconds=2))
    first = batches_of(Batcher(spec), records, chunk)
    if not first:
        return
    # Back to back from the first record: none is skipped or taken twice.
    assert [b.first_offset for b in first] == [0] + [b.last_offset + 1 for b in first[:-1]]
    start = first[min(replay, len(first) - 1)].first_offset
    again = batches_of(Batcher(spec), records[start:], other_chunk)
    assert [b.cause for b in again] == [b.cause for b in first if b.first_offset >= start]
    trigger = declared(BATCH_FLOW)
    ids = {b.cause: batch_start(trigger, b, NOW) for b in first}
    for batch in again:
        start_again = batch_start(trigger, batch, NOW)
        assert start_again is not None
        assert start_again.execution_id == getattr(ids[batch.cause], "execution_id", None)


def test_a_record_fetched_again_joins_no_batch_twice() -> None:
    batcher = Batcher(KafkaBatch(max_records=5))
    batcher.add(read(record(0, b"1"), record(1, b"2")), now=0.0)
    # The position went back (the partition was given back): 0 and 1 come again.
    batcher.add(read(record(0, b"1"), record(1, b"2"), record(2, b"3")), now=0.0)
    [batch] = batcher.due(now=10**6)
    assert (batch.records, [m["offset"] for m in batch.messages]) == (3, [0, 1, 2])


def test_a_revoked_partition_s_open_batch_is_dropped() -> None:
    batcher = Batcher(KafkaBatch(max_records=5))
    batcher.add(read(record(0, b"1"), record(3, b"2", partition=1)), now=0.0)
    batcher.drop({TopicPartition("orders", 1)})
    assert spans(batcher.due(now=10**6)) == [(0, 0, 0)]


def test_avro_without_a_writer_schema_is_refused_at_validation() -> None:
    # Decoding AVRO itself: tests/unit/test_kafka_avro.py.
    with pytest.raises(FlowValidationError, match="AVRO needs the writer schema"):
        load_flow(KAFKA_FLOW.replace("JSON", "AVRO"), "test")
