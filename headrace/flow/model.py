"""The flow language as typed, immutable values.

A `Flow` is what `headrace.flow.loader` builds from YAML after validation; the executor
core, the gateway and the CLI only ever see these values. Names in YAML are camelCase
(Kestra's), attributes here are snake_case. Task-type-specific properties stay in
`Task.properties`: the connector of that type validates them.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from functools import cache, cached_property
from hashlib import blake2b
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from headrace.connectors.registry import alias_table, connector_classes
from headrace.flow.durations import Duration
from headrace.flow.limits import MAX_ATTEMPTS, MAX_CONCURRENCY, MAX_DURATION
from headrace.messages import LogLevel

if TYPE_CHECKING:
    from headrace.flow.triggers import TriggerProperties

ID_PATTERN = r"^[a-zA-Z0-9][a-zA-Z0-9_-]*$"
NAMESPACE_PATTERN = r"^[a-z0-9][a-z0-9._-]*$"


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, frozen=True, extra="forbid"
    )


class InputType(StrEnum):
    STRING = "STRING"
    INT = "INT"
    FLOAT = "FLOAT"
    BOOLEAN = "BOOLEAN"
    JSON = "JSON"
    DATETIME = "DATETIME"
    ENUM = "ENUM"  # Kestra's older name for SELECT; both take `values`
    SELECT = "SELECT"
    ARRAY = "ARRAY"  # items of `itemType`
    URI = "URI"
    FILE = "FILE"  # a reference (path or URI) kept as given; uploads are a later issue


_KESTRA_INPUT_TYPES = {
    "DATE": "use DATETIME, or STRING with a `validator` such as \\d{4}-\\d{2}-\\d{2}",
    "TIME": "use STRING with a `validator`, or DATETIME",
    "DURATION": "use STRING (an ISO-8601 duration such as PT1H, read with dateAdd)",
    "YAML": "use JSON, or STRING read with the yaml() function",
    "SECRET": "keep secrets in the workers' secrets and read them with secret('NAME')",
    "EMAIL": "use STRING with a `validator`",
    "MULTISELECT": "use ARRAY with `itemType: SELECT` and `values`",
}
"""Kestra's input types headrace does not have, and what to write instead."""


class Input(_Model):
    """One declared input. Which rule keys fit which type is checked by the loader
    (`headrace.flow.inputs.definition_errors`), so that each problem gets its own path."""

    id: str = Field(pattern=ID_PATTERN, description="Expressions read it as `{{ inputs.<id> }}`.")
    type: InputType = Field(description="The type the given value is coerced to.")
    display_name: str | None = Field(default=None, description="A label for forms.")
    description: str | None = Field(default=None, description="Help for whoever gives the value.")
    required: bool = Field(
        default=True, description="An execution without a value (and no `defaults`) is refused."
    )
    defaults: Any = Field(default=None, description="The value when none is given.")
    values: list[str] | None = Field(
        default=None, description="SELECT, ENUM (and an ARRAY of them): the allowed values."
    )
    item_type: InputType | None = Field(default=None, description="ARRAY: the type of each item.")
    validator: str | None = Field(
        default=None, description="STRING: a regular expression the whole value must match."
    )
    min: int | float | None = Field(
        default=None, allow_inf_nan=False, description="INT, FLOAT: the smallest value allowed."
    )
    max: int | float | None = Field(
        default=None, allow_inf_nan=False, description="INT, FLOAT: the largest value allowed."
    )
    after: str | None = Field(
        default=None, description="DATETIME: values must be later than this (ISO-8601)."
    )
    before: str | None = Field(
        default=None, description="DATETIME: values must be earlier than this (ISO-8601)."
    )
    name: Any = Field(default=None, description="Kestra's older name of `id`: refused.")

    @field_validator("type", mode="before")
    @classmethod
    def _kestra_types(cls, value: Any) -> Any:
        if value == "BOOL":  # Kestra's deprecated spelling
            return InputType.BOOLEAN
        if isinstance(value, str) and value in _KESTRA_INPUT_TYPES:
            raise ValueError(
                f"Kestra's {value} inputs are not supported: {_KESTRA_INPUT_TYPES[value]}"
            )
        return value

    @field_validator("name")
    @classmethod
    def _no_name(cls, value: Any) -> Any:
        if value is not None:
            raise ValueError("Kestra's older `name` of an input: rename it `id`")
        return value


