"""Trigger types: what may start a flow, declared under its `triggers:`.

Each type has a pydantic model of its properties (the loader validates them with the
same precise errors as task properties) and Kestra's type names as aliases. The services
interpret them: the scheduler runs `schedule`, `flow` and `kafka` triggers, the gateway
serves `webhook` triggers.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from croniter import croniter
from fastavro.schema import SchemaParseException, UnknownType, parse_schema
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from headrace.flow.cron import CronError, CronSchedule
from headrace.flow.durations import Duration
from headrace.flow.limits import MAX_CONCURRENCY
from headrace.states import State

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

# Webhook keys are the only secret guarding a webhook URL: short ones can be guessed.
MIN_WEBHOOK_KEY_LENGTH = 16


class TriggerProperties(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, frozen=True, extra="forbid"
    )

    inputs: dict[str, Any] = Field(
        default_factory=dict,
        description="Inputs of the executions it starts; may hold expressions over `trigger`.",
    )


class ScheduleTrigger(TriggerProperties):
    """A cron schedule, evaluated in `timezone` (daylight-saving aware)."""

    cron: str = Field(
        description="5 fields (minute hour day month weekday), an optional 6th for seconds,"
        " or a macro such as @daily."
    )
    timezone: str = Field(default="UTC", description="e.g. Europe/Paris.")
    recover_missed_schedules: Literal["ALL", "LAST", "NONE"] = Field(
        default="ALL",
        description="After downtime: start every missed tick (ALL), only the latest (LAST),"
        " or none.",
    )

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        if not croniter.is_valid(value):
            raise ValueError(
                f"invalid cron expression {value!r}: use 5 fields (minute hour day month "
                "weekday), an optional 6th for seconds, or a macro such as @daily"
            )
        # Valid fields can still name no date at all (30 February): refuse it here, or
        # every scheduler pass would fail on it.
        try:
            CronSchedule(value).next_after(_CRON_CHECK_FROM)
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


class WebhookTrigger(TriggerProperties):
    """`POST|GET /api/v1/executions/webhook/{namespace}/{flowId}/{key}` starts the flow."""

    key: str = Field(
        min_length=MIN_WEBHOOK_KEY_LENGTH,
        description="The secret last part of the webhook's URL (16 characters or more).",
    )
    conditions: list[str] = Field(
        default_factory=list,
        description="Expressions over `trigger.body`, `trigger.headers`, `trigger.parameters`:"
        " all must be true, else the request is accepted and nothing starts.",
    )


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
    upstream ends, or, with several, once all of them ended within the time window."""

    preconditions: Preconditions = Field(description="Which upstream executions start it.")


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
