"""Builds a `Flow` from YAML text, or says everything that is wrong with it.

Three passes, all of which run so that one attempt shows every problem: YAML reading
(`headrace.flow.yaml_reader`: within size, depth and node limits, with a line and column
for every key and value), the pydantic models of `headrace.flow.model`, then the rules a
model cannot express alone: task types known to the connector registry, each
connector's properties, template syntax, unique ids, input defaults that fit their type,
at most `MAX_TASKS` tasks. Each problem is located by walking the YAML marks along the
error's path.

No I/O besides `load_flow_file` reading its file.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from headrace.connectors.registry import connector_classes
from headrace.expressions import has_template, template_syntax_errors
from headrace.flow.durations import DURATION_HINT
from headrace.flow.errors import FlowError, FlowValidationError
from headrace.flow.flowables import (
    CONTAINERS,
    DAG,
    FAIL,
    PAUSE,
    PROPERTY_MODELS,
    SUBFLOW,
    DagProperties,
    child_list_keys,
    dag_problems,
)
from headrace.flow.inputs import definition_errors
from headrace.flow.kestra_keys import KESTRA_ONLY_KEYS
from headrace.flow.kestra_types import why_not_run
from headrace.flow.limits import MAX_TASKS
from headrace.flow.model import (
    REMOVED_KESTRA_TYPES,
    Flow,
    Input,
    PluginDefault,
    Task,
    canonical_task_type,
)
from headrace.flow.plugin_defaults import apply_plugin_defaults
from headrace.flow.read_calls import read_call_problems
from headrace.flow.task_walk import entries, every_task
from headrace.flow.triggers import (
    MIN_WEBHOOK_KEY_LENGTH,
    TRIGGER_TYPES,
    WEBHOOK,
    canonical_trigger_type,
)
from headrace.flow.warnings import flow_warnings
from headrace.flow.yaml_reader import Marks, YamlProblem, read_yaml

FLOW_CACHE_SIZE = 512  # distinct flow revisions kept parsed per process

ID_HINT = "ids use letters, digits, '_' and '-', and start with a letter or a digit"
NAMESPACE_HINT = "namespaces use lowercase letters, digits, '.', '_' and '-', e.g. company.data"
Loc = tuple[str | int, ...]


def load_flow_file(path: str | Path) -> Flow:
    """Read and load one flow file; errors name the file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FlowValidationError(
            str(path), [FlowError("", None, None, f"cannot read the file: {exc}")]
        ) from exc
    return load_flow(text, source=str(path))


def load_flow(text: str, source: str = "<flow>") -> Flow:
    """Parse and validate a flow. Raises `FlowValidationError` listing every problem.

    Valid flows are cached by their text (the gateway and executor load the same stored
    revision for every execution; parsing costs milliseconds). `Flow` is frozen: do not
    mutate its lists either.
    """
    try:
        return _load_cached(text)
    except FlowValidationError as exc:
        raise FlowValidationError(source, exc.errors) from None


def load_flow_with_warnings(text: str, source: str = "<flow>") -> tuple[Flow, list[FlowError]]:
    """`load_flow`, and the warnings of the flow (`headrace.flow.warnings`): what it asks
    for that headrace accepts but does differently, each with its path, line and column."""
    flow = load_flow(text, source)
    return flow, list(_warnings_cached(text))


@lru_cache(maxsize=FLOW_CACHE_SIZE)
def _warnings_cached(text: str) -> tuple[FlowError, ...]:
    document = read_yaml(text)  # it loaded: the YAML is valid
    data = apply_plugin_defaults(document.data, _plugin_defaults(document.data))
    found = [
        _error(document.marks, loc, message, on_key=True) for loc, message in flow_warnings(data)
    ]
    return tuple(_sorted_unique(found))


@lru_cache(maxsize=FLOW_CACHE_SIZE)
def _load_cached(text: str) -> Flow:
    return _load(text, "<flow>")  # exceptions are not cached: errors are recomputed