class FlowOutput(_Model):
    """A value the flow returns: `value` is an expression the core renders at the end."""

    id: str = Field(pattern=ID_PATTERN, description="Its name in the execution's outputs.")
    type: InputType | None = Field(
        default=None, description="When set, the rendered value is coerced to this type."
    )
    description: str | None = Field(default=None, description="What the value is.")
    value: Any = Field(description="An expression, rendered when the execution ends.")


class CheckBehavior(StrEnum):
    BLOCK_EXECUTION = "BLOCK_EXECUTION"  # nothing runs: refused at the API, else FAILED
    FAIL_EXECUTION = "FAIL_EXECUTION"  # the execution is created, and ends FAILED at once
    CREATE_EXECUTION = "CREATE_EXECUTION"  # it runs; the message is logged as a warning


class FlowCheck(_Model):
    """A condition over the inputs, evaluated before any task runs (Kestra's `checks`)."""

    condition: Any = Field(
        validation_alias=AliasChoices("condition", "when"),
        description="An expression over `inputs` (and `flow`, `labels`); false fails the check."
        " Kestra 2 names it `when`.",
    )
    message: str = Field(description="Said when the condition is false.")
    style: Literal["ERROR", "SUCCESS", "WARNING", "INFO"] = Field(
        default="INFO",
        description="Kestra's UI style of the message, kept for display (the log level"
        " follows `behavior`: ERROR when it blocks, WARN otherwise).",
    )
    behavior: CheckBehavior = Field(
        default=CheckBehavior.BLOCK_EXECUTION,
        description="When false: BLOCK_EXECUTION (no task runs), FAIL_EXECUTION (ends"
        " FAILED) or CREATE_EXECUTION (runs, with the message as a warning).",
    )


class ConcurrencyBehavior(StrEnum):
    QUEUE = "QUEUE"  # wait until a running execution ends
    CANCEL = "CANCEL"  # end the new execution as CANCELLED
    FAIL = "FAIL"  # end the new execution as FAILED


class Concurrency(_Model):
    """How many executions of this flow may run at once (enforced by the executor)."""

    limit: int = Field(ge=1, le=MAX_CONCURRENCY, description="Executions running at once.")
    behavior: ConcurrencyBehavior = Field(
        default=ConcurrencyBehavior.QUEUE,
        description="Beyond the limit: QUEUE (wait), CANCEL or FAIL the new execution.",
    )


class PluginDefault(_Model):
    """Property values merged into every task of `type` (the loader applies them)."""

    type: str = Field(min_length=1, description="The task type (ours or Kestra's name).")
    values: dict[str, Any] = Field(description="Properties given to every task of `type`.")
    forced: bool = Field(
        default=False, description="When true, these values win over the task's own."
    )


class RetryBehavior(StrEnum):
    RETRY_FAILED_TASK = "RETRY_FAILED_TASK"  # a new attempt of the task run, in place
    CREATE_NEW_EXECUTION = "CREATE_NEW_EXECUTION"  # a new execution of the flow, from the start


