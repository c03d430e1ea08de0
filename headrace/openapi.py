"""The OpenAPI 3.1 document of the gateway's HTTP API, served at `GET /api/v1/openapi.json`.

Built from `OPERATIONS`, one entry per route the gateway registers (method and aiohttp
path pattern, as `app.router` spells it): tests/integration/test_openapi.py fails when
the two differ, naming the routes missing on either side, and when an operation has no
method in the Python client (`headrace.api.ApiOperations`, the snake_case of its
`operationId`). Limits come from the handlers' own constants, enumerations from the
code's enums, so neither can drift from what the gateway does. The schemas of the
bodies are in headrace/openapi_schemas.py.

Choices:

- OpenAPI 3.1: its schemas are JSON Schema 2020-12 (`type: [string, "null"]`), which
  schemathesis and openapi-spec-validator read, and Swagger UI shows.
- Paths are written whole (`/api/v1/flows`, `/healthz`), under the server `/`: the API
  and the probes share one origin, and the paths read as the router's, so comparing
  them needs no rewriting.
- Security: `bearerAuth` (a token) or `basicAuth` (a user of the credentials file) on
  every operation but webhooks (their URL key is their credential), the probes and this
  document (docs/security.md). `x-headrace-role` says which role an operation needs.
- Flow bodies are YAML; their schema here is a minimal object (`id`, `namespace`,
  `tasks`): the full language is the JSON Schema at `GET /api/v1/flows/schema`, 150 KiB
  that depends on the connectors installed, and it stays there.
- Live streams are `text/event-stream`: their schema describes one event (`event`,
  `data`, `id`), as OpenAPI 3.2's `itemSchema` does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from typing import Literal

import orjson

from headrace import __version__
from headrace.db.stats import MAX_HOURS
from headrace.messages import LogLevel
from headrace.openapi_schemas import (
    ANY,
    BOOLEAN,
    DATE,
    SCHEMAS,
    STATE,
    STRING,
    Json,
    object_schema,
    ref,
)
from headrace.services.gateway import (
    executions_api,
    flows_api,
    kestra_api,
    kestra_filters,
    kestra_shapes,
    logs_api,
    namespace_files_api,
    stats_api,
    triggers_api,
    ui,
)
from headrace.services.gateway.app import API_PREFIX as API
from headrace.services.gateway.bodies import MAX_PAGE, YAML_TYPES
from headrace.services.gateway.openapi_api import ROUTE

OPENAPI_VERSION = "3.1.0"
PATH = API + ROUTE

Role = Literal["public", "reader", "writer"]


# --------------------------------------------------------------------------- parameters


def _path_param(name: str, description: str) -> Json:
    # aiohttp's `{name}` takes one non-empty segment.
    schema = {"type": "string", "minLength": 1}
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema,
    }


def _query(name: str, schema: Json, description: str, *, required: bool = False) -> Json:
    param = {"name": name, "in": "query", "description": description, "schema": schema}
    if required:
        param["required"] = True
    return param


NAMESPACE = _path_param("namespace", "A namespace, e.g. `company.team`.")
FLOW_ID = _path_param("flowId", "A flow's id.")
FLOW_ID_AS_ID = _path_param("id", "A flow's id.")
EXECUTION_ID = _path_param("id", "An execution's id.")
EXECUTION_ID_LONG = _path_param("executionId", "An execution's id.")
TRIGGER_ID = _path_param("triggerId", "A trigger's id in its flow.")


def _page(default_size: int, max_size: int) -> list[Json]:
    return [
        _query(
            "page",
            {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 1},
            "Page, from 1.",
        ),
        _query(
            "size",
            {"type": "integer", "minimum": 1, "maximum": max_size, "default": default_size},
            "Items per page.",
        ),
    ]


_WAIT = [
    _query("wait", BOOLEAN, "Answer once the execution ended (200), not at once (202)."),
    _query(
        "timeout",
        {"type": "string", "default": str(int(executions_api.DEFAULT_WAIT_S))},
        "With `wait`: how long to wait, in seconds (`2.5`) or ISO 8601 (`PT5M`), at most "
        f"{int(executions_api.MAX_WAIT_S)} s; past it the answer is 504 with the execution's id.",
    ),
]
_LOG_FILTERS = [
    _query(
        "minLevel",
        {"type": "string", "enum": [str(level) for level in LogLevel]},
        "Lines at this level or above (any case).",
    ),
    _query("taskId", STRING, "Only the lines of this task."),
    _query("taskRunId", STRING, "Only the lines of this task run."),
    _query(
        "attempt",
        {"type": "integer", "minimum": 1, "maximum": 1_000_000},
        "Only the lines of this attempt (from 1).",
    ),
    _query("startDate", DATE, "Lines at or after this time (ISO 8601; no offset: UTC)."),
    _query("endDate", DATE, "Lines before this time."),
]
_RESUME = [
    _query(
        "lastEventId",
        {"type": "integer", "minimum": 0},
        "Resume after this event id (as the `Last-Event-ID` header).",
    ),
    {
        "name": "Last-Event-ID",
        "in": "header",
        "description": "Resume after this event id (what browsers' EventSource send).",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    },
]
_FILE_URI = _query(
    "path",
    {"type": "string", "minLength": 1},
    "The file's URI, `headrace:///…`, as a task's outputs give it.",
    required=True,
)
_NS_PATH = _query(
    "path",
    {"type": "string", "minLength": 1},
    "A file's path below the namespace's root (`sql/report.sql`); to delete, a folder's too.",
    required=True,
)

# --------------------------------------------------------------------------- bodies


# Every YAML type the gateway reads, the usual one first.
_YAML_MEDIA_TYPES = sorted(YAML_TYPES, key=lambda media_type: media_type != "application/x-yaml")


def _yaml_body(description: str) -> Json:
    return {
        "required": True,
        "description": description,
        "content": {media_type: {"schema": ref("FlowSource")} for media_type in _YAML_MEDIA_TYPES},
    }


_INPUTS_BODY = {
    "description": "Inputs by id: a JSON object, or form fields (a file field's UTF-8 "
    "text is the value). No body: no inputs.",
    "content": {
        "application/json": {"schema": {"type": "object"}, "example": {"name": "headrace"}},
        "application/x-www-form-urlencoded": {
            "schema": {"type": "object", "additionalProperties": STRING}
        },
        "multipart/form-data": {"schema": {"type": "object", "additionalProperties": STRING}},
    },
}


def _json_body(schema: str) -> Json:
    return {"required": True, "content": {"application/json": {"schema": ref(schema)}}}


# --------------------------------------------------------------------------- answers


def _json(schema: Json | str, description: str) -> Json:
    schema = ref(schema) if isinstance(schema, str) else schema
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str, schema: str = "Error") -> Json:
    return _json(schema, description)


_STREAM = {
    "text/event-stream": {
        "schema": ref("ServerSentEvent"),
        # No content length: the stream ends with its `end` event.
    }
}
_OCTETS = {
    "application/octet-stream": {
        "schema": {"type": "string", "contentMediaType": "application/octet-stream"}
    }
}
_HTML = {"text/html": {"schema": STRING}}
# What the UI's static folder holds (services/gateway/ui.py sets each file's type).
_UI_FILES = {
    media_type: {"schema": STRING}
    for media_type in (
        "text/javascript",
        "text/css",
        "application/json",
        "text/html",
        "image/svg+xml",
        "application/octet-stream",
    )
}
_BLUEPRINT_ID = _path_param("id", "A blueprint's id: its example file's name (`hello`).")
_NOT_FOUND_FLOW = "No such flow."
_NO_STORAGE = "This gateway has no file storage (HEADRACE_STORAGE_DIR)."
_WAITED = "With `wait`: the execution, ended."
_TIMED_OUT = "With `wait`: it did not end in time; the body has its `id`."
_REFUSED_START = {
    409: "The flow is disabled.",
    413: "The start would be over the size the `triggers` topic takes (body, headers and inputs).",
    422: "Invalid inputs (`errors`, one per input), or a stored flow that no longer validates.",
}


# --------------------------------------------------------------------------- operations


@dataclass(frozen=True, slots=True)
class Operation:
    """One route: method and aiohttp path pattern, what it does, takes and answers.

    `responses` lists the answers particular to it; every operation also documents 400
    (a NUL in the URL, a bad parameter), 500, and, unless public, 401 and 403.
    """

    method: str
    path: str
    operation_id: str  # the client's method is its snake_case (`getFlow` -> `get_flow`)
    tag: str
    summary: str
    role: Role
    responses: dict[int, Json]
    description: str = ""
    parameters: list[Json] = field(default_factory=list)
    body: Json | None = None
    # A Kestra-compatible alias (services/gateway/kestra_api.py): Kestra's path and answer
    # shape, for Kestra's clients; headrace's typed client keeps to headrace's routes.
    kestra: bool = False
    # The web UI's page and files (services/gateway/ui.py), for browsers: the typed
    # client has no method for them.
    ui: bool = False

    @property
    def client_method(self) -> str:
        return re.sub(r"(?<!^)(?=[A-Z])", "_", self.operation_id).lower()


F = f"{API}/flows"
E = f"{API}/executions"
WEBHOOK = f"{API}/executions/webhook/{{namespace}}/{{flowId}}/{{key}}"
TRIGGER = f"{API}/triggers/{{namespace}}/{{flowId}}/{{triggerId}}"
NS_FILES = f"{API}/namespaces/{{namespace}}/files"
_WEBHOOK_PARAMS = [
    NAMESPACE,
    FLOW_ID,
    _path_param("key", "The webhook trigger's key: the URL's secret."),
    *_WAIT,
]
_WEBHOOK_ANSWERS: dict[int, Json] = {
    200: _json(
        {"oneOf": [ref("WebhookNotExecuted"), ref("Execution")]},
        "The trigger's conditions are not met (nothing started), or, with `wait`, the "
        "execution, ended.",
    ),
    202: _json("ExecutionStarted", "Started."),
    404: _error("No enabled webhook trigger with this key (the same answer whatever is wrong)."),
    **{status: _error(text) for status, text in _REFUSED_START.items()},
    503: _error("The broker did not take the start."),
    504: _error(_TIMED_OUT),
}
_COMMAND_ANSWERS: dict[int, Json] = {
    202: _json("CommandAnswer", "Applied, or sent and not answered yet."),
    404: _error("No such execution."),
    409: _error("Its state does not allow it, or the executor holds no state for it."),
    503: _error("The broker did not take the command."),
}

OPERATIONS: tuple[Operation, ...] = (
    # ------------------------------------------------------------------ flows
    Operation(
        "GET",
        F,
        "listFlows",
        "flows",
        "List flows (latest revision of each)",
        "reader",
        {200: _json("FlowPage", "A page of flows, by namespace and id.")},
        parameters=[
            _query("namespace", STRING, "Only this namespace."),
            *_page(flows_api.DEFAULT_FLOW_PAGE_SIZE, flows_api.MAX_FLOW_PAGE_SIZE),
        ],
    ),
    Operation(
        "POST",
        F,
        "createFlow",
        "flows",
        "Create a flow",
        "writer",
        {
            201: _json("Flow", "Created: its first revision."),
            409: _error("A flow with this namespace and id exists."),
            413: _error("The body is too large."),
            415: _error("The body is not YAML."),
            422: _error("The flow is invalid: `errors` says where and why.", "FlowErrors"),
            503: _error("The `flows` topic did not take or give back the change in time."),
        },
        body=_yaml_body("The flow's YAML."),
    ),
    Operation(
        "POST",
        f"{F}/validate",
        "validateFlow",
        "flows",
        "Validate a flow, store nothing",
        "reader",
        {
            200: _json("FlowValidation", "Whether it is valid, and every error."),
            413: _error("The body is too large."),
            415: _error("The body is not YAML."),
        },
        body=_yaml_body("The flow's YAML."),
    ),
    Operation(
        "POST",
        f"{F}/bulk",
        "applyFlows",
        "flows",
        "Apply many flows at once, all or nothing",
        "writer",
        {
            200: _json("BulkResult", "What each flow became (or would, with `dryRun`)."),
            413: _error("Too many flows, or too large a body or change set."),
            415: _error("The body is neither JSON nor YAML."),
            422: _error(
                "A flow is invalid, duplicated or outside `namespace`: nothing was applied "
                "(`errors` name the `file` of each).",
                "FlowErrors",
            ),
            503: _error("The `flows` topic did not take or give back the change in time."),
        },
        description="Every flow is validated first; then all the changes go to the `flows` "
        "topic as one record: all applied or none (docs/gitops.md).",
        parameters=[
            _query("dryRun", BOOLEAN, "Answer the plan, change nothing."),
            _query(
                "delete",
                BOOLEAN,
                "Also delete the flows of the namespaces concerned that the request lacks.",
            ),
            _query(
                "namespace",
                {"type": "array", "items": STRING},
                "The namespaces concerned (repeat it); default: the flows'.",
            ),
        ],
        body={
            "required": True,
            "content": {
                "application/json": {"schema": ref("FlowBundle")},
                **{
                    media_type: {
                        "schema": {
                            **STRING,
                            "description": "YAML documents separated by `---` lines.",
                        }
                    }
                    for media_type in _YAML_MEDIA_TYPES
                },
            },
        },
    ),
    Operation(
        "GET",
        f"{F}/schema",
        "getFlowSchema",
        "flows",
        "The JSON Schema of flows, for editors",
        "reader",
        {
            200: {
                "description": "JSON Schema (draft-07) for the task types installed "
                "here (docs/editors.md).",
                "content": {"application/schema+json": {"schema": {"type": "object"}}},
            }
        },
    ),
    Operation(
        "GET",
        F + "/{namespace}/{id}",
        "getFlow",
        "flows",
        "Get a flow",
        "reader",
        {
            200: _json("Flow", "The revision asked for, else the latest."),
            404: _error(_NOT_FOUND_FLOW),
            503: _error("The `flows` topic could not be read up to date."),
        },
        parameters=[
            NAMESPACE,
            FLOW_ID_AS_ID,
            _query(
                "revision",
                {"type": "integer", "minimum": 1, "maximum": flows_api.MAX_REVISION},
                "A revision (default: the latest).",
            ),
        ],
    ),
    Operation(
        "GET",
        F + "/{namespace}/{id}/revisions",
        "listFlowRevisions",
        "flows",
        "A flow's revisions, oldest first",
        "reader",
        {
            200: _json({"type": "array", "items": ref("FlowRevisionEntry")}, "Every revision."),
            404: _error(_NOT_FOUND_FLOW),
            503: _error("The `flows` topic could not be read up to date."),
        },
        parameters=[NAMESPACE, FLOW_ID_AS_ID],
    ),
    Operation(
        "GET",
        F + "/{namespace}/{id}/diff",
        "diffFlowRevisions",
        "flows",
        "The unified diff between two revisions of a flow",
        "reader",
        {
            200: _json("FlowDiff", "A deletion's source is empty; readers see keys masked."),
            404: _error("No such flow, or no such revision."),
            503: _error("The `flows` topic could not be read up to date."),
        },
        parameters=[
            NAMESPACE,
            FLOW_ID_AS_ID,
            *(
                _query(
                    name,
                    {"type": "integer", "minimum": 1, "maximum": flows_api.MAX_REVISION},
                    f"The revision to diff {name}.",
                    required=True,
                )
                for name in ("from", "to")
            ),
        ],
    ),
    Operation(
        "PUT",
        F + "/{namespace}/{id}",
        "putFlow",
        "flows",
        "Create or update a flow (idempotent)",
        "writer",
        {
            200: _json("Flow", "Unchanged: the source is the latest revision's."),
            201: _json("Flow", "Saved as a new revision."),
            413: _error("The body is too large."),
            415: _error("The body is not YAML."),
            422: _error(
                "The flow is invalid, or its namespace and id are not the URL's.", "FlowErrors"
            ),
            503: _error("The `flows` topic did not take or give back the change in time."),
        },
        parameters=[NAMESPACE, FLOW_ID_AS_ID],
        body=_yaml_body("The flow's YAML; its namespace and id must be the URL's."),
    ),
    Operation(
        "DELETE",
        F + "/{namespace}/{id}",
        "deleteFlow",
        "flows",
        "Delete a flow",
        "writer",
        {
            204: {"description": "Deleted (its revisions stay in the `flows` topic)."},
            404: _error(_NOT_FOUND_FLOW),
            503: _error("The `flows` topic did not take or give back the change in time."),
        },
        parameters=[NAMESPACE, FLOW_ID_AS_ID],
    ),
    # ------------------------------------------------------------------ webhooks
    Operation(
        "POST",
        WEBHOOK,
        "postWebhook",
        "webhooks",
        "Start a flow from its webhook trigger",
        "public",
        _WEBHOOK_ANSWERS,
        description="The body becomes `trigger.body` (JSON, a form as an object, else "
        "text), the query `trigger.parameters`, the headers `trigger.headers` (credentials "
        "redacted); the trigger's `conditions` and `inputs` render against them "
        "(docs/triggers.md). No credentials: the key is the secret.",
        parameters=_WEBHOOK_PARAMS,
        body={
            "content": {
                "application/json": {"schema": ANY},
                "application/x-www-form-urlencoded": {"schema": {"type": "object"}},
                "text/plain": {"schema": STRING},
            }
        },
    ),
    Operation(
        "GET",
        WEBHOOK,
        "getWebhook",
        "webhooks",
        "Start a flow from its webhook trigger (no body)",
        "public",
        _WEBHOOK_ANSWERS,
        description="As the POST, for senders that only GET.",
        parameters=_WEBHOOK_PARAMS,
    ),
    # ------------------------------------------------------------------ executions
    Operation(
        "POST",
        E + "/{id}/kill",
        "killExecution",
        "executions",
        "Kill an execution",
        "writer",
        _COMMAND_ANSWERS,
        description="Its running tasks and subflows end KILLED.",
        parameters=[EXECUTION_ID],
    ),
    Operation(
        "POST",
        E + "/{id}/restart",
        "restartExecution",
        "executions",
        "Restart a FAILED or KILLED execution from its failed task runs",
        "writer",
        _COMMAND_ANSWERS,
        parameters=[EXECUTION_ID],
    ),
    Operation(
        "POST",
        E + "/{id}/resume",
        "resumeExecution",
        "executions",
        "Resume a PAUSED execution",
        "writer",
        {**_COMMAND_ANSWERS, 415: _error("The body is neither JSON nor a form.")},
        description="A JSON object body becomes the paused task's outputs.",
        parameters=[EXECUTION_ID],
        body=_INPUTS_BODY,
    ),
    Operation(
        "POST",
        E + "/{id}/replay",
        "replayExecution",
        "executions",
        "Replay an ended execution as a new one",
        "writer",
        {
            202: _json("Replay", "The new execution is on its way."),
            404: _error("No such execution, or no such task run in it."),
            409: _error("It has not ended, or the executor refused."),
            503: _error("The broker did not take the replay."),
        },
        description="From a task run (`taskRunId`), keeping what ran before it, or "
        "from the start with the same inputs.",
        parameters=[
            EXECUTION_ID,
            _query("taskRunId", STRING, "Replay from this task run (default: the start)."),
        ],
    ),
    Operation(
        "POST",
        E + "/{namespace}/{flowId}",
        "startExecution",
        "executions",
        "Start an execution of a flow's latest revision",
        "writer",
        {
            200: _json("Execution", _WAITED),
            202: _json("ExecutionStarted", "Started."),
            404: _error(_NOT_FOUND_FLOW),
            **{status: _error(text) for status, text in _REFUSED_START.items()},
            415: _error("The body is neither JSON nor a form."),
            503: _error("The broker did not take the start."),
            504: _error(_TIMED_OUT),
        },
        parameters=[
            NAMESPACE,
            FLOW_ID,
            *_WAIT,
            _query(
                "labels",
                {"type": "array", "items": {"type": "string", "pattern": "^[^:]+:"}},
                "Labels, each `key:value` (repeat the parameter).",
            ),
        ],
        body=_INPUTS_BODY,
    ),
    Operation(
        "GET",
        E + "/{id}",
        "getExecution",
        "executions",
        "Get an execution with its task runs",
        "reader",
        {200: _json("Execution", "The execution."), 404: _error("No such execution.")},
        parameters=[EXECUTION_ID],
    ),
    Operation(
        "GET",
        E,
        "listExecutions",
        "executions",
        "List executions, newest first",
        "reader",
        {200: _json("ExecutionPage", "A page of executions (without task runs).")},
        description="Every filter given must match; a bad value is a 400 naming its "
        "parameter. Each filter is served by an index (fast at 100,000 executions: "
        "docs/benchmarks.md). The filters may also be spelt as Kestra's "
        "`filters[field][OPERATION]=value`, with the operation each one has here.",
        parameters=[
            _query("namespace", STRING, "This namespace and those below it."),
            _query("flowId", STRING, "Only this flow (by its id, in any namespace)."),
            _query(
                "state",
                {"type": "array", "items": STATE},
                "Only these states (repeat, or separate with commas; any case).",
            ),
            _query(
                "labels",
                {"type": "array", "items": {"type": "string", "pattern": "^[^:]+:"}},
                "Labels, each `key:value` (repeat the parameter): all must match.",
            ),
            _query("startDate", DATE, "Created at or after this time (ISO 8601; no offset: UTC)."),
            _query("endDate", DATE, "Created at or before this time."),
            _query(
                "q",
                {"type": "string", "maxLength": executions_api.MAX_Q_CHARS},
                "Search, in any case: an execution id that starts with it, or a flow id or "
                "namespace that holds it.",
            ),
            _query("stuck", BOOLEAN, "Only those the watchdog found unable to make progress."),
            *_page(executions_api.DEFAULT_PAGE_SIZE, executions_api.MAX_PAGE_SIZE),
        ],
    ),
    Operation(
        "GET",
        E + "/{id}/file",
        "downloadExecutionFile",
        "executions",
        "Download a file a task of the execution stored",
        "reader",
        {
            200: {"description": "The file's bytes, as an attachment.", "content": _OCTETS},
            404: _error("No such execution, or not one of its files."),
            503: _error(_NO_STORAGE),
        },
        parameters=[EXECUTION_ID, _FILE_URI],
    ),
    Operation(
        "GET",
        E + "/{id}/file/metas",
        "getExecutionFileMetas",
        "executions",
        "A stored file's name and size",
        "reader",
        {
            200: _json("FileMetas", "Its URI, name and size in bytes."),
            404: _error("No such execution, or not one of its files."),
            503: _error(_NO_STORAGE),
        },
        parameters=[EXECUTION_ID, _FILE_URI],
    ),
    Operation(
        "GET",
        E + "/{executionId}/follow",
        "followExecution",
        "executions",
        "Follow an execution live (Server-Sent Events)",
        "reader",
        {
            200: {
                "description": "`execution` events (the execution, then at each change "
                "with the task runs that changed), then `end` once it ended.",
                "content": _STREAM,
            },
            404: _error("No such execution (after a few seconds' grace for a new one)."),
            503: _error("This gateway follows too many streams, or cannot follow."),
        },
        parameters=[EXECUTION_ID_LONG, *_RESUME],
    ),
    # ------------------------------------------------------------------ logs
    Operation(
        "GET",
        API + "/logs/{executionId}",
        "listLogs",
        "logs",
        "An execution's log lines, oldest first",
        "reader",
        {
            200: _json({"type": "array", "items": ref("LogLine")}, "A page of lines."),
            404: _error("No such execution."),
        },
        parameters=[
            EXECUTION_ID_LONG,
            *_LOG_FILTERS,
            *_page(logs_api.DEFAULT_LOG_PAGE_SIZE, logs_api.MAX_LOG_PAGE_SIZE),
        ],
    ),
    Operation(
        "GET",
        API + "/logs/{executionId}/download",
        "downloadLogs",
        "logs",
        "An execution's log lines as text",
        "reader",
        {
            200: {
                "description": "One line per record: time, level, task#attempt, message.",
                "content": {"text/plain": {"schema": STRING}},
            },
            404: _error("No such execution."),
        },
        parameters=[EXECUTION_ID_LONG, *_LOG_FILTERS],
    ),
    Operation(
        "GET",
        API + "/logs/{executionId}/follow",
        "followLogs",
        "logs",
        "Follow an execution's log lines live (Server-Sent Events)",
        "reader",
        {
            200: {
                "description": "`log` events (the lines stored so far, then each new one), "
                "then `end` once the execution ended.",
                "content": _STREAM,
            },
            404: _error("No such execution (after a few seconds' grace for a new one)."),
            503: _error("This gateway follows too many streams, or cannot follow."),
        },
        parameters=[EXECUTION_ID_LONG, *_LOG_FILTERS, *_RESUME],
    ),
    # ------------------------------------------------------------------ triggers
    Operation(
        "GET",
        API + "/triggers",
        "listTriggers",
        "triggers",
        "Declared triggers with their runtime state",
        "reader",
        {200: _json("TriggerPage", "Every trigger of the flows asked for.")},
        parameters=[
            _query("namespace", STRING, "Only this namespace."),
            _query("flowId", STRING, "Only this flow."),
        ],
    ),
    Operation(
        "PUT",
        TRIGGER,
        "setTrigger",
        "triggers",
        "Switch a trigger off or back on",
        "writer",
        {
            200: _json("Trigger", "The trigger, switched."),
            404: _error("No such flow or trigger."),
            422: _error("The stored flow no longer validates."),
            503: _error("Stored, but the broker did not take it: send it again."),
        },
        description="A runtime switch every scheduler honours, whatever the YAML says; "
        "ticks missed while off are not caught up.",
        parameters=[NAMESPACE, FLOW_ID, TRIGGER_ID],
        body=_json_body("TriggerSwitch"),
    ),
    Operation(
        "POST",
        TRIGGER + "/backfill",
        "backfillTrigger",
        "triggers",
        "Start every tick of a schedule in [start, end)",
        "writer",
        {
            200: _json("Backfill", "The executions started (a tick that ran starts nothing new)."),
            404: _error("No such flow or trigger."),
            409: _error("The flow is disabled."),
            413: _error("A tick's start would be too large."),
            422: _error("The stored flow no longer validates, or a tick cannot start."),
            503: _error("The broker did not take the starts."),
        },
        description=f"At most {triggers_api.MAX_BACKFILL_TICKS} ticks per request; "
        "running it again starts nothing new.",
        parameters=[NAMESPACE, FLOW_ID, TRIGGER_ID],
        body=_json_body("BackfillRange"),
    ),
    # ------------------------------------------------------------------ plugins
    Operation(
        "GET",
        API + "/plugins",
        "listPlugins",
        "plugins",
        "Task types this gateway validates flows against",
        "reader",
        {200: _json({"type": "array", "items": ref("Plugin")}, "Every task type.")},
    ),
    Operation(
        "GET",
        API + "/plugins/{type}",
        "getPlugin",
        "plugins",
        "One task type",
        "reader",
        {200: _json("Plugin", "The type, with its schemas."), 404: _error("Unknown type.")},
        parameters=[_path_param("type", "A task type, by its name or an alias.")],
    ),
    # ------------------------------------------------------------------ namespace files
    Operation(
        "GET",
        NS_FILES + "/directory",
        "listNamespaceFiles",
        "namespace files",
        "List a namespace's folder",
        "reader",
        {
            200: _json({"type": "array", "items": ref("NamespaceEntry")}, "Its entries."),
            404: _error("No such folder."),
            409: _error("The path is a file."),
            503: _error(_NO_STORAGE),
        },
        parameters=[
            NAMESPACE,
            _query("path", STRING, "A folder (default: the namespace's root)."),
            _query("recursive", BOOLEAN, "The whole tree below it, paths relative to it."),
            _query("sha256", BOOLEAN, "Add each file's SHA-256."),
        ],
    ),
    Operation(
        "GET",
        NS_FILES,
        "downloadNamespaceFile",
        "namespace files",
        "Download a namespace file",
        "reader",
        {
            200: {"description": "The file's bytes, as an attachment.", "content": _OCTETS},
            404: _error("No such file."),
            409: _error("The path is a folder."),
            503: _error(_NO_STORAGE),
        },
        parameters=[NAMESPACE, _NS_PATH],
    ),
    Operation(
        "POST",
        NS_FILES,
        "uploadNamespaceFile",
        "namespace files",
        "Create or replace a namespace file",
        "writer",
        {
            200: _json("NamespaceEntry", "The file as stored."),
            404: _error("Deleted again before it could be read back."),
            409: _error("A folder is in the way, or a file where a folder is needed."),
            413: _error(f"Over {namespace_files_api.MAX_FILE_BYTES // (1024 * 1024)} MiB."),
            503: _error(_NO_STORAGE),
        },
        description="The file is whole or not there: a broken upload leaves nothing.",
        parameters=[NAMESPACE, _NS_PATH],
        body={
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": object_schema(
                        [namespace_files_api.FORM_FIELD],
                        {
                            namespace_files_api.FORM_FIELD: {
                                "type": "string",
                                "contentMediaType": "application/octet-stream",
                            }
                        },
                    )
                },
                **_OCTETS,
            },
        },
    ),
    Operation(
        "DELETE",
        NS_FILES,
        "deleteNamespaceFile",
        "namespace files",
        "Delete a namespace file or folder",
        "writer",
        {
            200: _json("NamespaceDeletion", "Deleted: a folder with all it held."),
            404: _error("No such file or folder."),
            409: _error("A file is in the way of the path."),
            503: _error(_NO_STORAGE),
        },
        parameters=[NAMESPACE, _NS_PATH],
    ),
    # ------------------------------------------------------------------ the web UI's
    Operation(
        "GET",
        API + "/namespaces",
        "listNamespaces",
        "flows",
        "The namespaces that hold flows, with how many each holds",
        "reader",
        {200: _json("NamespacePage", "Every namespace with a flow, by name.")},
    ),
    Operation(
        "GET",
        API + "/me",
        "getMe",
        "service",
        "Who the request's credentials are, and their role",
        "reader",
        {200: _json("Me", "The caller: its name, role and how it signed in.")},
        description="The web UI asks it to show a reader the actions it may not take.",
    ),
    Operation(
        "GET",
        API + stats_api.ROUTE,
        "getStats",
        "dashboard",
        "Executions per state over time, failing flows, what runs now, the services",
        "reader",
        {200: _json("Stats", "The dashboard's numbers.")},
        description="Executions created in the last `hours`, in 25 to 49 buckets aligned on "
        "multiples of `bucketSeconds` (the same buckets from one call to the next), by "
        "current state; the 10 flows with most FAILED executions in that window; the "
        "executions running, queued and paused now; and what each service of "
        "HEADRACE_METRICS_TARGETS reports in its metrics (read at each call, each within "
        f"{stats_api.SCRAPE_TIMEOUT_S:g} s: one that does not answer is `up: false` with its "
        "error).",
        parameters=[
            _query(
                "hours",
                {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_HOURS,
                    "default": stats_api.DEFAULT_HOURS,
                },
                "The window: the last this many hours.",
            )
        ],
    ),
    Operation(
        "GET",
        API + "/blueprints",
        "listBlueprints",
        "blueprints",
        "The example flows shipped with headrace",
        "reader",
        {200: _json("BlueprintPage", "Every example that loads as a flow, by id.")},
    ),
    Operation(
        "GET",
        API + "/blueprints/{id}",
        "getBlueprint",
        "blueprints",
        "One example flow",
        "reader",
        {200: _json("Blueprint", "The example."), 404: _error("No such blueprint.")},
        parameters=[_BLUEPRINT_ID],
    ),
    Operation(
        "POST",
        API + "/blueprints/{id}/copy",
        "copyBlueprint",
        "blueprints",
        "Copy an example flow into a namespace",
        "writer",
        {
            201: _json("Flow", "Created: the copy's first revision."),
            404: _error("No such blueprint."),
            409: _error("A flow with this namespace and id exists."),
            422: _error(
                "The copy is invalid (a bad namespace or id): `errors` says why.", "FlowErrors"
            ),
            503: _error("The `flows` topic did not take or give back the change in time."),
        },
        description="The copy is the example's YAML with only its top-level `namespace:` "
        "(and `id:`, when given) replaced, saved as `POST /api/v1/flows` saves a flow.",
        parameters=[_BLUEPRINT_ID],
        body=_json_body("BlueprintCopy"),
    ),
    *(
        Operation(
            "GET",
            path,
            operation_id,
            "web UI",
            summary,
            "public",
            {200: {"description": "The web UI's page.", "content": _HTML}, **answers},
            description="The same HTML page at every address of the UI; its scripts "
            "route in the browser and call the API with the user's credentials.",
            parameters=parameters,
            ui=True,
        )
        for path, operation_id, summary, parameters, answers in (
            ("/", "getWebUi", "The web UI (home)", [], {}),
            ("/ui", "getWebUiRoot", "The web UI", [], {}),
            (
                "/ui/{tail}",
                "getWebUiPage",
                "A page of the web UI",
                [_path_param("tail", "The page's address, e.g. `flows/examples/hello`.")],
                {404: _error("An address no page can have (a line break in it).")},
            ),
        )
    ),
    Operation(
        "GET",
        ui.STATIC_ROUTE + "/{path}",
        "getWebUiFile",
        "web UI",
        "A file of the web UI (scripts, styles, the vendored editor)",
        "public",
        {
            200: {"description": "The file.", "content": _UI_FILES},
            404: _error("No such file."),
        },
        parameters=[_path_param("path", "The file's path below the UI's static folder.")],
        ui=True,
    ),
    # ------------------------------------------------------------------ service
    Operation(
        "GET",
        "/healthz",
        "getHealth",
        "service",
        "Health probe",
        "public",
        {
            200: _json("Health", "PostgreSQL answers, the producer runs, flows are current."),
            503: _json("Health", "Unhealthy: `problems` says why."),
        },
    ),
    Operation(
        "GET",
        "/readyz",
        "getReadiness",
        "service",
        "Readiness probe",
        "public",
        {
            200: _json("Readiness", "The gateway reaches the broker and PostgreSQL."),
            503: _json("Readiness", "Not ready: `problems` says what it cannot reach."),
        },
    ),
    Operation(
        "GET",
        "/metrics",
        "getMetrics",
        "service",
        "Prometheus metrics",
        "reader",
        {
            200: {
                "description": "Prometheus text exposition format.",
                "content": {"text/plain": {"schema": STRING}},
            }
        },
    ),
    Operation(
        "GET",
        API,
        "getApiIndex",
        "service",
        "Where things are",
        "reader",
        {200: _json("Index", "The server's name, version and main endpoints.")},
    ),
    Operation(
        "GET",
        PATH,
        "getOpenApi",
        "service",
        "This document",
        "public",
        {200: _json({"type": "object"}, "The OpenAPI 3.1 document of this API.")},
    ),
)


# --------------------------------------------------------------------------- Kestra's

KESTRA_TAG = "kestra"
_TAG_DESCRIPTIONS: dict[str, Json] = {
    KESTRA_TAG: {
        "description": "Kestra-compatible aliases (`x-headrace-kestra`): Kestra's paths, "
        "under `/api/v1` and its tenant prefix `/api/v1/main`, with Kestra's answer shapes, "
        "for Kestra's clients such as kestrapy (docs/api.md)."
    }
}
TENANT = {
    "name": "tenant",
    "in": "path",
    "required": True,
    "description": "Kestra's tenant: headrace has one, `main` (another one answers 404).",
    "schema": {"type": "string", "enum": [kestra_shapes.TENANT]},
}
_NO_TENANT = " (or a tenant other than `main`)"
_LABELS = _query(
    "labels",
    {"type": "array", "items": {"type": "string", "pattern": "^[^:]+:"}},
    "Labels, each `key:value` (repeat the parameter).",
)
_SORT = _query(
    "sort",
    {"type": "array", "items": STRING},
    "`field:asc` or `field:desc`; executions: "
    + ", ".join(f"`{k}`" for k in kestra_filters.EXECUTION_SORTS)
    + "; flows: `id`, `namespace`.",
)
_FILTERS_HELP = (
    "Filters, as Kestra takes them: `filters[field][OPERATION]=value` (what Kestra's SDKs "
    "send; a label: `filters[labels][EQUALS][key]=value`; IN takes comma-separated values) "
    "or the flat parameters below. Fields and operations: {fields}. Any other is a 400 "
    "that names those; and/or groups are not read."
)


def _fields_help(fields: dict[str, frozenset[str]]) -> str:
    return "; ".join(f"`{name}` ({', '.join(sorted(ops))})" for name, ops in fields.items())


_EXECUTION_SEARCH_PARAMS = [
    *_page(kestra_api.DEFAULT_SEARCH_SIZE, executions_api.MAX_PAGE_SIZE),
    _SORT,
    _query("namespace", STRING, "This namespace and those below it."),
    _query("flowId", STRING, "Only this flow."),
    _query("state", {"type": "array", "items": STATE}, "Only these states (repeat, or commas)."),
    _LABELS,
    _query("startDate", DATE, "Started at or after this time (ISO 8601; no offset: UTC)."),
    _query("endDate", DATE, "Ended at or before this time."),
    _query("timeRange", {"type": "string", "example": "PT24H"}, "Created within this (ISO 8601)."),
    _query("scope", {"type": "array", "items": STRING}, "`USER` (all of headrace's flows)."),
    _query("childFilter", {"type": "string", "enum": ["CHILD", "MAIN"]}, "Subflow runs or not."),
    _query("triggerExecutionId", STRING, "Started by this execution's subflow task."),
]
_FLOW_SEARCH_PARAMS = [
    *_page(kestra_api.DEFAULT_SEARCH_SIZE, flows_api.MAX_FLOW_PAGE_SIZE),
    _SORT,
    _query("namespace", STRING, "This namespace and those below it."),
    _query("q", STRING, "In the flow's id or namespace (any case)."),
    _LABELS,
    _query("scope", {"type": "array", "items": STRING}, "`USER` (all of headrace's flows)."),
]
_RESUME_ANSWERS = {
    200: _json(
        {"anyOf": [ref("KestraExecution"), ref("CommandAnswer")]},
        "Resumed: the execution as the index has it; the command's answer when the index"
        " has no row for it yet.",
    ),
    404: _error("No such execution."),
    409: _error("It is not PAUSED, or its pause refused the inputs (each one named)."),
    415: _error("The body is neither JSON nor a form."),
    503: _error("The broker did not take the command."),
}


def _kestra_resume(base: str, path: str, operation_id: str, tenant: list[Json]) -> Operation:
    return Operation(
        "POST",
        base + path,
        operation_id,
        KESTRA_TAG,
        "Resume a PAUSED execution (Kestra's answer)",
        "writer",
        _RESUME_ANSWERS,
        description="As `POST /api/v1/executions/{id}/resume`: the `onResume` inputs as "
        "multipart form fields (what kestrapy sends), a form or JSON.",
        parameters=[*tenant, EXECUTION_ID],
        body=_INPUTS_BODY,
        kestra=True,
    )


_KILL_ANSWER = _json(
    {"anyOf": [ref("KestraExecution"), ref("CommandAnswer")]},
    "Sent: the execution as the index has it (KILLING, or KILLED once applied); the "
    "command's answer when the index has no row for it yet.",
)


def _kestra_shared(base: str, suffix: str, tenant: list[Json]) -> list[Operation]:
    """The routes under both `/api/v1` and `/api/v1/{tenant}`."""
    not_found = _NO_TENANT if tenant else ""
    kill_params = [
        *tenant,
        EXECUTION_ID,
        _query("isOnKillCascade", {**BOOLEAN, "default": True}, "`false` is refused (400)."),
    ]
    kill_errors = {
        404: _error("No such execution" + not_found + "."),
        409: _error("It has ended, or the executor holds no state for it."),
        503: _error("The broker did not take the command."),
    }
    return [
        Operation(
            "GET",
            base + "/executions/search",
            "kestraSearchExecutions" + suffix,
            KESTRA_TAG,
            "Search executions (Kestra's)",
            "reader",
            {
                200: _json("KestraExecutionPage", "A page of executions, newest first."),
                **({404: _error("No such tenant.")} if tenant else {}),
            },
            description=_FILTERS_HELP.format(fields=_fields_help(kestra_filters.EXECUTION_FIELDS)),
            parameters=[*tenant, *_EXECUTION_SEARCH_PARAMS],
            kestra=True,
        ),
        Operation(
            "DELETE",
            base + "/executions/{id}/kill",
            "kestraKillExecution" + suffix,
            KESTRA_TAG,
            "Kill an execution (Kestra 1.x's path)",
            "writer",
            {202: _KILL_ANSWER, **kill_errors},
            description="As `POST /api/v1/executions/{id}/kill`.",
            parameters=kill_params,
            kestra=True,
        ),
        Operation(
            "DELETE",
            base + "/executions/{id}/actions/kill",
            "kestraKillExecutionAction" + suffix,
            KESTRA_TAG,
            "Kill an execution (Kestra 2.x's path)",
            "writer",
            {200: _KILL_ANSWER, **kill_errors},
            description="As `POST /api/v1/executions/{id}/kill`.",
            parameters=kill_params,
            kestra=True,
        ),
        _kestra_resume(
            base, "/executions/{id}/actions/resume", "kestraResumeExecution" + suffix, tenant
        ),
        Operation(
            "GET",
            base + "/flows/search",
            "kestraSearchFlows" + suffix,
            KESTRA_TAG,
            "Search flows (Kestra's)",
            "reader",
            {
                200: _json("KestraFlowPage", "A page of flows (latest revisions), no sources."),
                **({404: _error("No such tenant.")} if tenant else {}),
            },
            description=_FILTERS_HELP.format(fields=_fields_help(kestra_filters.FLOW_FIELDS)),
            parameters=[*tenant, *_FLOW_SEARCH_PARAMS],
            kestra=True,
        ),
        Operation(
            "GET",
            base + "/flows/{namespace}",
            "kestraListNamespaceFlows" + suffix,
            KESTRA_TAG,
            "A namespace's flows (not those below it)",
            "reader",
            {
                200: _json(
                    {"type": "array", "items": ref("KestraFlow")},
                    "Their latest revisions, by id; none: an empty list.",
                ),
                **({404: _error("No such tenant.")} if tenant else {}),
            },
            parameters=[*tenant, NAMESPACE],
            kestra=True,
        ),
    ]


def _kestra_tenant_only(base: str) -> list[Operation]:
    """The tenant's spellings of headrace's own routes, with Kestra's answers."""
    flow_answers = {
        413: _error("The body is too large."),
        415: _error("The body is not YAML."),
        422: _error("The flow is invalid: `errors` says where and why.", "FlowErrors"),
        503: _error("The `flows` topic did not take or give back the change in time."),
    }
    flow = _json("KestraFlow", "Kestra's `FlowWithSource`.")
    return [
        Operation(
            "POST",
            base + "/flows",
            "kestraCreateFlow",
            KESTRA_TAG,
            "Create a flow (Kestra's answer)",
            "writer",
            {
                200: flow,
                404: _error("No such tenant."),
                409: _error("A flow with this namespace and id exists."),
                **flow_answers,
            },
            description="As `POST /api/v1/flows`, answering Kestra's 200.",
            parameters=[TENANT],
            body=_yaml_body("The flow's YAML."),
            kestra=True,
        ),
        Operation(
            "GET",
            base + "/flows/{namespace}/{id}",
            "kestraGetFlow",
            KESTRA_TAG,
            "Get a flow (Kestra's answer)",
            "reader",
            {
                200: _json("KestraFlow", "The revision; its `source` with `source=true`."),
                404: _error(_NOT_FOUND_FLOW[:-1] + _NO_TENANT + "."),
                503: _error("The `flows` topic could not be read up to date."),
            },
            parameters=[
                TENANT,
                NAMESPACE,
                FLOW_ID_AS_ID,
                _query(
                    "revision",
                    {"type": "integer", "minimum": 1, "maximum": flows_api.MAX_REVISION},
                    "A revision (default: the latest).",
                ),
                _query("source", BOOLEAN, "Include the YAML source (Kestra's default: no)."),
            ],
            kestra=True,
        ),
        Operation(
            "PUT",
            base + "/flows/{namespace}/{id}",
            "kestraUpdateFlow",
            KESTRA_TAG,
            "Create or update a flow (Kestra's answer)",
            "writer",
            {200: flow, 404: _error("No such tenant."), **flow_answers},
            description="As `PUT /api/v1/flows/{namespace}/{id}` (which also creates), "
            "answering 200.",
            parameters=[TENANT, NAMESPACE, FLOW_ID_AS_ID],
            body=_yaml_body("The flow's YAML; its namespace and id must be the URL's."),
            kestra=True,
        ),
        Operation(
            "DELETE",
            base + "/flows/{namespace}/{id}",
            "kestraDeleteFlow",
            KESTRA_TAG,
            "Delete a flow",
            "writer",
            {
                204: {"description": "Deleted (its revisions stay in the `flows` topic)."},
                404: _error(_NOT_FOUND_FLOW[:-1] + _NO_TENANT + "."),
                503: _error("The `flows` topic did not take or give back the change in time."),
            },
            parameters=[TENANT, NAMESPACE, FLOW_ID_AS_ID],
            kestra=True,
        ),
        Operation(
            "POST",
            base + "/executions/{namespace}/{flowId}",
            "kestraStartExecution",
            KESTRA_TAG,
            "Start an execution (Kestra's answer)",
            "writer",
            {
                200: _json("KestraExecution", "Created; with `wait`, ended."),
                404: _error(_NOT_FOUND_FLOW[:-1] + _NO_TENANT + "."),
                **{status: _error(text) for status, text in _REFUSED_START.items()},
                415: _error("The body is neither JSON nor a form."),
                503: _error("The broker did not take the start."),
                504: _error(_TIMED_OUT),
            },
            description="As `POST /api/v1/executions/{namespace}/{flowId}`: inputs as "
            "multipart form fields (what kestrapy sends), a form or JSON; answers 200.",
            parameters=[TENANT, NAMESPACE, FLOW_ID, *_WAIT, _LABELS],
            body=_INPUTS_BODY,
            kestra=True,
        ),
        Operation(
            "GET",
            base + "/executions/{id}",
            "kestraGetExecution",
            KESTRA_TAG,
            "Get an execution with its task runs (Kestra's answer)",
            "reader",
            {
                200: _json("KestraExecution", "The execution."),
                404: _error("No such execution" + _NO_TENANT + "."),
            },
            parameters=[TENANT, EXECUTION_ID],
            kestra=True,
        ),
        _kestra_resume(
            base, "/executions/{id}/resume", "kestraResumeExecutionInTenant1x", [TENANT]
        ),
        Operation(
            "GET",
            base + "/executions",
            "kestraListExecutions",
            KESTRA_TAG,
            "Search executions (Kestra's `GET /executions`)",
            "reader",
            {
                200: _json("KestraExecutionPage", "A page of executions, newest first."),
                404: _error("No such tenant."),
            },
            description="As `GET .../executions/search`.",
            parameters=[TENANT, *_EXECUTION_SEARCH_PARAMS],
            kestra=True,
        ),
    ]


