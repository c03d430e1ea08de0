"""`/api/v1/executions`: start an execution (publish a trigger), read and list them,
and send kill / resume / restart commands.

Starting validates the inputs against the flow's latest revision, assigns the id and
publishes a `TriggerEvent`; the executor does the rest. Reads come from PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web
from aiokafka.errors import KafkaError

from headrace import codec
from headrace.db.executions import MAX_PAGE_SIZE
from headrace.errors import CodecError
from headrace.flow.errors import FlowValidationError
from headrace.flow.inputs import InputValidationError, has_nul, resolve_inputs
from headrace.messages import CommandKind, ExecutionCommand, Message, TriggerEvent
from headrace.services.gateway.bodies import (
    query_bool,
    query_labels,
    query_page,
    query_seconds,
    read_inputs,
)
from headrace.services.gateway.context import Gateway, gateway
from headrace.services.gateway.ids import new_execution_id
from headrace.services.gateway.responses import ApiError, json_response
from headrace.services.gateway.waiter import while_connected
from headrace.states import TERMINAL_STATES, State
from headrace.topics.definitions import EXECUTION_COMMANDS, MAX_VALUE_BYTES, TRIGGERS

DEFAULT_WAIT_S = 300.0
MAX_WAIT_S = 24 * 3600.0  # a client holding a request longer should poll instead
DEFAULT_PAGE_SIZE = 25


async def publish(gw: Gateway, topic: str, message: Message) -> None:
    """Send and await the broker's ack: a 202 must mean the message is on the topic."""
    try:
        value = codec.encode(message)
    except CodecError as exc:  # inputs are checked first: this is a last line of defence
        raise ApiError(422, f"the message cannot be encoded: {exc}") from exc
    if len(value) > MAX_VALUE_BYTES:  # the broker would refuse it: say why, not 503
        raise ApiError(
            413,
            f"the {topic} message would be {len(value)} bytes, over the {MAX_VALUE_BYTES} "
            "the topic takes: the body, headers and inputs together; send less, or copy "
            "less of the body into the inputs",
        )
    try:
        await gw.producer.send_and_wait(topic, value, key=message.execution_id.encode())
    except KafkaError as exc:
        raise ApiError(503, f"the broker did not accept the message: {exc}") from exc


