"""`/api/v1/executions`: start an execution (publish a trigger), read and list them,
and send kill / resume / restart commands.

Starting admits the start on the flow's latest revision, read from the `flows` topic
(`headrace.admission`: disabled, inputs, size), assigns the id and publishes a
`TriggerEvent`; the executor does the rest. Reads come from PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web
from aiokafka.errors import KafkaError

from headrace import codec
from headrace.admission import Admitted, Refusal, StartRefused, admit
from headrace.db.executions import MAX_PAGE_SIZE, ExecutionFilter
from headrace.errors import CodecError
from headrace.flow.errors import FlowValidationError
from headrace.flow.inputs import has_nul
from headrace.messages import CommandKind, CommandStatus, ExecutionCommand, Message, TriggerEvent
from headrace.services.gateway.bodies import (
    query_bool,
    query_labels,
    query_page,
    query_seconds,
    read_inputs,
)
from headrace.services.gateway.context import Gateway, gateway
from headrace.services.gateway.ids import new_execution_id
from headrace.services.gateway.kestra_filters import parse_date, read_conditions
from headrace.services.gateway.responses import ApiError, json_response
from headrace.services.gateway.waiter import while_connected
from headrace.states import State
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
    await _send(gw, topic, message.execution_id, value)


async def _send(gw: Gateway, topic: str, execution_id: str, value: bytes) -> None:
    try:
        await gw.producer.send_and_wait(topic, value, key=execution_id.encode())
    except KafkaError as exc:
        raise ApiError(503, f"the broker did not accept the message: {exc}") from exc


# The status of each refusal of a start (`headrace.admission`).
REFUSAL_STATUS = {
    Refusal.DISABLED: 409,
    Refusal.INVALID_INPUTS: 422,
    Refusal.TOO_LARGE: 413,
    Refusal.NOT_ENCODABLE: 422,
    Refusal.BLOCKED: 422,
}


def refused(exc: StartRefused) -> ApiError:
    """The API's answer to a start `admit` refused."""
    if exc.refusal is Refusal.INVALID_INPUTS:
        errors = [{"input": input_id, "message": reason} for input_id, reason in exc.input_errors]
        return ApiError(422, "invalid inputs", errors)
    return ApiError(REFUSAL_STATUS[exc.refusal], str(exc))


async def publish_start(gw: Gateway, start: Admitted) -> None:
    """Send an admitted start and await the broker's ack (a 202 means it is on the topic)."""
    await _send(gw, TRIGGERS.name, start.event.execution_id, start.value)