_TENANT_BASE = API + kestra_api.TENANT_SEGMENT
KESTRA_OPERATIONS: tuple[Operation, ...] = (
    *_kestra_shared(API, "", []),
    *_kestra_shared(_TENANT_BASE, "InTenant", [TENANT]),
    *_kestra_tenant_only(_TENANT_BASE),
)
OPERATIONS = (*OPERATIONS, *KESTRA_OPERATIONS)


def _common(operation: Operation) -> dict[int, Json]:
    common: dict[int, Json] = {
        400: _error("A malformed request: a NUL in the URL, a bad parameter or body."),
        500: _error("An internal error; `request_id` finds it in the gateway's log."),
    }
    if operation.role != "public":
        common[401] = _error("No credentials, or wrong ones (with a `WWW-Authenticate` challenge).")
        common[403] = _error(
            "A reader calling a writer's route, or a browser check refused it."
            if operation.role == "writer"
            else "A browser check refused it (a foreign Host header)."
        )
    return common


def _operation_object(operation: Operation) -> Json:
    responses = {**_common(operation), **operation.responses}
    body: Json = {
        "operationId": operation.operation_id,
        "tags": [operation.tag],
        "summary": operation.summary,
        "x-headrace-role": operation.role,
        "responses": {str(status): responses[status] for status in sorted(responses)},
    }
    if operation.description:
        body["description"] = operation.description
    if operation.parameters:
        body["parameters"] = operation.parameters
    if operation.body is not None:
        body["requestBody"] = operation.body
    if operation.role == "public":
        body["security"] = []  # overrides the document's: no credentials
    if operation.kestra:
        body["x-headrace-kestra"] = True
    return body


