"""Flow concurrency limits, as a pure function over one flow's slots.

A flow with `concurrency: {limit, behavior}` lets at most `limit` of its executions run at
once, across every executor process: its slots live in one place, the partition of
`flow-slots` that owns the flow's key. Executions ask for a slot when they start and give
it back when they end; the answer goes back to the execution as a command.

Requests arrive at least once, so every transition is idempotent: holders and the queue
are sets of execution ids, a second ACQUIRE from a holder is granted again (its first
answer may have been lost), a RELEASE from a non-holder is ignored, and an ACQUIRE
redelivered after its RELEASE is ignored (the claims given back are remembered). Every answer names
the claim it answers (the ACQUIRE's request id): an execution ignores an answer to one
of its earlier claims, e.g. a redelivered grant arriving after a restart queued it again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import orjson

from headrace.messages import ConcurrencyBehavior, SlotRequest, SlotRequestKind

# Given-back claims remembered per flow: redeliveries come within seconds, not after
# a thousand other executions of the same flow.
MAX_RELEASED_CLAIMS = 1000


@dataclass(frozen=True, slots=True)
class FlowSlots:
    limit: int = 1
    holders: tuple[str, ...] = ()
    queue: tuple[str, ...] = ()  # waiting executions, first come first served
    # The ACQUIRE request id of each waiting execution, for the answer that admits it.
    # Slots stored before claims existed have none: their answers then name no claim.
    claims: Mapping[str, str] = field(default_factory=dict)
    # The ACQUIRE request id each holder was granted on, and the last ones given back: a
    # redelivered ACQUIRE after its RELEASE must not take a slot nobody will return.
    granted: Mapping[str, str] = field(default_factory=dict)
    released: tuple[str, ...] = ()

    def to_bytes(self) -> bytes:
        fields: list[object] = [self.limit, self.holders, self.queue]
        if self.claims or self.granted or self.released:
            fields.append(self.claims)
        if self.granted or self.released:
            fields += [self.granted, self.released]
        return orjson.dumps(fields)

    @classmethod
    def from_bytes(cls, data: bytes) -> FlowSlots:
        limit, holders, queue, *rest = orjson.loads(data)
        claims = rest[0] if rest else {}
        granted = rest[1] if len(rest) > 1 else {}
        released = tuple(rest[2]) if len(rest) > 2 else ()
        return cls(limit, tuple(holders), tuple(queue), claims, granted, released)


@dataclass(frozen=True, slots=True)
class SlotAnswer:
    """Tell `execution_id` whether it may run; when not, `behavior` says what it becomes."""

    execution_id: str
    granted: bool
    behavior: ConcurrencyBehavior | None = None
    claim: str | None = None  # request id of the ACQUIRE answered; None: unknown (old state)


@dataclass(frozen=True, slots=True)
class SlotStep:
    slots: FlowSlots
    answers: list[SlotAnswer] = field(default_factory=list)


def decide(slots: FlowSlots | None, request: SlotRequest) -> SlotStep:
    slots = slots or FlowSlots(limit=request.limit)
    if request.kind is SlotRequestKind.ACQUIRE:
        return _acquire(replace(slots, limit=request.limit), request)
    return _release(slots, request.execution_id)


def _acquire(slots: FlowSlots, request: SlotRequest) -> SlotStep:
    execution_id, claim = request.execution_id, request.request_id
    if claim in slots.released:
        return SlotStep(slots)  # a redelivery of a claim already given back
    if execution_id in slots.holders:
        return SlotStep(slots, [SlotAnswer(execution_id, True, claim=claim)])
    if execution_id in slots.queue:
        return SlotStep(slots)
    if len(slots.holders) < slots.limit:
        return SlotStep(
            replace(
                slots,
                holders=(*slots.holders, execution_id),
                granted={**slots.granted, execution_id: claim},
            ),
            [SlotAnswer(execution_id, True, claim=claim)],
        )
    if request.behavior is ConcurrencyBehavior.QUEUE:
        claims = {**slots.claims, execution_id: claim}
        return SlotStep(replace(slots, queue=(*slots.queue, execution_id), claims=claims))
    return SlotStep(slots, [SlotAnswer(execution_id, False, request.behavior, claim)])


def _release(slots: FlowSlots, execution_id: str) -> SlotStep:
    claims = dict(slots.claims)
    if execution_id in slots.queue:  # ended (killed) while waiting
        claims.pop(execution_id, None)
        queue = tuple(e for e in slots.queue if e != execution_id)
        return SlotStep(replace(slots, queue=queue, claims=claims))
    if execution_id not in slots.holders:
        return SlotStep(slots)
    holders = [e for e in slots.holders if e != execution_id]
    granted = dict(slots.granted)
    given_back = granted.pop(execution_id, None)
    released = slots.released
    if given_back is not None:
        released = (*released, given_back)[-MAX_RELEASED_CLAIMS:]
    queue = list(slots.queue)
    answers = []
    while queue and len(holders) < slots.limit:
        admitted = queue.pop(0)
        holders.append(admitted)
        claim = claims.pop(admitted, None)
        if claim is not None:
            granted[admitted] = claim
        answers.append(SlotAnswer(admitted, True, claim=claim))
    return SlotStep(
        replace(
            slots,
            holders=tuple(holders),
            queue=tuple(queue),
            claims=claims,
            granted=granted,
            released=released,
        ),
        answers,
    )
