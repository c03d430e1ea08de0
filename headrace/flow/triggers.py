"""Trigger types: what may start a flow, declared under its `triggers:`.

Each type has a pydantic model of its properties (the loader validates them with the
same precise errors as task properties) and Kestra's type names as aliases. The services
interpret them: the scheduler runs `schedule`, `flow` and `kafka` triggers, the gateway
serves `webhook` triggers.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from croniter import croniter
from fastavro.schema import SchemaParseException, UnknownType, parse_schema
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from headrace.flow.cron import CronError, CronSchedule, croniter_form
from headrace.flow.durations import Duration
from headrace.flow.execution_conditions import EndedExecution, ExecutionCondition
from headrace.flow.limits import MAX_CONCURRENCY
from headrace.flow.schedule_conditions import ScheduleCondition
from headrace.states import TERMINAL_STATES, State

SCHEDULE = "schedule"
WEBHOOK = "webhook"
FLOW = "flow"
KAFKA = "kafka"

TRIGGER_ALIASES = {
    "io.kestra.plugin.core.trigger.Schedule": SCHEDULE,
    "io.kestra.core.models.triggers.types.Schedule": SCHEDULE,
    "io.kestra.plugin.core.trigger.Webhook": WEBHOOK,
    "io.kestra.core.models.triggers.types.Webhook": WEBHOOK,
    "io.kestra.plugin.core.trigger.Flow": FLOW,
    "io.kestra.core.models.triggers.types.Flow": FLOW,
    "io.kestra.plugin.kafka.Trigger": KAFKA,
    "io.kestra.plugin.kafka.RealtimeTrigger": KAFKA,
}

# Any fixed instant: a cron that fires at all fires within years of it.
_CRON_CHECK_FROM = datetime(2000, 1, 1, tzinfo=UTC)

# Webhook keys are the only secret guarding a webhook URL: short ones can be guessed
# (they load with a warning).
MIN_WEBHOOK_KEY_LENGTH = 16
# How the gateway shows a key to readers: a source copied from a reader's view must not
# set it as the key, which everyone would then know.
MASKED_WEBHOOK_KEY = "<masked>"


def _labels_as_map(value: Any) -> Any:
    """Kestra writes labels as `{k: v}` or `[{key: k, value: v}]`; scalars become text."""
    if isinstance(value, list):
        pairs = all(isinstance(i, dict) and set(i) == {"key", "value"} for i in value)
        if not pairs:
            raise ValueError("labels must be a mapping, or a list of {key, value} mappings")
        value = {item["key"]: item["value"] for item in value}
    if isinstance(value, dict):
        return {k: str(v).lower() if isinstance(v, bool) else v for k, v in value.items()}
    return value


TriggerLabels = Annotated[
    dict[str, str | int | float],
    BeforeValidator(
        _labels_as_map,
        json_schema_input_type=dict[str, str | int | float | bool] | list[dict[str, Any]],
    ),
]
# Kestra's trigger keys headrace accepts and does not act on (a warning says so).
IGNORED_TRIGGER_KEYS = (
    "logLevel",
    "minLogLevel",
    "logToFile",
    "failOnTriggerError",
    "workerGroup",
    "allowConcurrent",
)


class TriggerProperties(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, frozen=True, extra="forbid"
    )

    inputs: dict[str, Any] = Field(
        default_factory=dict,
        description="Inputs of the executions it starts; may hold expressions over `trigger`.",
    )
    labels: TriggerLabels = Field(
        default_factory=dict,
        description="Labels of the executions it starts (values may hold expressions over"
        " `trigger`): a mapping, or Kestra's list of {key, value}.",
    )
    log_level: Any = Field(default=None, description="Kestra's: ignored, with a warning.")
    min_log_level: Any = Field(default=None, description="Kestra's: ignored, with a warning.")
    log_to_file: Any = Field(default=None, description="Kestra's: ignored, with a warning.")
    fail_on_trigger_error: Any = Field(
        default=None, description="Kestra's: ignored, with a warning."
    )
    worker_group: Any = Field(default=None, description="Kestra's: ignored, with a warning.")
    allow_concurrent: bool | None = Field(
        default=None,
        description="Kestra's: headrace starts every execution a trigger fires (see the"
        " warning); limit them with the flow's `concurrency`.",
    )
    stop_after: list[State] = Field(
        default_factory=list,
        description="End states (e.g. FAILED): once an execution this trigger started ends in"
        " one, the trigger is switched off until switched on again (Kestra's `stopAfter`).",
    )

    @field_validator("stop_after")
    @classmethod
    def _terminal_states(cls, value: list[State]) -> list[State]:
        if not_ends := [state for state in value if not state.is_terminal]:
            ends = ", ".join(sorted(TERMINAL_STATES))
            raise ValueError(
                f"stopAfter acts when an execution ends: {', '.join(not_ends)} is not an end"
                f" state (end states: {ends})"
            )
        return value


class ScheduleTrigger(TriggerProperties):
    """A cron schedule, evaluated in `timezone` (daylight-saving aware)."""

    # Before `cron`: its validator reads it.
    with_seconds: bool = Field(
        default=False,
        description="True: the cron has six fields, the seconds first (Kestra's `withSeconds`).",
    )
    cron: str = Field(
        description="5 fields (minute hour day month weekday), 6 with `withSeconds: true`"
        " (seconds first), or a macro such as @daily."
    )
    timezone: str = Field(default="UTC", description="e.g. Europe/Paris.")
    recover_missed_schedules: Literal["ALL", "LAST", "NONE"] = Field(
        default="ALL",
        description="After downtime: start every missed tick (ALL), only the latest (LAST),"
        " or none.",
    )
    late_maximum_delay: Duration | None = Field(
        default=None,
        description="A tick not started within this delay (e.g. PT1H) is skipped, whatever"
        " `recoverMissedSchedules` says.",
    )
    conditions: list[ScheduleCondition] = Field(
        default_factory=list,
        description="Kestra's schedule conditions (DayWeek, Weekend, TimeBetween, ...): a tick"
        " for which one is false starts nothing.",
    )
    # Kestra's deprecated first-run backfill: accepted so their flows load, with a warning
    # (`headrace trigger backfill` does it on demand).
    backfill: dict[str, Any] | None = Field(
        default=None, description="Kestra's deprecated backfill: ignored, see the warning."
    )

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str, info: ValidationInfo) -> str:
        try:
            cron = croniter_form(value, bool(info.data.get("with_seconds")))
        except CronError as exc:
            raise ValueError(f"invalid cron expression: {exc}") from None
        if not croniter.is_valid(cron):
            raise ValueError(
                f"invalid cron expression {value!r}: use 5 fields (minute hour day month "
                "weekday), 6 with `withSeconds: true` (seconds first), or a macro such as @daily"
            )
        # Valid fields can still name no date at all (30 February): refuse it here, or
        # every scheduler pass would fail on it.
        try:
            CronSchedule(cron).next_after(_CRON_CHECK_FROM)
        except CronError:
            raise ValueError(f"cron expression {value!r} never fires (no such date)") from None
        return value

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (e.g. Europe/Paris, UTC)") from None
        return value

    @property
    def croniter_cron(self) -> str:
        """The cron as croniter reads it (seconds last)."""
        return croniter_form(self.cron, self.with_seconds)


_EXPRESSION_CONDITIONS = frozenset(
    (
        "io.kestra.plugin.core.condition.Expression",
        "io.kestra.plugin.core.condition.ExpressionCondition",
        "io.kestra.core.models.conditions.types.VariableCondition",
    )
)


def _webhook_condition(item: Any) -> Any:
    """A webhook condition as an expression: Kestra's Expression condition is its text."""
    if not isinstance(item, dict):
        return item
    kind = item.get("type")
    if kind in _EXPRESSION_CONDITIONS and set(item) == {"type", "expression"}:
        return item["expression"]
    raise ValueError(
        f"condition type {kind!r} is not supported on a webhook: write the condition as an"
        " expression over `trigger.body`, `trigger.headers` or `trigger.parameters` (or as"
        " io.kestra.plugin.core.condition.Expression with its `expression`)"
    )


