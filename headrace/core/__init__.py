"""The executor's pure core: flow semantics as `advance(execution, event, flow, now)`.

No I/O, no clock, no randomness, and no import of faust, aiokafka, asyncpg or aiohttp:
the executor service decodes messages into `Event`s, calls `advance`, stores the new
`Execution` and produces the `Command`s.
"""

from headrace.core.advance import TIMEOUT_GRACE, Step, advance
from headrace.core.events import (
    Abort,
    ChildEnded,
    Command,
    EmitLog,
    Event,
    Kill,
    KillTask,
    PublishEvent,
    Replay,
    RequestSlot,
    RequestTask,
    Restart,
    Resume,
    SendCommand,
    SetTimer,
    SlotDenied,
    SlotGranted,
    Start,
    StartExecution,
    TaskFinished,
    TimerFired,
    command_event,
)
from headrace.core.state import Attempt, Execution, StateDecodeError, TaskRun, Timer, TimerKind

__all__ = [
    "TIMEOUT_GRACE",
    "Abort",
    "Attempt",
    "ChildEnded",
    "Command",
    "EmitLog",
    "Event",
    "Execution",
    "Kill",
    "KillTask",
    "PublishEvent",
    "Replay",
    "RequestSlot",
    "RequestTask",
    "Restart",
    "Resume",
    "SendCommand",
    "SetTimer",
    "SlotDenied",
    "SlotGranted",
    "Start",
    "StartExecution",
    "StateDecodeError",
    "Step",
    "TaskFinished",
    "TaskRun",
    "Timer",
    "TimerFired",
    "TimerKind",
    "advance",
    "command_event",
]
