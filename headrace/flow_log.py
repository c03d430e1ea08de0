"""The `flows` topic: every stored flow revision, for the services that must not depend on
PostgreSQL to run flows (the executor).

The gateway publishes each revision inside the transaction that stores it, and awaits
the broker's acknowledgement before the transaction commits (`TopicRevisionLog`): a
revision readers can see in PostgreSQL is on the topic, and a trigger naming it is
published after it. A transaction that fails after the publish retracts the revision
(a record with no value under its key) before its lock is released; a commit whose
outcome is unknown (its connection lost) is settled under the lock, on a fresh
connection (`headrace.db.flows`). At start, the gateway and the scheduler publish the
stored revisions the topic lacks (`publish_stored_revisions`).

`FlowLog` follows the topic from its beginning and keeps every revision in memory (YAML
text, parsed on first use). A reader that does not find a revision may just be behind:
`sync` appends a fence to every partition and reads up to it, so whatever was
acknowledged before the call has been read. (The embedded broker reports end offsets
wrong, see docs/architecture.md: a fence's acknowledgement gives an offset that is right
on every broker.)
"""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition

from headrace import codec
from headrace.config import Settings
from headrace.consume import consume
from headrace.db.flows import FlowRepository
from headrace.errors import CodecError, HeadraceError
from headrace.flow.loader import load_flow
from headrace.flow.model import Flow
from headrace.kafka import AdaptiveConsumer, make_consumer, make_producer
from headrace.messages import FlowRevision
from headrace.topics.definitions import FLOWS

log = logging.getLogger(__name__)

# Keys of fence records: no revision key starts with a NUL byte.
FENCE_KEY = b"\x00fence"


class FlowNotFound(HeadraceError):
    """A trigger or result names a flow revision that was never stored, or was deleted."""