# A condition: an expression, or Kestra's Expression condition (read as its expression).
WebhookCondition = Annotated[
    str, BeforeValidator(_webhook_condition, json_schema_input_type=str | dict[str, str])
]


class WebhookTrigger(TriggerProperties):
    """`POST|GET /api/v1/executions/webhook/{namespace}/{flowId}/{key}` starts the flow."""

    # Kestra takes any key; a short one loads with a warning (`headrace.flow.trigger_warnings`).
    key: str = Field(
        min_length=1,
        description="The secret last part of the webhook's URL: 16 characters or more, or a"
        " warning says it can be guessed.",
    )
    conditions: list[WebhookCondition] = Field(
        default_factory=list,
        description="Expressions over `trigger.body`, `trigger.headers`, `trigger.parameters`"
        " (or Kestra's Expression conditions): all must be true, else the request is accepted"
        " and nothing starts.",
    )
    # Kestra's answer options: accepted, with a warning (the URL's `?wait=true` waits).
    wait: bool = Field(default=False, description="Kestra's: see the warning; use `?wait=true`.")
    return_outputs: bool = Field(default=False, description="Kestra's: see the warning.")
    response_content_type: str | None = Field(default=None, description="Kestra's: ignored.")
    response_code: int | str | None = Field(default=None, description="Kestra's: ignored.")

    @field_validator("key")
    @classmethod
    def _not_the_mask(cls, value: str) -> str:
        if value == MASKED_WEBHOOK_KEY:
            raise ValueError(
                f"{MASKED_WEBHOOK_KEY} is how a key is shown to readers, not a key: write the"
                " real key (ask someone with the writer role)"
            )
        return value


