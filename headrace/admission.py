"""Whether and how an execution starts: one decision for every path that starts one.

The REST API, webhooks, schedules and their backfills, flow and Kafka triggers, the
Python client and subflows all start executions through `admit` (a replay is not a new
start: it re-runs an ended execution with its own inputs and revision). The caller does what
differs per path: it loads the flow revision (I/O: the latest, or the one asked for) and
renders what its trigger renders. `admit` then decides, with no I/O:

- the flow may start (not disabled);
- the inputs, typed and defaulted against the flow (`resolve_inputs`);
- the flow's `checks` with BLOCK_EXECUTION hold for them (`headrace.core.checks`);
- the start event, its id derived from the execution id (so publishing the same start
  twice sends the same event);
- the encoded event, refused when the `triggers` topic would not take it.

A refusal (`StartRefused`) says why in words a user can act on, and the caller has sent
nothing yet: a start is published whole or not at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from headrace import codec
from headrace.core.advance import new_execution
from headrace.core.checks import failed_checks
from headrace.core.context import render_context
from headrace.core.ids import derive_id
from headrace.errors import CodecError, HeadraceError
from headrace.flow.inputs import InputValidationError, resolve_inputs
from headrace.flow.model import CheckBehavior, Flow
from headrace.messages import TriggerEvent
from headrace.topics.definitions import MAX_VALUE_BYTES, TRIGGERS


class Refusal(StrEnum):
    DISABLED = "disabled"
    INVALID_INPUTS = "invalid inputs"
    TOO_LARGE = "too large"
    NOT_ENCODABLE = "not encodable"
    BLOCKED = "blocked by a check"


class StartRefused(HeadraceError):
    """The execution must not start; `input_errors` lists (input id, reason) when the
    inputs do not fit the flow."""

    def __init__(
        self, refusal: Refusal, message: str, input_errors: list[tuple[str, str]] | None = None
    ) -> None:
        super().__init__(message)
        self.refusal = refusal
        self.input_errors = input_errors or []


@dataclass(frozen=True, slots=True)
class Admitted:
    event: TriggerEvent
    value: bytes  # the event encoded, as `triggers` takes it


def admit(
    flow: Flow,
    revision: int,
    *,
    execution_id: str,
    inputs: Mapping[str, Any] | None,
    trigger: dict[str, Any],
    time: datetime,
    labels: Mapping[str, str] | None = None,
) -> Admitted:
    """The start of `execution_id` on `flow` at `revision`, or `StartRefused`."""
    name = f"{flow.namespace}/{flow.id}"
    if flow.disabled:
        raise StartRefused(Refusal.DISABLED, f"flow {name} is disabled")
    try:
        typed = resolve_inputs(flow, inputs or {})
    except InputValidationError as exc:
        raise StartRefused(Refusal.INVALID_INPUTS, str(exc), exc.errors) from exc
    event = TriggerEvent(
        event_id=derive_id(execution_id, "trigger-event"),
        execution_id=execution_id,
        namespace=flow.namespace,
        flow_id=flow.id,
        flow_revision=revision,
        inputs=typed,
        time=time,
        labels=dict(labels or {}),
        trigger=trigger,
    )
    if flow.checks:
        _refuse_blocked(flow, event)
    try:
        value = codec.encode(event)
    except CodecError as exc:
        raise StartRefused(Refusal.NOT_ENCODABLE, f"the start cannot be encoded: {exc}") from exc
    if len(value) > MAX_VALUE_BYTES:
        raise StartRefused(
            Refusal.TOO_LARGE,
            f"the start of {name} would be {len(value)} bytes, over the {MAX_VALUE_BYTES}"
            f" the {TRIGGERS.name} topic takes: its inputs and trigger data together (for"
            " a webhook, the body and headers); send less, or copy less into the inputs",
        )
    return Admitted(event, value)


def _refuse_blocked(flow: Flow, event: TriggerEvent) -> None:
    """Refuse the start when a BLOCK_EXECUTION check is false for it: nothing is created.

    The context is the one the executor renders the checks with when the execution starts.
    """
    execution = new_execution(event, flow, event.time)
    context = render_context(execution, None, 1, now=event.time, variables=flow.variables)
    blocked = [
        failed.reason
        for failed in failed_checks(flow.checks, context)
        if failed.check.behavior is CheckBehavior.BLOCK_EXECUTION
    ]
    if blocked:
        raise StartRefused(
            Refusal.BLOCKED,
            f"flow {flow.namespace}/{flow.id} refused the start: {'; '.join(blocked)}",
        )
