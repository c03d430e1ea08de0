"""Flow concurrency as one execution sees it: ask for a slot, wait QUEUED, give it back.

The slots live outside the execution (`slots.decide`, run by the `flow-slots` agent). An
execution of a flow with `concurrency` asks for a slot when it starts and when it is
restarted, waits QUEUED until SLOT_GRANTED, ends at SLOT_DENIED, and gives the slot back
at every end, whatever the end (a RELEASE from a non-holder is harmless: it also takes a
killed execution out of the queue).

Whether an execution holds a claim is read from its state history (a QUEUED since its
last end): no stored field to keep in sync, and exactly one RELEASE per ACQUIRE. Request
ids count the QUEUED entries, so a replay of the same events mints the same ids.
"""

from __future__ import annotations

from datetime import datetime

from headrace.core.ids import command_id
from headrace.core.slots import SlotAnswer
from headrace.core.state import Execution
from headrace.flow.model import Flow
from headrace.messages import (
    CommandKind,
    ConcurrencyBehavior,
    ExecutionCommand,
    SlotRequest,
    SlotRequestKind,
    StateChange,
)
from headrace.states import State


def claim_open(histories: list[StateChange]) -> bool:
    """Whether the execution asked for a slot since it last ended (and has not ended)."""
    for change in reversed(histories):
        if change.state is State.QUEUED:
            return True
        if change.state.is_terminal:
            return False
    return False


def slot_request(
    execution: Execution, flow: Flow, kind: SlotRequestKind, now: datetime
) -> SlotRequest:
    """The ACQUIRE (or the RELEASE) of the execution's latest claim."""
    concurrency = flow.concurrency
    return SlotRequest(
        request_id=_request_id(execution, kind),
        flow_key=f"{execution.namespace}/{execution.flow_id}",
        execution_id=execution.id,
        kind=kind,
        time=now,
        limit=concurrency.limit if concurrency is not None else 1,
        # The flow model and the wire format each have their own enum (same names).
        behavior=ConcurrencyBehavior(str(concurrency.behavior))
        if concurrency is not None
        else ConcurrencyBehavior.QUEUE,
    )


def answers_current_claim(execution: Execution, command: ExecutionCommand) -> bool:
    """Whether a slot answer is for the execution's latest claim, not an earlier one.

    An answer from before claims were named (no "claim" in its payload) is taken as
    current, as it always was.
    """
    claim = command.payload.get("claim")
    return claim is None or claim == _request_id(execution, SlotRequestKind.ACQUIRE)


def _request_id(execution: Execution, kind: SlotRequestKind) -> str:
    # The claim number counts the QUEUED entries: one per ACQUIRE, so a replay of the
    # same events mints the same ids.
    claim = sum(1 for change in execution.histories if change.state is State.QUEUED)
    return command_id(execution.id, "slot", str(kind), claim)


def answer_command(answer: SlotAnswer, request: SlotRequest) -> ExecutionCommand:
    """The command that brings a slot agent's `answer` to its execution.

    `request` is the one whose processing gave the answer (a RELEASE admits waiting
    executions): with the answered execution's id, it makes the command id unique and
    the same when the agent processes the request again.
    """
    payload: dict[str, str] = {}
    if answer.granted:
        kind = CommandKind.SLOT_GRANTED
    else:
        kind = CommandKind.SLOT_DENIED
        payload["behavior"] = str(answer.behavior or ConcurrencyBehavior.CANCEL)
    if answer.claim is not None:
        payload["claim"] = answer.claim
    return ExecutionCommand(
        command_id=command_id(answer.execution_id, "slot-answer", request.request_id),
        execution_id=answer.execution_id,
        kind=kind,
        time=request.time,
        payload=payload,
    )
