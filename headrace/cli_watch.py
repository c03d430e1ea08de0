"""`headrace execution start --wait`: an execution's task states and log lines, live.

Two streams of the gateway (services/gateway/follow.py), each read by a thread of its
own (the CLI's client is synchronous), merged in arrival order on the terminal: state
changes of task runs as they happen, log lines as they are indexed. The execution's end
comes on one stream and its last lines may come a moment later on the other: the lines
stream ends by itself once they had time to arrive.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import click

from headrace.api_client import ApiClient
from headrace.sse import Event

# After the execution ended, the last lines it printed get this long to arrive.
LAST_LINES_S = 5.0
STATE_COLORS = {"SUCCESS": "green", "FAILED": "red", "WARNING": "yellow", "KILLED": "red"}
LEVEL_COLORS = {"ERROR": "red", "WARN": "yellow", "DEBUG": "bright_black", "TRACE": "bright_black"}


@dataclass(frozen=True, slots=True)
class _Item:
    stream: str  # "execution" or "logs"
    event: str  # the SSE event; "closed" when the stream ended, "failed" when it broke
    data: Any


def _read(
    events: Callable[[str], Iterator[Event]],
    stream: str,
    execution_id: str,
    out: queue.Queue[_Item],
) -> None:
    try:
        for event in events(execution_id):
            out.put(_Item(stream, event.event, json.loads(event.data)))
    except Exception as exc:  # reported by the main thread, as the CLI reports errors
        out.put(_Item(stream, "failed", exc))
    else:
        out.put(_Item(stream, "closed", None))


def task_label(run: dict[str, Any]) -> str:
    return run["taskId"] + (f"[{run['value']}]" if run.get("value") is not None else "")


class TaskStates:
    """Prints a task run's state each time it changes (an event lists the task runs that
    changed since the previous one)."""

    def __init__(self, echo: Callable[[str], None]) -> None:
        self._echo = echo
        self._seen: dict[str, str] = {}

    def update(self, execution: dict[str, Any]) -> None:
        for run in execution.get("taskRunList") or []:
            state = run["state"]["current"]
            if self._seen.get(run["id"]) == state:
                continue
            self._seen[run["id"]] = state
            label = click.style(f"{state:<8}", fg=STATE_COLORS.get(state), bold=True)
            self._echo(f"  {label} {task_label(run)}")


def log_line(record: dict[str, Any]) -> str:
    level = click.style(f"{record['level']:<5}", fg=LEVEL_COLORS.get(record["level"]))
    task = record.get("taskId") or "-"
    time_of_day = str(record["timestamp"])[11:23]  # hh:mm:ss.mmm of the ISO timestamp
    return f"    {time_of_day} {level} {task}: {record['message']}"


def watch_execution(api: ApiClient, execution_id: str, timeout_s: float) -> dict[str, Any] | None:
    """Print the execution's changes and lines until it ends; the ended execution (with
    all its task runs), or None when `timeout_s` passed first."""
    items: queue.Queue[_Item] = queue.Queue()
    for stream, events in (("execution", api.follow_execution), ("logs", api.follow_logs)):
        # Daemons: a timeout leaves them reading; the process ends anyway.
        args = (events, stream, execution_id, items)
        threading.Thread(target=_read, args=args, daemon=True).start()
    states = TaskStates(click.echo)
    deadline = time.monotonic() + timeout_s
    ended = False
    open_streams = {"execution", "logs"}
    while open_streams:
        remaining = deadline - time.monotonic()
        if ended:
            remaining = min(remaining, LAST_LINES_S) if "logs" in open_streams else 0
        try:
            item = items.get(timeout=max(remaining, 0.001))
        except queue.Empty:
            break
        if item.event == "failed":
            raise item.data
        if item.event == "closed":
            open_streams.discard(item.stream)
        elif item.event == "execution":
            states.update(item.data)
        elif item.event == "log":
            click.echo(log_line(item.data))
        elif item.event == "end" and item.stream == "execution":
            ended = True
    if not ended:
        return None
    # Events after the first carry only the task runs that changed: the whole execution.
    return api.get_execution(execution_id)
