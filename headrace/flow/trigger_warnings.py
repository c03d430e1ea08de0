"""Warnings of triggers: what a valid trigger asks for that headrace does differently.

Checks for `headrace.flow.warnings.CHECKS`: each reads the raw flow data and yields
`(location, message)`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from headrace.flow.task_walk import Loc
from headrace.flow.triggers import (
    FLOW,
    IGNORED_TRIGGER_KEYS,
    MIN_WEBHOOK_KEY_LENGTH,
    SCHEDULE,
    WEBHOOK,
    canonical_trigger_type,
)
from headrace.states import TERMINAL_STATES


def _triggers(data: dict[str, Any], kind: str) -> Iterator[tuple[Loc, dict[str, Any]]]:
    triggers = data.get("triggers")
    if not isinstance(triggers, list):
        return
    for index, trigger in enumerate(triggers):
        kind_of = trigger.get("type") if isinstance(trigger, dict) else None
        if isinstance(kind_of, str) and canonical_trigger_type(kind_of) == kind:
            yield ("triggers", index), trigger


def short_webhook_keys(data: dict[str, Any]) -> Iterator[tuple[Loc, str]]:
    """A webhook key is the only secret of its URL: a short one can be guessed."""
    for loc, trigger in _triggers(data, WEBHOOK):
        key = trigger.get("key")
        if isinstance(key, str) and len(key) < MIN_WEBHOOK_KEY_LENGTH:
            yield (
                (*loc, "key"),
                f"the webhook key has {len(key)} characters: a short key can be guessed, and"
                " whoever guesses it can start the flow; use 16 characters or more, e.g. 22"
                " random letters and digits",
            )


def schedule_backfill(data: dict[str, Any]) -> Iterator[tuple[Loc, str]]:
    """Kestra's deprecated `backfill` property starts past ticks on the first run."""
    for loc, trigger in _triggers(data, SCHEDULE):
        if trigger.get("backfill") is not None:
            yield (
                (*loc, "backfill"),
                "`backfill` is ignored (Kestra deprecated it): a new schedule starts from now;"
                " start past ticks with `headrace trigger backfill NAMESPACE FLOW_ID TRIGGER_ID"
                " --start ... --end ...`",
            )


def webhook_answers(data: dict[str, Any]) -> Iterator[tuple[Loc, str]]:
    """Kestra's webhook answer options: headrace answers at once unless the URL asks."""
    for loc, trigger in _triggers(data, WEBHOOK):
        if trigger.get("wait") is True or trigger.get("returnOutputs") is True:
            name = "wait" if trigger.get("wait") is True else "returnOutputs"
            yield (
                (*loc, name),
                f"`{name}` is ignored: the webhook answers 202 with the execution id at once;"
                " call its URL with `?wait=true` to get the ended execution (its `outputs`"
                " included) instead",
            )
        for name in ("responseContentType", "responseCode"):
            if trigger.get(name) is not None:
                yield (
                    (*loc, name),
                    f"`{name}` is ignored: the webhook answers JSON, 202 (started) or 200"
                    " (with `?wait=true`)",
                )


def flow_trigger_states(data: dict[str, Any]) -> Iterator[tuple[Loc, str]]:
    """Kestra's Flow trigger may react to RUNNING or PAUSED; headrace's reacts to ends."""
    for loc, trigger in _triggers(data, FLOW):
        states = trigger.get("states")
        if not isinstance(states, list):
            continue
        others = [str(s) for s in states if s not in {str(t) for t in TERMINAL_STATES}]
        if others:
            yield (
                (*loc, "states"),
                f"{', '.join(others)} never start this flow: headrace's flow triggers react to"
                " executions that end (SUCCESS, WARNING, FAILED, KILLED, CANCELLED, SKIPPED)",
            )


def _all_triggers(data: dict[str, Any]) -> Iterator[tuple[Loc, dict[str, Any]]]:
    triggers = data.get("triggers")
    if isinstance(triggers, list):
        for index, trigger in enumerate(triggers):
            if isinstance(trigger, dict):
                yield ("triggers", index), trigger


def ignored_trigger_keys(data: dict[str, Any]) -> Iterator[tuple[Loc, str]]:
    """Kestra's trigger keys about logging, workers and concurrency: accepted, not acted on."""
    for loc, trigger in _all_triggers(data):
        for name in IGNORED_TRIGGER_KEYS:
            if name not in trigger:
                continue
            if name == "allowConcurrent":
                if trigger[name] is False:
                    yield (
                        (*loc, name),
                        "`allowConcurrent: false` is ignored: headrace starts every execution"
                        " the trigger fires, even while an earlier one runs; to run one at a"
                        " time, give the flow `concurrency: {limit: 1, behavior: CANCEL}`",
                    )
                continue
            yield ((*loc, name), f"`{name}` is ignored by headrace's triggers")


CHECKS = [
    short_webhook_keys,
    schedule_backfill,
    webhook_answers,
    flow_trigger_states,
    ignored_trigger_keys,
]
"""This module's checks, appended to `headrace.flow.warnings.CHECKS`."""
