"""Where a flow may call `read()`, checked when it loads.

`read()` gives a marker that the worker swaps for the file's text just before the task
runs (headrace.stored_reads). So it works only where a worker gets the rendered value,
and only as a whole `{{ read(…) }}`:

- in the properties of a task a worker runs, and in `variables` (which such properties
  read), a use other than a whole `{{ read(…) }}` is refused: a filter, test, operator
  or function applied to it would see the marker, not the text. A variable that holds a
  read() (`vars.sql`) is held to the same rules wherever it is used;
- where the executor needs the value itself (`runIf`, a flowable task's own properties
  such as an If's `condition`, a Switch's `value`, a ForEach's `values` or a Subflow's
  `inputs`, the flow's `outputs` and `checks`, triggers), any use is refused.

Each refusal names the line, and what to do instead. Reads the raw YAML data, as the
loader's other rules do.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from headrace.flow.flowables import PROPERTY_MODELS, child_list_keys
from headrace.flow.model import Task, canonical_task_type
from headrace.flow.task_walk import Loc, every_task
from headrace.stored_reads import ReadUse, read_uses

# A task's own keys (id, type, runIf, retry…): the rest are its properties.
_TASK_KEYS = frozenset(field.alias or name for name, field in Task.model_fields.items())
# Flow-level keys whose values the executor renders and uses itself.
_EXECUTOR_KEYS = {"outputs": "the flow's outputs", "checks": "checks", "triggers": "triggers"}

WORKER_PLACES = "the properties of a task that a worker runs (log, shell, http.request…)"


def read_call_problems(data: dict[str, Any]) -> list[tuple[Loc, str]]:
    """(location, message) of every use of `read()` the flow may not make."""
    problems, reading = _variable_problems(data.get("variables"))
    for key, where in _EXECUTOR_KEYS.items():
        problems.extend(_refused(data.get(key), (key,), where, reading))
    for loc, task in every_task(data):
        problems.extend(_task_problems(loc, task, reading))
    return problems


def _variable_problems(variables: Any) -> tuple[list[tuple[Loc, str]], frozenset[str]]:
    """The problems of `variables`, and the names of those that hold a read() (in
    themselves, or through one declared before them: each sees only those)."""
    problems: list[tuple[Loc, str]] = []
    reading: set[str] = set()
    if not isinstance(variables, dict):
        return problems, frozenset()
    for name, value in variables.items():
        loc = ("variables", name)
        problems.extend(_not_whole(value, loc, frozenset(reading)))
        if any(read_uses(text, frozenset(reading)) for _, text in _strings(value, loc)):
            reading.add(str(name))
    return problems, frozenset(reading)


def _task_problems(
    loc: Loc, task: dict[str, Any], reading: frozenset[str]
) -> Iterator[tuple[Loc, str]]:
    yield from _refused(task.get("runIf"), (*loc, "runIf"), "runIf", reading)
    written = task.get("type")
    kind = canonical_task_type(written) if isinstance(written, str) else ""
    properties = {k: v for k, v in task.items() if k not in _TASK_KEYS}
    if kind in PROPERTY_MODELS:
        nested = child_list_keys(kind)
        for key, value in properties.items():
            if key not in nested:  # nested tasks are checked as tasks of their own
                yield from _refused(value, (*loc, key), f"`{key}` of {written}", reading)
    else:
        for key, value in properties.items():
            yield from _not_whole(value, (*loc, key), reading)


def _refused(
    value: Any, loc: Loc, where: str, reading: frozenset[str]
) -> Iterator[tuple[Loc, str]]:
    for at, text in _strings(value, loc):
        for use in read_uses(text, reading):
            yield (
                at,
                f"{_what(use)} cannot be used in {where}{_line(text, use.line)}: read() reads"
                " the file on the worker just before a task runs, and the executor needs this"
                f" value itself. Use read() in {WORKER_PLACES}, and decide on that task's"
                " outputs",
            )


def _not_whole(value: Any, loc: Loc, reading: frozenset[str]) -> Iterator[tuple[Loc, str]]:
    for at, text in _strings(value, loc):
        for use in read_uses(text, reading):
            if not use.whole:
                yield (
                    at,
                    f"{_what(use)} works only output whole, as in `{{{{ read(…) }}}}`"
                    f"{_line(text, use.line)}: the worker reads the file after the expression"
                    " is rendered, so a filter, test, operator or function applied to it"
                    " would not see the file's text. Output it whole (`text {{ read(uri) }}"
                    " text`), or give the file to the task as inputFiles and process it there",
                )


def _what(use: ReadUse) -> str:
    if use.via is None:
        return "read()"
    if use.via == "vars":
        return "`vars`, whose variables hold a read(),"
    return f"vars.{use.via}, which holds a read(),"


def _strings(value: Any, loc: Loc) -> Iterator[tuple[Loc, str]]:
    """Every string inside `value` (not mapping keys), with its location."""
    if isinstance(value, str):
        yield loc, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, (*loc, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _strings(item, (*loc, i))


def _line(text: str, line: int) -> str:
    return f" (line {line} of the text)" if "\n" in text else ""
