"""A flow's `checks` (Kestra's): conditions over the inputs, evaluated when an execution
is created, before any task runs.

A false check with BLOCK_EXECUTION or FAIL_EXECUTION ends the execution FAILED with its
message before anything runs (the gateway refuses a BLOCK_EXECUTION start outright, so
there only starts that did not come through the API reach this); CREATE_EXECUTION logs
the message as a warning and runs. A condition that cannot be rendered counts as false:
a check that cannot be verified must not let a blocked execution through.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from headrace.expressions import ExpressionError, render_value
from headrace.flow.model import CheckBehavior, FlowCheck


@dataclass(frozen=True, slots=True)
class FailedCheck:
    check: FlowCheck
    reason: str  # the check's message, and why it could not be rendered if so

    @property
    def blocks(self) -> bool:
        return self.check.behavior is not CheckBehavior.CREATE_EXECUTION


def failed_checks(checks: list[FlowCheck], context: Mapping[str, Any]) -> list[FailedCheck]:
    """The checks whose condition is not true for `context`, in the flow's order."""
    failed = []
    for i, check in enumerate(checks):
        try:
            value = render_value(check.condition, context, f"checks[{i}].condition")
        except ExpressionError as exc:
            failed.append(FailedCheck(check, f"{check.message} (cannot render: {exc.reason})"))
            continue
        if not _is_true(value):
            failed.append(FailedCheck(check, check.message))
    return failed


def _is_true(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return value is True