class RetryPolicy(_Model):
    """How often, and after how long, a failed task is attempted again (Kestra's `retry`)."""

    type: Literal["constant", "exponential", "random"] = Field(
        description="constant: `interval` each time; exponential: `interval` times"
        " `delayFactor` per attempt; random: between `minInterval` and `maxInterval`."
    )
    interval: Duration | None = Field(
        default=None, description="constant, exponential: the (first) wait, e.g. PT10S."
    )
    max_attempts: int | None = Field(
        default=None,
        # Kestra renamed `maxAttempt` to `maxAttempts` in 0.24 and reads both.
        validation_alias=AliasChoices("maxAttempts", "maxAttempt"),
        ge=1,
        le=MAX_ATTEMPTS,
        description="Attempts in all, the first one included; `maxAttempt` (Kestra before"
        " 0.24) is the same key. Optional: without it `maxDuration` (and a cap of 1,000"
        " attempts) bounds the retries.",
    )
    warning_on_retry: bool = Field(
        default=False,
        description="A task run that succeeded only after a retry ends WARNING.",
    )
    behavior: RetryBehavior = Field(
        default=RetryBehavior.RETRY_FAILED_TASK,
        description="RETRY_FAILED_TASK: attempt the task again in the same execution;"
        " CREATE_NEW_EXECUTION: end the execution FAILED and start a new one of the flow.",
    )
    max_duration: Duration | None = Field(
        default=None, description="No attempt starts this long after the first one."
    )
    max_interval: Duration | None = Field(
        default=None, description="exponential: the longest wait; random: the upper bound."
    )
    min_interval: Duration | None = Field(
        default=None, description="random: the lower bound of the wait."
    )
    delay_factor: float = Field(
        default=2.0,
        gt=1.0,
        allow_inf_nan=False,
        description="exponential: each wait is the previous one times this.",
    )

    @property
    def attempt_limit(self) -> int:
        """Attempts in all: `maxAttempts`, else the safety cap (`maxDuration` bounds them)."""
        return self.max_attempts if self.max_attempts is not None else MAX_ATTEMPTS

    @model_validator(mode="after")
    def _intervals_fit_the_type(self) -> RetryPolicy:
        if self.type == "random":
            if self.min_interval is None or self.max_interval is None:
                raise ValueError("a random retry needs minInterval and maxInterval")
            if self.min_interval > self.max_interval:
                raise ValueError("minInterval must not be longer than maxInterval")
        elif self.interval is None:
            raise ValueError(f"a {self.type} retry needs an interval")
        return self

    def delay_before(self, attempt: int, seed: str = "") -> timedelta:
        """Wait before `attempt` (2 for the first retry).

        `random` draws from a hash of `seed` and `attempt`, never from a random source:
        the executor's core must give the same answer when it replays an event.
        """
        if self.type == "random":
            low, high = self.min_interval or timedelta(0), self.max_interval or timedelta(0)
            digest = blake2b(f"{seed}\x1f{attempt}".encode(), digest_size=8).digest()
            return low + (high - low) * (int.from_bytes(digest, "big") / 2**64)
        interval = self.interval or timedelta(0)
        # Capped even without maxInterval: the factor grows without bound over many attempts.
        cap = self.max_interval if self.max_interval is not None else MAX_DURATION
        if self.type == "constant":
            delay = interval
        else:
            try:
                delay = interval * (self.delay_factor ** (attempt - 2))
            except OverflowError:  # beyond a float or a timedelta: far beyond the cap
                delay = cap
        return min(delay, cap)


_KESTRA_FLOWABLES: dict[str, tuple[str, ...]] = {
    # ours: Kestra's name, then the older names Kestra still accepts (its `aliases`)
    "flow.sequential": (
        "io.kestra.plugin.core.flow.Sequential",
        "io.kestra.core.tasks.flows.Sequential",
    ),
    "flow.parallel": ("io.kestra.plugin.core.flow.Parallel", "io.kestra.core.tasks.flows.Parallel"),
    "flow.dag": ("io.kestra.plugin.core.flow.Dag", "io.kestra.core.tasks.flows.Dag"),
    "flow.if": ("io.kestra.plugin.core.flow.If", "io.kestra.core.tasks.flows.If"),
    "flow.switch": ("io.kestra.plugin.core.flow.Switch", "io.kestra.core.tasks.flows.Switch"),
    "flow.foreach": ("io.kestra.plugin.core.flow.ForEach",),
    "flow.eachsequential": (
        "io.kestra.plugin.core.flow.EachSequential",
        "io.kestra.core.tasks.flows.EachSequential",
    ),
    "flow.eachparallel": (
        "io.kestra.plugin.core.flow.EachParallel",
        "io.kestra.core.tasks.flows.EachParallel",
    ),
    "flow.allowfailure": (
        "io.kestra.plugin.core.flow.AllowFailure",
        "io.kestra.core.tasks.flows.AllowFailure",
    ),
    "flow.workingdirectory": (
        "io.kestra.plugin.core.flow.WorkingDirectory",
        "io.kestra.core.tasks.flows.WorkingDirectory",
    ),
    "flow.subflow": (
        "io.kestra.plugin.core.flow.Subflow",
        "io.kestra.core.tasks.flows.Subflow",
        "io.kestra.core.tasks.flows.Flow",
    ),
    "flow.pause": ("io.kestra.plugin.core.flow.Pause", "io.kestra.core.tasks.flows.Pause"),
    "flow.fail": ("io.kestra.plugin.core.execution.Fail", "io.kestra.core.tasks.executions.Fail"),
    "flow.exit": ("io.kestra.plugin.core.execution.Exit",),
}

FLOWABLE_TYPE_ALIASES: dict[str, str] = {
    alias: ours for ours, aliases in _KESTRA_FLOWABLES.items() for alias in aliases
}
"""Kestra's names of the flowable types -> ours (connectors declare their own `aliases`)."""

REMOVED_KESTRA_TYPES: dict[str, str] = {
    "io.kestra.plugin.core.flow.Template": "Kestra removed templates: call the flow with"
    " io.kestra.plugin.core.flow.Subflow (flow.subflow) instead",
    "io.kestra.core.tasks.flows.Template": "Kestra removed templates: call the flow with"
    " io.kestra.plugin.core.flow.Subflow (flow.subflow) instead",
}
"""Kestra task types that cannot run here, and what to write instead (the loader says it)."""


