"""Walks a flow's raw YAML data (before validation) to every task mapping, with its path.

The loader's rules and the warnings both need every task of the tree, at any depth, with
the location a message points at; this is the one walk they share.
"""

from __future__ import annotations

from typing import Any

from headrace.flow.flowables import DAG, child_list_keys
from headrace.flow.model import canonical_task_type

TASK_LISTS = ("tasks", "errors", "finally", "afterExecution")
"""The flow's top-level task lists."""

Loc = tuple[str | int, ...]


def entries(data: dict[str, Any], key: str) -> list[tuple[Loc, dict[str, Any]]]:
    """The mappings of the list `data[key]` with their locations (others are skipped)."""
    items = data.get(key)
    if not isinstance(items, list):
        return []
    return [((key, i), item) for i, item in enumerate(items) if isinstance(item, dict)]


def every_task(data: dict[str, Any]) -> list[tuple[Loc, dict[str, Any]]]:
    """Every task mapping of the flow: the top-level lists', then the nested ones."""
    tasks = [entry for key in TASK_LISTS for entry in entries(data, key)]
    for loc, task in list(tasks):
        tasks.extend(nested_tasks(loc, task))
    return tasks


def nested_tasks(loc: Loc, task: dict[str, Any]) -> list[tuple[Loc, dict[str, Any]]]:
    """The task mappings nested in a flowable task, at any depth, with their locations."""
    task_type = task.get("type")
    task_type = canonical_task_type(task_type) if isinstance(task_type, str) else None
    found: list[tuple[Loc, dict[str, Any]]] = []
    lists: list[tuple[Loc, Any]] = []
    for key in child_list_keys(task_type or ""):
        value = task.get(key)
        if key == "cases" and isinstance(value, dict):
            lists.extend(((*loc, key, case), items) for case, items in value.items())
        elif task_type == DAG and isinstance(value, list):
            for i, entry in enumerate(value):
                if isinstance(entry, dict) and isinstance(entry.get("task"), dict):
                    found.append(((*loc, key, i, "task"), entry["task"]))
        else:
            lists.append(((*loc, key), value))
    for where, items in lists:
        if isinstance(items, list):
            found.extend(
                ((*where, i), item) for i, item in enumerate(items) if isinstance(item, dict)
            )
    for where, child in list(found):
        found.extend(nested_tasks(where, child))
    return found
