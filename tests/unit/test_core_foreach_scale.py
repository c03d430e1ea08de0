"""Large for-each loops: a bounded number of items, and work per event that does not grow
with the items still waiting (nor, within one step, with each item started)."""

from __future__ import annotations

from typing import Any

import pytest

from headrace.core import plan, transition, tree
from headrace.core.advance import Carry
from headrace.core.tree import MAX_FOREACH_ITEMS
from headrace.messages import LogLevel
from headrace.states import State
from tests.unit.test_core_helpers import Run, finished, logs, make_flow, requests, trigger


def foreach_flow(limit: int) -> Any:
    return make_flow(
        {
            "id": "each",
            "type": "flow.foreach",
            "values": "{{ inputs.items }}",
            "concurrencyLimit": limit,
            "tasks": [{"id": "say", "type": "log", "message": "{{ taskrun.value }}"}],
        }
    )


def test_a_foreach_over_the_item_limit_fails_naming_the_limit_and_the_count():
    run = Run(foreach_flow(limit=1))
    commands = run.send(trigger(inputs={"items": list(range(MAX_FOREACH_ITEMS + 1))}))
    assert requests(commands) == []
    assert run.task_states() == {"each": State.FAILED} and run.state is State.FAILED
    (error,) = [line for line in logs(commands) if line.level is LogLevel.ERROR]
    assert error.task_id == "each"
    assert f"values gave {MAX_FOREACH_ITEMS + 1} items" in error.message
    assert f"at most {MAX_FOREACH_ITEMS}" in error.message


def test_a_foreach_at_the_item_limit_runs():
    run = Run(foreach_flow(limit=1))
    (first,) = requests(run.send(trigger(inputs={"items": list(range(MAX_FOREACH_ITEMS))})))
    assert first.properties["message"] == "0" and run.state is State.RUNNING


def test_a_result_looks_at_the_started_items_not_at_every_waiting_one(monkeypatch):
    run = Run(foreach_flow(limit=1))
    (first,) = requests(run.send(trigger(inputs={"items": list(range(5_000))})))
    made = []
    lane = plan.Lane
    monkeypatch.setattr(
        plan, "Lane", lambda *args, **kwargs: made.append(1) or lane(*args, **kwargs)
    )
    (second,) = requests(run.send(finished(first)))
    assert second.properties["message"] == "1"
    assert 0 < len(made) < 10  # it was two per item: every lane, twice


def test_starting_every_item_at_once_builds_the_outputs_once(monkeypatch):
    built = []
    task_outputs = transition.task_outputs
    monkeypatch.setattr(
        transition,
        "task_outputs",
        lambda execution, scripts: built.append(1) or task_outputs(execution, scripts),
    )
    run = Run(foreach_flow(limit=0))
    started = requests(run.send(trigger(inputs={"items": list(range(2_000))})))
    assert len(started) == 2_000 and started[-1].properties["message"] == "1999"
    assert len(built) == 1  # it was once per item: quadratic in the items


@pytest.mark.parametrize("limit", [0, 3])
def test_a_large_foreach_still_ends_once_every_item_did(limit):
    run = Run(foreach_flow(limit=limit))
    pending = requests(run.send(trigger(inputs={"items": list(range(300))})))
    ran = 0
    while pending:
        ran += 1
        pending += requests(run.send(finished(pending.pop(0), outputs={"n": ran})))
    assert ran == 300 and run.state is State.SUCCESS


@pytest.mark.parametrize("limit", [0, 50])
def test_with_a_carry_a_result_looks_at_its_own_item_not_at_every_started_one(monkeypatch, limit):
    """As the executor applies a batch's results: each step hands the lane statuses it
    found to the next (`Carry`), and a result looks again only at its own item's lane."""
    looked = []
    status_of = tree.status_of
    monkeypatch.setattr(tree, "status_of", lambda *a: looked.append(1) or status_of(*a))
    counts = {}
    for carry in (None, Carry()):
        run = Run(foreach_flow(limit=limit), carry=carry)
        pending = requests(run.send(trigger(inputs={"items": list(range(2_000))})))
        for request in pending[:2]:  # the first result may still look at every item
            pending += requests(run.send(finished(request)))
        looked.clear()
        for request in pending[2:10]:
            run.send(finished(request))
        counts[carry is not None] = len(looked) / 8
    # Without it, every started item, at every result (2,000 or 50 of them).
    assert counts[False] >= min(limit or 2_000, 2_000)
    assert counts[True] <= 3
