"""The schemas of the OpenAPI document's components (headrace/openapi.py): what the
gateway's JSON bodies hold.

Each says the fields an answer always has (`required`) and those it may have; others may
come (an answer grows compatibly), so `additionalProperties` stays open. Enumerations
are the code's own (states, log levels, namespace entry kinds, bulk actions).
"""

from __future__ import annotations

from typing import Any

from headrace.messages import LogLevel
from headrace.services.gateway import namespace_files_api
from headrace.services.gateway.flows_bulk import CREATED, DELETED, UNCHANGED, UPDATED
from headrace.states import State

Json = dict[str, Any]


def ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(type_: str, **more: Any) -> Json:
    return {"type": [type_, "null"], **more}


def object_schema(required: list[str], properties: Json, **more: Any) -> Json:
    """An object with these properties; others may come (an answer grows compatibly)."""
    return {"type": "object", "required": required, "properties": properties, **more}


DATE = {"type": "string", "format": "date-time"}
ANY: Json = {}
STRING = {"type": "string"}
INTEGER = {"type": "integer"}
BOOLEAN = {"type": "boolean"}
STATE = {"type": "string", "enum": [str(s) for s in State]}
BULK_ACTIONS = (CREATED, UPDATED, UNCHANGED, DELETED)

# --------------------------------------------------------------------------- the web UI's

_COUNTS = {
    "type": "object",
    "additionalProperties": {**INTEGER, "minimum": 1},
    "propertyNames": STATE,
    "description": "Executions by their current state (states with none are left out).",
}
_COUNT = {**INTEGER, "minimum": 0}
UI_SCHEMAS: Json = {
    "Stats": object_schema(
        ["from", "to", "bucketSeconds", "buckets", "states", "failuresByFlow", "now", "workers"],
        {
            "from": {**DATE, "description": "The first bucket's start."},
            "to": {**DATE, "description": "Now: the last bucket holds it."},
            "bucketSeconds": {**INTEGER, "minimum": 1},
            "buckets": {
                "type": "array",
                "items": object_schema(["start", "counts"], {"start": DATE, "counts": _COUNTS}),
                "description": "Every bucket of the window, oldest first: the executions "
                "created in it, by current state.",
            },
            "states": _COUNTS,
            "failuresByFlow": {
                "type": "array",
                "items": object_schema(
                    ["namespace", "flowId", "failed", "total"],
                    {
                        "namespace": STRING,
                        "flowId": STRING,
                        "failed": {**INTEGER, "minimum": 1},
                        "total": {**INTEGER, "minimum": 1},
                    },
                ),
                "description": "The flows with FAILED executions created in the window, most "
                "failures first (at most 10), with all their executions of the window.",
            },
            "now": object_schema(
                ["running", "queued", "paused", "taskRunsRunning"],
                {
                    "running": {**_COUNT, "description": "RUNNING, RETRYING and KILLING."},
                    "queued": {**_COUNT, "description": "CREATED and QUEUED."},
                    "paused": _COUNT,
                    "taskRunsRunning": _COUNT,
                },
                description="Executions by state now, whenever they were created.",
            ),
            "workers": object_schema(
                ["configured", "services"],
                {
                    "configured": {
                        **BOOLEAN,
                        "description": "Whether HEADRACE_METRICS_TARGETS names any service.",
                    },
                    "services": {"type": "array", "items": ref("ServiceMetrics")},
                },
            ),
        },
        description="The dashboard: executions over the window, failing flows, what runs "
        "now, and the services' activity from their metrics.",
    ),
    "ServiceMetrics": object_schema(
        ["url", "service", "up", "error", "version", "slots", "slotsInUse", "attemptsDone"],
        {
            "url": STRING,
            "service": {**nullable("string"), "description": "From `headrace_info`."},
            "up": {**BOOLEAN, "description": "Its metrics were read."},
            "error": {**nullable("string"), "description": "Why they could not be read."},
            "version": nullable("string"),
            "slots": {**nullable("integer"), "description": "A worker's task slots."},
            "slotsInUse": nullable("integer"),
            "attemptsDone": {
                **nullable("integer"),
                "description": "Task attempts the worker ran since it started.",
            },
        },
        description="One HEADRACE_METRICS_TARGETS URL and what its metrics say (worker "
        "figures are null for other services).",
    ),
    "Blueprint": object_schema(
        [
            "id",
            "title",
            "description",
            "namespace",
            "flowId",
            "taskTypes",
            "triggerTypes",
            "inputs",
            "source",
        ],
        {
            "id": {**STRING, "description": "The example file's name, without `.yaml`."},
            "title": {**STRING, "description": "The description's first sentence, or the id."},
            "description": STRING,
            "namespace": {**STRING, "description": "The example's own (`examples`)."},
            "flowId": STRING,
            "taskTypes": {"type": "array", "items": STRING, "description": "Nested ones too."},
            "triggerTypes": {"type": "array", "items": STRING},
            "inputs": {**INTEGER, "minimum": 0, "description": "How many inputs it takes."},
            "source": {**STRING, "description": "The YAML."},
        },
        description="An example flow shipped with headrace (its `examples/` folder).",
    ),
    "BlueprintPage": object_schema(
        ["results", "total"],
        {"results": {"type": "array", "items": ref("Blueprint")}, "total": INTEGER},
    ),
    "NamespacePage": object_schema(
        ["results", "total"],
        {
            "results": {
                "type": "array",
                "items": object_schema(
                    ["namespace", "flows"],
                    {"namespace": STRING, "flows": {**INTEGER, "minimum": 1}},
                ),
                "description": "By name; each with the number of its own flows (not those "
                "of the namespaces below it).",
            },
            "total": INTEGER,
        },
    ),
    "Me": object_schema(
        ["name", "role", "scheme"],
        {
            "name": {**STRING, "description": "The token's or the user's name."},
            "role": {"type": "string", "enum": ["reader", "writer"]},
            "scheme": {"type": "string", "enum": ["bearer", "basic"]},
        },
        description="Who the credentials of the request are, and what they may do.",
    ),
    "BlueprintCopy": object_schema(
        ["namespace"],
        {
            "namespace": {**STRING, "description": "Where the copy goes.", "example": "team.data"},
            "id": {**STRING, "description": "The copy's flow id (default: the example's)."},
        },
    ),
}

