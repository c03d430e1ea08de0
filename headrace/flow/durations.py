"""ISO-8601 durations (`PT10S`, `PT0.1S`, `PT1H`, `P1D`) as a pydantic field type.

Flows write durations the way Kestra does. Only the ISO form is accepted: `10s` or a
bare number is ambiguous to a reader, so it is an error with an example of the fix.
Months and years are refused too: their length depends on the calendar. So is anything
longer than `MAX_DURATION` (`headrace.flow.limits`): added to a date, it could overflow.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

import isodate
from pydantic import BeforeValidator
from pydantic_core import PydanticCustomError

from headrace.flow.limits import MAX_DURATION

DURATION_HINT = "write an ISO-8601 duration such as PT10S, PT0.1S, PT5M, PT1H or P1D"


def parse_duration(value: Any) -> timedelta:
    """A non-negative `timedelta` from an ISO-8601 string; raises `ValueError` otherwise."""
    if isinstance(value, timedelta):
        duration = value
    elif isinstance(value, str):
        try:
            parsed = isodate.parse_duration(value.strip())
        except (isodate.ISO8601Error, ValueError) as exc:
            raise ValueError(f"invalid duration {value!r}") from exc
        except OverflowError:  # more days than a timedelta holds
            raise ValueError(_too_long(value)) from None
        if not isinstance(parsed, timedelta):  # isodate.Duration: has months or years
            raise ValueError(f"duration {value!r} uses months or years, whose length varies")
        duration = parsed
    else:
        raise ValueError(f"invalid duration {value!r}: expected a string like PT10S")
    if duration < timedelta(0):
        raise ValueError(f"duration {value!r} is negative")
    if duration > MAX_DURATION:
        raise ValueError(_too_long(value))
    return duration


class DurationTooLong(ValueError):
    """A well-formed duration beyond `MAX_DURATION`."""


def _too_long(value: Any) -> DurationTooLong:
    return DurationTooLong(
        f"duration {value!r} is longer than the {MAX_DURATION.days} days a duration may last"
    )


def _validate(value: Any) -> timedelta:
    try:
        return parse_duration(value)
    except ValueError as exc:
        # A custom error type keeps pydantic from prefixing "Value error, ".
        kind = "duration_range" if isinstance(exc, DurationTooLong) else "duration"
        raise PydanticCustomError(kind, str(exc)) from exc


Duration = Annotated[timedelta, BeforeValidator(_validate)]
"""A `timedelta` field that only accepts ISO-8601 text (or a `timedelta`)."""
