"""`send_together` on the embedded broker: a big execution's records as one record batch."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from headrace.broker import EmbeddedBroker
from headrace.services.executor.together import TogetherProducer
from tests.integration.stacks import new_topic


class FaustLike:
    """What `TogetherProducer` takes of Faust's producer: `send`, and its aiokafka
    producer."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer

    def _ensure_producer(self) -> AIOKafkaProducer:
        return self._producer

    async def send(self, topic, key, value, partition, timestamp, headers):
        return await self._producer.send(topic, value, key=key, partition=partition)


async def test_records_sent_together_arrive_in_order_with_one_acknowledgement(
    broker: EmbeddedBroker,
) -> None:
    topic = await new_topic(broker.bootstrap, "together", 2)
    kafka = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    await kafka.start()
    try:
        producer = TogetherProducer(FaustLike(kafka))
        await (await producer.send(topic, b"before", b"first", 1, None, None))
        records = [(b"ex1", b"header"), (b"ex1\x00\x00\x00\x00\x07", b"run 7"), (b"gone", None)]
        ack = await (await producer.send_together(topic, 1, records))
    finally:
        await kafka.stop()

    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 1)])
        await consumer.seek_to_beginning()
        read = []
        while len(read) < 4:
            for batch in (await consumer.getmany(timeout_ms=5_000)).values():
                read += batch
    finally:
        await consumer.stop()
    assert [(r.key, r.value) for r in read] == [(b"before", b"first"), *records]
    assert [r.offset for r in read[1:]] == [ack.offset, ack.offset + 1, ack.offset + 2]
