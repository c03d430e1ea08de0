"""What every task type is, for people and tools: `GET /api/v1/plugins` and `headrace plugins`.

Two kinds: connectors (run by workers, found through entry points) and flowables (run by
the executor: sequential, parallel, if...). Each is described by its name, the other
names flows may use for it (Kestra's), its docstring and JSON Schemas of its properties
and, where declared, of its outputs: the schemas come from the same pydantic models that
validate flows, so they cannot drift from what is accepted.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from functools import cache
from typing import Any

from pydantic import BaseModel

from headrace.connectors.base import aliases_of, outputs_model_of
from headrace.connectors.registry import connector_classes
from headrace.flow.flowables import PROPERTY_MODELS
from headrace.flow.model import FLOWABLE_TYPE_ALIASES, canonical_task_type, task_type_aliases

CONNECTOR = "connector"
FLOWABLE = "flowable"


@dataclass(frozen=True, slots=True)
class Plugin:
    type: str
    kind: str  # CONNECTOR or FLOWABLE
    aliases: tuple[str, ...]
    description: str  # its first line is a summary
    properties: dict[str, Any]  # JSON Schema
    outputs: dict[str, Any] | None  # JSON Schema, when the type declares its outputs

    @property
    def summary(self) -> str:
        return self.description.split("\n", 1)[0]

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "kind": self.kind,
            "aliases": list(self.aliases),
            "summary": self.summary,
            "description": self.description,
            "properties": self.properties,
            "outputs": self.outputs,
        }


def _description(described: type) -> str:
    # Its own docstring only: `inspect.getdoc` would fall back to a base class's.
    return inspect.cleandoc(described.__doc__ or "")


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    # By alias: the names flows use (`workingDirectory`, not `working_directory`).
    return model.model_json_schema(by_alias=True)


def _connector(name: str, connector_class: type) -> Plugin:
    outputs = outputs_model_of(connector_class)
    return Plugin(
        type=name,
        kind=CONNECTOR,
        aliases=aliases_of(connector_class),
        description=_description(connector_class),
        properties=_schema(connector_class.Properties),
        outputs=None if outputs is None else _schema(outputs),
    )


def _flowable(name: str, model: type[BaseModel]) -> Plugin:
    return Plugin(
        type=name,
        kind=FLOWABLE,
        aliases=tuple(alias for alias, target in FLOWABLE_TYPE_ALIASES.items() if target == name),
        description=_description(model),
        properties=_schema(model),
        outputs=None,
    )


@cache
def plugins() -> tuple[Plugin, ...]:
    """Every task type this installation knows, by name."""
    task_type_aliases()  # raises ConnectorConflict if two task types claim one name
    found = [_connector(name, cls) for name, cls in connector_classes().items()]
    found += [_flowable(name, model) for name, model in PROPERTY_MODELS.items()]
    return tuple(sorted(found, key=lambda plugin: plugin.type))


def find_plugin(name: str) -> Plugin | None:
    """The task type called `name` (ours or one of its aliases); None if there is none."""
    wanted = canonical_task_type(name)
    return next((plugin for plugin in plugins() if plugin.type == wanted), None)


@dataclass(frozen=True, slots=True)
class PropertyRow:
    """One property as `headrace plugins describe` lists it."""

    name: str
    type: str
    required: bool
    default: Any
    description: str


def property_rows(schema: dict[str, Any], prefix: str = "") -> list[PropertyRow]:
    """The properties of an object JSON Schema, in declaration order; those of a nested
    object follow it, named by their path (`options.auth`)."""
    defs = schema.get("$defs", {})
    rows: list[PropertyRow] = []
    required = set(schema.get("required", ()))
    for name, prop in schema.get("properties", {}).items():
        rows.append(
            PropertyRow(
                name=prefix + name,
                type=_type_text(prop, defs),
                required=name in required,
                default=prop.get("default"),
                description=prop.get("description", ""),
            )
        )
        nested = _nested_object(prop, defs)
        if nested is not None:
            rows += property_rows({**nested, "$defs": defs}, f"{prefix}{name}.")
    return rows


def _nested_object(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any] | None:
    """The object model `schema` refers to (directly or as `X | None`), if any."""
    options = schema.get("anyOf", [schema])
    refs = [option["$ref"] for option in options if "$ref" in option]
    if len(refs) != 1:
        return None
    target = defs.get(refs[0].rsplit("/", 1)[-1], {})
    return target if "properties" in target else None


def _type_text(schema: dict[str, Any], defs: dict[str, Any]) -> str:
    """`list of string`, `one of INFO, WARN`, `integer or null`: a schema in a few words."""
    if "$ref" in schema:
        schema = defs.get(schema["$ref"].rsplit("/", 1)[-1], {})
    if "enum" in schema:
        return "one of " + ", ".join(str(value) for value in schema["enum"])
    if "anyOf" in schema:
        kinds = [_type_text(option, defs) for option in schema["anyOf"]]
        return " or ".join(kind for kind in kinds if kind != "null") or "null"
    kind = schema.get("type", "any")
    if kind == "array":
        return f"list of {_type_text(schema.get('items', {}), defs)}"
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return f"map of {_type_text(schema['additionalProperties'], defs)}"
    if kind == "object" and "title" in schema and "properties" in schema:
        return schema["title"]  # a nested model (a dag entry, a task)
    return str(kind)