async def start_execution(request: web.Request) -> web.Response:
    gw = gateway(request)
    namespace, flow_id = request.match_info["namespace"], request.match_info["flowId"]
    wait = query_bool(request, "wait")
    timeout_s = query_seconds(request, "timeout", DEFAULT_WAIT_S, MAX_WAIT_S)
    labels = query_labels(request)
    raw_inputs = await read_inputs(request)

    record = await gw.flows.get(namespace, flow_id)
    if record is None:
        raise ApiError(404, f"flow {namespace}/{flow_id} not found")
    try:
        flow = await gw.flow_loader.load(record.source, f"{namespace}/{flow_id}@{record.revision}")
    except FlowValidationError as exc:
        raise ApiError(422, "the stored flow no longer validates", exc.to_json()) from exc
    if flow.disabled:
        raise ApiError(409, f"flow {namespace}/{flow_id} is disabled")
    try:
        inputs = resolve_inputs(flow, raw_inputs)
    except InputValidationError as exc:
        errors = [{"input": input_id, "message": reason} for input_id, reason in exc.errors]
        raise ApiError(422, "invalid inputs", errors) from exc

    execution_id = new_execution_id()
    trigger = {"type": "api"}
    await publish(
        gw,
        TRIGGERS.name,
        TriggerEvent(
            event_id=new_execution_id(),
            execution_id=execution_id,
            namespace=namespace,
            flow_id=flow_id,
            flow_revision=record.revision,
            inputs=inputs,
            time=datetime.now(UTC),
            labels=labels,
            trigger=trigger,
        ),
    )
    if not wait:
        return json_response(
            {
                "id": execution_id,
                "namespace": namespace,
                "flowId": flow_id,
                "flowRevision": record.revision,
                "inputs": inputs,
                "labels": labels,
                "trigger": trigger,
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


async def get_execution(request: web.Request) -> web.Response:
    execution_id = request.match_info["id"]
    execution = await gateway(request).executions.get(execution_id)
    if execution is None:
        raise ApiError(404, f"execution {execution_id} not found")
    return json_response(execution)


async def list_executions(request: web.Request) -> web.Response:
    states = []
    for raw in request.query.getall("state", []):
        for name in raw.split(","):
            try:
                states.append(State(name.strip().upper()))
            except ValueError as exc:
                raise ApiError(400, f"unknown state {name!r}") from exc
    page, size = query_page(request, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    results, total = await gateway(request).executions.list(
        namespace=request.query.get("namespace") or None,
        flow_id=request.query.get("flowId") or None,
        state=states or None,
        page=page,
        size=size,
    )
    return json_response({"results": results, "total": total, "page": page, "size": size})


# The states from which each operation makes sense; anything else answers 409.
_OPERATION_STATES: dict[CommandKind, frozenset[State]] = {
    CommandKind.KILL: frozenset(
        {State.CREATED, State.QUEUED, State.RUNNING, State.PAUSED, State.RETRYING}
    ),
    CommandKind.RESUME: frozenset({State.PAUSED}),
    CommandKind.RESTART: frozenset({State.FAILED, State.KILLED}),
    CommandKind.REPLAY: TERMINAL_STATES,
}


async def _execution_in_state(gw: Gateway, execution_id: str, kind: CommandKind) -> dict:
    execution = await gw.executions.get(execution_id)
    if execution is None:
        raise ApiError(404, f"execution {execution_id} not found")
    state = State(execution["state"]["current"])
    allowed = _OPERATION_STATES[kind]
    if state not in allowed:
        wanted = ", ".join(sorted(allowed))
        raise ApiError(
            409, f"cannot {kind.lower()} execution {execution_id}: it is {state} (needs {wanted})"
        )
    return execution


async def _send_command(
    gw: Gateway, execution_id: str, kind: CommandKind, payload: dict | None = None
) -> None:
    command = ExecutionCommand(
        command_id=new_execution_id(),
        execution_id=execution_id,
        kind=kind,
        time=datetime.now(UTC),
        payload=payload or {},
    )
    await publish(gw, EXECUTION_COMMANDS.name, command)


def _command_handler(kind: CommandKind):
    async def handler(request: web.Request) -> web.Response:
        gw = gateway(request)
        execution_id = request.match_info["id"]
        await _execution_in_state(gw, execution_id, kind)
        await _send_command(gw, execution_id, kind)
        return json_response({"id": execution_id, "command": str(kind)}, status=202)

    return handler


async def resume_execution(request: web.Request) -> web.Response:
    """Resume a PAUSED execution; a JSON object body becomes the paused task's outputs."""
    gw = gateway(request)
    execution_id = request.match_info["id"]
    inputs = await read_inputs(request)
    # As for starts, whose inputs are checked: the body becomes the task's outputs, which
    # PostgreSQL cannot store with a NUL and later tasks render into their properties.
    if has_nul(inputs):
        raise ApiError(400, "the body contains a NUL character (\\x00), which cannot be stored")
    await _execution_in_state(gw, execution_id, CommandKind.RESUME)
    await _send_command(gw, execution_id, CommandKind.RESUME, {"inputs": inputs})
    return json_response({"id": execution_id, "command": "RESUME"}, status=202)


async def replay_execution(request: web.Request) -> web.Response:
    """A new execution of the same flow revision: from a task run (`?taskRunId=`), keeping
    what ran before it, or from the start with the same inputs."""
    gw = gateway(request)
    execution_id = request.match_info["id"]
    original = await _execution_in_state(gw, execution_id, CommandKind.REPLAY)
    new_id = new_execution_id()
    task_run_id = request.query.get("taskRunId")
    if task_run_id:
        if task_run_id not in {run["id"] for run in original["taskRunList"]}:
            raise ApiError(404, f"task run {task_run_id} not found in execution {execution_id}")
        # The original's owner builds the replay: it holds the task runs to keep.
        payload = {"newExecutionId": new_id, "taskRunId": task_run_id}
        await _send_command(gw, execution_id, CommandKind.REPLAY, payload)
    else:
        trigger = TriggerEvent(
            event_id=new_execution_id(),
            execution_id=new_id,
            namespace=original["namespace"],
            flow_id=original["flowId"],
            flow_revision=original["flowRevision"],
            inputs=original["inputs"],
            time=datetime.now(UTC),
            labels=original["labels"],
            trigger={"type": "replay", "executionId": execution_id},
        )
        await publish(gw, TRIGGERS.name, trigger)
    return json_response({"id": new_id, "replayOf": execution_id}, status=202)


def add_routes(app: web.Application, prefix: str) -> None:
    # Commands first: aiohttp tries routes in order and `/executions/{id}/kill` also has
    # the shape of `/executions/{namespace}/{flowId}` (as in Kestra's API).
    for kind in (CommandKind.KILL, CommandKind.RESTART):
        app.router.add_post(prefix + "/executions/{id}/" + kind.lower(), _command_handler(kind))
    app.router.add_post(prefix + "/executions/{id}/resume", resume_execution)
    app.router.add_post(prefix + "/executions/{id}/replay", replay_execution)
    app.router.add_post(prefix + "/executions/{namespace}/{flowId}", start_execution)
    app.router.add_get(prefix + "/executions/{id}", get_execution)
    app.router.add_get(f"{prefix}/executions", list_executions)
