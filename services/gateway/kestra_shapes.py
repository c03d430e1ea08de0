"""Executions and flows in the JSON shapes Kestra's API answers, built from headrace's.

Kestra's clients (its Python SDK `kestrapy`, its UI, scripts written against its API)
read these: labels as a list of `{key, value}`, a `state` with `duration`, `startDate` and
`endDate`, task runs that name their execution and flow, an `originalId`, `deleted` and
`metadata`. Pure functions: the handlers of `kestra_api` fetch, these reshape.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from headrace.states import State

# Kestra has tenants; headrace has one, under Kestra's default name.
TENANT = "main"
# Trigger types headrace records that Kestra reports as no trigger (a manual start).
_MANUAL_TRIGGERS = frozenset({"api"})
_PAUSED = frozenset({str(State.PAUSED)})


def iso_duration(seconds: float) -> str:
    """A duration as Java's `Duration.toString` writes it (Kestra's `state.duration`):
    `PT0S`, `PT1.5S`, `PT2M3S`, `PT1H0.25S`."""
    millis = max(0, round(seconds * 1000))
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, ms = divmod(rest, 1000)
    text = "PT" + (f"{hours}H" if hours else "") + (f"{minutes}M" if minutes else "")
    if secs or ms or text == "PT":
        text += f"{secs}.{ms:03d}".rstrip("0").rstrip(".") + "S"
    return text


def _date(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def kestra_state(state: dict[str, Any], now: datetime) -> dict[str, Any]:
    """`{current, histories, startDate, endDate, duration}` as Kestra's `State` writes
    them: the start is the first change, the end the last one once ended (or paused),
    the duration up to the end, or up to `now` while it runs."""
    current = state["current"]
    histories = list(state.get("histories") or [])
    start = _date(state.get("startDate")) or (_date(histories[0]["date"]) if histories else None)
    end = _date(state.get("endDate"))
    if end is None and histories and _ended(current):
        end = _date(histories[-1]["date"])
    body: dict[str, Any] = {
        "current": current,
        "histories": histories,
        "startDate": start,
        "endDate": end,
    }
    if start is not None:
        body["duration"] = iso_duration(((end or now) - start).total_seconds())
    return body


def _ended(current: str) -> bool:
    try:
        return State(current).is_terminal or current in _PAUSED
    except ValueError:
        return False


def kestra_labels(labels: dict[str, Any] | list[Any] | None) -> list[dict[str, str]]:
    """`{key: value}` as Kestra's `[{key, value}]`."""
    if isinstance(labels, list):
        return labels
    return [{"key": str(k), "value": str(v)} for k, v in (labels or {}).items()]


def _kestra_trigger(trigger: dict[str, Any] | None) -> dict[str, Any] | None:
    """Kestra's `ExecutionTrigger` (`id`, `type`, `variables`); None for a manual start."""
    if not trigger or trigger.get("type") in _MANUAL_TRIGGERS:
        return None
    variables = {k: v for k, v in trigger.items() if k not in ("id", "type")}
    kind = str(trigger.get("type", "unknown"))
    return {"id": str(trigger.get("id") or kind), "type": kind, "variables": variables}


def _original_id(execution: dict[str, Any]) -> str:
    """Kestra's `originalId`: the execution a replay was made from, else its own id."""
    trigger = execution.get("trigger") or {}
    if trigger.get("type") == "replay" and trigger.get("executionId"):
        return str(trigger["executionId"])
    return str(execution["id"])


def kestra_attempt(attempt: dict[str, Any], now: datetime) -> dict[str, Any]:
    """An attempt's `{current, startDate, endDate}` with Kestra's state histories."""
    state = attempt.get("state") or {}
    histories = []
    if state.get("startDate"):
        histories.append({"state": str(State.RUNNING), "date": state["startDate"]})
    if state.get("endDate"):
        histories.append({"state": state["current"], "date": state["endDate"]})
    shaped = {**state, "histories": histories}
    return {**attempt, "state": kestra_state(shaped, now)}


def kestra_task_run(run: dict[str, Any], execution: dict[str, Any], now: datetime) -> dict:
    """A task run as Kestra's `TaskRun`: it names its execution, namespace and flow."""
    return {
        **run,
        "executionId": execution["id"],
        "namespace": execution["namespace"],
        "flowId": execution["flowId"],
        "state": kestra_state(run["state"], now),
        "attempts": [kestra_attempt(a, now) for a in run.get("attempts") or []],
    }


def kestra_execution(execution: dict[str, Any], now: datetime) -> dict[str, Any]:
    """One of headrace's executions (`headrace.db.executions.execution_json`, or a start
    as the gateway answers it) as Kestra's `Execution`; headrace's own fields stay."""
    created = execution.get("createdAt") or (execution["state"].get("histories") or [{}])[0].get(
        "date"
    )
    body = {
        **execution,
        "tenantId": TENANT,
        "labels": kestra_labels(execution.get("labels")),
        "inputs": execution.get("inputs") or {},
        "outputs": execution.get("outputs") or {},
        "state": kestra_state(execution["state"], now),
        "originalId": _original_id(execution),
        "deleted": False,
        "metadata": {"attemptNumber": 1, "originalCreatedDate": created},
        "trigger": _kestra_trigger(execution.get("trigger")),
    }
    if "taskRunList" in execution:  # listings leave the task runs out, as ours do
        body["taskRunList"] = [
            kestra_task_run(run, execution, now) for run in execution["taskRunList"]
        ]
    return body


def kestra_flow(flow: dict[str, Any], *, with_source: bool) -> dict[str, Any]:
    """A flow revision (`flows_api.flow_json`) as Kestra's `Flow` (`FlowWithSource`
    with `with_source`): labels as a list, `updated`, `disabled` and `deleted` always."""
    body = {
        **flow,
        "labels": kestra_labels(flow.get("labels")),
        "disabled": bool(flow.get("disabled", False)),
        "deleted": False,
        "draft": False,
        "tenantId": TENANT,
        "updated": flow.get("createdAt"),
    }
    if not with_source:
        body.pop("source", None)
    return body


def paged(results: list[Any], total: int) -> dict[str, Any]:
    """Kestra's `PagedResults`."""
    return {"results": results, "total": total}
