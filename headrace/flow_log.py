"""The `flows` topic: where flow revisions are decided, and every trigger switch, for the
services that must not depend on PostgreSQL to run flows (the executor), start them (the
gateway's webhooks and API starts, the scheduler) or change them (the gateway's flows API).

A gateway changes a flow by sending a `FlowChange` (save, create, delete) and reading it
back (`FlowLog.change`), or many flows at once by sending a `FlowChangeSet`
(`FlowLog.change_set`): one record, so written whole or not at all, whose changes every
reader applies one after the other before it reads the next record (all or nothing).
Changes go to one partition, and every reader applies them in its order by the same
rule (`FlowLog._apply_change`), so every reader gives a change the same revision number,
or none, with nobody assigning numbers: concurrent saves through two gateways get
distinct, consecutive revisions without a lock. Each change has a key
of its own, so compaction never removes one, provided a change is written once: the
producer is idempotent (Apache Kafka), except on the embedded broker, which refuses such
producers but does not compact either; readers apply a change written twice (a send
retried after it landed) once, where they read it first. The gateway copies the
revisions into PostgreSQL for SQL readers (`headrace.db.flows`).

`FlowRevision` records carry their number: a release that kept flows in PostgreSQL
published its revisions that way (a record with no value under one's key retracted a
revision whose transaction failed), and at start the gateway and the scheduler still
publish what PostgreSQL holds and the topic lacks (`publish_stored`). Such a record only
fills a number nothing holds yet, and a retraction only removes what the record under
its key filled: a revision a change decided is never replaced nor removed. A switch is
published once PostgreSQL committed it (its watermark and the schedules' claims live
there), with the version PostgreSQL gave it: readers keep each trigger's newest, so
publishes that cross each other settle on the last one stored. A refused publish
answers 503, and the switch is sent again by a retry or at the next start.

`FlowLog` follows the topic from its beginning and keeps every revision in memory (YAML
text, parsed on first use) and every switch. A reader that does not find a revision may
just be behind: `sync` appends a fence to every partition and reads up to it, so
whatever was acknowledged before the call has been read. (The embedded broker reports
end offsets wrong, see docs/architecture.md: a fence's acknowledgement gives an offset
that is right on every broker.)
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaError, MessageSizeTooLargeError

from headrace import codec
from headrace.config import Settings
from headrace.consume import consume
from headrace.db.flows import FlowIndex
from headrace.db.triggers import TriggerStateRepository
from headrace.errors import CodecError, HeadraceError
from headrace.flow.loader import load_flow
from headrace.flow.model import Flow
from headrace.kafka import AdaptiveConsumer, make_consumer, make_producer
from headrace.messages import (
    FlowChange,
    FlowChangeAction,
    FlowChangeItem,
    FlowChangeSet,
    FlowRevision,
    TriggerSwitch,
)
from headrace.topics.definitions import FLOWS

log = logging.getLogger(__name__)

# Keys of fence records: no revision key starts with a NUL byte.
FENCE_KEY = b"\x00fence"
# Change ids remembered to apply a change written twice once: the copy of a retried send
# lands within the producer's delivery timeout (seconds), far fewer changes apart. Every
# reader remembers the same ids at the same place in the topic, so all skip alike.
CHANGES_REMEMBERED = 10_000
# How long an idempotent producer may take to be given its id at start.
PRODUCER_START_S = 30.0
# `namespace/flowId@revision`: the key of an earlier release's revision records.
_REVISION_KEY = re.compile(r"(?P<namespace>[^/]+)/(?P<flow_id>[^/@]+)@(?P<number>[0-9]+)")
# The partition every change goes to: their order there is the order readers apply them
# in (the topic has one partition; one made with more by an earlier release keeps them).
CHANGES = 0


def _is_fence(record: ConsumerRecord) -> bool:
    return record.key is None or record.key.startswith(b"\x00")


class FlowNotFound(HeadraceError):
    """A trigger or result names a flow revision that was never stored, or was deleted."""


class FlowChangeUnsettled(HeadraceError):
    """A change was sent, but this reader did not read it back in time: it may yet be
    applied (or may have been)."""


class ChangeOutcome(NamedTuple):
    revision: int | None  # the revision written, or the latest found; None: no live flow
    written: bool  # whether the change wrote a new revision
    previous: int | None = None  # the live revision before the change; None: no live flow


@dataclass(frozen=True, slots=True)
class _Stored:
    source: str
    deleted: bool
    created_at: datetime


class FlowLog:
    """Every revision of `flows`, followed live; `start` returns once it has read all."""

    def __init__(self, settings: Settings, client_id: str) -> None:
        self._settings = settings
        self._client_id = f"{client_id}-{socket.gethostname()}"
        self._revisions: dict[tuple[str, str], dict[int, _Stored]] = {}
        self._parsed: dict[tuple[str, str, int], Flow] = {}
        # Record key -> the revision an explicit `FlowRevision` record under it holds.
        self._keys: dict[bytes, tuple[str, str, int]] = {}
        self._retracted: set[tuple[str, str, int]] = set()  # and not held since
        # Ids of the last changes read, applied or not, oldest first (see `apply_records`).
        self._changes_seen: OrderedDict[str, None] = OrderedDict()
        # Each trigger's switch with the newest `time` (PostgreSQL's version of it), by flow:
        # the newest wins whatever order records come in, a gateway's own notes included.
        self._switches: dict[tuple[str, str], dict[str, TriggerSwitch]] = {}
        self._read_to: dict[int, int] = {}  # partition -> next offset to read
        # By change id: a change's outcome, or a set's (one per change, in its order).
        self._awaited: dict[str, asyncio.Future[ChangeOutcome | list[ChangeOutcome]]] = {}
        self._progress = asyncio.Condition()
        self._consumer: AdaptiveConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._follower: asyncio.Task[None] | None = None
        self._partitions: list[int] = []
        # time.monotonic() when the last `sync` that came back began: whatever was
        # acknowledged on the topic before it had been read.
        self.synced_at: float | None = None
        # Bumped by every revision, retraction and switch applied (`wait_changed`).
        self.version = 0

    async def start(self) -> None:
        self._producer = await _start_producer(self._settings, self._client_id)
        self._partitions = sorted(await self._producer.partitions_for(FLOWS.name))
        if self._partitions != [CHANGES]:
            await self._producer.stop()
            raise HeadraceError(
                f"the {FLOWS.name} topic has {len(self._partitions)} partitions; its changes"
                " need one order, so one partition. Delete the topic and run `headrace topics"
                f" apply` to make it again: a gateway then publishes the {FLOWS.name} table"
                " (PostgreSQL) to it at start, before it serves"
            )
        self._consumer = make_consumer(
            self._settings, group_id=None, client_id=self._client_id, not_traffic=_is_fence
        )
        await self._consumer.start()
        self._consumer.assign([TopicPartition(FLOWS.name, p) for p in self._partitions])
        await self._consumer.seek_to_beginning()
        self._follower = asyncio.create_task(consume(self._consumer, self.apply_records))
        await self.sync()

    async def stop(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            await asyncio.gather(self._follower, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()

    def switched_off(self, namespace: str, flow_id: str) -> frozenset[str]:
        """The ids of the flow's triggers switched off at runtime."""
        switches = self._switches.get((namespace, flow_id), {})
        return frozenset(trigger for trigger, switch in switches.items() if switch.disabled)

    def source(self, namespace: str, flow_id: str, revision: int) -> str | None:
        """The YAML of a live revision read, None if unknown or deleted."""
        stored = self._revisions.get((namespace, flow_id), {}).get(revision)
        return None if stored is None or stored.deleted else stored.source

    def revision(self, namespace: str, flow_id: str, number: int) -> FlowRevision | None:
        """A revision read, tombstones included; None if unknown."""
        stored = self._revisions.get((namespace, flow_id), {}).get(number)
        if stored is None:
            return None
        return FlowRevision(
            namespace, flow_id, number, stored.source, stored.created_at, stored.deleted
        )

    def history(self, namespace: str, flow_id: str) -> list[FlowRevision]:
        """Every revision read of one flow, tombstones included, oldest first."""
        stored_revisions = self._revisions.get((namespace, flow_id), {})
        return [
            FlowRevision(
                namespace, flow_id, number, stored.source, stored.created_at, stored.deleted
            )
            for number, stored in sorted(stored_revisions.items())
        ]

    def retracted(self) -> list[tuple[str, str, int]]:
        """(namespace, flow id, number) of every revision retracted and not held since."""
        return list(self._retracted)

    def revisions(self) -> list[FlowRevision]:
        """Every revision read, tombstones included."""
        return [
            FlowRevision(
                namespace, flow_id, number, stored.source, stored.created_at, stored.deleted
            )
            for (namespace, flow_id), stored_revisions in self._revisions.items()
            for number, stored in stored_revisions.items()
        ]

    async def change(
        self, namespace: str, flow_id: str, action: FlowChangeAction, source: str, timeout_s: float
    ) -> ChangeOutcome:
        """Send a change and return what it did once read back, as every reader applies
        it. `KafkaError` or `HeadraceError` if it was not sent (nothing changed);
        `FlowChangeUnsettled` if it was, but its outcome is not known: not acknowledged,
        or not read back within `timeout_s` (it may yet be applied)."""
        change = FlowChange(namespace, flow_id, uuid.uuid4().hex, action, source, datetime.now(UTC))
        outcome = await self._send(change, f"the change to flow {namespace}.{flow_id}", timeout_s)
        assert isinstance(outcome, ChangeOutcome)
        return outcome

    async def change_set(
        self, changes: list[FlowChangeItem], timeout_s: float
    ) -> list[ChangeOutcome]:
        """Send `changes` as one `FlowChangeSet` and return what each did once read back,
        in their order: all applied, or none. Errors as `change`; a set too large for
        one record is refused by the producer before it is sent
        (`MessageSizeTooLargeError`, a `KafkaError`): nothing changed."""
        change_set = FlowChangeSet(uuid.uuid4().hex, changes, datetime.now(UTC))
        outcome = await self._send(change_set, f"the change to {len(changes)} flows", timeout_s)
        assert isinstance(outcome, list)
        return outcome

    async def _send(
        self, message: FlowChange | FlowChangeSet, what: str, timeout_s: float
    ) -> ChangeOutcome | list[ChangeOutcome]:
        assert self._producer is not None and self._follower is not None, "start() first"
        if self._follower.done():
            raise HeadraceError(f"not following {FLOWS.name}: the change was not sent")
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future[ChangeOutcome | list[ChangeOutcome]] = loop.create_future()
        self._awaited[message.change_id] = outcome
        unsettled = f"{what} was sent, but"
        try:
            async with asyncio.timeout(timeout_s):
                # Refused here (say, too large), it was not queued: nothing changed.
                acknowledged = await self._producer.send(
                    FLOWS.name, codec.encode(message), key=message.key.encode(), partition=CHANGES
                )
                try:
                    await acknowledged
                except MessageSizeTooLargeError:
                    raise  # the broker refused the record whole: it was not written
                except KafkaError as exc:  # it may have landed before the error
                    if not outcome.done():
                        raise FlowChangeUnsettled(f"{unsettled} not acknowledged: {exc!r}") from exc
                await asyncio.wait({outcome, self._follower}, return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError:
            if not outcome.done():
                raise FlowChangeUnsettled(
                    f"{unsettled} not acknowledged and read back within {timeout_s:g} s"
                ) from None
        finally:
            self._awaited.pop(message.change_id, None)
        if not outcome.done():
            raise FlowChangeUnsettled(
                f"{unsettled} this process stopped following {FLOWS.name}"
            ) from _failure(self._follower)
        return outcome.result()

    async def publish(self, messages: list[FlowRevision | TriggerSwitch]) -> None:
        """Send revisions republished from the `flows` table, and switches, then read them
        back. Each goes under a key of its own (`unique_key`): a revision's copy sent
        twice (two services starting at once, a retried send) only fills its number once,
        wherever a change lands between the copies, and compaction removes neither."""
        assert self._producer is not None, "start() first"
        sent = []
        for message in messages:
            value = codec.encode(message)
            key = unique_key(message)
            sent.append(await self._producer.send(FLOWS.name, value, key=key, partition=CHANGES))
        await asyncio.gather(*sent)
        if messages:
            await self.sync()

    def note(self, switch: TriggerSwitch) -> None:
        """Apply a switch this process published and saw acknowledged, without waiting to
        read it back (reading it later changes nothing: its older records lose to it by
        their `time`)."""
        self._apply_switch(switch)

    async def get(self, namespace: str, flow_id: str, revision: int) -> Flow:
        """A live revision, parsed; `FlowNotFound` once a `sync` did not find it either."""
        if revision not in self._revisions.get((namespace, flow_id), {}):
            await self.sync()
        return self.parsed(namespace, flow_id, revision)

    def parsed(self, namespace: str, flow_id: str, revision: int) -> Flow:
        """A live revision read, parsed once: `FlowNotFound` if not read (or deleted),
        `FlowValidationError` if it no longer validates."""
        key = (namespace, flow_id, revision)
        flow = self._parsed.get(key)
        if flow is not None:
            return flow
        stored = self._revisions.get((namespace, flow_id), {}).get(revision)
        if stored is None or stored.deleted:
            raise FlowNotFound(f"flow {namespace}.{flow_id} revision {revision} not found")
        flow = load_flow(stored.source, f"{namespace}/{flow_id}@{revision}")
        self._parsed[key] = flow
        return flow

    def latest_revisions(self) -> list[tuple[str, str, int]]:
        """The newest revision read of every flow not deleted (`latest_read` of each)."""
        return [
            (namespace, flow_id, number)
            for namespace, flow_id in self._revisions
            if (number := self.latest_read(namespace, flow_id)) is not None
        ]

    async def wait_changed(self, seen: int) -> None:
        """Return once `version` is past `seen`, as seen after a read from the topic (a
        `note` is seen when its record is read back)."""
        async with self._progress:
            await self._progress.wait_for(lambda: self.version != seen)

    async def latest_revision(self, namespace: str, flow_id: str) -> int | None:
        """The newest revision read, None if the flow is unknown or deleted. Revisions
        saved a moment ago may not be read yet; an unknown flow is looked for once more
        after a `sync`."""
        if (namespace, flow_id) not in self._revisions:
            await self.sync()
        return self.latest_read(namespace, flow_id)

    def latest_read(self, namespace: str, flow_id: str) -> int | None:
        """As `latest_revision`, without looking further for an unknown flow: for callers
        anyone may make ask for any name (a `sync` writes to the topic)."""
        revisions = self._revisions.get((namespace, flow_id))
        if not revisions:
            return None
        latest = max(revisions)
        return None if revisions[latest].deleted else latest

    @property
    def following(self) -> asyncio.Task[None]:
        """The task reading the topic: it ends only on an error, or at `stop`."""
        assert self._follower is not None, "start() first"
        return self._follower

    async def sync(self) -> None:
        """Return once everything acknowledged on `flows` before the call has been read.
        Each call sends fences of its own: one sent before a revision was acknowledged
        would not cover it."""
        assert self._producer is not None
        started = time.monotonic()
        sent = [
            await self._producer.send(FLOWS.name, None, key=FENCE_KEY, partition=partition)
            for partition in self._partitions
        ]
        fences = {meta.partition: meta.offset for meta in await asyncio.gather(*sent)}
        assert self._follower is not None
        reached = asyncio.create_task(self._read_past(fences))
        try:
            await asyncio.wait({reached, self._follower}, return_when=asyncio.FIRST_COMPLETED)
            caught_up = reached.done()
        finally:
            reached.cancel()  # a no-op once done; not left waiting if we were cancelled
        if not caught_up:  # the follower ended: say why rather than wait forever
            raise HeadraceError(f"stopped following {FLOWS.name}") from _failure(self._follower)
        self.synced_at = started

    async def keep_synced(self, interval_s: float) -> None:
        """`sync` every `interval_s` until cancelled, so that `synced_at` tells whether this
        reader keeps up: a consumer that stalls without failing would serve old flows
        and switches for good. One fence per interval is the whole cost."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                async with asyncio.timeout(interval_s):
                    await self.sync()
            except (TimeoutError, KafkaError, HeadraceError) as exc:
                # A follower that ended is its owner's to notice (`following`).
                log.warning("could not read %s up to a fence: %r", FLOWS.name, exc)

    async def _read_past(self, fences: dict[int, int]) -> None:
        async with self._progress:
            await self._progress.wait_for(
                lambda: all(self._read_to.get(p, 0) > offset for p, offset in fences.items())
            )

    async def apply_records(self, records: list[ConsumerRecord]) -> None:
        """Apply records of the topic, in its order: what the follower does with each
        fetch (and what a test replaying a topic calls)."""
        for record in records:
            self._read_to[record.partition] = record.offset + 1
            if _is_fence(record):
                continue
            if record.value is None:  # a retracted revision
                self._retract(record.key)
                continue
            try:
                message = codec.decode(record.value)
            except CodecError as exc:
                log.error("skipping an undecodable record of %s: %s", FLOWS.name, exc)
                continue
            if isinstance(message, FlowChange | FlowChangeSet):
                if message.change_id in self._changes_seen:
                    # A send the producer retried after it had landed (the embedded
                    # broker has no idempotent producers): applied once, where first read.
                    log.warning("ignoring a second copy of flow change %s", message.key)
                    continue
                self._changes_seen[message.change_id] = None
                if len(self._changes_seen) > CHANGES_REMEMBERED:
                    self._changes_seen.popitem(last=False)
                outcome: ChangeOutcome | list[ChangeOutcome]
                if isinstance(message, FlowChange):
                    outcome = self._apply_change(message, message.time)
                else:
                    # All in this loop turn: no reader of this log sees part of a set.
                    outcome = [self._apply_change(item, message.time) for item in message.changes]
                awaited = self._awaited.pop(message.change_id, None)
                if awaited is not None and not awaited.done():
                    awaited.set_result(outcome)
            elif isinstance(message, FlowRevision):
                self._apply_revision(record.key, message)
            elif isinstance(message, TriggerSwitch):
                self._apply_switch(message)
            else:
                log.error("skipping a %s on %s", type(message).__name__, FLOWS.name)
        async with self._progress:
            self._progress.notify_all()

    def _retract(self, key: bytes) -> None:
        """A record with no value under a revision's key (an earlier release's): forget
        what the record under that key filled. Compaction may have removed that record
        and kept this one: the number is then only remembered as retracted."""
        retracted = self._keys.pop(key, None)
        if retracted is None:
            found = _REVISION_KEY.fullmatch(key.decode(errors="replace"))
            if found is not None:
                named = (found["namespace"], found["flow_id"], int(found["number"]))
                if named[2] not in self._revisions.get(named[:2], {}):
                    self._retracted.add(named)
            return
        namespace, flow_id, number = retracted
        revisions = self._revisions.get((namespace, flow_id), {})
        revisions.pop(number, None)
        if not revisions:  # an unknown flow again: `latest_revision` looks further
            self._revisions.pop((namespace, flow_id), None)
        self._parsed.pop(retracted, None)
        self._retracted.add(retracted)
        self.version += 1

    def _apply_change(self, change: FlowChange | FlowChangeItem, time: datetime) -> ChangeOutcome:
        """The same outcome in every reader: it depends only on the records before it."""
        key = (change.namespace, change.flow_id)
        revisions = self._revisions.get(key, {})
        latest = max(revisions, default=0)
        live = revisions[latest] if latest and not revisions[latest].deleted else None
        previous = latest if live is not None else None
        if change.action is FlowChangeAction.DELETE:
            if live is None:
                return ChangeOutcome(None, False)
            stored = _Stored(live.source, True, time)
        elif live is not None and (
            change.action is FlowChangeAction.CREATE or live.source == change.source
        ):
            return ChangeOutcome(latest, False, previous)
        else:
            stored = _Stored(change.source, False, time)
        self._revisions.setdefault(key, {})[latest + 1] = stored
        self._parsed.pop((*key, latest + 1), None)
        self._retracted.discard((*key, latest + 1))
        self.version += 1
        return ChangeOutcome(latest + 1, True, previous)

    def _apply_revision(self, key: bytes, revision: FlowRevision) -> None:
        """An explicit revision fills its number only if nothing holds it: a number, once
        held, keeps its source until a retraction under the key that filled it."""
        flow = self._revisions.setdefault((revision.namespace, revision.flow_id), {})
        if revision.revision in flow:
            return
        flow[revision.revision] = _Stored(revision.source, revision.deleted, revision.created_at)
        number = (revision.namespace, revision.flow_id, revision.revision)
        self._keys[key] = number
        self._retracted.discard(number)
        self._parsed.pop(number, None)
        self.version += 1

    def _apply_switch(self, switch: TriggerSwitch) -> None:
        switches = self._switches.setdefault((switch.namespace, switch.flow_id), {})
        held = switches.get(switch.trigger_id)
        if held is None or switch.time >= held.time:
            switches[switch.trigger_id] = switch
            self.version += 1


def unique_key(message: FlowRevision | TriggerSwitch) -> bytes:
    """The record key of a republished revision or a switch: one of its own, so that
    compaction removes none of them. Readers take a revision's number and a switch's
    version from the value (a switch: its newest `time` wins), so every reader, before or
    after a compaction, ends with the same; a key shared by two records would leave only
    the later one, whatever it says."""
    return f"{message.key}!{uuid.uuid4().hex}".encode()


def _failure(task: asyncio.Task[None]) -> BaseException | None:
    """Why a finished task ended: its exception, or None (cancelled, or not finished)."""
    if not task.done() or task.cancelled():
        return None
    return task.exception()


async def _start_producer(settings: Settings, client_id: str) -> AIOKafkaProducer:
    """An idempotent producer (Apache Kafka): a retried send of a change is then never
    written twice. The embedded broker (`low_latency` is its setting) refuses them, and
    does not compact: readers apply a change written twice once, where they read it
    first (`apply_records`). A broker that refuses them and compacts is refused."""
    idempotent = not settings.low_latency
    producer = make_producer(settings, client_id, idempotent=idempotent)
    try:
        async with asyncio.timeout(PRODUCER_START_S):
            await producer.start()
    except (KafkaError, TimeoutError) as exc:
        await producer.stop()
        if isinstance(exc, KafkaConnectionError) or not idempotent:
            raise
        raise HeadraceError(
            f"the broker did not give an idempotent producer within {PRODUCER_START_S:g} s"
            f" ({exc!r}): flow changes need one (on Kafka before 2.8, grant the"
            " IdempotentWrite ACL)"
        ) from exc
    return producer


async def publish_missing(
    follower: FlowLog,
    revisions: list[FlowRevision],
    switches: list[TriggerSwitch],
) -> int:
    """Publish what PostgreSQL stores and `flows`, as `follower` read it, lacks: revisions
    stored by a release that kept flows in PostgreSQL first, switches set before the
    topic carried them, or a topic that lost its data. A revision number the topic holds
    (or retracted) is not published again: the topic's stands. Each switch keeps
    PostgreSQL's version (`time`): one stored meanwhile is newer, and readers keep the
    newest. Returns how many records were published; `follower` has read them back
    once this returns."""
    retracted = set(follower.retracted())
    missing: list[FlowRevision | TriggerSwitch] = []
    for revision in revisions:
        number = (revision.namespace, revision.flow_id, revision.revision)
        held = follower.revision(*number)
        if held is None and number not in retracted:
            missing.append(revision)
        elif held is not None and (held.source, held.deleted) != (
            revision.source,
            revision.deleted,
        ):
            log.warning(
                "flow %s.%s revision %d differs in the flows table; the topic's stands",
                *number,
            )
    for switch in switches:
        off_on_topic = switch.trigger_id in follower.switched_off(switch.namespace, switch.flow_id)
        if off_on_topic != switch.disabled:
            missing.append(switch)
    # Read back, not noted: a revision must be applied where the topic has it, among
    # the changes, for this reader to number them as every other does.
    await follower.publish(missing)
    return len(missing)


async def publish_stored(
    flows: FlowIndex,
    triggers: TriggerStateRepository,
    follower: FlowLog,
) -> None:
    """At the start of the gateway and the scheduler, which store switches in PostgreSQL
    and start executions: every revision the index holds is on `flows` before the first
    start names it (the executor finds it), and every switch (the gateway and scheduler
    honour it). `follower`: the caller's started FlowLog."""
    switches = [
        TriggerSwitch(*state.key, state.disabled, state.updated_at)
        for state in (await triggers.list()).values()
    ]
    published = await publish_missing(follower, await flows.all_revisions(), switches)
    if published:
        log.info("published %d flow revisions and switches missing from %s", published, FLOWS.name)
