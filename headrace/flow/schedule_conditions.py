"""Kestra's schedule conditions: which ticks of a Schedule trigger start an execution.

A Schedule trigger's `conditions` are all tested for each tick; a tick for which one is
false starts nothing (the schedule moves on), as in Kestra's `Schedule.evaluate`. The
types, their property names, defaults and semantics follow Kestra's
`io.kestra.plugin.core.condition.*` classes, under every name Kestra accepts for them
(`DayWeek`, its older `DayWeekCondition`, and `io.kestra.core.models.conditions.types.*`).

Each condition reads a date (by default `{{ trigger.date }}`: the tick, ISO 8601 in the
trigger's time zone) rendered with the tick's context. Pure: no clock, no I/O.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable, Mapping
from datetime import date, datetime, time, timedelta
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

from headrace.errors import HeadraceError
from headrace.expressions import ExpressionError, has_template, render_value
from headrace.flow.condition_types import (
    NEW,
    OLD,
    kestra_names,
    short_name,
    tag_of,
    unknown_type_config,
)

TRIGGER_DATE = "{{ trigger.date }}"

DayOfWeek = Literal["MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY", "SUNDAY"]
_DAYS: tuple[str, ...] = DayOfWeek.__args__  # type: ignore[attr-defined]


class ConditionError(ExpressionError):
    """A condition could not be evaluated (its date does not render or is no date)."""


class _Condition(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, frozen=True, extra="forbid"
    )

    type: str = Field(
        description="Kestra's condition type, e.g. io.kestra.plugin.core.condition.DayWeek."
    )

    def test(self, render: Callable[[str], Any]) -> bool:
        raise NotImplementedError


class _Dated(_Condition):
    date: str = Field(
        default=TRIGGER_DATE,
        description="The date to test (an expression); the tick's date by default.",
    )

    def _day(self, render: Callable[[str], Any]) -> date:
        return _parse_datetime(render(self.date), "date").date()


class DayWeek(_Dated):
    """True when the date falls on `dayOfWeek`."""

    day_of_week: DayOfWeek = Field(description="MONDAY ... SUNDAY.")

    def test(self, render: Callable[[str], Any]) -> bool:
        return _DAYS[self._day(render).weekday()] == self.day_of_week


class DayWeekInMonth(_Dated):
    """True when the date is the first, second, third, fourth or last `dayOfWeek` of its month."""

    day_of_week: DayOfWeek = Field(description="MONDAY ... SUNDAY.")
    day_in_month: Literal["FIRST", "SECOND", "THIRD", "FOURTH", "LAST"] = Field(
        description="Which one of the month: FIRST, SECOND, THIRD, FOURTH or LAST."
    )

    def test(self, render: Callable[[str], Any]) -> bool:
        day = self._day(render)
        if _DAYS[day.weekday()] != self.day_of_week:
            return False
        if self.day_in_month == "LAST":
            return day.day + 7 > calendar.monthrange(day.year, day.month)[1]
        nth = ("FIRST", "SECOND", "THIRD", "FOURTH").index(self.day_in_month)
        return (day.day - 1) // 7 == nth


class Weekend(_Dated):
    """True on Saturdays and Sundays."""

    def test(self, render: Callable[[str], Any]) -> bool:
        return self._day(render).weekday() >= 5


class TimeBetween(_Dated):
    """True when the date's time of day is strictly after `after` and strictly before
    `before` (either may be left out), each a time with its offset (`16:00:00+02:00`)."""

    after: str | None = Field(
        default=None, description="e.g. 16:00:00+02:00 (an offset is required)."
    )
    before: str | None = Field(
        default=None, description="e.g. 20:00:00+02:00 (an offset is required)."
    )

    @field_validator("after", "before")
    @classmethod
    def _offset_time(cls, value: str | None) -> str | None:
        if value is not None:
            _offset_time_key(value)
        return value

    @model_validator(mode="after")
    def _a_bound(self) -> TimeBetween:
        if self.after is None and self.before is None:
            raise ValueError("TimeBetween needs `after`, `before` or both")
        return self

    def test(self, render: Callable[[str], Any]) -> bool:
        moment = _parse_datetime(render(self.date), "date")
        # Java's OffsetTime order: the time of day less its offset, not wrapped to a day.
        offset = moment.utcoffset() or timedelta(0)
        key = _seconds_of_day(moment.time()) - offset.total_seconds()
        if self.after is not None and not key > _offset_time_key(self.after):
            return False
        return self.before is None or key < _offset_time_key(self.before)


class DateTimeBetween(_Dated):
    """True when the date is at or after `after` and at or before `before` (either may
    be left out), each a date-time with its zone (`2025-01-01T00:00:00Z`)."""

    after: str | None = Field(
        default=None, description="e.g. 2025-01-01T00:00:00Z (a zone is required)."
    )
    before: str | None = Field(
        default=None, description="e.g. 2025-12-31T23:59:59Z (a zone is required)."
    )

    @field_validator("after", "before")
    @classmethod
    def _zoned(cls, value: str | None) -> str | None:
        if value is not None:
            _parse_datetime(value, "a bound", need_zone=True)
        return value

    @model_validator(mode="after")
    def _a_bound(self) -> DateTimeBetween:
        if self.after is None and self.before is None:
            raise ValueError("DateTimeBetween needs `after`, `before` or both")
        return self

    def test(self, render: Callable[[str], Any]) -> bool:
        moment = _parse_datetime(render(self.date), "date", need_zone=True)
        if self.after is not None and moment < _parse_datetime(self.after, "after", True):
            return False
        return self.before is None or moment <= _parse_datetime(self.before, "before", True)


class Expression(_Condition):
    """True unless the expression renders blank or `false` (Kestra's rule: `0` is true)."""

    expression: str = Field(description="e.g. \"{{ trigger.date | date('%H') != '12' }}\".")

    def test(self, render: Callable[[str], Any]) -> bool:
        value = render(self.expression)
        if value is None or value is False:
            return False
        text = "true" if value is True else str(value)
        return not (text.strip() == "" or text.strip() == "false")


class Not(_Condition):
    """True when none of `conditions` is true."""

    conditions: list[ScheduleCondition] = Field(min_length=1, description="Conditions to exclude.")

    def test(self, render: Callable[[str], Any]) -> bool:
        return not any(condition.test(render) for condition in self.conditions)


class Or(_Condition):
    """True when any of `conditions` is true."""

    conditions: list[ScheduleCondition] = Field(
        min_length=1, description="Conditions, one must hold."
    )

    def test(self, render: Callable[[str], Any]) -> bool:
        return any(condition.test(render) for condition in self.conditions)


class PublicHoliday(_Dated):
    """True on the public holidays of `country` (and `subDivision`), from the `holidays`
    package's calendars (Kestra uses Jollyday's: a rare holiday may differ)."""

    country: str = Field(description="ISO 3166-1 alpha-2 code, e.g. FR.")
    sub_division: str | None = Field(
        default=None, description="ISO 3166-2 subdivision, e.g. CA for a US state."
    )

    @model_validator(mode="after")
    def _known_calendar(self) -> PublicHoliday:
        if not (has_template(self.country) or has_template(self.sub_division or "")):
            _calendar(self.country, self.sub_division)
        return self

    def test(self, render: Callable[[str], Any]) -> bool:
        country = str(render(self.country))
        sub_division = None if self.sub_division is None else str(render(self.sub_division))
        return self._day(render) in _calendar(country, sub_division)


def _calendar(country: str, sub_division: str | None) -> Any:
    """The `holidays` calendar of a country (and subdivision); `ValueError` if unknown."""
    import holidays  # only flows with a PublicHoliday condition need it

    try:
        return holidays.country_holidays(country, subdiv=sub_division)
    except NotImplementedError as exc:
        raise ValueError(f"no public holiday calendar: {exc}") from None


_TYPES: dict[str, type[_Condition]] = {}
for _model, _extra in (
    (DayWeek, ()),
    (DayWeekInMonth, ()),
    (Weekend, ()),
    (TimeBetween, ()),
    (DateTimeBetween, ()),
    (Expression, (f"{OLD}VariableCondition",)),
    (Not, ()),
    (Or, ()),
    (PublicHoliday, ()),
):
    for _name in (*kestra_names(_model.__name__), *_extra):
        _TYPES[_name] = _model

CONDITION_TYPES: tuple[str, ...] = tuple(
    f"{NEW}{m.__name__}" for m in dict.fromkeys(_TYPES.values())
)
"""The current Kestra name of each supported schedule condition (for messages and docs)."""


# Kestra's conditions that are no schedule condition: Kestra's Schedule skips them.
_NOT_FOR_SCHEDULES = frozenset(
    (
        "ExecutionFlow",
        "ExecutionNamespace",
        "ExecutionStatus",
        "ExecutionLabels",
        "ExecutionOutputs",
        "FlowNamespace",
        "Flow",
        "HasRetryAttempt",
        "Multiple",  # MultipleCondition, as `short_name` gives it
    )
)


class _Unknown(BaseModel):
    """Any other type: refused, with the supported ones named."""

    model_config = unknown_type_config(_TYPES)

    type: Any = Field(default=None, description="A type headrace does not know: refused.")

    @model_validator(mode="after")
    def _refuse(self) -> _Unknown:
        kind = self.type
        if short_name(kind) in _NOT_FOR_SCHEDULES:
            raise ValueError(
                f"{kind} is not a schedule condition (Kestra's Schedule ignores it): remove it"
            )
        raise ValueError(
            f"unknown schedule condition type {kind!r}: use one of {', '.join(CONDITION_TYPES)}"
        )

    def test(self, render: Callable[[str], Any]) -> bool:  # never built: refused above
        raise NotImplementedError


ScheduleCondition = Annotated[
    Annotated[DayWeek, Tag("DayWeek")]
    | Annotated[DayWeekInMonth, Tag("DayWeekInMonth")]
    | Annotated[Weekend, Tag("Weekend")]
    | Annotated[TimeBetween, Tag("TimeBetween")]
    | Annotated[DateTimeBetween, Tag("DateTimeBetween")]
    | Annotated[Expression, Tag("Expression")]
    | Annotated[Not, Tag("Not")]
    | Annotated[Or, Tag("Or")]
    | Annotated[PublicHoliday, Tag("PublicHoliday")]
    | Annotated[_Unknown, Tag("unknown")],
    Discriminator(tag_of(_TYPES)),
]
Not.model_rebuild()
Or.model_rebuild()


def conditions_hold(conditions: list[ScheduleCondition], context: Mapping[str, Any]) -> bool:
    """True when every condition holds for the tick whose expression context is `context`
    (`trigger`, `schedule`, `flow`); raises `ConditionError` when one cannot be evaluated."""

    def render(text: str) -> Any:
        return render_value(text, context, "conditions")

    try:
        return all(condition.test(render) for condition in conditions)
    except (HeadraceError, ValueError) as exc:
        raise ConditionError("conditions", f"could not be evaluated: {exc}") from exc


def _seconds_of_day(moment: time) -> float:
    return moment.hour * 3600 + moment.minute * 60 + moment.second + moment.microsecond / 1e6


def _offset_time_key(text: str) -> float:
    """`16:00:00+02:00` as Java orders OffsetTimes: seconds of day less the offset."""
    try:
        parsed = time.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not a time such as 16:00:00+02:00") from None
    offset = parsed.utcoffset()
    if offset is None:
        raise ValueError(f"{text!r} has no offset: write it as 16:00:00+02:00 or 16:00:00Z")
    return _seconds_of_day(parsed) - offset.total_seconds()


def _parse_datetime(value: Any, what: str, need_zone: bool = False) -> datetime:
    """An ISO 8601 date or date-time (a date alone is midnight)."""
    if isinstance(value, datetime):
        parsed = value
    else:
        text = str(value).strip()
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{what} {text!r} is not an ISO 8601 date-time") from None
    if need_zone and parsed.tzinfo is None:
        raise ValueError(f"{what} {value!r} has no zone: write it as 2025-01-01T00:00:00Z")
    return parsed
