"""The search filters of Kestra's API, read from a query string.

Kestra takes two spellings (its `RequestUtils.getFiltersOrDefaultToLegacyMapping`):
`filters[field][OPERATION]=value` (`filters[labels][EQUALS][team]=data` for a label),
which its SDKs send, and the older flat parameters (`namespace`, `flowId`, `state`,
`labels=key:value`, `startDate`, `endDate`, `timeRange`, `scope`, `childFilter`,
`triggerExecutionId`, `q`), which scripts and older clients send. Both become a list of
`Condition`s; `execution_where` turns them into SQL over the `executions` table and
`flow_matches` tests a flow against them. A field or operation headrace does not
support is a 400 naming what it does support, never a filter silently dropped.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import isodate
from multidict import MultiMapping

from headrace.services.gateway.responses import ApiError
from headrace.states import State

_FILTER_KEY = re.compile(r"^filters\[([^\]]+)\]\[([A-Z_]+)\](?:\[([^\]]*)\])?$")

# Operations per field, as Kestra's QueryFilter.Field lists them (the ones headrace has).
_TEXT_OPS = frozenset({"EQUALS", "NOT_EQUALS", "CONTAINS", "STARTS_WITH", "ENDS_WITH", "IN"})
_DATE_OPS = frozenset(
    {"GREATER_THAN", "GREATER_THAN_OR_EQUAL_TO", "LESS_THAN", "LESS_THAN_OR_EQUAL_TO", "EQUALS"}
)
EXECUTION_FIELDS: dict[str, frozenset[str]] = {
    "namespace": _TEXT_OPS | {"PREFIX", "NOT_IN"},
    "flowId": _TEXT_OPS | {"NOT_IN"},
    "state": frozenset({"EQUALS", "NOT_EQUALS", "IN", "NOT_IN"}),
    "labels": frozenset({"EQUALS", "NOT_EQUALS"}),
    "startDate": _DATE_OPS,
    "endDate": _DATE_OPS,
    "timeRange": frozenset({"EQUALS"}),
    "scope": frozenset({"EQUALS", "IN"}),
    "childFilter": frozenset({"EQUALS"}),
    "triggerExecutionId": frozenset({"EQUALS"}),
}
FLOW_FIELDS: dict[str, frozenset[str]] = {
    "namespace": _TEXT_OPS | {"PREFIX", "NOT_IN"},
    "flowId": _TEXT_OPS | {"NOT_IN"},
    "labels": frozenset({"EQUALS", "NOT_EQUALS"}),
    "q": frozenset({"EQUALS"}),
    "scope": frozenset({"EQUALS", "IN"}),
}
# The flat parameters, as Kestra maps them to filters.
_LEGACY = {
    "namespace": ("namespace", "PREFIX"),
    "flowId": ("flowId", "EQUALS"),
    "state": ("state", "IN"),
    "startDate": ("startDate", "GREATER_THAN_OR_EQUAL_TO"),
    "endDate": ("endDate", "LESS_THAN_OR_EQUAL_TO"),
    "timeRange": ("timeRange", "EQUALS"),
    "scope": ("scope", "IN"),
    "childFilter": ("childFilter", "EQUALS"),
    "triggerExecutionId": ("triggerExecutionId", "EQUALS"),
    "q": ("q", "EQUALS"),
}
# The flat parameters Kestra reads as lists (`List<State.Type> state`).
_LIST_PARAMS = frozenset({"state", "scope"})
# Kestra's `scope`: headrace's flows are all the user's; it has no system flows.
USER_SCOPE = "USER"


@dataclass(frozen=True, slots=True)
class Condition:
    """One filter: `field OPERATION value`; `key` is a label's name."""

    field: str
    operation: str
    value: str
    key: str | None = None

    def values(self) -> list[str]:
        """The comma-separated values of IN, NOT_IN (Kestra's SDKs join lists so)."""
        return [v.strip() for v in self.value.split(",") if v.strip()]


