"""Kestra's execution conditions of a Flow trigger: which upstream ends it reacts to.

Kestra's `io.kestra.plugin.core.trigger.Flow` (before `preconditions`, and still next to
them) lists `conditions` over the upstream execution: `ExecutionFlow`,
`ExecutionNamespace`, `ExecutionStatus`, `ExecutionLabels`, each under every name Kestra
accepts (`...ExecutionFlowCondition`, `io.kestra.core.models.conditions.types.*`). All
must hold for an end to count. Semantics from `io.kestra.plugin.core.condition.*`.
Pure: the scheduler tests them on each execution end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from headrace.flow.condition_types import NEW, kestra_names, short_name, tag_of, unknown_type_config
from headrace.states import State


@dataclass(frozen=True, slots=True)
class EndedExecution:
    """What the conditions read of an upstream end."""

    namespace: str
    flow_id: str
    state: State
    labels: dict[str, str]


class _Condition(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, frozen=True, extra="forbid"
    )

    type: str = Field(description="Kestra's condition type, e.g. ...condition.ExecutionFlow.")

    def test(self, end: EndedExecution) -> bool:
        raise NotImplementedError


class ExecutionFlow(_Condition):
    """The upstream is this flow."""

    namespace: str = Field(description="The upstream flow's namespace.")
    flow_id: str = Field(description="The upstream flow's id.")

    def test(self, end: EndedExecution) -> bool:
        return end.namespace == self.namespace and end.flow_id == self.flow_id


class ExecutionNamespace(_Condition):
    """The upstream's namespace equals, starts or ends with `namespace`."""

    namespace: str = Field(description="Compared with the upstream's namespace.")
    comparison: Literal["EQUALS", "PREFIX", "SUFFIX"] | None = Field(
        default=None, description="EQUALS (the default), PREFIX or SUFFIX."
    )
    prefix: bool = Field(default=False, description="Shortcut for comparison PREFIX.")

    def test(self, end: EndedExecution) -> bool:
        comparison = self.comparison or ("PREFIX" if self.prefix else "EQUALS")
        if comparison == "PREFIX":
            return end.namespace.startswith(self.namespace)
        if comparison == "SUFFIX":
            return end.namespace.endswith(self.namespace)
        return end.namespace == self.namespace


class ExecutionStatus(_Condition):
    """The upstream's state is in `in` (when given) and not in `notIn`."""

    in_: list[State] | None = Field(default=None, alias="in", description="Allowed states.")
    not_in: list[State] | None = Field(default=None, description="Refused states.")

    def test(self, end: EndedExecution) -> bool:
        if self.in_ is not None and end.state not in self.in_:
            return False
        return not (self.not_in is not None and end.state in self.not_in)


class ExecutionLabels(_Condition):
    """The upstream has every one of these labels."""

    labels: dict[str, str] = Field(description="key: value, or a list of {key, value}.")

    @field_validator(
        "labels", mode="before", json_schema_input_type=dict[str, str] | list[dict[str, str]]
    )
    @classmethod
    def _list_or_map(cls, value: Any) -> Any:
        # Kestra takes a map or a list of {key: ..., value: ...}.
        pairs = isinstance(value, list) and all(
            isinstance(item, dict) and set(item) == {"key", "value"} for item in value
        )
        return {str(item["key"]): item["value"] for item in value} if pairs else value

    def test(self, end: EndedExecution) -> bool:
        return all(end.labels.get(key) == value for key, value in self.labels.items())


_MODELS = (ExecutionFlow, ExecutionNamespace, ExecutionStatus, ExecutionLabels)
_TYPES: dict[str, type[_Condition]] = {
    name: model for model in _MODELS for name in kestra_names(model.__name__)
}
CONDITION_TYPES = tuple(f"{NEW}{model.__name__}" for model in _MODELS)


class _Unknown(BaseModel):
    """Any other type: refused, with what to write instead."""

    model_config = unknown_type_config(_TYPES)

    type: Any = Field(default=None, description="A type headrace does not know: refused.")

    @model_validator(mode="after")
    def _refuse(self) -> _Unknown:
        kind = self.type
        if short_name(kind) == "Multiple":
            raise ValueError(
                "MultipleCondition is not supported: list the upstream flows under"
                " `preconditions.flows` (with `timeWindow`), which is Kestra's newer form"
            )
        raise ValueError(
            f"condition type {kind!r} is not supported on a Flow trigger: use"
            f" {', '.join(CONDITION_TYPES)}, or `preconditions`"
        )

    def test(self, end: EndedExecution) -> bool:  # never built: refused above
        raise NotImplementedError


ExecutionCondition = Annotated[
    Annotated[ExecutionFlow, Tag("ExecutionFlow")]
    | Annotated[ExecutionNamespace, Tag("ExecutionNamespace")]
    | Annotated[ExecutionStatus, Tag("ExecutionStatus")]
    | Annotated[ExecutionLabels, Tag("ExecutionLabels")]
    | Annotated[_Unknown, Tag("unknown")],
    Discriminator(tag_of(_TYPES)),
]
