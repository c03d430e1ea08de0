"""Does the embedded broker slow down as a partition grows? A bare aiokafka client only.

    python benchmarks/broker_reads.py             # up to 1,000,000 records (~2 min)
    python benchmarks/broker_reads.py --records 2000000

Starts its own embedded broker, fills one partition in steps, and at each size measures:
the produce -> fetch round trip of one record at the end of the partition (median and
slowest of 20), and how fast 5,000 records are read from the start, the middle and the
end. If these stay flat, a slowdown of the whole stack at that size is not the broker
serving reads of a big partition.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from headrace.broker import start_embedded_broker

TOPIC = "broker-reads"
SEND_BATCH = 10_000  # records in flight at once (more overflows the producer's buffer)
READ = 5_000


async def catch_up(consumer: AIOKafkaConsumer) -> None:
    """Read to the partition's real end (this broker's end offsets are approximate)."""
    while await consumer.getmany(timeout_ms=500):
        pass


async def round_trip_ms(producer: AIOKafkaProducer, consumer: AIOKafkaConsumer) -> float:
    """One record produced and read back by a consumer waiting at the end."""
    marker = os.urandom(16)
    started = time.perf_counter()
    await producer.send_and_wait(TOPIC, marker, partition=0)
    async with asyncio.timeout(30):
        while True:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                if any(record.value == marker for record in records):
                    return (time.perf_counter() - started) * 1000


async def read_rate(consumer: AIOKafkaConsumer, offset: int) -> float:
    """Records/s reading up to `READ` records from `offset` (fewer near the end: this
    broker's end offsets are approximate, so the read stops where the records do)."""
    tp = TopicPartition(TOPIC, 0)
    consumer.seek(tp, offset)
    started, got = time.perf_counter(), 0
    while got < READ:
        records = (await consumer.getmany(tp, timeout_ms=200)).get(tp, [])
        if not records and got:
            break
        got += len(records)
    return got / (time.perf_counter() - started)


async def measure(bootstrap: str, sizes: list[int]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(TOPIC, 1, 1)])
    await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=1 << 20)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, fetch_max_wait_ms=5, max_partition_fetch_bytes=64 * 1024
    )
    await producer.start()
    await consumer.start()
    tp = TopicPartition(TOPIC, 0)
    consumer.assign([tp])
    value = os.urandom(200)
    sent = 0
    print(
        "records   round trip median / max   records/s read from start / middle / end", flush=True
    )
    try:
        for size in sizes:
            while sent < size:
                count = min(SEND_BATCH, size - sent)
                await asyncio.gather(
                    *[producer.send(TOPIC, value, partition=0) for _ in range(count)]
                )
                sent += count
            await catch_up(consumer)
            trips = sorted([await round_trip_ms(producer, consumer) for _ in range(20)])
            end = (await consumer.end_offsets([tp]))[tp]
            offsets = (0, end // 2, max(0, end - READ))
            reads = [await read_rate(consumer, offset) for offset in offsets]
            print(
                f"{size:>9,}   {statistics.median(trips):6.1f} / {trips[-1]:6.1f} ms"
                f"           {reads[0]:7,.0f} / {reads[1]:7,.0f} / {reads[2]:7,.0f}",
                flush=True,
            )
    finally:
        await consumer.stop()
        await producer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    args = parser.parse_args()
    sizes = sorted({READ, 100_000, 250_000, 500_000, args.records} - {0})
    broker = start_embedded_broker()
    try:
        asyncio.run(measure(broker.bootstrap, [s for s in sizes if s <= args.records]))
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