def read_conditions(query: MultiMapping[str], fields: dict[str, frozenset[str]]) -> list[Condition]:
    """Every filter of the query string, in either spelling; 400 for one headrace lacks."""
    conditions: list[Condition] = []
    for name, value in query.items():
        if name.startswith("filters["):
            conditions.append(_bracketed(name, value, fields))
        elif name == "labels":
            conditions.append(_legacy_label(value))
    for name, (field, operation) in _LEGACY.items():
        # Repeated (`state=A&state=B`) is one list, as Kestra reads it: any of them.
        values = [v for v in query.getall(name, []) if v != ""]
        if not values:
            continue
        if field not in fields:
            known = ", ".join(sorted(fields))
            raise ApiError(400, f"filter {name!r} is not supported here (supported: {known})")
        if name in _LIST_PARAMS:
            values = [",".join(values)]
        conditions.extend(Condition(field, operation, value) for value in values)
    return conditions


def _bracketed(name: str, value: str, fields: dict[str, frozenset[str]]) -> Condition:
    match = _FILTER_KEY.match(name)
    if match is None:
        raise ApiError(
            400,
            f"query parameter {name!r} is not a filter headrace reads: "
            "filters[field][OPERATION]=value (no and/or groups)",
        )
    field, operation, key = match.groups()
    if field not in fields:
        raise ApiError(
            400, f"filter field {field!r} is not supported here; supported: {sorted(fields)}"
        )
    if operation not in fields[field]:
        raise ApiError(
            400,
            f"filter operation {operation} on {field!r} is not supported; "
            f"supported: {sorted(fields[field])}",
        )
    if (field == "labels") != (key is not None):
        raise ApiError(400, f"{name!r}: a label filter names its key (filters[labels][OP][key])")
    return Condition(field, operation, value, key)


def _legacy_label(item: str) -> Condition:
    key, sep, value = item.partition(":")
    if not sep or not key:
        raise ApiError(400, f"label {item!r} is not key:value")
    return Condition("labels", "EQUALS", value, key)


# --------------------------------------------------------------------------- executions


class _Sql:
    """WHERE clauses with numbered parameters."""

    def __init__(self) -> None:
        self.clauses: list[str] = []
        self.args: list[Any] = []

    def arg(self, value: Any) -> str:
        self.args.append(value)
        return f"${len(self.args)}"

    def add(self, clause: str) -> None:
        self.clauses.append(clause)

    @property
    def where(self) -> str:
        return " AND ".join(self.clauses) or "TRUE"


def _text_clause(sql: _Sql, column: str, c: Condition) -> str:
    if c.operation in ("IN", "NOT_IN"):
        clause = f"{column} = ANY({sql.arg(c.values())}::text[])"
        return clause if c.operation == "IN" else f"NOT ({clause})"
    if c.operation == "PREFIX":  # the namespace and those below it
        value = sql.arg(c.value)
        return f"({column} = {value} OR starts_with({column}, {value} || '.'))"
    value = sql.arg(c.value)
    return {
        "EQUALS": f"{column} = {value}",
        "NOT_EQUALS": f"{column} <> {value}",
        "CONTAINS": f"strpos({column}, {value}) > 0",
        "STARTS_WITH": f"starts_with({column}, {value})",
        "ENDS_WITH": f"right({column}, length({value})) = {value}",
    }[c.operation]


_DATE_SQL = {
    "GREATER_THAN": ">",
    "GREATER_THAN_OR_EQUAL_TO": ">=",
    "LESS_THAN": "<",
    "LESS_THAN_OR_EQUAL_TO": "<=",
    "EQUALS": "=",
}
_DATE_COLUMNS = {"startDate": "start_date", "endDate": "end_date"}


