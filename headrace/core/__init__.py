"""The executor's pure core: flow semantics as `advance(execution, event, flow, now)`.

No I/O, no clock, no randomness, and no import of faust, aiokafka, asyncpg or aiohttp:
the executor service decodes messages into `Event`s, calls `advance`, stores the new
`Execution` and produces the `Command`s.
"""

from headrace.core.advance import TIMEOUT_GRACE, Step, advance
from headrace.core.events import (
    Command,
    EmitLog,
    Event,
    PublishEvent,
    RequestTask,
    SetTimer,
    Start,
    TaskFinished,
    TimerFired,
)
from headrace.core.state import Attempt, Execution, StateDecodeError, TaskRun, Timer, TimerKind

__all__ = [
    "TIMEOUT_GRACE",
    "Attempt",
    "Command",
    "EmitLog",
    "Event",
    "Execution",
    "PublishEvent",
    "RequestTask",
    "SetTimer",
    "Start",
    "StateDecodeError",
    "Step",
    "TaskFinished",
    "TaskRun",
    "Timer",
    "TimerFired",
    "TimerKind",
    "advance",
]