def _load(text: str, source: str) -> Flow:
    try:
        document = read_yaml(text)
    except YamlProblem as exc:
        raise FlowValidationError(source, [exc.error]) from None
    data, tree = document.data, document.marks
    if not isinstance(data, dict):
        found = "an empty document" if data is None else _short(data)
        raise FlowValidationError(
            source,
            [
                FlowError(
                    "", 1, 1, f"a flow must be a YAML mapping, found {found}", "start with `id:`"
                )
            ],
        )
    # Before validation, so the models, the rules and the core see the merged tasks.
    data = apply_plugin_defaults(data, _plugin_defaults(data))

    errors: list[FlowError] = []
    flow: Flow | None = None
    try:
        flow = Flow.model_validate(data)
    except ValidationError as exc:
        errors.extend(_model_errors(exc, tree, (), Flow))
    errors.extend(_rule_errors(data, tree))
    if errors or flow is None:
        raise FlowValidationError(source, _sorted_unique(errors))
    return flow


# ---------------------------------------------------------------- locating problems


def _path(loc: Loc) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", str(part)):
            text += f".{part}" if text else str(part)
        else:
            text += f"[{str(part)!r}]"
    return text


def _position(tree: Any, loc: Loc, on_key: bool = False) -> tuple[int | None, int | None]:
    """1-based line and column of the node at `loc`, or of its nearest existing parent."""
    if isinstance(tree, Marks):
        return tree.position(loc, on_key)
    return tree if isinstance(tree, tuple) else (None, None)


def _error(tree: Any, loc: Loc, message: str, hint: str | None = None, on_key: bool = False):
    line, column = _position(tree, loc, on_key)
    return FlowError(_path(loc), line, column, message, hint)


def _sorted_unique(errors: list[FlowError]) -> list[FlowError]:
    unique = list(dict.fromkeys(errors))
    return sorted(unique, key=lambda e: (e.line or 1 << 30, e.column or 0, e.path))


# ------------------------------------------------------------ pydantic's errors


def _aliases(model: type[BaseModel]) -> dict[str, str]:
    """YAML key -> field name of `model`."""
    return {(field.alias or name): name for name, field in model.model_fields.items()}


def _unwrap(annotation: Any) -> Any:
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            annotation = args[0]
        else:
            return annotation