async def start_execution(request: web.Request) -> web.Response:
    gw = gateway(request)
    namespace, flow_id = request.match_info["namespace"], request.match_info["flowId"]
    wait = query_bool(request, "wait")
    timeout_s = query_seconds(request, "timeout", DEFAULT_WAIT_S, MAX_WAIT_S)
    labels = query_labels(request)
    raw_inputs = await read_inputs(request)

    # From the `flows` topic, not the database: starts go on while PostgreSQL is away.
    revision = await gw.flow_log.latest_revision(namespace, flow_id)
    if revision is None:
        raise ApiError(404, f"flow {namespace}/{flow_id} not found")
    source = gw.flow_log.source(namespace, flow_id, revision)
    if source is None:
        raise ApiError(404, f"flow {namespace}/{flow_id} not found")
    try:
        flow = await gw.flow_loader.load(source, f"{namespace}/{flow_id}@{revision}")
    except FlowValidationError as exc:
        raise ApiError(422, "the stored flow no longer validates", exc.to_json()) from exc
    try:
        start = admit(
            flow,
            revision,
            execution_id=new_execution_id(),
            inputs=raw_inputs,
            trigger={"type": "api"},
            time=datetime.now(UTC),
            labels=labels,
        )
    except StartRefused as exc:
        raise refused(exc) from exc
    await publish_start(gw, start)
    event, execution_id = start.event, start.event.execution_id
    if not wait:
        return json_response(
            {
                "id": execution_id,
                "namespace": namespace,
                "flowId": flow_id,
                "flowRevision": revision,
                "inputs": event.inputs,
                "labels": labels,
                "trigger": event.trigger,
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


# The list's filters, as `kestra_filters` reads them (flat or `filters[field][OP]`).
LIST_FIELDS: dict[str, frozenset[str]] = {
    "namespace": frozenset({"PREFIX"}),
    "flowId": frozenset({"EQUALS"}),
    "state": frozenset({"IN"}),
    "labels": frozenset({"EQUALS"}),
    "startDate": frozenset({"GREATER_THAN_OR_EQUAL_TO"}),
    "endDate": frozenset({"LESS_THAN_OR_EQUAL_TO"}),
    "q": frozenset({"EQUALS"}),
}
MAX_Q_CHARS = 200


def execution_filter(request: web.Request) -> ExecutionFilter:
    """The list's filters from the query string; a bad value is a 400 naming its parameter."""
    single: dict[str, str] = {}
    states: list[str] = []
    labels: dict[str, str] = {}
    for c in read_conditions(request.query, LIST_FIELDS):
        if c.field == "state":
            states.extend(_state_names(c.values()))
        elif c.field == "labels":
            labels[c.key or ""] = c.value
        elif c.field in single:
            raise ApiError(400, f"query parameter {c.field!r} is given more than once")
        else:
            single[c.field] = c.value
    q = single.get("q")
    if q is not None and (len(q) > MAX_Q_CHARS or not q.isprintable()):
        raise ApiError(
            400, f"query parameter 'q' must be printable text of at most {MAX_Q_CHARS} characters"
        )
    return ExecutionFilter(
        namespace=single.get("namespace"),
        flow_id=single.get("flowId"),
        states=tuple(dict.fromkeys(states)),
        labels=labels,
        created_from=_date(single, "startDate"),
        created_to=_date(single, "endDate"),
        q=q,
        stuck=query_bool(request, "stuck"),
    )


def _state_names(values: list[str]) -> list[str]:
    names = [value.upper() for value in values]
    for name in names:
        if name not in State.__members__:
            raise ApiError(
                400,
                f"query parameter 'state': unknown state {name!r}; states: "
                + ", ".join(State.__members__),
            )
    return names


def _date(values: dict[str, str], name: str) -> datetime | None:
    if name not in values:
        return None
    date = parse_date(values[name], f"query parameter {name!r}")
    try:
        return date.astimezone(UTC)  # PostgreSQL takes it in UTC: years 1 to 9999 there too
    except OverflowError:
        raise ApiError(400, f"query parameter {name!r}: {values[name]!r} is out of range") from None


async def list_executions(request: web.Request) -> web.Response:
    """A page of executions, newest first: every filter given must match."""
    where = execution_filter(request)
    page, size = query_page(request, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    results, total = await gateway(request).executions.list(where=where, page=page, size=size)
    return json_response({"results": results, "total": total, "page": page, "size": size})


# How long a kill, resume, restart or replay waits for the executor's answer: it comes
# in milliseconds; past this the executor is down or far behind, and the command is
# still applied when it gets to it (202, PENDING).
COMMAND_WAIT_S = 10.0
# Execution ids are 22 characters (headrace.ids); producers may choose their own, within
# this bound.
MAX_ID_CHARS = 128


async def send_command(
    request: web.Request, kind: CommandKind, payload: dict | None = None
) -> web.Response:
    """Send `kind` to the execution and tell what the executor did with it: 202 APPLIED
    (or PENDING if it did not answer in time), 409 when the execution's state does not
    allow it or the executor holds no state for it, 404 for an execution nobody knows.

    The executor decides, not the index: the index lags (a kill right after a start finds
    no row yet), the executor holds the state the command acts on."""
    gw = gateway(request)
    execution_id = request.match_info["id"]
    if not (0 < len(execution_id) <= MAX_ID_CHARS and execution_id.isprintable()):
        # No execution has such an id; the executor need not remember a kill for it.
        raise ApiError(404, f"execution {execution_id[:MAX_ID_CHARS]!r} not found")
    command = ExecutionCommand(
        command_id=new_execution_id(),
        execution_id=execution_id,
        kind=kind,
        time=datetime.now(UTC),
        payload=payload or {},
    )
    await publish(gw, EXECUTION_COMMANDS.name, command)
    answer = await while_connected(
        request, gw.waiter.wait_for_answer(execution_id, command.command_id, COMMAND_WAIT_S)
    )
    body = {"id": execution_id, "command": str(kind), "commandId": command.command_id}
    if answer is None:
        message = "sent; the executor has not answered yet and applies it when it gets to it"
        return json_response({**body, "outcome": "PENDING", "message": message}, status=202)
    what = f"cannot {kind.lower()} execution {execution_id}"
    if answer["status"] == CommandStatus.APPLIED:
        return json_response({**body, "outcome": "APPLIED", "state": answer["state"]}, status=202)
    if answer["status"] == CommandStatus.IGNORED:
        raise ApiError(409, f"{what}: {answer['reason']}", outcome="IGNORED", **body)
    # UNKNOWN: the executor holds no state for it.
    indexed = await gw.executions.state(execution_id)
    if kind is CommandKind.KILL:
        if indexed is not None:  # lost: the index closed it, in the answer's transaction
            message = "the executor held no state for it (lost): it is recorded KILLED"
            return json_response(
                {**body, "outcome": "APPLIED", "state": str(indexed), "message": message},
                status=202,
            )
        # Not started yet, as far as anyone knows: the executor kills it if it starts.
        return json_response(
            {**body, "outcome": "PENDING", "message": answer["reason"]}, status=202
        )
    if indexed is None:
        raise ApiError(404, f"execution {execution_id} not found", outcome="UNKNOWN", **body)
    raise ApiError(
        409,
        f"{what}: {answer['reason']} (it is lost: kill it to record it ended, or replay "
        "it from the start)",
        outcome="UNKNOWN",
        **body,
    )


def _command_handler(kind: CommandKind):
    async def handler(request: web.Request) -> web.Response:
        return await send_command(request, kind)

    return handler


async def resume_execution(request: web.Request) -> web.Response:
    """Resume a PAUSED execution with the inputs of a JSON object or a form body (as
    Kestra's clients send them). The executor checks them against each pause's `onResume`
    inputs (a mismatch is a 409 naming each input), and they become its outputs."""
    inputs = await read_inputs(request)
    # As for starts, whose inputs are checked: the body becomes the task's outputs, which
    # PostgreSQL cannot store with a NUL and later tasks render into their properties.
    if has_nul(inputs):
        raise ApiError(400, "the body contains a NUL character (\\x00), which cannot be stored")
    return await send_command(request, CommandKind.RESUME, {"inputs": inputs})


async def replay_execution(request: web.Request) -> web.Response:
    """A new execution of the same flow revision: from a task run (`?taskRunId=`), keeping
    what ran before it, or from the start with the same inputs."""
    gw = gateway(request)
    execution_id = request.match_info["id"]
    original = await gw.executions.get(execution_id)
    if original is None:
        raise ApiError(404, f"execution {execution_id} not found")
    state = State(original["state"]["current"])
    if not state.is_terminal:
        raise ApiError(
            409, f"cannot replay execution {execution_id}: it is {state} (needs it ended)"
        )
    new_id = new_execution_id()
    task_run_id = request.query.get("taskRunId")
    if task_run_id:
        if task_run_id not in {run["id"] for run in original["taskRunList"]}:
            raise ApiError(404, f"task run {task_run_id} not found in execution {execution_id}")
        # The original's owner builds the replay: it holds the task runs to keep.
        payload = {"newExecutionId": new_id, "taskRunId": task_run_id}
        await send_command(request, CommandKind.REPLAY, payload)  # raises if refused
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
