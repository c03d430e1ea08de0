"""Merges a flow's `pluginDefaults` into its tasks, before validation.

Kestra's rule: every task whose type matches a default gets the default's values for
the keys it does not set itself; with `forced: true` the default's values win. Mappings
are merged key by key (a task's `env: {A: 1}` and a default's `env: {B: 2}` give both).
Nested tasks of flowables (`parallel`'s `tasks`, `if`'s `then`/`else`, ...) are found by
walking every property: any mapping with a text `id` and a text `type` is a task.
Type names match after alias resolution, so a default for
`io.kestra.plugin.core.flow.Parallel` applies to `type: parallel` and the reverse.

Works on the plain data the loader builds from YAML (dicts and lists) and returns new
values: the input is never changed. Triggers are not touched.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from headrace.flow.model import canonical_task_type
from headrace.flow.task_walk import TASK_LISTS


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `over`'s keys on top; mappings present in both are merged again."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _is_task(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("id"), str)
        and (isinstance(value.get("type"), str))
    )


def apply_plugin_defaults(
    data: dict[str, Any], defaults: list[tuple[str, dict[str, Any], bool]]
) -> dict[str, Any]:
    """`data` (a flow) with `defaults` [(type, values, forced)] merged into its tasks.

    Later defaults of the same type win over earlier ones, as in Kestra's list order.
    """
    if not defaults:
        return data
    by_type: dict[str, list[tuple[dict[str, Any], bool]]] = {}
    for task_type, values, forced in defaults:
        by_type.setdefault(canonical_task_type(task_type), []).append((values, forced))

    def task_with_defaults(task: dict[str, Any]) -> dict[str, Any]:
        matching = by_type.get(canonical_task_type(task["type"]), [])
        soft: dict[str, Any] = {}
        hard: dict[str, Any] = {}
        for values, forced in matching:
            if forced:
                hard = merge(hard, values)
            else:
                soft = merge(soft, values)
        # id and type identify the task: a default never changes them.
        soft = {k: v for k, v in soft.items() if k not in ("id", "type")}
        hard = {k: v for k, v in hard.items() if k not in ("id", "type")}
        merged = merge(merge(soft, task), hard)
        # The task's own keys first, as written: exports and error listings read better.
        return {**{key: merged[key] for key in task}, **merged}

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            walked = {key: walk(item) for key, item in value.items()}
            return task_with_defaults(walked) if _is_task(walked) else walked
        if isinstance(value, list):
            return [walk(item) for item in value]
        return value

    result = dict(data)
    for key in TASK_LISTS:
        if isinstance(data.get(key), list):
            result[key] = walk(data[key])
    return result