class UpstreamFlow(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    namespace: str = Field(description="The upstream flow's namespace.")
    flow_id: str | None = Field(
        default=None, description="The upstream flow's id; none: any flow of the namespace."
    )
    states: list[State] = Field(
        default_factory=lambda: [State.SUCCESS], description="End states that count."
    )
    labels: dict[str, str] = Field(
        default_factory=dict, description="Labels the upstream execution must have."
    )

    @property
    def condition_key(self) -> str:
        """Names this condition in stored window progress: the same text for the same
        condition, whatever its place in the list, so reordering keeps progress and a
        changed condition starts unmet."""
        states = ",".join(sorted(self.states))
        labels = ",".join(f"{k}={v}" for k, v in sorted(self.labels.items()))
        return f"{self.namespace}/{self.flow_id or '*'} [{states}] {{{labels}}}"


DURATION_WINDOW = "DURATION_WINDOW"
SLIDING_WINDOW = "SLIDING_WINDOW"
# Kestra's daily windows (a time range or a deadline on the clock each day): accepted by
# Kestra, refused here with words that say so rather than "unknown value".
_DAILY_WINDOWS = ("DAILY_TIME_DEADLINE", "DAILY_TIME_WINDOW")


class TimeWindow(BaseModel):
    """Within what time all of `preconditions.flows` must be met (Kestra's `timeWindow`).

    DURATION_WINDOW: consecutive windows of `window`, aligned on midnight UTC and shifted
    by `windowAdvance`. SLIDING_WINDOW: the `window` up to the newest upstream end.
    """

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, frozen=True, extra="forbid"
    )

    type: Literal["DURATION_WINDOW", "SLIDING_WINDOW"] = Field(
        default="DURATION_WINDOW",
        description="DURATION_WINDOW: consecutive windows of `window`; SLIDING_WINDOW: the"
        " `window` up to the newest upstream end.",
    )
    window: Duration = Field(  # Kestra's default
        default=timedelta(days=1), description="How long a window lasts, e.g. PT1H or P1D."
    )
    window_advance: Duration | None = Field(
        default=None, description="DURATION_WINDOW: shifts the windows from midnight UTC."
    )
    # DAILY_* windows only; declared so their keys get a "not supported" error, not
    # an "unknown key" one.
    deadline: Any = Field(default=None, description="DAILY_TIME_* windows: not supported yet.")
    start_time: Any = Field(default=None, description="DAILY_TIME_* windows: not supported yet.")
    end_time: Any = Field(default=None, description="DAILY_TIME_* windows: not supported yet.")

    @field_validator("type", mode="before")
    @classmethod
    def _supported_type(cls, value: Any) -> Any:
        if value in _DAILY_WINDOWS:
            raise ValueError(
                f"window type not supported yet (supported: {DURATION_WINDOW}, {SLIDING_WINDOW})"
            )
        return value

    @field_validator("window")
    @classmethod
    def _positive_window(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("a window must last longer than zero, e.g. PT1H or P1D")
        return value

    @field_validator("window_advance")
    @classmethod
    def _advance_only_fixed(cls, value: timedelta | None, info: ValidationInfo) -> Any:
        if value is not None and info.data.get("type") == SLIDING_WINDOW:
            raise ValueError(
                f"windowAdvance only shifts {DURATION_WINDOW} windows: remove it, or use "
                f"type {DURATION_WINDOW}"
            )
        return value

    @field_validator("deadline", "start_time", "end_time")
    @classmethod
    def _daily_only(cls, value: Any, info: ValidationInfo) -> Any:
        name = to_camel(info.field_name or "")
        raise ValueError(
            f"{name} is read by the DAILY_TIME_* window types, which are not supported yet"
        )


class Preconditions(BaseModel):
    """Kestra's `preconditions`: all of `flows` met within one `timeWindow`."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    # Kestra names the condition set with it; accepted so their flows load, while the
    # progress is kept per trigger (namespace, flow, trigger id).
    id: str | None = Field(
        default=None,
        pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_-]*$",
        description="Kestra's name for the condition set: accepted, not needed.",
    )
    flows: list[UpstreamFlow] = Field(
        min_length=1, description="Upstream executions that must all have ended."
    )
    time_window: TimeWindow = Field(
        default_factory=TimeWindow, description="Within what time all must be met."
    )
    reset_on_success: bool = Field(
        default=True,
        description="True: once fired, every condition must be met again in the window."
        " False: each further end that meets a condition in the window fires again.",
    )
    where: Any = Field(  # Kestra's execution filters: refused, see the validator
        default=None, description="Not supported yet: describe the upstream executions in `flows`."
    )

    @field_validator("where")
    @classmethod
    def _no_where(cls, value: Any) -> Any:
        raise ValueError(
            "preconditions.where filters are not supported yet: describe the upstream "
            "executions under `flows` (namespace, flowId, states, labels)"
        )

    def conditions(self) -> dict[str, UpstreamFlow]:
        """The distinct conditions by key, in listed order (a repeated one counts once:
        the same end would meet both, as in Kestra)."""
        distinct: dict[str, UpstreamFlow] = {}
        for flow in self.flows:
            distinct.setdefault(flow.condition_key, flow)
        return distinct


class FlowTrigger(TriggerProperties):
    """Start when upstream flows' executions end in the given states: when the only
    upstream ends, or, with several, once all of them ended within the time window.

    Kestra's older form works too: `conditions` over the upstream execution (and
    `states`), all of which must hold for an end to start the flow.
    """

    preconditions: Preconditions | None = Field(
        default=None, description="Which upstream executions start it."
    )
    conditions: list[ExecutionCondition] = Field(
        default_factory=list,
        description="Kestra's execution conditions (ExecutionFlow, ExecutionNamespace,"
        " ExecutionStatus, ExecutionLabels): all must hold for an upstream end.",
    )
    states: list[State] = Field(
        default_factory=lambda: sorted(TERMINAL_STATES),
        description="Upstream states it reacts to: every end state by default (Kestra's"
        " default); headrace reacts to ends only.",
    )

    @model_validator(mode="after")
    def _names_upstreams(self) -> FlowTrigger:
        # Kestra would start on every execution of every flow: a loop waiting to happen.
        if self.preconditions is None and not self.conditions:
            raise ValueError(
                "a flow trigger needs `preconditions` (the upstream flows) or `conditions`"
                " (e.g. io.kestra.plugin.core.condition.ExecutionFlow): without either it"
                " would start on the end of every execution of every flow"
            )
        return self

    def passes(self, end: EndedExecution) -> bool:
        """True when an upstream end meets `states` and every one of `conditions`."""
        return end.state in self.states and all(c.test(end) for c in self.conditions)


class KafkaBatch(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    max_records: int = Field(
        default=500, ge=1, le=MAX_CONCURRENCY, description="Messages per execution, at most."
    )
    max_duration: Duration = Field(
        default=timedelta(seconds=5),
        description="A batch spans at most this long from its first message.",
    )


# An Avro schema as JSON: a record/enum/... object, a union list, or a type name.
AvroSchema = dict[str, Any] | list[Any] | str
# A bare name (`string`, `com.shop.Order`) needs no JSON quotes in YAML.
_AVRO_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


class KafkaTrigger(TriggerProperties):
    """Start an execution per message (or per batch) of a Kafka topic."""

    topic: str = Field(description="The topic to read.")
    bootstrap_servers: str | None = Field(
        default=None, description="host:port of the brokers; none: headrace's own Kafka."
    )
    group_id: str | None = Field(
        default=None, description="The consumer group; none: one group per trigger."
    )
    value_deserializer: Literal["JSON", "STRING", "AVRO"] = Field(
        default="JSON", description="How message values are read."
    )
    # AVRO only. A user topic has no schema of ours: the flow names the writer schema
    # inline, or where to look it up by the id each message carries, or both (then the
    # registry's schema is the writer's and the inline one the reader's).
    avro_schema: AvroSchema | None = Field(
        default=None, description="AVRO: the writer schema (a mapping, JSON text or a type name)."
    )
    schema_registry_url: str | None = Field(
        default=None, description="AVRO: a Confluent Schema Registry to look schemas up in."
    )
    # How a value is framed: CONFLUENT (magic byte 0, 4-byte schema id, Avro body) or
    # RAW (the Avro body alone). Bytes cannot tell them apart reliably: a raw body may
    # start with 0 too (a null union branch, a zero int), so the flow says which.
    avro_format: Literal["CONFLUENT", "RAW"] = Field(
        default="CONFLUENT",
        description="AVRO: CONFLUENT (a 5-byte header, then Avro) or RAW (Avro alone).",
    )
    batch: KafkaBatch | None = Field(
        default=None, description="One execution per batch; none: one per message."
    )

    @field_validator("avro_schema", mode="before")
    @classmethod
    def _schema_from_text(cls, value: Any) -> Any:
        return avro_schema_from_text(value, "avroSchema")

    @field_validator("avro_schema")
    @classmethod
    def _valid_schema(cls, value: AvroSchema | None, info: ValidationInfo) -> AvroSchema | None:
        if value is None:
            return value
        _only_with_avro("avroSchema", info)
        return checked_avro_schema(value)

    @field_validator("schema_registry_url")
    @classmethod
    def _valid_registry_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return value
        _only_with_avro("schemaRegistryUrl", info)
        url = urlsplit(value)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(
                f"schemaRegistryUrl must be an http(s) URL such as http://registry:8081, "
                f"got {value!r}"
            )
        return value.rstrip("/")

    @field_validator("avro_format")
    @classmethod
    def _valid_format(cls, value: str, info: ValidationInfo) -> str:
        _only_with_avro("avroFormat", info)
        if value == "RAW" and info.data.get("schema_registry_url"):
            raise ValueError(
                "a RAW value carries no schema id to look up in schemaRegistryUrl: "
                "use avroFormat CONFLUENT with a registry, or RAW with avroSchema alone"
            )
        return value

    @model_validator(mode="after")
    def _avro_has_a_schema(self) -> KafkaTrigger:
        if self.value_deserializer == "AVRO" and not (
            self.avro_schema is not None or self.schema_registry_url
        ):
            raise ValueError(
                "valueDeserializer AVRO needs the writer schema, got neither avroSchema "
                "(inline) nor schemaRegistryUrl (Confluent Schema Registry): give one or both"
            )
        return self


def avro_schema_from_text(value: Any, name: str) -> Any:
    """An Avro schema as a flow writes it (a mapping, JSON text, a type name) as JSON data;
    `name`, the property's, is for the error. Also read by the `kafka.*` tasks."""
    if isinstance(value, dict | list | None) or (
        isinstance(value, str) and _AVRO_NAME.fullmatch(value)
    ):
        return value
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a mapping, JSON text or a type name")
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise ValueError(
            f"{name} text is not JSON ({exc}): give the schema as a YAML mapping, "
            "as JSON text, or as a type name such as `string`"
        ) from None


