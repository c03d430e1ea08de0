"""Turns the inputs given to an execution into typed, JSON-ready values.

Values come as strings (CLI `--input k=v`, form fields) or as JSON values (REST body);
both are coerced to the flow's declared `InputType`, then checked against the input's
rules (`values`, `validator`, `min`/`max`, `after`/`before`; an ARRAY applies them to
each item). Defaults apply, and every problem is reported at once. The result travels
on Kafka, so it is always JSON-serialisable.

`definition_errors` checks an input *definition* (which rules fit which type, defaults
that break them); the loader calls it so bad definitions are refused at load.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import urlsplit

import orjson

from headrace.errors import HeadraceError
from headrace.flow.model import Flow, Input, InputType

_INT = re.compile(r"^[+-]?\d+$")
# Signed 64-bit, as JSON readers in other languages (and orjson, which encodes the
# message) can hold; a bigger number fits FLOAT or STRING.
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
# PostgreSQL text and jsonb cannot store NUL, and the worker's output markers are
# delimited by control characters: no input may carry one.
NUL = "\x00"
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
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and _INT.match(value.strip()):
        number = int(value.strip())
    else:
        raise ValueError(f"expected an integer, got {value!r}")
    if not INT_MIN <= number <= INT_MAX:
        raise ValueError(
            f"{value!r} is out of the INT range ({INT_MIN}..{INT_MAX}); use a FLOAT or STRING input"
        )
    return number


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
            value = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"invalid JSON: {exc}") from None
    try:
        # Proves it serialises (parsed text too: orjson reads deeper nesting and bigger
        # integers than it writes) and copies it.
        return orjson.loads(orjson.dumps(value))
    except TypeError as exc:
        raise ValueError(f"not a JSON value we can carry: {exc}") from None


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
    try:
        return moment.astimezone(UTC).isoformat()
    except OverflowError:  # 0001-01-01T00:00+01:00 is in year 0 in UTC
        raise ValueError(
            f"{value!r} is out of range: dates go from year 1 to 9999 in UTC"
        ) from None


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


_URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*$")


def _uri(value: Any) -> str:
    text = _string(value).strip()
    parts = urlsplit(text)
    if not parts.scheme or not _URI_SCHEME.match(parts.scheme):
        raise ValueError(f"expected an absolute URI with a scheme (https://…), got {value!r}")
    if not (parts.netloc or parts.path):
        raise ValueError(f"expected an absolute URI with something after the scheme, got {value!r}")
    if any(c.isspace() for c in text):
        raise ValueError(f"a URI cannot contain blanks, got {value!r}")
    return text


def _file(value: Any) -> str:
    # A reference only (a path or a URI, e.g. s3://bucket/key): storing uploaded files
    # is a later issue, so the text is kept as given.
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a file path or URI, got {_kind(value)}")
    return value


def _array(value: Any) -> list[Any]:
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise ValueError(f"expected a JSON array like [1, 2], got {value!r}") from None
    if not isinstance(value, list | tuple):
        raise ValueError(f"expected a list, got {_kind(value)}")
    return list(value)


_COERCERS: dict[InputType, Callable[[Any], Any]] = {
    InputType.STRING: _string,
    InputType.INT: _int,
    InputType.FLOAT: _float,
    InputType.BOOLEAN: _boolean,
    InputType.JSON: _json,
    InputType.DATETIME: _datetime,
    InputType.ENUM: _string,
    InputType.SELECT: _string,
    InputType.ARRAY: _array,
    InputType.URI: _uri,
    InputType.FILE: _file,
}

# Which rule keys fit which (item) type; `definition_errors` refuses the others.
_RULES: dict[str, frozenset[InputType]] = {
    "values": frozenset({InputType.ENUM, InputType.SELECT}),
    "validator": frozenset({InputType.STRING}),
    "min": frozenset({InputType.INT, InputType.FLOAT}),
    "max": frozenset({InputType.INT, InputType.FLOAT}),
    "after": frozenset({InputType.DATETIME}),
    "before": frozenset({InputType.DATETIME}),
}
# ARRAY items are single values: no nested arrays, and files are not uploaded yet.
ITEM_TYPES = frozenset(InputType) - {InputType.ARRAY, InputType.FILE}


def coerce_input(input_type: InputType, value: Any) -> Any:
    """`value` as `input_type` wants it; raises `ValueError` with a reason otherwise.

    Only the type: `validate_input` applies a definition's rules too.
    """
    return _COERCERS[input_type](value)


def validate_input(definition: Input, value: Any) -> Any:
    """`value` coerced to the input's type and checked against its rules.

    Raises `ValueError` with a reason (for an ARRAY, naming the bad item).
    """
    if definition.type is InputType.ARRAY:
        items = _array(value)
        item_type = definition.item_type or InputType.STRING
        checked = []
        for i, item in enumerate(items):
            try:
                checked.append(_check(definition, item_type, item))
            except ValueError as exc:
                raise ValueError(f"item {i}: {exc}") from None
        return checked
    return _check(definition, definition.type, value)


def _check(definition: Input, input_type: InputType, value: Any) -> Any:
    result = coerce_input(input_type, value)
    if has_nul(result):
        raise ValueError("contains a NUL character (\\x00), which cannot be stored")
    values = definition.values
    if values is not None and input_type in _RULES["values"] and result not in values:
        allowed = ", ".join(values)
        raise ValueError(f"{result!r} is not one of the allowed values ({allowed})")
    pattern = definition.validator
    is_text = input_type is InputType.STRING
    if pattern is not None and is_text and re.fullmatch(pattern, result) is None:
        raise ValueError(f"{result!r} does not match the pattern {pattern!r}")
    if input_type in _RULES["min"]:
        if definition.min is not None and result < definition.min:
            raise ValueError(f"{result} is less than the minimum {_number(definition.min)}")
        if definition.max is not None and result > definition.max:
            raise ValueError(f"{result} is more than the maximum {_number(definition.max)}")
    if input_type is InputType.DATETIME:
        moment = datetime.fromisoformat(result)
        if definition.after is not None and moment <= _moment(definition.after):
            raise ValueError(f"{result} is not after {definition.after}")
        if definition.before is not None and moment >= _moment(definition.before):
            raise ValueError(f"{result} is not before {definition.before}")
    return result


def has_nul(value: Any) -> bool:
    """Whether a NUL is in `value`'s text, or in any key or text nested in it (JSON)."""
    pending = [value]  # a loop, not recursion: JSON may nest deeper than Python's stack
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if NUL in item:
                return True
        elif isinstance(item, dict):
            pending += item.keys()
            pending += item.values()
        elif isinstance(item, list):
            pending += item
    return False


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _article(word: str) -> str:
    return "an" if word[:1] in "AEIOU" else "a"


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(_datetime(text))


