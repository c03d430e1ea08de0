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

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from headrace.connectors.registry import alias_table, connector_classes
from headrace.flow.durations import Duration
from headrace.flow.limits import MAX_ATTEMPTS, MAX_CONCURRENCY, MAX_DURATION

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


class FlowOutput(_Model):
    """A value the flow returns: `value` is an expression the core renders at the end."""

    id: str = Field(pattern=ID_PATTERN, description="Its name in the execution's outputs.")
    type: InputType | None = Field(
        default=None, description="When set, the rendered value is coerced to this type."
    )
    description: str | None = Field(default=None, description="What the value is.")
    value: Any = Field(description="An expression, rendered when the execution ends.")


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


class RetryPolicy(_Model):
    """How often, and after how long, a failed task is attempted again."""

    type: Literal["constant", "exponential", "random"] = Field(
        description="constant: `interval` each time; exponential: `interval` times"
        " `delayFactor` per attempt; random: between `minInterval` and `maxInterval`."
    )
    interval: Duration | None = Field(
        default=None, description="constant, exponential: the (first) wait, e.g. PT10S."
    )
    max_attempts: int = Field(
        ge=1, le=MAX_ATTEMPTS, description="Attempts in all, the first one included."
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


FLOWABLE_TYPE_ALIASES: dict[str, str] = {
    "io.kestra.plugin.core.flow.Sequential": "flow.sequential",
    "io.kestra.plugin.core.flow.Parallel": "flow.parallel",
    "io.kestra.plugin.core.flow.Dag": "flow.dag",
    "io.kestra.plugin.core.flow.If": "flow.if",
    "io.kestra.plugin.core.flow.Switch": "flow.switch",
    "io.kestra.plugin.core.flow.ForEach": "flow.foreach",
    "io.kestra.plugin.core.flow.Subflow": "flow.subflow",
    "io.kestra.plugin.core.flow.Pause": "flow.pause",
    "io.kestra.plugin.core.execution.Fail": "flow.fail",
}
"""Kestra's names of the flowable types -> ours (connectors declare their own `aliases`)."""


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
    triggers: list[Trigger] = Field(
        default_factory=list, description="What starts the flow besides the API and the CLI."
    )

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
        """`tasks`, then `errors`, then `finally`: task ids are unique across all three."""
        return [*self.tasks, *self.errors, *self.finally_]

    def task(self, task_id: str) -> Task:
        for task in self.all_tasks():
            if task.id == task_id:
                return task
        raise KeyError(task_id)
