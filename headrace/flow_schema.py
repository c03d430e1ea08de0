"""A JSON Schema of the flow language, for editors: key completion, hover help and errors
as you type, before `headrace flow validate` runs.

Generated from the pydantic models the loader validates with (the flow's, each task
type's `Properties`, each flowable's and each trigger type's), so it cannot drift from
what is accepted, and it covers whatever connectors are installed. Served at
`GET /api/v1/flows/schema`, printed by `headrace flow schema`, shipped as
docs/flow.schema.json; docs/editors.md shows how to use it.

Choices, made for yaml-language-server (VS Code's Red Hat YAML extension, also used by
other editors) and checked against it:

- Draft-07 (`definitions`, not pydantic's `$defs`): every version of that server reads it.
- A task is one schema per task type, chosen by an `if`/`then` on `type` (our name or an
  alias). With `anyOf`/`oneOf` the server reports the errors of whichever alternative it
  guesses matches best, so an unknown type gets another type's complaints; with `if`/`then`
  an unknown type gets one error on its `type` line (the list of known names), a known
  one gets exactly its own errors (`Property mesage is not allowed.` on that key's line),
  and completion offers that type's properties only. Triggers work the same way.
- Each type's schema has the common task keys and its own properties, nothing else
  (`additionalProperties: false`), so a misspelt key is flagged.
- Expressions: the core renders a worker task's properties before the connector reads
  them, so wherever such a property is typed (a number, a boolean, a duration, a choice,
  a list, a mapping) a string holding `{{` or `{%` is accepted as well, as the loader
  does. The common keys (`retry`, `timeout`...), flowables' and triggers' properties are
  read as written, without rendering: there, an expression is only accepted where the
  property is text or free-form anyway (the loader lets one pass there today, and the
  executor or the scheduler then fails to read the flow).
- A property a flow's `pluginDefaults` may supply is not reported missing: the type's
  required properties are checked in `task.required`, applied only to flows without
  `pluginDefaults`.

What stays the loader's job: unique ids, expression syntax, `dependsOn` cycles, values
that fit an input's type, rules that tie one property to another, the limits.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping
from functools import cache
from typing import Any

import orjson
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from headrace.connectors.registry import connector_classes
from headrace.flow.durations import DURATION_HINT
from headrace.flow.flowables import PROPERTY_MODELS
from headrace.flow.loader import ID_HINT, NAMESPACE_HINT
from headrace.flow.model import ID_PATTERN, NAMESPACE_PATTERN, Flow, Task, Trigger
from headrace.flow.task_walk import TASK_LISTS
from headrace.flow.triggers import TRIGGER_ALIASES, TRIGGER_TYPES
from headrace.plugins import FLOWABLE, Plugin, plugins

DIALECT = "http://json-schema.org/draft-07/schema#"
# The media type the JSON Schema specification registers: it tells a client what the
# document is, and its `+json` suffix that any JSON reader can read it.
MEDIA_TYPE = "application/schema+json"
REGENERATE = "headrace flow schema -o docs/flow.schema.json"

# `headrace.expressions.has_template`: text the core renders.
EXPRESSION_PATTERN = r"\{\{|\{%"
# ISO-8601 durations as `headrace.flow.durations` reads them (isodate's grammar): no
# months or years (zeros aside), no sign but `+`, blanks around allowed.
_NUMBER = r"[0-9]+(?:[.,][0-9]+)?"
DURATION_PATTERN = (
    rf"^\s*\+?P(?=[0-9T])(?:0+(?:[.,]0+)?Y)?(?:0+(?:[.,]0+)?M)?(?:{_NUMBER}W)?(?:{_NUMBER}D)?"
    rf"(?:T(?:{_NUMBER}H)?(?:{_NUMBER}M)?(?:{_NUMBER}S)?)?\s*$"
)
# Keys the loader refuses on flowable tasks: only worker tasks are timed out (a flowable
# takes `retry`, as in Kestra: headrace.core.retries).
WORKER_ONLY_KEYS = ("timeout",)

TASK = "task"
TASK_REQUIRED = "task.required"
TRIGGER = "trigger"
EXPRESSION = "expression"
_DEFINITIONS = "#/definitions/"
_SUBSTITUTE = "x-headrace-definition"

# The patterns' meaning in the loader's words (yaml-language-server shows
# `patternErrorMessage` instead of the bare regular expression).
_PATTERN_HINTS = {
    ID_PATTERN: ID_HINT,
    NAMESPACE_PATTERN: NAMESPACE_HINT,
    DURATION_PATTERN: DURATION_HINT,
}

# Keywords that describe a value without constraining it.
_ANNOTATIONS = frozenset(
    {"description", "default", "title", "examples", "enumDescriptions", "patternErrorMessage"}
)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _DEFINITIONS + name}


# ------------------------------------------------------------ validators' input forms
#
# A "before" validator may accept more than the field's type (one record for a list of
# records) or refuse part of it. pydantic cannot see that; the validators named here are
# read as they are. Any other one (a third-party connector's) leaves its field
# unchecked (`{}`): a schema stricter than the loader would flag valid flows.


def _one_or_list(inner: JsonSchemaValue) -> JsonSchemaValue:
    """One item, or a list of them."""
    if inner.get("type") != "array" or "items" not in inner:
        return inner
    return {"anyOf": [inner["items"], inner]}


def _labels(inner: JsonSchemaValue) -> JsonSchemaValue:
    """`headrace.flow.model.Flow._labels_as_map`: a mapping, or Kestra's list of
    `{key, value}`; scalar values become text."""
    scalar = {"type": ["string", "number", "boolean"]}
    pair = {
        "type": "object",
        "properties": {"key": {"type": "string"}, "value": scalar},
        "required": ["key", "value"],
        "additionalProperties": False,
    }
    return {
        "anyOf": [
            {"type": "object", "additionalProperties": scalar},
            {"type": "array", "items": pair},
        ]
    }


def _input_type(inner: JsonSchemaValue) -> JsonSchemaValue:
    """`headrace.flow.model.Input._kestra_types`: Kestra's deprecated `BOOL` too (the
    other Kestra types it names are refused, as the enum refuses them)."""
    if "enum" in inner:
        return {**inner, "enum": [*inner["enum"], "BOOL"]}
    return {"anyOf": [inner, {"const": "BOOL"}]}


_WIDENING: dict[str, Callable[[JsonSchemaValue], JsonSchemaValue]] = {
    "headrace.connectors.kafka._as_list": _one_or_list,
    "headrace.connectors.dbt.DbtTestProperties._one_or_many": _one_or_list,
    "headrace.flow.model.Flow._labels_as_map": _labels,
    "headrace.flow.model.Input._kestra_types": _input_type,
}
# Validators that only refuse values, or read text the type accepts already.
_SAME_INPUT = frozenset(
    {
        "headrace.connectors.kafka.AvroProperties._registry_only",
        "headrace.connectors.kafka.AvroProperties._schema_from_text",
        "headrace.connectors.kafka.ProduceProperties._remember_one_record",
        "headrace.connectors.kafka_client.ClientProperties._known_names",
        "headrace.connectors.kafka_client._pem_only",
        "headrace.connectors.kafka_client._secret_text",
        "headrace.connectors.kafka_values._supported_serde",
        "headrace.flow.triggers.KafkaTrigger._schema_from_text",
        "headrace.flow.triggers.TimeWindow._supported_type",
    }
)
_DURATION = "headrace.flow.durations._validate"


def _qualified_name(function: Any) -> str:
    function = getattr(function, "__func__", function)  # a classmethod validator
    return f"{function.__module__}.{function.__qualname__}"


class _Generator(GenerateJsonSchema):
    """pydantic's generator, reading our validators, durations and aliases as flows do.

    `substitutes` (model -> definition name) puts a reference where a model would be
    expanded: nested tasks refer to the `task` schema built here, not to `Task`'s own.
    """

    substitutes: Mapping[type[BaseModel], str] = {}
    unread: list[str]

    def model_schema(self, schema: core_schema.ModelSchema) -> JsonSchemaValue:
        name = self.substitutes.get(schema["cls"])
        if name is None:
            return super().model_schema(schema)
        # Not a `$ref` yet: pydantic resolves every `$ref` it finds among its own.
        return {_SUBSTITUTE: name}

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False  # `Maxattempts` says nothing the key does not; descriptions do

    def datetime_schema(self, schema: core_schema.DatetimeSchema) -> JsonSchemaValue:
        # pydantic reads a date, a date-time without a zone or epoch seconds too, which
        # the `date-time` format (that the YAML extension checks) would refuse.
        return {"type": ["string", "number"]}

    def function_before_schema(
        self, schema: core_schema.BeforeValidatorFunctionSchema
    ) -> JsonSchemaValue:
        return self._before(schema, super().function_before_schema)

    def function_wrap_schema(
        self, schema: core_schema.WrapValidatorFunctionSchema
    ) -> JsonSchemaValue:
        return self._before(schema, super().function_wrap_schema)

    def _before(self, schema: Any, default: Callable[[Any], JsonSchemaValue]) -> JsonSchemaValue:
        if schema.get("json_schema_input_schema"):  # the model declares its input itself
            return default(schema)
        name = _qualified_name(schema["function"]["function"])
        if name == _DURATION:
            return {"type": "string", "pattern": DURATION_PATTERN}
        if name in _WIDENING:
            return _WIDENING[name](self.generate_inner(schema["schema"]))
        if name in _SAME_INPUT:
            return default(schema)
        self.unread.append(name)
        return {}

    def _named_required_fields_schema(self, named_required_fields: Any) -> JsonSchemaValue:
        # `AliasChoices("threads", "thread")`: pydantic lists the first name only.
        schema = super()._named_required_fields_schema(named_required_fields)
        for _, _, field in named_required_fields:
            choices = field.get("validation_alias")
            if not (self.by_alias and isinstance(choices, list)):
                continue
            names = [
                path[0]
                for path in choices
                if isinstance(path, list) and len(path) == 1 and isinstance(path[0], str)
            ]
            first = schema["properties"].get(names[0]) if names else None
            for other in names[1:] if first is not None else ():
                schema["properties"].setdefault(other, first)
        return schema


# ----------------------------------------------------------------- walking schemas


def _subschemas(schema: dict[str, Any]) -> Iterator[tuple[str, str | int | None, Any]]:
    """(keyword, key or index, subschema) of every schema directly inside `schema`."""
    for keyword in ("properties", "patternProperties", "definitions", "$defs"):
        for key, value in (schema.get(keyword) or {}).items():
            yield keyword, key, value
    for keyword in ("additionalProperties", "items", "not", "if", "then", "else"):
        if isinstance(schema.get(keyword), dict):
            yield keyword, None, schema[keyword]
    for keyword in ("anyOf", "oneOf", "allOf", "items"):
        if isinstance(schema.get(keyword), list):
            yield from ((keyword, i, value) for i, value in enumerate(schema[keyword]))


def _transform(schema: Any, change: Callable[[dict[str, Any]], dict[str, Any]]) -> Any:
    """`schema` with `change` applied to each of its schemas, innermost first."""
    if not isinstance(schema, dict):
        return schema
    result = dict(schema)
    for keyword, key, value in _subschemas(schema):
        changed = _transform(value, change)
        if key is None:
            result[keyword] = changed
        elif isinstance(key, int):
            result[keyword] = [*result[keyword][:key], changed, *result[keyword][key + 1 :]]
        else:
            result[keyword] = {**result[keyword], key: changed}
    return change(result)


def _substituted(schema: dict[str, Any]) -> dict[str, Any]:
    return _ref(schema[_SUBSTITUTE]) if _SUBSTITUTE in schema else schema


def _draft_07(schema: dict[str, Any]) -> dict[str, Any]:
    """pydantic's 2020-12 habits in draft-07 words, and the loader's hints on patterns."""
    schema = {k: v for k, v in schema.items() if k != "title"}
    if schema.get("format") == "duration":  # not a draft-07 format; the pattern says it
        del schema["format"]
    if "$ref" in schema and len(schema) > 1:
        # Draft-07 ignores a `$ref`'s siblings (its description, its default).
        siblings = {k: v for k, v in schema.items() if k != "$ref"}
        schema = {**siblings, "allOf": [{"$ref": schema["$ref"]}]}
    if schema.get("pattern") in _PATTERN_HINTS:
        schema["patternErrorMessage"] = _PATTERN_HINTS[schema["pattern"]]
    return schema


# ------------------------------------------------------------------ expressions


def _accepts_any_text(schema: dict[str, Any], definitions: Mapping[str, Any]) -> bool:
    if "$ref" in schema:
        return _accepts_any_text(definitions.get(schema["$ref"].rsplit("/", 1)[-1], {}), {})
    if "anyOf" in schema:
        return any(_accepts_any_text(option, definitions) for option in schema["anyOf"])
    constraints = set(schema) - _ANNOTATIONS
    kinds = schema.get("type")
    return not constraints or (
        constraints == {"type"}
        and (kinds == "string" or (isinstance(kinds, list) and "string" in kinds))
    )


def _or_expression(schema: dict[str, Any], definitions: Mapping[str, Any]) -> dict[str, Any]:
    """A value's schema that also accepts an expression, inside and at the value itself."""
    inner = _expressions_inside(schema, definitions)
    if _accepts_any_text(schema, definitions):
        return inner
    notes = {k: v for k, v in inner.items() if k in _ANNOTATIONS}
    rest = {k: v for k, v in inner.items() if k not in _ANNOTATIONS}
    if set(rest) == {"anyOf"}:
        return {**notes, "anyOf": [*rest["anyOf"], _ref(EXPRESSION)]}
    return {**notes, "anyOf": [rest, _ref(EXPRESSION)]}


