"""`topics apply` against the real embedded broker: creates, then changes nothing."""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient

from headrace.broker import start_embedded_broker
from headrace.topics import ALL_TOPICS
from headrace.topics.apply import apply_topics


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
            t.name: 3 for t in ALL_TOPICS
        }
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
