"""`POST|GET /api/v1/executions/webhook/{namespace}/{flowId}/{key}`: webhook ingress.

A request starts the flow's latest revision when one of its enabled `webhook` triggers
has that key. The key is the only secret guarding the URL, so every refusal before it
is known to be right (unknown flow, disabled flow, wrong key, disabled trigger) answers
the same 404 body, and keys are compared in constant time against every webhook trigger
of the flow. Once the key matched, the answer may say what is wrong (conditions, inputs).

The execution sees `trigger = {type, id, body, headers, parameters}`; the trigger's
`conditions` and `inputs` are rendered against it. Nothing is published for a refused
request, nor for one whose conditions are not met.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web
from multidict import MultiDictProxy

from headrace.admission import StartRefused, admit
from headrace.expressions import ExpressionError, render_value
from headrace.flow.errors import FlowValidationError
from headrace.flow.model import Flow
from headrace.flow.schedule_ticks import rendered_labels
from headrace.flow.triggers import WEBHOOK, WebhookTrigger
from headrace.services.gateway.bodies import (
    FORM_TYPES,
    NUL,
    query_bool,
    query_seconds,
    read_form,
)
from headrace.services.gateway.context import Gateway, gateway
from headrace.services.gateway.executions_api import (
    DEFAULT_WAIT_S,
    MAX_WAIT_S,
    publish_start,
    refused,
)
from headrace.services.gateway.ids import new_execution_id
from headrace.services.gateway.metrics import count_webhooks
from headrace.services.gateway.responses import ApiError, json_response
from headrace.services.gateway.waiter import while_connected
from headrace.states import State

log = logging.getLogger(__name__)

NOT_FOUND = "webhook not found"
# Header values a flow has no business reading: credentials of the caller.
REDACTED_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
REDACTED = "***"
# Rendered condition values that mean "no" (a template that renders text gives text).
FALSE_TEXTS = frozenset({"", "false", "0", "no", "none", "null"})


def matching_trigger(flow: Flow, key: str) -> tuple[str, WebhookTrigger] | None:
    """The enabled webhook trigger whose key is `key`, compared in constant time.

    Every webhook trigger is compared, matched or not, so the time taken does not say
    which trigger (or which part of the key) differed.
    """
    given = key.encode()
    found: tuple[str, WebhookTrigger] | None = None
    for trigger in flow.triggers:
        if trigger.kind != WEBHOOK:
            continue
        spec = trigger.spec()
        assert isinstance(spec, WebhookTrigger)
        equal = hmac.compare_digest(spec.key.encode(), given)
        if equal and not trigger.disabled and found is None:
            found = (trigger.id, spec)
    return found


async def _find(
    gw: Gateway, namespace: str, flow_id: str, key: str
) -> tuple[int, Flow, tuple[str, WebhookTrigger]]:
    """From the `flows` topic, not the database: webhooks go on while PostgreSQL is away.
    A flow unknown here is not looked for further (anyone can send any name, and a
    `sync` writes to the topic): one saved through another gateway is served once this
    one has read it, a fetch later."""
    revision = gw.flow_log.latest_read(namespace, flow_id)
    if revision is None:
        raise ApiError(404, NOT_FOUND)
    source = gw.flow_log.source(namespace, flow_id, revision)
    if source is None:
        raise ApiError(404, NOT_FOUND)
    try:
        # Off the event loop and cached (`FlowLoader`): parsing per call would cost more
        # than the request, and a flow that no longer validates must not stall the loop.
        flow = await gw.flow_loader.load(source, f"{namespace}/{flow_id}@{revision}")
    except FlowValidationError:
        log.warning("webhook for %s/%s: the stored flow no longer loads", namespace, flow_id)
        raise ApiError(404, NOT_FOUND) from None
    # Read before the key is compared, whatever the key: the time taken does not tell
    # a right key on a switched-off trigger from a wrong one.
    switched_off = gw.flow_log.switched_off(namespace, flow_id)
    match = matching_trigger(flow, key)
    if flow.disabled or match is None or match[0] in switched_off:
        raise ApiError(404, NOT_FOUND)
    return revision, flow, match


async def read_body(request: web.Request) -> Any:
    """JSON (any value), a form (as a dict), raw text, or None when there is no body."""
    if not request.body_exists:
        return None
    if request.content_type in FORM_TYPES:
        return _form_dict(await read_form(request))
    data = await request.read()  # over client_max_size: aiohttp's 413, made JSON upstream
    if not data:
        return None
    if request.content_type == "application/json" or request.content_type.endswith("+json"):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ApiError(400, f"malformed JSON body: {exc}") from exc
    try:
        return data.decode(request.charset or "utf-8")
    except (UnicodeDecodeError, LookupError) as exc:
        raise ApiError(400, f"the body is not text in its declared charset: {exc}") from exc


def _form_dict(form: MultiDictProxy[Any]) -> dict[str, Any]:
    """Form fields; a repeated field becomes a list, a file its UTF-8 text."""
    values: dict[str, Any] = {}
    for name in form:
        if name in values:
            continue
        items = [_form_value(name, value) for value in form.getall(name)]
        values[name] = items[0] if len(items) == 1 else items
    return values


def _form_value(name: str, value: Any) -> Any:
    if isinstance(value, web.FileField):
        try:
            return value.file.read().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ApiError(400, f"file field {name!r} is not UTF-8 text") from exc
    return value


def _multi_dict(pairs: Mapping[str, str] | MultiDictProxy[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, value in pairs.items():
        if name in values:
            previous = values[name]
            values[name] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            values[name] = value
    return values


def request_headers(request: web.Request) -> dict[str, Any]:
    """Headers with lower-cased names; credentials keep their name, lose their value."""
    headers: dict[str, Any] = {}
    for name, value in request.headers.items():
        lowered = name.lower()
        value = REDACTED if lowered in REDACTED_HEADERS else value
        if lowered in headers:
            headers[lowered] = f"{headers[lowered]}, {value}"
        else:
            headers[lowered] = value
    return headers


def contains_nul(value: Any) -> bool:
    if isinstance(value, str):
        return NUL in value
    if isinstance(value, dict):
        return any(contains_nul(k) or contains_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(contains_nul(item) for item in value)
    return False


def is_true(value: Any) -> bool:
    """A rendered condition: native values by Python truth, text unless it reads false."""
    if isinstance(value, str):
        return value.strip().lower() not in FALSE_TEXTS
    return bool(value)


async def webhook(request: web.Request) -> web.Response:
    gw = gateway(request)
    namespace, flow_id = request.match_info["namespace"], request.match_info["flowId"]
    wait = query_bool(request, "wait")
    timeout_s = query_seconds(request, "timeout", DEFAULT_WAIT_S, MAX_WAIT_S)
    revision, flow, (trigger_id, spec) = await _find(
        gw, namespace, flow_id, request.match_info["key"]
    )

    body = await read_body(request)
    # A NUL could forge the secret markers expressions render to (`\0secret:NAME\0`).
    if contains_nul(body):
        raise ApiError(422, "the body contains a NUL character")
    trigger = {
        "type": WEBHOOK,
        "id": trigger_id,
        "body": body,
        "headers": request_headers(request),
        "parameters": _multi_dict(request.query),
    }
    context = {"trigger": trigger}
    try:
        for index, condition in enumerate(spec.conditions):
            path = f"triggers.{trigger_id}.conditions[{index}]"
            if not is_true(render_value(condition, context, path)):
                return json_response({"executed": False, "reason": "conditions not met"})
        raw_inputs = render_value(spec.inputs, context, f"triggers.{trigger_id}.inputs")
        labels = rendered_labels(spec, context)
    except ExpressionError as exc:
        raise ApiError(422, f"the webhook trigger's expression failed: {exc}") from exc
    try:
        start = admit(
            flow,
            revision,
            execution_id=new_execution_id(),
            inputs=raw_inputs,
            trigger=trigger,
            time=datetime.now(UTC),
            labels=labels,
        )
    except StartRefused as exc:
        raise refused(exc) from exc
    await publish_start(gw, start)
    execution_id = start.event.execution_id
    if not wait:
        return json_response(
            {
                "id": execution_id,
                "namespace": namespace,
                "flowId": flow_id,
                "flowRevision": revision,
                "state": {"current": str(State.CREATED)},
            },
            status=202,
        )
    execution = await while_connected(request, gw.waiter.wait_for_end(execution_id, timeout_s))
    if execution is None:
        raise ApiError(
            504, f"execution {execution_id} did not end within {timeout_s:g} s", id=execution_id
        )
    return json_response(execution)


ROUTE = "/executions/webhook/{namespace}/{flowId}/{key}"


def add_routes(app: web.Application, prefix: str) -> None:
    # Before the executions routes: aiohttp tries routes in order of registration.
    path = prefix + ROUTE
    counted = count_webhooks(webhook)  # headrace_webhook_requests_total, by status
    app.router.add_post(path, counted)
    # No implicit HEAD: a probe must not start an execution.
    app.router.add_get(path, counted, allow_head=False)
