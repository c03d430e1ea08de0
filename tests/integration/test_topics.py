"""`topics apply` against the real embedded broker: creates, then changes nothing."""

from __future__ import annotations

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import MessageSizeTooLargeError

from headrace.broker import start_embedded_broker
from headrace.config import Settings
from headrace.kafka import make_producer
from headrace.topics import ALL_TOPICS, FLOWS, TRIGGERS
from headrace.topics.apply import apply_topics
from headrace.topics.definitions import MAX_MESSAGE_BYTES


async def test_apply_creates_every_topic_then_is_idempotent() -> None:
    broker = start_embedded_broker()
    try:
        first = await apply_topics(broker.bootstrap, 3)
        assert sorted(first.created) == sorted(t.name for t in ALL_TOPICS)
        second = await apply_topics(broker.bootstrap, 3)
        assert second.created == [] and second.reconfigured == []
        assert sorted(second.unchanged) == sorted(t.name for t in ALL_TOPICS)

        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
        await admin.start()
        try:
            described = await admin.describe_topics([t.name for t in ALL_TOPICS])
        finally:
            await admin.close()
        assert {t["topic"]: len(t["partitions"]) for t in described} == {
            t.name: t.partitions or 3 for t in ALL_TOPICS
        }
        assert FLOWS.partitions == 1
    finally:
        broker.stop()


async def test_apply_refuses_to_repartition_the_executors_inputs() -> None:
    broker = start_embedded_broker()
    try:
        await apply_topics(broker.bootstrap, 3)
        report = await apply_topics(broker.bootstrap, 5)
        warned = {w.split()[0] for w in report.warnings}
        assert {"triggers", "task-results", "execution-commands", "flow-slots"} <= warned
        assert report.repartitioned == []
    finally:
        broker.stop()


async def test_triggers_takes_what_producers_send_whatever_the_broker_default() -> None:
    broker = start_embedded_broker()
    try:
        await apply_topics(broker.bootstrap, 1)
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
        await admin.start()
        try:
            [described] = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, TRIGGERS.name)]
            )
        finally:
            await admin.close()
        configs = {entry[0]: entry[1] for entry in described.resources[0][4]}
        assert configs["max.message.bytes"] == str(MAX_MESSAGE_BYTES)
        # Producers refuse a larger message themselves (this broker would take it).
        producer = make_producer(Settings(kafka_bootstrap=broker.bootstrap), "test-topics")
        await producer.start()
        try:
            with pytest.raises(MessageSizeTooLargeError):
                await producer.send(TRIGGERS.name, b"x" * MAX_MESSAGE_BYTES, key=b"k")
        finally:
            await producer.stop()
    finally:
        broker.stop()
