"""Kestra flowable properties headrace accepts but honours in its own way: each gets a
warning that says what headrace does instead (`headrace.flow.warnings`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from headrace.flow.flowables import EXIT, SUBFLOW, WORKING_DIRECTORY
from headrace.flow.model import canonical_task_type
from headrace.flow.task_walk import Loc, every_task

WORKING_DIRECTORY_RUNS = (
    "WorkingDirectory runs its tasks one after the other, but each in a fresh directory of"
    " its own (possibly on another worker), not in one shared directory: a file a task"
    " writes is not there for the next one. Pass files with `outputFiles` on the task that"
    " writes them and `inputFiles` on the task that reads them (e.g. `inputFiles:"
    " {data.csv: \"{{ outputs.<task>.outputFiles['data.csv'] }}\"}`), or keep them in the"
    " namespace files (`namespaceFiles: {enabled: true}`)"
)

WORKING_DIRECTORY_KEYS: dict[str, str] = {
    "inputFiles": "not written by headrace: put `inputFiles` on each task that reads them",
    "outputFiles": "not read by headrace: put `outputFiles` on the task that writes them",
    "namespaceFiles": "not copied by headrace: put `namespaceFiles` on each task that reads them",
    "cache": "ignored: headrace keeps no working directory between executions",
}

SUBFLOW_KEYS: dict[str, tuple[Any, str]] = {
    # key: (the value headrace honours, what it does instead for another value)
    "scheduleDate": (None, "ignored: the called execution starts at once"),
    "restartBehavior": (
        "NEW_EXECUTION",
        "RETRY_FAILED is not honoured: a restart of this execution starts a new execution"
        " of the called flow for a failed subflow task (NEW_EXECUTION)",
    ),
}

EXIT_RUNNING = (
    "Exit with state {state}: task runs still going in other branches are cancelled"
    " (Kestra lets them run to their end); the execution ends {state}"
)


def _tasks_of(data: dict[str, Any], task_type: str) -> Iterator[tuple[Loc, dict[str, Any]]]:
    for loc, task in every_task(data):
        kind = task.get("type")
        if isinstance(kind, str) and canonical_task_type(kind) == task_type:
            yield loc, task


def working_directory_differences(data: dict[str, Any]) -> Iterator[tuple[Loc, str]]:
    for loc, task in _tasks_of(data, WORKING_DIRECTORY):
        yield (*loc, "type"), WORKING_DIRECTORY_RUNS
        for key, why in WORKING_DIRECTORY_KEYS.items():
            if task.get(key) not in (None, [], {}):
                yield (*loc, key), f"WorkingDirectory `{key}` is {why}"


def subflow_differences(data: dict[str, Any]) -> Iterator[tuple[Loc, str]]:
    for loc, task in _tasks_of(data, SUBFLOW):
        for key, (honoured, why) in SUBFLOW_KEYS.items():
            if task.get(key) not in (None, honoured):
                yield (*loc, key), f"Subflow `{key}` is {why}"


def exit_differences(data: dict[str, Any]) -> Iterator[tuple[Loc, str]]:
    for loc, task in _tasks_of(data, EXIT):
        state = task.get("state", "SUCCESS")
        if state != "KILLED":
            yield (*loc, "type"), EXIT_RUNNING.format(state=state)


CHECKS = [working_directory_differences, subflow_differences, exit_differences]
"""The flowable checks, appended to `headrace.flow.warnings.CHECKS`."""
