"""Kestra's task and flow keys that headrace accepts but does not act on, each with a
warning that says what headrace does instead (`headrace.flow.warnings`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from headrace.flow.task_walk import Loc, every_task

IGNORED_TASK_KEYS: dict[str, str] = {
    "logToFile": "ignored: every line goes to the `logs` topic and the API, nothing is"
    " kept in a separate file",
    "workerGroup": "ignored: any worker runs the task (headrace has no worker groups)",
    "taskCache": "ignored: the task runs every time (headrace caches no task outputs)",
    "version": "ignored: the installed connector of this type runs",
    "pluginDefaultsRef": "ignored: every `pluginDefaults` entry of the task's type applies",
    "assets": "ignored: headrace keeps no asset lineage",
}

IGNORED_FLOW_KEYS: dict[str, str] = {
    "sla": "ignored: headrace has no SLA monitor; bound tasks with `timeout`, or alert"
    " from a flow that a Flow trigger starts on FAILED",
    "revision": "ignored: headrace numbers a flow's revisions itself as they are applied",
    "tenantId": "ignored: headrace has one tenant (`main` in Kestra's API paths)",
    "workerGroup": "ignored: any worker runs the flow's tasks (headrace has no worker groups)",
}


KESTRA_ONLY_KEYS = frozenset(
    {*IGNORED_TASK_KEYS, *IGNORED_FLOW_KEYS, "deleted", "listeners", "taskDefaults"}
)
"""Keys that exist for Kestra's flows only: never suggested for an unknown key."""


def ignored_task_keys(data: dict[str, Any]) -> Iterator[tuple[Loc, str]]:
    for loc, task in every_task(data):
        for key, why in IGNORED_TASK_KEYS.items():
            if task.get(key) not in (None, False):
                yield (*loc, key), f"`{key}` is {why}"


# Kestra's keys choosing where a script runs (a Docker image, a runner): headrace runs
# scripts as processes of the worker.
RUNNER_KEYS = ("taskRunner", "containerImage", "docker", "runner")


def ignored_runner_keys(data: dict[str, Any]) -> Iterator[tuple[Loc, str]]:
    for loc, task in every_task(data):
        for key in RUNNER_KEYS:
            if task.get(key) is not None:
                yield (
                    (*loc, key),
                    f"`{key}` is ignored: headrace runs the script as a process of the worker,"
                    " with the worker's interpreters and tools (no container): install what it"
                    " needs on the workers, or list Python packages in `dependencies`",
                )


def ignored_flow_keys(data: dict[str, Any]) -> Iterator[tuple[Loc, str]]:
    for key, why in IGNORED_FLOW_KEYS.items():
        if data.get(key) not in (None, [], {}):
            yield (key,), f"`{key}` is {why}"