# --------------------------------------------------------------------------- Kestra's

# The answers of the Kestra-compatible routes (services/gateway/kestra_api.py), in the
# shapes of Kestra's API: what its clients (kestrapy) read.
_KESTRA_LABELS = {
    "type": "array",
    "items": object_schema(["key", "value"], {"key": STRING, "value": STRING}),
    "description": "Kestra's labels: a list of `{key, value}`.",
}
KESTRA_SCHEMAS: Json = {
    "KestraState": object_schema(
        ["current", "histories"],
        {
            "current": STATE,
            "histories": {
                "type": "array",
                "items": object_schema(["state", "date"], {"state": STATE, "date": DATE}),
            },
            "startDate": nullable("string", format="date-time"),
            "endDate": nullable("string", format="date-time"),
            "duration": {**STRING, "description": "ISO 8601, as Java writes it: `PT1.5S`."},
        },
    ),
    "KestraTaskRun": object_schema(
        ["id", "executionId", "namespace", "flowId", "taskId", "state"],
        {
            "id": STRING,
            "executionId": STRING,
            "namespace": STRING,
            "flowId": STRING,
            "taskId": STRING,
            "parentTaskRunId": nullable("string"),
            "value": ANY,
            "state": ref("KestraState"),
            "attempts": {
                "type": "array",
                "items": object_schema(["state"], {"state": ref("KestraState")}),
            },
            "outputs": ANY,
        },
    ),
    "KestraExecution": object_schema(
        [
            "id",
            "namespace",
            "flowId",
            "flowRevision",
            "state",
            "labels",
            "inputs",
            "outputs",
            "originalId",
            "deleted",
            "metadata",
        ],
        {
            "id": STRING,
            "tenantId": STRING,
            "namespace": STRING,
            "flowId": STRING,
            "flowRevision": INTEGER,
            "state": ref("KestraState"),
            "labels": _KESTRA_LABELS,
            "inputs": {"type": "object"},
            "outputs": {"type": "object"},
            "originalId": STRING,
            "deleted": BOOLEAN,
            "metadata": object_schema(
                ["originalCreatedDate"],
                {"attemptNumber": INTEGER, "originalCreatedDate": nullable("string")},
            ),
            "trigger": {
                "oneOf": [
                    {"type": "null"},
                    object_schema(
                        ["id", "type"],
                        {"id": STRING, "type": STRING, "variables": {"type": "object"}},
                    ),
                ],
                "description": "What started it; null for a start through the API.",
            },
            "taskRunList": {"type": "array", "items": ref("KestraTaskRun")},
        },
        description="An execution in the shape of Kestra's `Execution`; headrace's own "
        "fields (`createdAt`, `stuck`…) come too. `taskRunList` in the answers about one "
        "execution, not in searches.",
    ),
    "KestraExecutionPage": object_schema(
        ["results", "total"],
        {"results": {"type": "array", "items": ref("KestraExecution")}, "total": INTEGER},
        description="Kestra's `PagedResults` of executions.",
    ),
    "KestraFlow": object_schema(
        ["id", "namespace", "revision", "labels", "disabled", "deleted"],
        {
            "id": STRING,
            "namespace": STRING,
            "revision": {**INTEGER, "minimum": 1},
            "labels": _KESTRA_LABELS,
            "disabled": BOOLEAN,
            "deleted": BOOLEAN,
            "updated": DATE,
            "tasks": {"type": "array", "items": {"type": "object"}},
            "source": {**STRING, "description": "The YAML: `FlowWithSource` only."},
        },
        description="A flow's revision in the shape of Kestra's `Flow` (with `source`: "
        "`FlowWithSource`), its definition's fields as headrace parsed them.",
    ),
    "KestraFlowPage": object_schema(
        ["results", "total"],
        {"results": {"type": "array", "items": ref("KestraFlow")}, "total": INTEGER},
        description="Kestra's `PagedResults` of flows.",
    ),
}

