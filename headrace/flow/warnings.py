"""What a valid flow asks for that headrace does differently: warnings, not errors.

A Kestra flow often holds keys that headrace accepts but acts on in its own way (or not
at all). Refusing it would make the user rewrite working flows; accepting it silently
would hide a difference. So each such key loads, and a warning says what headrace does
instead. `flow validate`, `flow apply`, `kestra check` and the API's validation print them.

Each check reads the raw YAML data (after plugin defaults, before validation) and yields
`(location, message)`; the loader adds the line and column. Checks run only on flows
that load, so they may assume the shapes the models accept.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from headrace.flow.flowable_warnings import CHECKS as FLOWABLE_CHECKS
from headrace.flow.kestra_keys import ignored_flow_keys, ignored_runner_keys, ignored_task_keys
from headrace.flow.retry_warnings import retry_differences
from headrace.flow.task_walk import Loc
from headrace.flow.trigger_warnings import CHECKS as TRIGGER_CHECKS

Check = Callable[[dict[str, Any]], Iterable[tuple[Loc, str]]]


def flow_warnings(data: dict[str, Any]) -> list[tuple[Loc, str]]:
    """Every warning of a flow that loaded, in the order of `CHECKS`."""
    return [warning for check in CHECKS for warning in check(data)]


CHECKS: list[Check] = [ignored_task_keys, ignored_runner_keys, ignored_flow_keys]
"""Each check of a module that adds warnings; append yours here."""
CHECKS += TRIGGER_CHECKS
CHECKS.append(retry_differences)
CHECKS += FLOWABLE_CHECKS
