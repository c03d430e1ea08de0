"""What Kestra's condition types have in common, for the schedule conditions
(`headrace.flow.schedule_conditions`) and the Flow trigger's execution conditions
(`headrace.flow.execution_conditions`): their names, and how one of a kind headrace does
not know is told apart and refused."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ConfigDict

NEW = "io.kestra.plugin.core.condition."
OLD = "io.kestra.core.models.conditions.types."


def kestra_names(model_name: str) -> tuple[str, str, str]:
    """Every name Kestra accepts for the condition `model_name` (`DayWeek`): today's,
    its `…Condition` alias, and its name before Kestra 0.17."""
    return (f"{NEW}{model_name}", f"{NEW}{model_name}Condition", f"{OLD}{model_name}Condition")


def short_name(kind: Any) -> str:
    """`io.kestra.plugin.core.condition.MultipleCondition` -> `Multiple`; "" for no text."""
    return kind.rsplit(".", 1)[-1].removesuffix("Condition") if isinstance(kind, str) else ""


def unknown_type_config(known: Mapping[str, Any]) -> ConfigDict:
    """The model config of the catch-all that refuses any other type: in the JSON schema
    its `type` is none of `known`, so that editors see one match."""
    return ConfigDict(
        extra="allow",
        frozen=True,
        json_schema_extra=lambda schema: schema["properties"]["type"].update(
            {"not": {"enum": sorted(known)}}
        ),
    )


def tag_of(known: Mapping[str, type]) -> Callable[[Any], str]:
    """The discriminator of a condition union: the known model's name, else "unknown"."""

    def tag(raw: Any) -> str:
        kind = raw.get("type") if isinstance(raw, dict) else getattr(raw, "type", None)
        model = known.get(kind) if isinstance(kind, str) else None
        return model.__name__ if model is not None else "unknown"

    return tag
