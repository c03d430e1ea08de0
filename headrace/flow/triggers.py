"""Trigger types: what may start a flow, declared under its `triggers:`.

Each type has a pydantic model of its properties (the loader validates them with the
same precise errors as task properties) and Kestra's type names as aliases. The services
interpret them: the scheduler runs `schedule`, `flow` and `kafka` triggers, the gateway
serves `webhook` triggers.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from headrace.flow.durations import Duration
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

# Webhook keys are the only secret guarding a webhook URL: short ones can be guessed.
MIN_WEBHOOK_KEY_LENGTH = 16


class TriggerProperties(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, frozen=True, extra="forbid"
    )

    # Inputs of the execution the trigger starts; may hold expressions over `trigger`.
    inputs: dict[str, Any] = Field(default_factory=dict)


class ScheduleTrigger(TriggerProperties):
    """A cron schedule, evaluated in `timezone` (daylight-saving aware)."""

    cron: str
    timezone: str = "UTC"
    # After downtime: start every missed tick (ALL), only the latest (LAST), or none.
    recover_missed_schedules: Literal["ALL", "LAST", "NONE"] = "ALL"

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        if not croniter.is_valid(value):
            raise ValueError(
                f"invalid cron expression {value!r}: use 5 fields (minute hour day month "
                "weekday), an optional 6th for seconds, or a macro such as @daily"
            )
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

    key: str = Field(min_length=MIN_WEBHOOK_KEY_LENGTH)
    # Expressions over `trigger.body`, `trigger.headers`, `trigger.parameters`: all must
    # be true, else the request is accepted and nothing starts.
    conditions: list[str] = Field(default_factory=list)


class UpstreamFlow(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    namespace: str
    flow_id: str | None = None  # None: any flow of the namespace
    states: list[State] = Field(default_factory=lambda: [State.SUCCESS])
    labels: dict[str, str] = Field(default_factory=dict)


class Preconditions(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    flows: list[UpstreamFlow] = Field(min_length=1)


class FlowTrigger(TriggerProperties):
    """Start when an execution of an upstream flow ends in one of the given states."""

    preconditions: Preconditions


class KafkaBatch(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    max_records: int = Field(default=500, ge=1)
    max_duration: Duration = timedelta(seconds=5)


class KafkaTrigger(TriggerProperties):
    """Start an execution per message (or per batch) of a Kafka topic."""

    topic: str
    bootstrap_servers: str | None = None  # None: headrace's own Kafka
    group_id: str | None = None  # None: one group per trigger
    value_deserializer: Literal["JSON", "STRING", "AVRO"] = "JSON"
    batch: KafkaBatch | None = None  # None: one execution per message

    @field_validator("value_deserializer")
    @classmethod
    def _supported_deserializer(cls, value: str) -> str:
        # A user topic has no schema registry here to find an Avro writer schema in.
        if value == "AVRO":
            raise ValueError("AVRO is not supported yet: use JSON or STRING")
        return value


TRIGGER_TYPES: dict[str, type[TriggerProperties]] = {
    SCHEDULE: ScheduleTrigger,
    WEBHOOK: WebhookTrigger,
    FLOW: FlowTrigger,
    KAFKA: KafkaTrigger,
}


def canonical_trigger_type(name: str) -> str:
    return TRIGGER_ALIASES.get(name, name)