def parse_date(value: str, what: str) -> datetime:
    """An ISO 8601 date-time; without an offset, UTC."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ApiError(400, f"{what}: {value!r} is not an ISO 8601 date-time") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _states(c: Condition) -> list[str]:
    names = c.values()
    for name in names:
        if name not in State.__members__:
            raise ApiError(400, f"unknown state {name!r}; states: {sorted(State.__members__)}")
    return names


def _execution_clause(sql: _Sql, c: Condition, now: datetime) -> str:
    if c.field in ("namespace", "flowId"):
        return _text_clause(sql, "namespace" if c.field == "namespace" else "flow_id", c)
    if c.field == "state":
        clause = f"state = ANY({sql.arg(_states(c))}::text[])"
        return clause if c.operation in ("IN", "EQUALS") else f"NOT ({clause})"
    if c.field == "labels":
        key, value = sql.arg(c.key), sql.arg(c.value)
        if c.operation == "EQUALS":
            return f"labels ->> {key} = {value}"
        return f"(labels ->> {key}) IS DISTINCT FROM {value}"
    if c.field in _DATE_COLUMNS:
        date = sql.arg(parse_date(c.value, f"filter {c.field}"))
        return f"{_DATE_COLUMNS[c.field]} {_DATE_SQL[c.operation]} {date}"
    if c.field == "timeRange":
        try:
            since = now - _duration(c.value)
        except (OverflowError, ValueError):
            raise ApiError(400, f"timeRange {c.value!r} reaches before year 1") from None
        return f"created_at >= {sql.arg(since)}"
    if c.field == "scope":
        return "TRUE" if USER_SCOPE in c.values() else "FALSE"
    if c.field == "childFilter":
        return _child_clause(c.value)
    # triggerExecutionId: the execution whose subflow task started it.
    return f"trigger ->> 'parentExecutionId' = {sql.arg(c.value)}"


def _duration(value: str) -> Any:
    try:
        return isodate.parse_duration(value)
    except (isodate.ISO8601Error, ValueError) as exc:
        raise ApiError(400, f"timeRange {value!r} is not an ISO 8601 duration (PT5M)") from exc


def _child_clause(value: str) -> str:
    if value == "CHILD":
        return "trigger ->> 'type' = 'subflow'"
    if value == "MAIN":
        return "(trigger ->> 'type') IS DISTINCT FROM 'subflow'"
    raise ApiError(400, f"childFilter {value!r}: CHILD or MAIN")


def execution_where(conditions: Iterable[Condition], now: datetime) -> tuple[str, list[Any]]:
    """The WHERE clause over `executions` and its parameters ($1, $2…)."""
    sql = _Sql()
    for condition in conditions:
        sql.add(_execution_clause(sql, condition, now))
    return sql.where, sql.args


# Kestra's sort keys (`field:asc|desc`) and the columns they order by.
EXECUTION_SORTS = {
    "id": "id",
    "namespace": "namespace",
    "flowId": "flow_id",
    "state.current": "state",
    "state.startDate": "start_date",
    "state.endDate": "end_date",
    "state.duration": "coalesce(end_date, now()) - start_date",
    "createdAt": "created_at",
}


def execution_order(sorts: list[str]) -> str:
    """ORDER BY for Kestra's `sort` values; newest first when none."""
    terms = []
    for item in sorts:
        for sort in filter(None, (s.strip() for s in item.split(","))):
            field, _, direction = sort.partition(":")
            if field not in EXECUTION_SORTS:
                raise ApiError(
                    400, f"cannot sort by {field!r}; sort keys: {sorted(EXECUTION_SORTS)}"
                )
            if direction.lower() not in ("", "asc", "desc"):
                raise ApiError(400, f"sort {sort!r}: the direction is asc or desc")
            terms.append(f"{EXECUTION_SORTS[field]} {direction.upper() or 'ASC'} NULLS LAST")
    return ", ".join([*terms, "created_at DESC", "id"])


# --------------------------------------------------------------------------- flows


def _text_matches(actual: str, c: Condition) -> bool:
    tests: dict[str, Callable[[], bool]] = {
        "EQUALS": lambda: actual == c.value,
        "NOT_EQUALS": lambda: actual != c.value,
        "CONTAINS": lambda: c.value in actual,
        "STARTS_WITH": lambda: actual.startswith(c.value),
        "ENDS_WITH": lambda: actual.endswith(c.value),
        "PREFIX": lambda: actual == c.value or actual.startswith(c.value + "."),
        "IN": lambda: actual in c.values(),
        "NOT_IN": lambda: actual not in c.values(),
    }
    return tests[c.operation]()


def flow_matches(flow: dict[str, Any], conditions: Iterable[Condition]) -> bool:
    """Whether a flow (its id, namespace and `labels` dict) passes every condition."""
    for c in conditions:
        if c.field == "namespace" and not _text_matches(flow["namespace"], c):
            return False
        if c.field == "flowId" and not _text_matches(flow["id"], c):
            return False
        if c.field == "labels":
            equal = (flow.get("labels") or {}).get(c.key) == c.value
            if equal != (c.operation == "EQUALS"):
                return False
        if c.field == "q":
            text = c.value.lower()
            if text not in flow["id"].lower() and text not in flow["namespace"].lower():
                return False
        if c.field == "scope" and USER_SCOPE not in c.values():
            return False
    return True
