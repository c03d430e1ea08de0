"""Every reader of the `flows` topic numbers revisions alike: what it derives depends only
on the records before each change. Replayed here without a broker, through the same
handler the follower calls with each fetch, including what compaction leaves of a topic
and a change written twice (a send retried after it landed)."""

from __future__ import annotations

from datetime import UTC, datetime

from aiokafka.structs import ConsumerRecord

from headrace import codec
from headrace.config import Settings
from headrace.flow_log import FENCE_KEY, FlowLog
from headrace.messages import FlowChange, FlowChangeAction, FlowRevision, TriggerSwitch

SAVE, CREATE, DELETE = FlowChangeAction.SAVE, FlowChangeAction.CREATE, FlowChangeAction.DELETE
Message = FlowChange | FlowRevision | TriggerSwitch


def at(second: int) -> datetime:
    return datetime(2026, 1, 1, 0, 0, second, tzinfo=UTC)


def change(change_id: str, action: FlowChangeAction, source: str = "") -> FlowChange:
    return FlowChange("ns", "f", change_id, action, source, at(len(change_id)))


def explicit(number: int, source: str) -> FlowRevision:
    return FlowRevision("ns", "f", number, source, at(number))


def records(*items: Message | tuple[bytes, None]) -> list[ConsumerRecord]:
    """The topic: messages, and (key, None) for a retraction or a fence."""
    found = []
    for offset, item in enumerate(items):
        key, value = item if isinstance(item, tuple) else (item.key.encode(), codec.encode(item))
        found.append(ConsumerRecord("flows", 0, offset, 0, 0, key, value, None, 0, 0, []))
    return found


def compacted(topic: list[ConsumerRecord]) -> list[ConsumerRecord]:
    """What log compaction leaves: the last record of each key, null values dropped."""
    last = {record.key: record.offset for record in topic}
    return [r for r in topic if last[r.key] == r.offset and r.value is not None]


async def read(topic: list[ConsumerRecord]) -> FlowLog:
    reader = FlowLog(Settings(), "test-order")  # never started: fed by hand
    await reader.apply_records(topic)
    return reader


def held(reader: FlowLog) -> dict[int, tuple[str, bool]]:
    return {r.revision: (r.source, r.deleted) for r in reader.revisions()}


async def test_a_change_written_twice_is_applied_once_where_first_read() -> None:
    save_b, save_x = change("b", SAVE, "B"), change("xx", SAVE, "X")
    reader = await read(records(save_b, save_x, save_b))
    assert held(reader) == {1: ("B", False), 2: ("X", False)}
    assert reader.latest_read("ns", "f") == 2  # the copy did not bring B back

    gone, back = change("d", DELETE), change("ccc", CREATE, "A")
    reader = await read(records(change("a", SAVE, "A"), gone, back, gone))
    assert reader.latest_read("ns", "f") == 3  # the copy did not delete it again


async def test_an_explicit_revision_never_replaces_nor_retracts_what_a_change_decided() -> None:
    republished = explicit(1, "old")
    reader = await read(
        records(change("b", SAVE, "B"), republished, (republished.key.encode(), None))
    )
    assert held(reader) == {1: ("B", False)}
    assert reader.retracted() == []
    await reader.apply_records(records(change("cc", SAVE, "C")))
    assert held(reader) == {1: ("B", False), 2: ("C", False)}


async def test_a_reader_of_the_compacted_topic_derives_what_readers_before_it_did() -> None:
    """A history as it can happen: revisions of the release that stored them in
    PostgreSQL first (one retracted, its number taken again), then changes, switches and
    fences; compaction drops the retraction, the retracted record, the older switch and
    all but the last fence."""
    retracted = explicit(2, "failed commit")
    topic = records(
        explicit(1, "A"),
        retracted,
        (retracted.key.encode(), None),
        explicit(2, "B"),
        change("c", SAVE, "C"),
        TriggerSwitch("ns", "f", "nightly", False, at(1)),
        (FENCE_KEY, None),
        change("cc", SAVE, "C"),  # unchanged: no revision
        TriggerSwitch("ns", "f", "nightly", True, at(2)),
        change("ddd", DELETE),
        (FENCE_KEY, None),
        change("dddd", CREATE, "D"),
        change("eeeee", CREATE, "E"),  # exists: no revision
    )
    early, late = await read(topic), await read(compacted(topic))
    assert (
        held(early)
        == held(late)
        == {
            1: ("A", False),
            2: ("B", False),
            3: ("C", False),
            4: ("C", True),
            5: ("D", False),
        }
    )
    assert early.revisions() == late.revisions()  # created at the same times too
    assert early.switched_off("ns", "f") == late.switched_off("ns", "f") == {"nightly"}


async def test_a_revision_republished_twice_around_a_change_fills_its_number_once() -> None:
    """Two services starting at once both republish revision 2 from the table, while a
    gateway saves: each copy has a key of its own, so compaction keeps both, and every
    reader lets the first fill the number."""
    first, second = explicit(2, "B"), explicit(2, "B")
    topic = records(explicit(1, "A"), first, change("c", SAVE, "C"), second)
    topic[1].key += b"!one"  # as FlowLog.publish sends them
    topic[3].key += b"!two"
    early, late = await read(topic), await read(compacted(topic))
    assert held(early) == held(late) == {1: ("A", False), 2: ("B", False), 3: ("C", False)}


async def test_a_retraction_whose_revision_compaction_removed_is_still_known() -> None:
    """Compaction keeps a retraction a while after removing the record under its key: a
    reader starting then still learns that the number was retracted (the gateway deletes
    its row, and does not republish it from the table)."""
    retracted = explicit(2, "failed commit")
    key = retracted.key.encode()
    topic = records(explicit(1, "A"), retracted, (key, None))
    early = await read(topic)
    late = await read([r for r in topic if r.key != key or r.value is None])
    assert early.retracted() == late.retracted() == [("ns", "f", 2)]
    assert held(early) == held(late) == {1: ("A", False)}


async def test_switches_published_across_each_other_settle_on_the_newest_after_compaction() -> None:
    """Two gateways switch one trigger at once; their records land in the other order
    than PostgreSQL stored them. Each has a key of its own, so compaction keeps both and
    every reader keeps the newest."""
    topic = records(
        TriggerSwitch("ns", "f", "nightly", True, at(2)),
        TriggerSwitch("ns", "f", "nightly", False, at(1)),  # older, landed later
    )
    for index, record in enumerate(topic):
        record.key += f"!{index}".encode()  # as `unique_key` gives them
    early, late = await read(topic), await read(compacted(topic))
    assert early.switched_off("ns", "f") == late.switched_off("ns", "f") == {"nightly"}