def definition_errors(definition: Input) -> list[tuple[str, str, str | None]]:
    """(key, message, hint) for every rule of `definition` that cannot work.

    A rule on a type it does not fit, an ENUM/SELECT without values, an ARRAY without a
    usable `itemType`, a regex that does not compile, min above max, and a default that
    breaks the rules.
    """
    found: list[tuple[str, str, str | None]] = []
    kind = definition.type
    effective = definition.item_type if kind is InputType.ARRAY else kind
    if kind is InputType.ARRAY:
        if definition.item_type is None:
            found.append(("type", "an ARRAY input needs `itemType`", "add e.g. `itemType: STRING`"))
        elif definition.item_type not in ITEM_TYPES:
            allowed = ", ".join(sorted(ITEM_TYPES))
            found.append(
                ("itemType", f"items cannot be {definition.item_type}", f"use one of {allowed}")
            )
    elif definition.item_type is not None:
        found.append(("itemType", f"`itemType` only applies to ARRAY inputs, not {kind}", None))
    if effective in _RULES["values"] and not definition.values:
        found.append(
            (
                "values" if definition.values is not None else "type",
                f"{_article(effective)} {effective} input needs a non-empty `values` list",
                "list the choices, e.g. `values: [dev, prod]`",
            )
        )
    for key, types_ in _RULES.items():
        if getattr(definition, key) is None or effective is None or effective in types_:
            continue
        fits = " and ".join(sorted(types_))
        found.append((key, f"`{key}` applies to {fits} inputs, not {kind}", None))
    if definition.validator is not None:
        try:
            re.compile(definition.validator)
        except re.error as exc:
            found.append(("validator", f"invalid regular expression: {exc}", None))
    low, high = definition.min, definition.max
    if low is not None and high is not None and low > high:
        found.append(("min", f"min {_number(low)} is above max {_number(high)}", None))
    for key in ("after", "before"):
        text = getattr(definition, key)
        if text is not None:
            try:
                _moment(text)
            except ValueError as exc:
                found.append((key, str(exc), None))
    if definition.defaults is not None and not found:
        try:
            validate_input(definition, definition.defaults)
        except ValueError as exc:
            found.append(("defaults", f"invalid default: {exc}", None))
    return found


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
            resolved[definition.id] = validate_input(definition, value)
        except ValueError as exc:
            errors.append((definition.id, str(exc)))
    if errors:
        raise InputValidationError(errors)
    return resolved