def checked_avro_schema(value: AvroSchema) -> AvroSchema:
    """`value` if fastavro reads it as a schema, else a `ValueError` saying why."""
    try:
        parse_schema(value)
    except KeyError as exc:  # fastavro's word for a missing key, e.g. a fixed's size
        raise ValueError(f"invalid Avro schema, got no key {exc} where one is needed") from None
    except UnknownType as exc:
        raise ValueError(f"invalid Avro schema, got an unknown type {exc.name!r}") from None
    except (SchemaParseException, ValueError, TypeError) as exc:
        raise ValueError(f"invalid Avro schema, got this error from fastavro: {exc}") from None
    return value


def _only_with_avro(name: str, info: ValidationInfo) -> None:
    # Without AVRO the key would be ignored and every message logged as undecodable.
    deserializer = info.data.get("value_deserializer")
    if deserializer is not None and deserializer != "AVRO":
        raise ValueError(
            f"{name} is only read with valueDeserializer AVRO, got valueDeserializer "
            f"{deserializer}: add `valueDeserializer: AVRO` or remove {name}"
        )


TRIGGER_TYPES: dict[str, type[TriggerProperties]] = {
    SCHEDULE: ScheduleTrigger,
    WEBHOOK: WebhookTrigger,
    FLOW: FlowTrigger,
    KAFKA: KafkaTrigger,
}


def canonical_trigger_type(name: str) -> str:
    return TRIGGER_ALIASES.get(name, name)
