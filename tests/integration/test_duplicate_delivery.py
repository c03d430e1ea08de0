"""Every input record delivered twice: the same end state as delivered once.

A duplicator in the test copies every record of the executor's inputs (`triggers`,
`task-results`, `execution-commands`) and of the workers' (`task-requests`) back onto
its topic, with the same key and value, marked by a header so that copies are not
copied again. Each service then sees every input twice, the copy a little later, as
at-least-once delivery allows. Executions must end as they would have: SUCCESS, their
three task runs, each succeeded once, each log line once.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from headrace.config import Settings
from headrace.local import LocalStack
from headrace.topics.definitions import EXECUTION_COMMANDS, TASK_REQUESTS, TASK_RESULTS, TRIGGERS
from tests.integration.faults import Chain
from tests.integration.stacks import running_stack_on_own_broker

EXECUTIONS = 60
COPY_HEADER = "test-copy"
TOPICS = (TRIGGERS.name, TASK_RESULTS.name, EXECUTION_COMMANDS.name, TASK_REQUESTS.name)


class Duplicator:
    """Copies every record of TOPICS once, in a thread with its own event loop."""

    def __init__(self, bootstrap: str) -> None:
        self._bootstrap = bootstrap
        self._stop = threading.Event()
        self._ready = threading.Event()
        self.copied = 0
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> Duplicator:
        self._thread.start()
        assert self._ready.wait(30), "the duplicator did not start"
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)

    async def _run(self) -> None:
        consumer = AIOKafkaConsumer(
            *TOPICS,
            bootstrap_servers=self._bootstrap,
            group_id=f"test-duplicator-{uuid.uuid4().hex[:8]}",
            auto_offset_reset="latest",
            fetch_max_wait_ms=5,
        )
        producer = AIOKafkaProducer(bootstrap_servers=self._bootstrap, linger_ms=1)
        await consumer.start()
        await producer.start()
        try:
            while not consumer.assignment():
                await asyncio.sleep(0.05)
            await consumer.seek_to_end()
            for partition in consumer.assignment():
                await consumer.position(partition)
            self._ready.set()
            while not self._stop.is_set():
                fetched = await consumer.getmany(timeout_ms=100)
                for records in fetched.values():
                    for record in records:
                        if any(name == COPY_HEADER for name, _ in record.headers):
                            continue
                        await producer.send(
                            record.topic,
                            record.value,
                            key=record.key,
                            partition=record.partition,
                            headers=[(COPY_HEADER, b"1")],
                        )
                        self.copied += 1
        finally:
            await producer.stop()
            await consumer.stop()


@pytest.fixture(scope="module")
def stack(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with running_stack_on_own_broker(settings, tmp_path_factory, "duplicate-logs") as stack:
        yield stack


def test_every_input_delivered_twice_ends_the_same(stack: LocalStack) -> None:
    flow = Chain(stack, "tests.duplicate-delivery", sleep_s=0.2)
    with Duplicator(stack.settings.kafka_bootstrap) as duplicator:
        ids = flow.start(EXECUTIONS)
        flow.wait_for_all(EXECUTIONS, timeout_s=180)
    # Each execution: a trigger, three requests, three RUNNING reports and three results.
    assert duplicator.copied >= EXECUTIONS * 10
    flow.assert_ended_once(ids)