@cache
def task_type_aliases() -> dict[str, str]:
    """Every alias -> its task type: the flowables' and the installed connectors'.

    Raises `ConnectorConflict` when a connector claims a name already taken.
    """
    reserved = frozenset({*FLOWABLE_TYPE_ALIASES, *FLOWABLE_TYPE_ALIASES.values()})
    return {**FLOWABLE_TYPE_ALIASES, **alias_table(connector_classes(), reserved)}


def canonical_task_type(name: str) -> str:
    """The task type `name` stands for: Kestra's long names resolved, ours unchanged."""
    return task_type_aliases().get(name, name)


class Task(_Model):
    """One step of a flow. Keys not known here are the connector's `properties`."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, frozen=True, extra="allow"
    )

    id: str = Field(
        pattern=ID_PATTERN,
        description="Unique in the flow; expressions read its outputs as `outputs.<id>`.",
    )
    type: str = Field(description="The task type: ours, or Kestra's name for it.")
    description: str | None = Field(default=None, description="What the task does, for readers.")
    retry: RetryPolicy | None = Field(
        default=None, description="How often, and after how long, a failed attempt is retried."
    )
    timeout: Duration | None = Field(
        default=None, description="An attempt running longer fails, e.g. PT10M."
    )
    allow_failure: bool = Field(
        default=False, description="A failure ends the task run WARNING and the flow goes on."
    )
    disabled: bool = Field(default=False, description="Skipped entirely, as if absent.")
    run_if: Any = Field(
        default=None, description="An expression; when it renders false the task is SKIPPED."
    )
    log_level: LogLevel | None = Field(
        default=None, description="The task's log lines below this level are dropped."
    )
    allow_warning: bool = Field(
        default=False, description="A WARNING end counts as SUCCESS (after `allowFailure`)."
    )
    # Kestra's core task keys that headrace accepts and does not act on: the loader warns
    # about each (headrace.flow.kestra_keys) with what headrace does instead.
    log_to_file: bool = Field(default=False, description="Kestra's; ignored with a warning.")
    worker_group: Any = Field(default=None, description="Kestra's; ignored with a warning.")
    task_cache: Any = Field(default=None, description="Kestra's; ignored with a warning.")
    version: Any = Field(default=None, description="Kestra's; ignored with a warning.")
    plugin_defaults_ref: Any = Field(default=None, description="Kestra's; ignored with a warning.")
    assets: Any = Field(default=None, description="Kestra's; ignored with a warning.")

    @field_validator("type")
    @classmethod
    def _canonical_type(cls, value: str) -> str:
        # Kestra's fully-qualified names are accepted; the core only sees ours.
        return canonical_task_type(value)

    @field_validator("timeout")
    @classmethod
    def _positive_timeout(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value <= timedelta(0):
            raise ValueError("timeout must be longer than zero")
        return value

    @property
    def properties(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class Trigger(_Model):
    """Starts executions (schedule, flow, kafka, webhook). Type-specific keys: `properties`.

    The scheduler and gateway interpret the trigger types; the loader only checks the
    common shape and that ids are unique.
    """

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, frozen=True, extra="allow"
    )

    id: str = Field(pattern=ID_PATTERN, description="Unique among the flow's triggers.")
    type: str = Field(description="The trigger type: ours, or Kestra's name for it.")
    description: str | None = Field(default=None, description="What starts the flow, for readers.")
    disabled: bool = Field(default=False, description="Starts nothing until enabled again.")

    @property
    def properties(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @property
    def kind(self) -> str:
        """The canonical trigger type (Kestra's names resolved)."""
        from headrace.flow.triggers import canonical_trigger_type

        return canonical_trigger_type(self.type)

    def spec(self) -> TriggerProperties:
        """The typed properties of this trigger (already validated at load)."""
        return self._spec

    @cached_property
    def _spec(self) -> TriggerProperties:
        # Parsed once per trigger: the scheduler asks for it on every event it matches.
        from headrace.flow.triggers import TRIGGER_TYPES

        return TRIGGER_TYPES[self.kind].model_validate(self.properties)


class Flow(_Model):
    """A flow: its tasks, and what starts them (docs/flows.md)."""

    id: str = Field(pattern=ID_PATTERN, description="Unique in its namespace.")
    namespace: str = Field(pattern=NAMESPACE_PATTERN, description="e.g. company.team")
    description: str | None = Field(default=None, description="What the flow does, for readers.")
    labels: dict[str, str] = Field(
        default_factory=dict, description="Given to every execution, e.g. `team: data`."
    )
    inputs: list[Input] = Field(
        default_factory=list, description="Values given when an execution starts."
    )
    # Rendered by the core with the execution's context; expressions read them as `vars`.
    variables: dict[str, Any] = Field(
        default_factory=dict, description="Values expressions read as `{{ vars.<name> }}`."
    )
    outputs: list[FlowOutput] = Field(
        default_factory=list, description="Values the flow returns when it ends."
    )
    concurrency: Concurrency | None = Field(
        default=None, description="How many executions of this flow may run at once."
    )
    retry: RetryPolicy | None = Field(
        default=None,
        description="The retry of every task that has none of its own (nor a container"
        " around it with one), as in Kestra.",
    )
    disabled: bool = Field(default=False, description="Kept, but cannot be started.")
    # Already merged into the tasks by the loader; kept for export and display.
    plugin_defaults: list[PluginDefault] = Field(
        default_factory=list, description="Property values given to every task of a type."
    )
    tasks: list[Task] = Field(min_length=1, description="Run in order, one after the other.")
    errors: list[Task] = Field(
        default_factory=list, description="Run when a task of `tasks` fails."
    )
    finally_: list[Task] = Field(
        default_factory=list, alias="finally", description="Always run at the end."
    )
    after_execution: list[Task] = Field(
        default_factory=list,
        description="Run once the execution's end state is known (`{{ execution.state }}`);"
        " their failures do not change it.",
    )
    triggers: list[Trigger] = Field(
        default_factory=list, description="What starts the flow besides the API and the CLI."
    )
    checks: list[FlowCheck] = Field(
        default_factory=list,
        description="Conditions over the inputs, evaluated before any task runs.",
    )
    task_defaults: list[PluginDefault] = Field(
        default_factory=list, description="Kestra's older name of `pluginDefaults`."
    )
    # Kestra's flow keys that headrace accepts and does not act on: the loader warns
    # about each (headrace.flow.kestra_keys) with what headrace does instead.
    sla: Any = Field(default=None, description="Kestra's; ignored with a warning.")
    revision: Any = Field(default=None, description="Kestra's; ignored with a warning.")
    tenant_id: Any = Field(default=None, description="Kestra's; ignored with a warning.")
    worker_group: Any = Field(default=None, description="Kestra's; ignored with a warning.")
    deleted: bool = Field(default=False, description="Kestra's; must be false.")
    listeners: Any = Field(default=None, description="Kestra's removed listeners: refused.")

    @field_validator("deleted")
    @classmethod
    def _not_deleted(cls, value: bool) -> bool:
        if value:
            raise ValueError(
                "a deleted flow cannot be applied: remove its file and apply the folder with"
                " --prune, or DELETE /api/v1/flows/{namespace}/{id}"
            )
        return value

    @field_validator("listeners")
    @classmethod
    def _no_listeners(cls, value: Any) -> Any:
        if value:
            raise ValueError(
                "listeners were removed from Kestra (0.21) and headrace has none: move their"
                " tasks to `errors`, `finally`, or a flow with a Flow trigger"
            )
        return value

    @field_validator("labels", mode="before")
    @classmethod
    def _labels_as_map(cls, value: Any) -> Any:
        """Kestra accepts both `{k: v}` and `[{key: k, value: v}]`; scalars become text."""
        if isinstance(value, list):
            labels: dict[Any, Any] = {}
            for i, item in enumerate(value):
                if not (isinstance(item, dict) and set(item) == {"key", "value"}):
                    raise ValueError(f"item {i} must be a mapping with `key` and `value`")
                if item["key"] in labels:
                    raise ValueError(f"label {item['key']!r} is given twice")
                labels[item["key"]] = item["value"]
            value = labels
        if isinstance(value, dict):
            return {
                key: str(item).lower()
                if isinstance(item, bool)
                else str(item)
                if isinstance(item, int | float)
                else item
                for key, item in value.items()
            }
        return value

    def all_tasks(self) -> list[Task]:
        """`tasks`, `errors`, `finally`, `afterExecution`: task ids are unique across all."""
        return [*self.tasks, *self.errors, *self.finally_, *self.after_execution]

    def task(self, task_id: str) -> Task:
        for task in self.all_tasks():
            if task.id == task_id:
                return task
        raise KeyError(task_id)