def _expressions_inside(schema: dict[str, Any], definitions: Mapping[str, Any]) -> dict[str, Any]:
    """`schema` with every value below it also accepting an expression (the loader
    accepts one in place of any value, or of any list or mapping holding it)."""
    result = dict(schema)
    if isinstance(schema.get("properties"), dict):
        result["properties"] = {
            key: _or_expression(value, definitions) for key, value in schema["properties"].items()
        }
    for keyword in ("additionalProperties", "items"):
        if isinstance(schema.get(keyword), dict):
            result[keyword] = _or_expression(schema[keyword], definitions)
    if isinstance(schema.get("items"), list):
        result["items"] = [_or_expression(item, definitions) for item in schema["items"]]
    for keyword in ("anyOf", "oneOf", "allOf"):
        if keyword in schema:  # the alternatives' insides; the whole is wrapped once
            result[keyword] = [
                _expressions_inside(option, definitions) for option in schema[keyword]
            ]
    return result


# ----------------------------------------------------------------- building it


class _Builder:
    """Collects the definitions of every model it generates a schema for."""

    def __init__(self) -> None:
        self.definitions: dict[str, Any] = {}
        self.unread: list[str] = []

    def model(
        self,
        model: type[BaseModel],
        prefix: str = "",
        substitutes: Mapping[type[BaseModel], str] | None = None,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The JSON Schema of `model` and its new definitions (named `prefix` + model);
        the definitions are also kept."""
        generator = type(
            "Generator", (_Generator,), {"substitutes": substitutes or {}, "unread": self.unread}
        )
        schema = model.model_json_schema(
            by_alias=True,
            ref_template=_DEFINITIONS + prefix + "{model}",
            schema_generator=generator,
        )
        schema = _transform(schema, _substituted)
        found = {prefix + name: value for name, value in schema.pop("$defs", {}).items()}
        for name, value in found.items():
            if self.definitions.setdefault(name, value) != value:
                raise ValueError(f"two models generate the definition {name!r} differently")
        return schema, found


def _type_condition(names: list[str]) -> dict[str, Any]:
    kind = {"const": names[0]} if len(names) == 1 else {"enum": names}
    return {"properties": {"type": kind}, "required": ["type"]}


def _kind_of(
    description: str, names: list[str], own: dict[str, Any], common: dict[str, Any]
) -> dict[str, Any]:
    """One type's schema: the common keys and its own properties, no other key."""
    head = {key: common[key] for key in ("id", "description") if key in common}
    properties = {
        "id": head.get("id", {}),
        "type": {"description": description, "enum": names},
        **{key: value for key, value in head.items() if key != "id"},
        **{key: value for key, value in own.get("properties", {}).items() if key not in common},
        **{key: value for key, value in common.items() if key not in (*head, "type")},
    }
    schema: dict[str, Any] = {"description": description, "properties": properties}
    if own.get("additionalProperties") is False:
        schema["additionalProperties"] = False
    return schema


def _task_model(plugin: Plugin) -> type[BaseModel] | None:
    if plugin.kind == FLOWABLE:
        return PROPERTY_MODELS[plugin.type]
    return getattr(connector_classes()[plugin.type], "Properties", None)


def _toward_tasks(
    schema: Any, definitions: Mapping[str, Any], seen: frozenset[str] = frozenset()
) -> dict[str, Any] | None:
    """Where `schema` holds nested tasks, each path to them with `task.required` at its
    end; None when it holds none."""
    if not isinstance(schema, dict):
        return None
    if schema.get("$ref") == _DEFINITIONS + TASK:
        return _ref(TASK_REQUIRED)
    if "$ref" in schema:
        name = schema["$ref"].removeprefix(_DEFINITIONS)
        return (
            None
            if name in seen
            else _toward_tasks(definitions.get(name), definitions, seen | {name})
        )
    found: dict[str, Any] = {}
    nested = {
        key: path
        for key, value in (schema.get("properties") or {}).items()
        if (path := _toward_tasks(value, definitions, seen)) is not None
    }
    if nested:
        found["properties"] = nested
    for keyword in ("items", "additionalProperties"):
        if (path := _toward_tasks(schema.get(keyword), definitions, seen)) is not None:
            found[keyword] = path
    # `items` applies to lists only and `properties` to mappings only, so the paths of
    # all the alternatives can be checked together.
    options = [*schema.get("anyOf", ()), *schema.get("allOf", ())]
    paths = [path for option in options if (path := _toward_tasks(option, definitions, seen))]
    if paths:
        found["allOf"] = paths
    return found or None


def _task_definitions(builder: _Builder, common: dict[str, Any]) -> dict[str, Any]:
    """`task` (one `if`/`then` per task type), `task.<type>` for each, `task.required`."""
    definitions: dict[str, Any] = {}
    names: list[str] = []
    summaries: list[str] = []
    branches: list[dict[str, Any]] = []
    required: list[dict[str, Any]] = []
    for plugin in plugins():
        kind_names = [plugin.type, *plugin.aliases]
        names += kind_names
        summaries += [plugin.summary] + [f"Kestra's name for `{plugin.type}`"] * len(plugin.aliases)
        model = _task_model(plugin)
        if model is None:  # the connector checks its own properties
            own: dict[str, Any] = {"properties": {}}
        else:
            own, found = builder.model(model, plugin.type + ".", {Task: TASK})
            if plugin.kind != FLOWABLE:  # the core renders only worker tasks' properties
                own = _expressions_inside(own, builder.definitions)
                for name, value in found.items():
                    builder.definitions[name] = _expressions_inside(value, builder.definitions)
        keys = common
        if plugin.kind == FLOWABLE:
            keys = {k: v for k, v in common.items() if k not in WORKER_ONLY_KEYS}
        definitions[f"{TASK}.{plugin.type}"] = _kind_of(plugin.description, kind_names, own, keys)
        branches.append({"if": _type_condition(kind_names), "then": _ref(f"{TASK}.{plugin.type}")})
        checks: dict[str, Any] = {}
        if own_required := [key for key in own.get("required", ()) if key not in common]:
            checks["required"] = own_required
        checks.update(
            _toward_tasks({"properties": own.get("properties", {})}, builder.definitions) or {}
        )
        if checks:
            required.append({"if": _type_condition(kind_names), "then": checks})
    definitions[TASK] = {
        "description": "One step: an `id`, a `type` and that type's properties"
        " (`headrace plugins describe TYPE`).",
        "type": "object",
        # No description on `type`: hovering it shows the chosen type's instead.
        "properties": {**common, "type": {"enum": names, "enumDescriptions": summaries}},
        "required": ["id", "type"],
        "allOf": branches,
    }
    definitions[TASK_REQUIRED] = {
        "description": "The properties each task type requires, when no pluginDefaults"
        " may supply them.",
        "allOf": required,
    }
    return definitions


def _trigger_definitions(builder: _Builder) -> dict[str, Any]:
    """`trigger` (one `if`/`then` per trigger type) and `trigger.<type>` for each."""
    common = builder.model(Trigger)[0]["properties"]
    definitions: dict[str, Any] = {}
    names: list[str] = []
    branches: list[dict[str, Any]] = []
    for kind, model in TRIGGER_TYPES.items():
        kind_names = [kind, *(alias for alias, target in TRIGGER_ALIASES.items() if target == kind)]
        names += kind_names
        own, _ = builder.model(model, f"{TRIGGER}.{kind}.")
        schema = _kind_of(inspect.cleandoc(model.__doc__ or ""), kind_names, own, common)
        if own.get("required"):
            schema["required"] = own["required"]
        definitions[f"{TRIGGER}.{kind}"] = schema
        branches.append({"if": _type_condition(kind_names), "then": _ref(f"{TRIGGER}.{kind}")})
    definitions[TRIGGER] = {
        "description": "Starts executions: a schedule, a webhook, other flows' ends or Kafka"
        " messages (docs/triggers.md).",
        "type": "object",
        "properties": {**common, "type": {"enum": names}},
        "required": ["id", "type"],
        "allOf": branches,
    }
    return definitions


def _build() -> tuple[dict[str, Any], tuple[str, ...]]:
    builder = _Builder()
    builder.definitions[EXPRESSION] = {
        "description": "An expression, rendered when the task runs: `{{ inputs.rows }}`",
        "type": "string",
        "pattern": EXPRESSION_PATTERN,
    }
    flow, _ = builder.model(Flow, substitutes={Task: TASK, Trigger: TRIGGER})
    definitions = {
        **_task_definitions(builder, builder.model(Task)[0]["properties"]),
        **_trigger_definitions(builder),
        **builder.definitions,
    }
    schema = {
        "$schema": DIALECT,
        **flow,
        # Without pluginDefaults, every task must give its type's required properties.
        "if": {"required": ["pluginDefaults"]},
        "else": {"properties": {key: {"items": _ref(TASK_REQUIRED)} for key in TASK_LISTS}},
        "definitions": {name: definitions[name] for name in sorted(definitions)},
    }
    # No `title` (`_draft_07` drops them): the YAML extension heads every hover with it.
    schema = _transform(schema, _draft_07)
    return _inline_aliases(schema), tuple(dict.fromkeys(builder.unread))


def _inline_aliases(schema: dict[str, Any]) -> dict[str, Any]:
    """Definitions that only point at another one (a substituted model) are skipped."""
    definitions = schema["definitions"]
    aliases = {
        _DEFINITIONS + name: value["$ref"]
        for name, value in definitions.items()
        if set(value) == {"$ref"}
    }

    def follow(node: dict[str, Any]) -> dict[str, Any]:
        if node.get("$ref") in aliases:
            return {**node, "$ref": aliases[node["$ref"]]}
        return node

    kept = {k: v for k, v in definitions.items() if _DEFINITIONS + k not in aliases}
    return _transform({**schema, "definitions": kept}, follow)


@cache
def _built() -> tuple[dict[str, Any], tuple[str, ...]]:
    return _build()


def flow_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft-07) of a flow, for the installed task types.

    Built once per process: it only changes when connectors are installed or removed.
    Do not mutate it.
    """
    return _built()[0]


def unread_validators() -> tuple[str, ...]:
    """Validators whose accepted input the schema cannot know (a third-party connector's
    `mode="before"` validator): their fields accept any value in the schema."""
    return _built()[1]


@cache
def flow_json_schema_bytes() -> bytes:
    """The schema as docs/flow.schema.json holds it: indented JSON, one final newline."""
    return orjson.dumps(flow_json_schema(), option=orjson.OPT_INDENT_2) + b"\n"