def openapi_document() -> Json:
    """The OpenAPI document, as a fresh dict."""
    paths: dict[str, Json] = {}
    for operation in OPERATIONS:
        paths.setdefault(operation.path, {})[operation.method.lower()] = _operation_object(
            operation
        )
    return orjson.loads(
        orjson.dumps(
            {
                "openapi": OPENAPI_VERSION,
                "info": {
                    "title": "headrace",
                    "version": __version__,
                    "description": "The REST API of a headrace gateway: flows, executions, "
                    "logs, triggers, namespace files, the dashboard's statistics and the "
                    "blueprints. Every operation needs credentials but those whose "
                    "`security` is empty: webhooks (their key is theirs), the probes, this "
                    "document and the web UI's page and files (they hold no data). A reader "
                    "may call GET operations and `POST /api/v1/flows/validate`, the rest "
                    "needs the writer role (docs/security.md, docs/api.md).",
                    "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
                },
                "servers": [{"url": "/"}],
                "security": [{"bearerAuth": []}, {"basicAuth": []}],
                "tags": [
                    {"name": tag, **_TAG_DESCRIPTIONS.get(tag, {})}
                    for tag in dict.fromkeys(op.tag for op in OPERATIONS)
                ],
                "paths": paths,
                "components": {
                    "schemas": SCHEMAS,
                    "securitySchemes": {
                        "bearerAuth": {
                            "type": "http",
                            "scheme": "bearer",
                            "description": "A token: the gateway's HEADRACE_TOKEN or one of "
                            "its credentials file (`headrace auth new-token` makes one).",
                        },
                        "basicAuth": {
                            "type": "http",
                            "scheme": "basic",
                            "description": "A user of the credentials file, when it lists users.",
                        },
                    },
                },
            }
        )
    )


@cache
def openapi_json_bytes() -> bytes:
    """The document as served: built once per process (it only changes with the code)."""
    return orjson.dumps(openapi_document())
