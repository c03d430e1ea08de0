"""Send one message to a Kafka topic: `python examples/produce.py BOOTSTRAP TOPIC VALUE`.

Any Kafka client does the same; this one needs nothing beyond headrace's own install.
`headrace server local` prints the embedded broker's address (BOOTSTRAP).
"""

import asyncio
import sys

from aiokafka import AIOKafkaProducer


async def produce(bootstrap: str, topic: str, value: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        sent = await producer.send_and_wait(topic, value.encode())
        print(f"sent to {sent.topic}[{sent.partition}]@{sent.offset}")
    finally:
        await producer.stop()


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__.splitlines()[0])
    asyncio.run(produce(*sys.argv[1:]))