class TopicRevisionLog:
    """The gateway's `RevisionLog` (`headrace.db.flows`): revisions go to `flows`, each
    call returning once the broker has it."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer

    async def publish(self, revision: FlowRevision) -> None:
        value = codec.encode(revision)
        await self._producer.send_and_wait(FLOWS.name, value, key=revision.key.encode())

    async def retract(self, revision: FlowRevision) -> None:
        """A revision that was never committed: a record with no value under its key
        (readers forget it; compaction removes it)."""
        await self._producer.send_and_wait(FLOWS.name, None, key=revision.key.encode())


@dataclass(frozen=True, slots=True)
class _Stored:
    source: str
    deleted: bool


class FlowLog:
    """Every revision of `flows`, followed live; `start` returns once it has read all."""

    def __init__(self, settings: Settings, client_id: str) -> None:
        self._settings = settings
        self._client_id = f"{client_id}-{socket.gethostname()}"
        self._revisions: dict[tuple[str, str], dict[int, _Stored]] = {}
        self._parsed: dict[tuple[str, str, int], Flow] = {}
        self._keys: dict[bytes, tuple[str, str, int]] = {}  # record key -> revision
        self._read_to: dict[int, int] = {}  # partition -> next offset to read
        self._progress = asyncio.Condition()
        self._consumer: AdaptiveConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._follower: asyncio.Task[None] | None = None
        self._partitions: list[int] = []

    async def start(self) -> None:
        self._producer = make_producer(self._settings, self._client_id)
        await self._producer.start()
        self._partitions = sorted(await self._producer.partitions_for(FLOWS.name))
        self._consumer = make_consumer(self._settings, group_id=None, client_id=self._client_id)
        await self._consumer.start()
        self._consumer.assign([TopicPartition(FLOWS.name, p) for p in self._partitions])
        await self._consumer.seek_to_beginning()
        self._follower = asyncio.create_task(consume(self._consumer, self._read))
        await self.sync()

    async def stop(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            await asyncio.gather(self._follower, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()

    def holds(self, revision: FlowRevision) -> bool:
        """Whether `revision` was read, as it is."""
        stored = self._revisions.get((revision.namespace, revision.flow_id), {})
        return stored.get(revision.revision) == _Stored(revision.source, revision.deleted)

    async def get(self, namespace: str, flow_id: str, revision: int) -> Flow:
        """A live revision, parsed; `FlowNotFound` once a `sync` did not find it either."""
        key = (namespace, flow_id, revision)
        flow = self._parsed.get(key)
        if flow is not None:
            return flow
        stored = self._revisions.get((namespace, flow_id), {}).get(revision)
        if stored is None:
            await self.sync()
            stored = self._revisions.get((namespace, flow_id), {}).get(revision)
        if stored is None or stored.deleted:
            raise FlowNotFound(f"flow {namespace}.{flow_id} revision {revision} not found")
        flow = load_flow(stored.source, f"{namespace}/{flow_id}@{revision}")
        self._parsed[key] = flow
        return flow

    async def latest_revision(self, namespace: str, flow_id: str) -> int | None:
        """The newest revision read, None if the flow is unknown or deleted. Revisions
        saved a moment ago may not be read yet; an unknown flow is looked for once more
        after a `sync`."""
        if (namespace, flow_id) not in self._revisions:
            await self.sync()
        revisions = self._revisions.get((namespace, flow_id))
        if not revisions:
            return None
        latest = max(revisions)
        return None if revisions[latest].deleted else latest

    async def sync(self) -> None:
        """Return once everything acknowledged on `flows` before the call has been read.
        Each call sends fences of its own: one sent before a revision was acknowledged
        would not cover it."""
        assert self._producer is not None
        sent = [
            await self._producer.send(FLOWS.name, None, key=FENCE_KEY, partition=partition)
            for partition in self._partitions
        ]
        fences = {meta.partition: meta.offset for meta in await asyncio.gather(*sent)}
        assert self._follower is not None
        reached = asyncio.create_task(self._read_past(fences))
        await asyncio.wait({reached, self._follower}, return_when=asyncio.FIRST_COMPLETED)
        if not reached.done():  # the follower ended: say why rather than wait forever
            reached.cancel()
            follower = self._follower
            cause = None if follower.cancelled() else follower.exception()
            raise HeadraceError(f"stopped following {FLOWS.name}") from cause

    async def _read_past(self, fences: dict[int, int]) -> None:
        async with self._progress:
            await self._progress.wait_for(
                lambda: all(self._read_to.get(p, 0) > offset for p, offset in fences.items())
            )

    async def _read(self, records: list[ConsumerRecord]) -> None:
        for record in records:
            self._read_to[record.partition] = record.offset + 1
            if record.key is None or record.key.startswith(b"\x00"):
                continue  # a fence
            if record.value is None:  # a retracted revision
                retracted = self._keys.pop(record.key, None)
                if retracted is not None:
                    namespace, flow_id, number = retracted
                    self._revisions.get((namespace, flow_id), {}).pop(number, None)
                    self._parsed.pop(retracted, None)
                continue
            try:
                revision = codec.decode(record.value)
            except CodecError as exc:
                log.error("skipping an undecodable record of %s: %s", FLOWS.name, exc)
                continue
            if not isinstance(revision, FlowRevision):
                log.error("skipping a %s on %s", type(revision).__name__, FLOWS.name)
                continue
            flow = self._revisions.setdefault((revision.namespace, revision.flow_id), {})
            flow[revision.revision] = _Stored(revision.source, revision.deleted)
            self._keys[record.key] = (revision.namespace, revision.flow_id, revision.revision)
            # A revision republished with another source (see the module's docstring).
            self._parsed.pop((revision.namespace, revision.flow_id, revision.revision), None)
        async with self._progress:
            self._progress.notify_all()


async def publish_missing(
    settings: Settings, stored: list[FlowRevision], producer: AIOKafkaProducer
) -> int:
    """Publish the revisions of `stored` (PostgreSQL's) that `flows` lacks, or holds with
    another source: revisions saved before the topic existed, or a topic that lost its
    data. Returns how many were published."""
    follower = FlowLog(settings, "headrace-flows-check")
    await follower.start()
    try:
        missing = [revision for revision in stored if not follower.holds(revision)]
    finally:
        await follower.stop()
    sent = [await producer.send(FLOWS.name, codec.encode(r), key=r.key.encode()) for r in missing]
    await asyncio.gather(*sent)
    return len(missing)


async def publish_stored_revisions(
    settings: Settings, repository: FlowRepository, producer: AIOKafkaProducer
) -> None:
    """At the start of a service that reads flows from PostgreSQL and starts executions
    of them (the gateway, the scheduler): every stored revision is on `flows` before the
    first start it publishes names one, so the executor finds it."""
    published = await publish_missing(settings, await repository.all_revisions(), producer)
    if published:
        log.info("published %d flow revisions missing from %s", published, FLOWS.name)