# --------------------------------------------------------------------------- schemas

SCHEMAS: Json = {
    "Error": object_schema(
        ["message"],
        {
            "message": {**STRING, "description": "What went wrong, for a person."},
            "errors": {
                "type": "array",
                "description": "Details: one per invalid field, input or flow line.",
            },
            "request_id": {
                **STRING,
                "description": "On a 500: the id the gateway logged the failure under.",
            },
        },
        description="Every error answer. Some add fields (a command's `outcome`, a "
        "timed-out start's `id`).",
    ),
    "FlowError": object_schema(
        ["path", "message"],
        {
            "path": STRING,
            "line": nullable("integer"),
            "column": nullable("integer"),
            "message": STRING,
            "hint": nullable("string"),
        },
        description="One problem of a flow: where (field path, line, column) and why.",
    ),
    "FlowErrors": {
        "allOf": [
            ref("Error"),
            object_schema([], {"errors": {"type": "array", "items": ref("FlowError")}}),
        ]
    },
    "FlowSource": object_schema(
        ["id", "namespace", "tasks"],
        {
            "id": STRING,
            "namespace": STRING,
            "tasks": {"type": "array", "items": {"type": "object"}},
        },
        description="A flow, as YAML. This is its outline: the whole language is the "
        "JSON Schema at `GET /api/v1/flows/schema` (docs/flows.md).",
        example={
            "id": "hello",
            "namespace": "examples",
            "inputs": [{"id": "name", "type": "STRING", "defaults": "world"}],
            "tasks": [{"id": "greet", "type": "log", "message": "Hello, {{ inputs.name }}!"}],
        },
    ),
    "Flow": object_schema(
        ["namespace", "id", "revision", "source", "createdAt"],
        {
            "namespace": STRING,
            "id": STRING,
            "revision": {**INTEGER, "minimum": 1},
            "source": {**STRING, "description": "The YAML as it was saved."},
            "createdAt": DATE,
        },
        description="A flow revision: its source and, when it still loads, the fields of "
        "its definition (tasks, inputs, triggers…). Readers see webhook keys masked.",
    ),
    "FlowSummary": object_schema(
        ["namespace", "id", "revision", "source", "createdAt"],
        {
            "namespace": STRING,
            "id": STRING,
            "revision": {**INTEGER, "minimum": 1},
            "source": STRING,
            "createdAt": DATE,
        },
    ),
    "FlowPage": object_schema(
        ["results", "total", "page", "size"],
        {
            "results": {"type": "array", "items": ref("FlowSummary")},
            "total": INTEGER,
            "page": INTEGER,
            "size": INTEGER,
        },
    ),
    "FlowRevisionEntry": object_schema(
        ["namespace", "id", "revision", "createdAt", "deleted"],
        {
            "namespace": STRING,
            "id": STRING,
            "revision": {**INTEGER, "minimum": 1},
            "createdAt": DATE,
            "deleted": {**BOOLEAN, "description": "This revision is the flow's deletion."},
        },
    ),
    "FlowDiff": object_schema(
        ["namespace", "id", "from", "to", "diff"],
        {
            "namespace": STRING,
            "id": STRING,
            "from": INTEGER,
            "to": INTEGER,
            "diff": {**STRING, "description": "Unified diff of the sources; empty if equal."},
        },
    ),
    "FlowBundle": object_schema(
        ["flows"],
        {
            "flows": {
                "type": "array",
                "items": object_schema(
                    ["source"],
                    {
                        "name": {**STRING, "description": "What errors point at: a file name."},
                        "source": {**STRING, "description": "The flow's YAML."},
                    },
                ),
            }
        },
    ),
    "BulkResult": object_schema(
        ["dryRun", "flows", "summary"],
        {
            "dryRun": BOOLEAN,
            "flows": {
                "type": "array",
                "items": object_schema(
                    ["namespace", "id", "action"],
                    {
                        "namespace": STRING,
                        "id": STRING,
                        "action": {"type": "string", "enum": list(BULK_ACTIONS)},
                        "file": STRING,
                        "fromRevision": nullable("integer"),
                        "revision": nullable("integer"),
                        "diff": {**STRING, "description": "For an update: unified diff."},
                    },
                ),
            },
            "summary": object_schema(
                list(BULK_ACTIONS), {action: INTEGER for action in BULK_ACTIONS}
            ),
        },
    ),
    "FlowValidation": object_schema(
        ["valid", "errors", "warnings"],
        {
            "valid": BOOLEAN,
            "errors": {"type": "array", "items": ref("FlowError")},
            "warnings": {
                "type": "array",
                "items": ref("FlowError"),
                "description": "A valid flow's warnings: what it asks for that headrace "
                "accepts but does differently (Kestra's keys it ignores...), each with its "
                "place. Empty when the flow is invalid.",
            },
            "namespace": STRING,
            "id": STRING,
        },
    ),
    "State": object_schema(
        ["current"],
        {
            "current": STATE,
            "histories": {
                "type": "array",
                "items": object_schema(["state", "date"], {"state": STATE, "date": DATE}),
            },
            "startDate": nullable("string", format="date-time"),
            "endDate": nullable("string", format="date-time"),
        },
    ),
    "TaskRun": object_schema(
        ["id", "taskId", "state"],
        {
            "id": STRING,
            "taskId": STRING,
            "parentTaskRunId": nullable("string"),
            "value": {"description": "A for-each item's value, else null."},
            "state": ref("State"),
            "attempts": nullable("array"),
            "outputs": ANY,
        },
    ),
    "Execution": object_schema(
        ["id", "namespace", "flowId", "flowRevision", "state"],
        {
            "id": STRING,
            "namespace": STRING,
            "flowId": STRING,
            "flowRevision": INTEGER,
            "labels": ANY,
            "inputs": ANY,
            "outputs": ANY,
            "trigger": ANY,
            "state": ref("State"),
            "createdAt": DATE,
            "updatedAt": DATE,
            "stuck": object_schema(["reason"], {"reason": STRING, "checkedAt": nullable("string")}),
            "taskRunList": {"type": "array", "items": ref("TaskRun")},
        },
        description="An execution as the index holds it; `taskRunList` in the answers "
        "about one execution, not in listings.",
    ),
    "ExecutionStarted": object_schema(
        ["id", "namespace", "flowId", "flowRevision", "state"],
        {
            "id": STRING,
            "namespace": STRING,
            "flowId": STRING,
            "flowRevision": INTEGER,
            "inputs": ANY,
            "labels": ANY,
            "trigger": ANY,
            "state": object_schema(["current"], {"current": {"const": str(State.CREATED)}}),
        },
        description="A start on the `triggers` topic: the executor takes it from there.",
    ),
    "ExecutionPage": object_schema(
        ["results", "total", "page", "size"],
        {
            "results": {"type": "array", "items": ref("Execution")},
            "total": INTEGER,
            "page": INTEGER,
            "size": INTEGER,
        },
    ),
    "CommandAnswer": object_schema(
        ["id", "command", "commandId", "outcome"],
        {
            "id": STRING,
            "command": STRING,
            "commandId": STRING,
            "outcome": {"type": "string", "enum": ["APPLIED", "PENDING"]},
            "state": STRING,
            "message": STRING,
        },
        description="What the executor did with the command: APPLIED (with the state it "
        "left), or PENDING when it did not answer in time (it applies it when it gets to it).",
    ),
    "Replay": object_schema(["id", "replayOf"], {"id": STRING, "replayOf": STRING}),
    "FileMetas": object_schema(
        ["uri", "name", "size"], {"uri": STRING, "name": STRING, "size": INTEGER}
    ),
    "LogLine": object_schema(
        ["executionId", "timestamp", "level", "message"],
        {
            "id": STRING,
            "executionId": STRING,
            "namespace": nullable("string"),
            "flowId": nullable("string"),
            "taskRunId": nullable("string"),
            "taskId": nullable("string"),
            "attempt": nullable("integer"),
            "timestamp": DATE,
            "level": {"type": "string", "enum": [str(level) for level in LogLevel]},
            "message": STRING,
        },
    ),
    "Trigger": object_schema(
        ["namespace", "flowId", "triggerId", "type", "disabled"],
        {
            "namespace": STRING,
            "flowId": STRING,
            "triggerId": STRING,
            "type": {**STRING, "description": "schedule, webhook, flow or kafka"},
            "disabled": {**BOOLEAN, "description": "In the flow, or by the runtime switch."},
            "disabledInFlow": BOOLEAN,
            "runtimeDisabled": BOOLEAN,
            "lastTick": nullable("string", format="date-time"),
            "lastExecutionId": nullable("string"),
            "lastError": nullable("string"),
            "lastFiredAt": nullable("string", format="date-time"),
            "lastFiredExecutionId": nullable("string"),
            "updatedAt": nullable("string", format="date-time"),
            "stopAfter": {
                "type": "array",
                "items": STRING,
                "description": "End states that switch the trigger off (Kestra's stopAfter).",
            },
            "stoppedAfter": {
                "type": ["object", "null"],
                "description": "Set while stopAfter keeps the trigger switched off.",
                "properties": {
                    "state": STRING,
                    "executionId": STRING,
                    "at": {**STRING, "format": "date-time"},
                },
            },
            "cron": STRING,
            "withSeconds": BOOLEAN,
            "timezone": STRING,
            "nextTick": nullable("string", format="date-time"),
        },
    ),
    "TriggerPage": object_schema(
        ["results", "total"],
        {"results": {"type": "array", "items": ref("Trigger")}, "total": INTEGER},
    ),
    "TriggerSwitch": object_schema(["disabled"], {"disabled": BOOLEAN}, example={"disabled": True}),
    "BackfillRange": object_schema(
        ["start", "end"],
        {
            "start": {
                **STRING,
                "description": "ISO 8601 date-time, included; without an offset it is read "
                "on the trigger's time zone.",
            },
            "end": {**STRING, "description": "ISO 8601 date-time, excluded; not in the future."},
        },
        example={"start": "2024-03-01T00:00:00Z", "end": "2024-03-08T00:00:00Z"},
    ),
    "Backfill": object_schema(
        ["namespace", "flowId", "triggerId", "count", "executionIds"],
        {
            "namespace": STRING,
            "flowId": STRING,
            "triggerId": STRING,
            "count": INTEGER,
            "executionIds": {"type": "array", "items": STRING},
        },
    ),
    "Plugin": object_schema(
        ["type", "kind"],
        {
            "type": STRING,
            "kind": STRING,
            "aliases": {"type": "array", "items": STRING},
            "summary": STRING,
            "description": STRING,
            "properties": {"description": "The JSON Schema of the type's properties."},
            "outputs": {"description": "The JSON Schema of its outputs, if it declares them."},
        },
    ),
    "NamespaceEntry": object_schema(
        ["fileName", "type", "size", "lastModifiedTime"],
        {
            "fileName": {
                **STRING,
                "description": "The entry's name; with `recursive`, its path below the folder.",
            },
            "type": {"type": "string", "enum": sorted(namespace_files_api.KINDS.values())},
            "size": INTEGER,
            "lastModifiedTime": {**INTEGER, "description": "Epoch milliseconds."},
            "sha256": {**STRING, "description": "With `sha256=true`, for files."},
        },
    ),
    "NamespaceDeletion": object_schema(
        ["path", "type", "deletedFiles"],
        {
            "path": STRING,
            "type": {"type": "string", "enum": sorted(namespace_files_api.KINDS.values())},
            "deletedFiles": INTEGER,
        },
    ),
    "WebhookNotExecuted": object_schema(
        ["executed", "reason"], {"executed": {"const": False}, "reason": STRING}
    ),
    "Health": object_schema(
        ["status"],
        {
            "status": {"type": "string", "enum": ["ok", "unavailable"]},
            "problems": {"type": "array", "items": STRING},
        },
    ),
    "Readiness": object_schema(
        ["status"],
        {
            "status": {"type": "string", "enum": ["ready", "unavailable"]},
            "problems": {
                "type": "object",
                "additionalProperties": STRING,
                "description": "What is not ready, by check (`kafka`, `postgresql`).",
            },
        },
    ),
    "Index": object_schema(
        ["name", "version", "api", "endpoints"],
        {
            "name": STRING,
            "version": STRING,
            "api": STRING,
            "endpoints": {"type": "array", "items": STRING},
        },
    ),
    **UI_SCHEMAS,
    "ServerSentEvent": object_schema(
        ["event", "data"],
        {
            "event": STRING,
            "data": {**STRING, "description": "The event's JSON value."},
            "id": {**STRING, "description": "Send it back as `Last-Event-ID` to resume."},
        },
        description="One event of a live stream (docs/streams.md).",
    ),
    **KESTRA_SCHEMAS,
}
