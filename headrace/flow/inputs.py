"""Turns the inputs given to an execution into typed, JSON-ready values.

Values come as strings (CLI `--input k=v`, form fields) or as JSON values (REST body);
both are coerced to the flow's declared `InputType`. Defaults apply, and every problem
is reported at once. The result travels on Kafka, so it is always JSON-serialisable.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from typing import Any

import orjson

from headrace.errors import HeadraceError
from headrace.flow.model import Flow, InputType

_INT = re.compile(r"^[+-]?\d+$")
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})


class InputValidationError(HeadraceError):
    """The inputs of an execution do not fit the flow: `errors` is [(input id, reason)]."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = errors
        super().__init__(str(self))

    def __str__(self) -> str:
        return "invalid inputs: " + "; ".join(f"{name}: {reason}" for name, reason in self.errors)


def _string(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise ValueError(f"expected a string, got {_kind(value)}")


def _int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected an integer, got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INT.match(value.strip()):
        return int(value.strip())
    raise ValueError(f"expected an integer, got {value!r}")


def _float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean")
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise ValueError(f"expected a number, got {value!r}") from None
    else:
        raise ValueError(f"expected a number, got {_kind(value)}")
    if not math.isfinite(number):
        raise ValueError(f"expected a finite number, got {value!r}")
    return number


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise ValueError(f"expected a boolean (true/false, yes/no, 1/0), got {value!r}")


def _json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"invalid JSON: {exc}") from None
    try:
        return orjson.loads(orjson.dumps(value))  # proves it serialises; copies it
    except TypeError as exc:
        raise ValueError(f"not a JSON value: {exc}") from None


def _datetime(value: Any) -> str:
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(
                f"expected an ISO-8601 date-time like 2024-05-01T12:00:00Z, got {value!r}"
            ) from None
    else:
        raise ValueError(f"expected an ISO-8601 date-time, got {_kind(value)}")
    if moment.tzinfo is None:  # a moment without offset is read as UTC, as Kestra does
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat()


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


_COERCERS: dict[InputType, Callable[[Any], Any]] = {
    InputType.STRING: _string,
    InputType.INT: _int,
    InputType.FLOAT: _float,
    InputType.BOOLEAN: _boolean,
    InputType.JSON: _json,
    InputType.DATETIME: _datetime,
}


def coerce_input(input_type: InputType, value: Any) -> Any:
    """`value` as `input_type` wants it; raises `ValueError` with a reason otherwise."""
    return _COERCERS[input_type](value)


def resolve_inputs(flow: Flow, raw: Mapping[str, Any]) -> dict[str, Any]:
    """Every declared input of `flow` with its coerced value (None when optional and unset).

    Raises `InputValidationError` listing every unknown, missing or invalid input.
    """
    errors: list[tuple[str, str]] = []
    declared = {definition.id for definition in flow.inputs}
    for name in raw:
        if name not in declared:
            known = ", ".join(sorted(declared)) or "none"
            errors.append((name, f"unknown input (declared inputs: {known})"))

    resolved: dict[str, Any] = {}
    for definition in flow.inputs:
        value = raw.get(definition.id)
        if value is None:
            value = definition.defaults
        if value is None:
            if definition.required:
                errors.append((definition.id, "required input has no value"))
            resolved[definition.id] = None
            continue
        try:
            resolved[definition.id] = coerce_input(definition.type, value)
        except ValueError as exc:
            errors.append((definition.id, str(exc)))
    if errors:
        raise InputValidationError(errors)
    return resolved