def _model_at(root: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    """The model class that validates the mapping at `loc`, when there is one."""
    current: Any = root
    for part in loc:
        if isinstance(part, int):
            if typing.get_origin(current) is not list:
                return None
            current = _unwrap(typing.get_args(current)[0])
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        name = _aliases(current).get(str(part))
        if name is None:
            return None
        current = _unwrap(current.model_fields[name].annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return current
    return None


def _did_you_mean(word: str, choices: list[str]) -> str | None:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else None


def _describe(err: Mapping[str, Any], loc: Loc, root: type[BaseModel]) -> tuple[str, str | None]:
    """Message and hint for one pydantic error, in the words of the YAML author."""
    kind = err["type"]
    value = err.get("input")
    last = loc[-1] if loc else ""
    if kind == "missing":
        return "is required", _MISSING_HINTS.get(loc)
    if kind == "extra_forbidden":
        model = _model_at(root, loc[:-1])
        # Kestra's keys headrace only accepts (with a warning or a refusal) are left
        # out: they are not keys to suggest to someone writing a flow.
        allowed = sorted(set(_aliases(model)) - KESTRA_ONLY_KEYS) if model else []
        hint = _did_you_mean(str(last), allowed) if allowed else None
        known = f"known keys: {', '.join(allowed)}" if allowed else None
        return f"unknown key {last!r}", " ".join(h for h in (hint, known) if h) or None
    if kind == "string_pattern_mismatch":
        hint = NAMESPACE_HINT if last == "namespace" else ID_HINT if last == "id" else None
        if last == "id" and isinstance(value, str) and "." in value:
            # Kestra allows dots in flow ids; headrace's ids are one path segment of names.
            hint = (
                f"{ID_HINT}; Kestra allows '.', headrace does not: e.g. {value.replace('.', '_')!r}"
            )
        return f"invalid value {value!r}", hint
    if kind == "duration":
        return err["msg"], DURATION_HINT
    if kind == "duration_range":
        return err["msg"], None
    if kind == "too_short" and isinstance(value, list):
        if loc == ("tasks",):
            return "a flow needs at least one task", "add a task under `tasks:`"
        return f"needs at least {err.get('ctx', {}).get('min_length', 1)} item(s)", None
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return f"must be a mapping (key: value), got {_short(value)}", None
    if kind == "list_type":
        return f"must be a list, got {_short(value)}", None
    message = str(err["msg"]).removeprefix("Value error, ")
    message = message.replace("Input should be", "must be")
    if "input" in err and ", got " not in message:
        message += f", got {_short(value)}"
    return message, None


_MISSING_HINTS: dict[Loc, str] = {
    ("id",): "give the flow an id, e.g. `id: hello-world`",
    ("namespace",): "give the flow a namespace, e.g. `namespace: company.team`",
    ("tasks",): "add a `tasks:` list with at least one task",
}


def _short(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:59] + "…"


def _model_errors(
    exc: ValidationError, tree: Any, prefix: Loc, root: type[BaseModel]
) -> list[FlowError]:
    errors = []
    for err in exc.errors():
        where = tuple(err["loc"])
        on_key = err["type"] == "extra_forbidden"
        if where and where[-1] == "[key]":  # pydantic's marker for a bad mapping key
            where, on_key = where[:-1], True
        message, hint = _describe(err, where, root)
        errors.append(_error(tree, prefix + where, message, hint, on_key=on_key))
    return errors


# ----------------------------------------------------- rules beyond the models

_TASK_KEYS = frozenset(_aliases(Task))


def _task_property_models() -> dict[str, type[BaseModel] | None]:
    """Task type -> pydantic model of its properties (None: the type checks its own)."""
    return {name: getattr(cls, "Properties", None) for name, cls in connector_classes().items()}


def _rule_errors(data: dict[str, Any], tree: Any) -> list[FlowError]:
    errors: list[FlowError] = []
    errors.extend(_task_errors(data, tree))
    errors.extend(_input_errors(data, tree))
    errors.extend(_duplicate_ids(data, tree, ("triggers",), "trigger"))
    errors.extend(_trigger_errors(data, tree))
    errors.extend(_webhook_key_copies(data, tree))
    errors.extend(_duplicate_ids(data, tree, ("outputs",), "output"))
    errors.extend(_template_errors(data, tree, ("variables", "outputs", "checks")))
    errors.extend(_error(tree, loc, message) for loc, message in read_call_problems(data))
    return errors


def _duplicate_ids(
    data: dict[str, Any], tree: Any, keys: tuple[str, ...], what: str
) -> list[FlowError]:
    errors = []
    first: dict[str, Loc] = {}
    for key in keys:
        for loc, item in entries(data, key):
            ident = item.get("id")
            if not isinstance(ident, str):
                continue
            if ident in first:
                line, _ = _position(tree, (*first[ident], "id"))
                hint = f"first used at line {line}" if line else None
                errors.append(_error(tree, (*loc, "id"), f"duplicate {what} id {ident!r}", hint))
            else:
                first[ident] = loc
    return errors


def _task_errors(data: dict[str, Any], tree: Any) -> list[FlowError]:
    tasks = every_task(data)
    if len(tasks) > MAX_TASKS:
        message = f"the flow has {len(tasks)} tasks, more than the {MAX_TASKS} a flow may have"
        hint = "split it into subflows (flow.subflow), or loop with flow.foreach"
        return [_error(tree, ("tasks",), message, hint, on_key=True)]
    errors = _duplicate_task_ids(tasks, tree)  # ids are unique across the whole tree
    models = _task_property_models()
    known = sorted([*models, *PROPERTY_MODELS])
    for loc, task in tasks:
        task_type = task.get("type")
        if not isinstance(task_type, str):
            continue  # the model reports a missing or non-text type
        task_type = canonical_task_type(task_type)
        if isinstance(task.get("runIf"), str):
            for path, reason in template_syntax_errors(task["runIf"], "runIf"):
                errors.append(_error(tree, (*loc, path), reason))
        if task_type in PROPERTY_MODELS:
            errors.extend(_flowable_errors(task_type, task, tree, loc))
            continue
        if task_type in REMOVED_KESTRA_TYPES:
            message = f"task type {task_type!r} cannot run here"
            errors.append(_error(tree, (*loc, "type"), message, REMOVED_KESTRA_TYPES[task_type]))
            continue
        if task_type not in models and (why := why_not_run(task_type)) is not None:
            message = f"Kestra's {task_type.rsplit('.', 1)[-1]} is not run by headrace: {why}"
            errors.append(_error(tree, (*loc, "type"), message))
            continue
        if task_type not in models:
            hint = _did_you_mean(task_type, known)
            listing = f"known types: {', '.join(known)}"
            errors.append(
                _error(
                    tree,
                    (*loc, "type"),
                    f"unknown task type {task_type!r}",
                    f"{hint} {listing}" if hint else listing,
                )
            )
            continue
        properties = {k: v for k, v in task.items() if k not in _TASK_KEYS}
        model = models[task_type]
        if model is not None:
            errors.extend(_property_errors(model, properties, task_type, tree, loc))
        for path, reason in template_syntax_errors(properties):
            errors.append(_error(tree, (*loc, *_split(path)), reason))
    return errors


def _duplicate_task_ids(tasks: list[tuple[Loc, dict[str, Any]]], tree: Any) -> list[FlowError]:
    errors = []
    first: dict[str, Loc] = {}
    for loc, task in tasks:
        ident = task.get("id")
        if not isinstance(ident, str):
            continue
        if ident in first:
            line, _ = _position(tree, (*first[ident], "id"))
            hint = f"first used at line {line}" if line else None
            errors.append(_error(tree, (*loc, "id"), f"duplicate task id {ident!r}", hint))
        else:
            first[ident] = loc
    return errors


def _flowable_errors(task_type: str, task: dict[str, Any], tree: Any, loc: Loc) -> list[FlowError]:
    """A flowable's own properties; its nested tasks are checked as tasks of their own."""
    nested = child_list_keys(task_type)
    properties = {k: v for k, v in task.items() if k not in _TASK_KEYS}
    model = PROPERTY_MODELS[task_type]
    # The core reads a flowable's typed properties as written (only the expression ones,
    # typed as any value, are rendered): a template where a number or a name is due
    # would fail every run, so it is refused here.
    errors = _property_errors(model, properties, task_type, tree, loc, nested, rendered=False)
    if task_type == DAG:
        try:
            parsed = DagProperties.model_validate(properties)
        except ValidationError:
            parsed = None  # reported above
        if parsed is not None:
            errors.extend(
                _error(tree, (*loc, *where), reason) for where, reason in dag_problems(parsed)
            )
    if task_type == PAUSE:
        errors.extend(_on_resume_errors(task, tree, loc))
    own = {k: v for k, v in properties.items() if k not in nested}
    for path, reason in template_syntax_errors(own):
        errors.append(_error(tree, (*loc, *_split(path)), reason))
    # `retry` is taken, as in Kestra: a flow.fail or flow.subflow run is retried itself, a
    # container's `retry` is the default of the tasks inside (headrace.core.retries).
    # A pause honours `timeout`: not resumed within it, the pause fails.
    if "timeout" in task and task_type != PAUSE:
        message = f"{task_type} does not take `timeout`: only worker tasks are timed out"
        errors.append(_error(tree, (*loc, "timeout"), message, _UNHONOURED_HINTS.get(task_type)))
    return errors


def _on_resume_errors(task: dict[str, Any], tree: Any, loc: Loc) -> list[FlowError]:
    """A pause's `onResume` inputs: the rules of flow inputs (unique ids, fitting keys)."""
    errors = _duplicate_ids(task, tree, ("onResume",), "onResume input")
    for where, raw in entries(task, "onResume"):
        try:
            definition = Input.model_validate(raw)
        except ValidationError:
            continue  # the pause's model reports it
        for key, message, hint in definition_errors(definition):
            errors.append(_error(tree, (*loc, *where, key), message, hint))
    return errors


# The core runs flowable tasks itself and does not time them out: refusing `timeout` at
# load time beats a flow that looks protected and is not.
_UNHONOURED_HINTS = {
    SUBFLOW: "put it on the tasks of the called flow",
    PAUSE: "a pause ends by itself after `pauseDuration`",
    FAIL: "a flow.fail task fails every time",
}
_UNHONOURED_HINTS.update((t, "put it on the tasks inside") for t in CONTAINERS)


def _split(path: str) -> Loc:
    """`env.A[2]` -> ('env', 'A', 2): the inverse of the expressions module's paths."""
    parts: list[str | int] = []
    for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", path):
        parts.append(int(index) if index else name)
    return tuple(parts)


_TRIGGER_KEYS = frozenset({"id", "type", "description", "disabled"})


def _trigger_errors(data: dict[str, Any], tree: Any) -> list[FlowError]:
    errors: list[FlowError] = []
    known = sorted(TRIGGER_TYPES)
    for loc, trigger in entries(data, "triggers"):
        trigger_type = trigger.get("type")
        if not isinstance(trigger_type, str):
            continue  # the model reports a missing or non-text type
        model = TRIGGER_TYPES.get(canonical_trigger_type(trigger_type))
        if model is None:
            hint = _did_you_mean(trigger_type, known)
            listing = f"known trigger types: {', '.join(known)}"
            errors.append(
                _error(
                    tree,
                    (*loc, "type"),
                    f"unknown trigger type {trigger_type!r}",
                    f"{hint} {listing}" if hint else listing,
                )
            )
            continue
        properties = {k: v for k, v in trigger.items() if k not in _TRIGGER_KEYS}
        errors.extend(_property_errors(model, properties, trigger_type, tree, loc, what=TRIGGER))
    return errors


def _webhook_key_copies(data: dict[str, Any], tree: Any) -> list[FlowError]:
    """A webhook key written anywhere but its trigger's `key:` (a description, a label,
    a log message, a YAML alias of it) would reach readers of the flow, of its executions
    or of their logs: the key is the webhook's only credential."""
    keys: dict[str, Loc] = {}
    for loc, trigger in entries(data, "triggers"):
        kind, key = trigger.get("type"), trigger.get("key")
        is_webhook = isinstance(kind, str) and canonical_trigger_type(kind) == WEBHOOK
        if is_webhook and isinstance(key, str) and len(key) >= MIN_WEBHOOK_KEY_LENGTH:
            keys[key] = (*loc, "key")
    if not keys:
        return []
    key_places = set(keys.values())
    errors: list[FlowError] = []
    pending: list[tuple[Loc, Any]] = [((), data)]
    while pending:
        loc, value = pending.pop()
        if isinstance(value, dict):
            for name, item in value.items():
                pending.append(((*loc, name), item))
                pending.append(((*loc, name), str(name)))  # a key in a mapping key
        elif isinstance(value, list):
            pending.extend(((*loc, i), item) for i, item in enumerate(value))
        elif isinstance(value, str | int | float) and not isinstance(value, bool):
            for key, own in keys.items():
                # One key inside another is no copy a reader sees: keys are masked.
                if loc not in key_places and key in str(value):
                    errors.append(
                        _error(
                            tree,
                            loc,
                            f"holds the key of webhook trigger {_path(own[:-1])}: anyone who"
                            " may read the flow, its executions or their logs would see it",
                            "write the key once, in the trigger's `key:`",
                        )
                    )
    return errors


TRIGGER = "trigger type"


def _property_errors(
    model: type[BaseModel],
    properties: dict[str, Any],
    task_type: str,
    tree: Any,
    loc: Loc,
    nested: frozenset[str] = frozenset(),
    what: str = "task type",
    rendered: bool = True,
) -> list[FlowError]:
    try:
        model.model_validate(properties)
    except ValidationError as exc:
        errors = []
        allowed = sorted(_aliases(model))
        for err in exc.errors():
            kind = err["type"]
            where = _data_loc(properties, tuple(err["loc"]), keep_last=kind == "missing")
            if len(where) > 1 and where[0] in nested:
                # Inside a nested task (a flowable's child): worded like any task's error.
                message, hint = _describe(err, where, model)
                on_key = kind == "extra_forbidden"
                errors.append(_error(tree, (*loc, *where), message, hint, on_key=on_key))
                continue
            if kind == "extra_forbidden":
                name = str(where[-1])
                hint = _did_you_mean(name, allowed)
                known = f"known properties: {', '.join(allowed)}"
                errors.append(
                    _error(
                        tree,
                        (*loc, *where),
                        f"unknown property {name!r} for {what} {task_type!r}",
                        f"{hint} {known}" if hint else known,
                        on_key=True,
                    )
                )
                continue
            templated = rendered and what != TRIGGER and _is_template_at(properties, where)
            if kind != "missing" and templated:
                continue  # rendered at run time: its type is only known then (a
                # trigger's properties are read as written: nothing renders them)
            message, hint = _describe(err, where, model)
            if kind == "missing":
                message = f"property {where[-1]!r} is required by {what} {task_type!r}"
            errors.append(_error(tree, (*loc, *where), message, hint))
        return errors
    return []


def _data_loc(value: Any, where: Loc, keep_last: bool) -> Loc:
    """`where` without the parts that name no key of the data on the way: the tags a
    discriminated union puts in pydantic's locations (a schedule condition's type).
    `keep_last`: the last part is a missing key, kept."""
    kept: list[str | int] = []
    for i, part in enumerate(where):
        last = i == len(where) - 1
        if isinstance(value, dict) and part not in value and not (last and keep_last):
            continue  # a union's tag
        kept.append(part)
        in_dict = isinstance(value, dict) and part in value
        in_list = isinstance(value, list) and isinstance(part, int) and 0 <= part < len(value)
        value = value[part] if in_dict or in_list else None
    return tuple(kept)


def _is_template_at(value: Any, where: Loc) -> bool:
    """True when the value at `where`, or a container on the way there, is a template."""
    for part in where:
        if isinstance(value, str) and has_template(value):
            return True
        in_dict = isinstance(value, dict) and part in value
        in_list = isinstance(value, list) and isinstance(part, int) and 0 <= part < len(value)
        if not (in_dict or in_list):
            return False
        value = value[part]
    return isinstance(value, str) and has_template(value)


def _input_errors(data: dict[str, Any], tree: Any) -> list[FlowError]:
    errors = _duplicate_ids(data, tree, ("inputs",), "input")
    for loc, raw in entries(data, "inputs"):
        try:
            definition = Input.model_validate(raw)
        except ValidationError:
            continue  # the Flow model reports it
        for key, message, hint in definition_errors(definition):
            errors.append(_error(tree, (*loc, key), message, hint))
    return errors


def _template_errors(data: dict[str, Any], tree: Any, keys: tuple[str, ...]) -> list[FlowError]:
    """Template syntax of flow-level values (`variables`, `outputs[i].value`)."""
    errors = []
    for key in keys:
        if key in data:
            for path, reason in template_syntax_errors(data[key], key):
                errors.append(_error(tree, _split(path), reason))
    return errors


def _plugin_defaults(data: dict[str, Any]) -> list[tuple[str, dict[str, Any], bool]]:
    """The valid entries of `pluginDefaults` (and of `taskDefaults`, Kestra's older name);
    the Flow model reports the invalid ones."""
    defaults = []
    raws = [raw for key in ("pluginDefaults", "taskDefaults") for _, raw in entries(data, key)]
    for raw in raws:
        try:
            default = PluginDefault.model_validate(raw)
        except ValidationError:
            continue
        defaults.append((default.type, default.values, default.forced))
    return defaults
