"""A `FlowChangeSet` (a folder applied at once) is one record of the `flows` topic: every
reader applies all of its changes, in order and at its place among the other changes,
or none, and numbers them as the same changes sent one by one. Replayed without a
broker through the handler the follower calls with each fetch."""

from __future__ import annotations

import asyncio

from headrace.flow_log import ChangeOutcome, FlowLog
from headrace.messages import FlowChangeItem, FlowChangeSet
from tests.unit.test_flow_log_order import (
    CREATE,
    DELETE,
    SAVE,
    at,
    change,
    compacted,
    read,
    records,
)


def change_set(change_id: str, *items: tuple[str, str, str]) -> FlowChangeSet:
    """Changes of flows `ns/<id>`: (flow id, action, source)."""
    actions = {"SAVE": SAVE, "CREATE": CREATE, "DELETE": DELETE}
    changes = [FlowChangeItem("ns", flow_id, actions[a], source) for flow_id, a, source in items]
    return FlowChangeSet(change_id, changes, at(len(change_id)))


def latest(reader: FlowLog, flow_id: str) -> int | None:
    return reader.latest_read("ns", flow_id)


def sources(reader: FlowLog, flow_id: str) -> list[tuple[int, str, bool]]:
    return [(r.revision, r.source, r.deleted) for r in reader.history("ns", flow_id)]


async def test_a_set_is_numbered_as_its_changes_sent_one_by_one() -> None:
    whole = change_set(
        "set1",
        ("f", "SAVE", "B"),  # an update of f
        ("g", "SAVE", "G"),  # a new flow
        ("h", "DELETE", ""),  # never existed: nothing
    )
    reader = await read(records(change("a", SAVE, "A"), whole, change("cc", SAVE, "C")))
    assert sources(reader, "f") == [(1, "A", False), (2, "B", False), (3, "C", False)]
    assert sources(reader, "g") == [(1, "G", False)]
    assert sources(reader, "h") == []
    history = {r.revision: r.created_at for r in reader.history("ns", "f")}
    assert history[2] == at(len("set1"))  # created at the set's time


async def test_a_set_reports_what_each_change_did_to_whoever_awaits_it() -> None:
    reader = await read(records(change("a", SAVE, "A")))
    whole = change_set("set2", ("f", "SAVE", "A"), ("f", "SAVE", "B"), ("f", "DELETE", ""))
    awaited = asyncio.get_running_loop().create_future()
    reader._awaited[whole.change_id] = awaited  # as `change_set` waits for it
    topic = records(change("a", SAVE, "A"), whole)
    await reader.apply_records(topic[1:])
    assert awaited.result() == [
        ChangeOutcome(1, False, 1),  # unchanged
        ChangeOutcome(2, True, 1),  # updated from 1
        ChangeOutcome(3, True, 2),  # deleted: the tombstone, from 2
    ]


async def test_a_reader_holds_all_of_a_set_or_none_of_it() -> None:
    whole = change_set("set3", ("a", "SAVE", "A"), ("b", "SAVE", "B"), ("c", "SAVE", "C"))
    topic = records(change("x", SAVE, "X"), whole)
    before, after = await read(topic[:1]), await read(topic)
    assert [latest(before, f) for f in "abc"] == [None, None, None]
    assert [latest(after, f) for f in "abc"] == [1, 1, 1]


async def test_a_set_written_twice_is_applied_once_where_first_read() -> None:
    whole = change_set("set4", ("f", "SAVE", "B"), ("g", "DELETE", ""))
    g = FlowChangeSet("gg", [FlowChangeItem("ns", "g", SAVE, "G")], at(2))
    reader = await read(
        records(change("a", SAVE, "A"), g, whole, change("dd", SAVE, "D"), whole)
    )  # the second copy: a send retried after it landed
    assert sources(reader, "f") == [(1, "A", False), (2, "B", False), (3, "D", False)]
    assert sources(reader, "g") == [(1, "G", False), (2, "G", True)]


async def test_a_reader_of_the_compacted_topic_derives_the_same_sets() -> None:
    """Each set has a key of its own: compaction keeps every one, and a reader starting
    after it numbers their revisions as the readers before it did."""
    topic = records(
        change("a", SAVE, "A"),
        change_set("set5", ("f", "SAVE", "B"), ("g", "SAVE", "G")),
        change("ccc", DELETE),
        change_set("set6", ("f", "SAVE", "C"), ("g", "DELETE", "")),
    )
    early, late = await read(topic), await read(compacted(topic))
    assert early.revisions() == late.revisions()
    assert sources(early, "f") == [
        (1, "A", False),
        (2, "B", False),
        (3, "B", True),
        (4, "C", False),
    ]
