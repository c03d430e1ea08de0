"""The task-run tree: starting task runs, and ending containers from their children.

Kestra's semantics, spelled out because users rely on them:

- A container (sequential, parallel, dag, if, switch, for-each) is RUNNING while its
  children run. Its children run in lanes (`plan.Lane`): the next task of a lane starts
  when the previous one succeeded (SUCCESS, WARNING or SKIPPED); a lane whose task run
  FAILED (or was KILLED) stops, no new lane starts after that, and once nothing runs the
  container ends FAILED. Otherwise it ends WARNING if a child did, else SUCCESS.
  Concurrency limits count the lanes that are going.
- The top level is one lane of `tasks`; when it failed, the `errors` lane runs; then,
  whatever happened, the `finally` lane. The execution ends FAILED if any of the three
  failed, else WARNING if a top-level task run did, else SUCCESS.
- `allowFailure`: a task run that would end FAILED ends WARNING (with an ERROR log).
- While the execution is KILLING nothing new starts; containers end KILLED.

Nothing here calls back up the tree by itself: a move that ends a task run leaves it to
the caller to `settle` the parent (the evaluation loop of a container, or an event
handler). That keeps the recursion bounded by the nesting depth of the flow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum
from typing import Any

import orjson

from headrace import messages
from headrace.core.context import current_secret_seed, render_context
from headrace.core.events import KillTask, RequestTask, SendCommand, StartExecution
from headrace.core.ids import child_execution_id, command_id, task_run_id
from headrace.core.plan import ItemLanes, Lane, PairLanes, StaticLanes
from headrace.core.retries import (
    Governing,
    chain_of,
    format_duration,
    governing_retry,
    retry_delay,
)
from headrace.core.state import Attempt, TaskRun, Timer, TimerKind
from headrace.core.transition import TIMEOUT_GRACE, Transition
from headrace.expressions import ExpressionError, render_properties, render_value
from headrace.flow import flowables as f
from headrace.flow.inputs import coerce_input, validate_input
from headrace.flow.model import Input, Task
from headrace.messages import CommandKind, LogLevel, StateChange
from headrace.secret_markers import SecretScope, request_nonce
from headrace.states import State

_MILLISECOND = timedelta(milliseconds=1)
MAX_SUBFLOW_DEPTH = 10
"""Nested subflow calls, counted down the trigger chain: a flow that calls itself (even
through others) fails at this depth instead of starting executions forever."""
MAX_FOREACH_ITEMS = 10_000
"""Items of one for-each. Each item becomes a task run in the execution's state, which the
executor keeps and indexes, and each result still makes a few passes over the for-each's
lane statuses: one huge execution would slow its whole partition."""
FAILED_STATES = (State.FAILED, State.KILLED, State.CANCELLED)
# A CANCELLED task run is a pause whose `behavior: CANCEL` ended the execution: its lane
# must not go on.
MAX_PROPERTIES_BYTES = 900 * 1024
"""A task's rendered properties, as JSON. The task request carrying them must fit in one
Kafka message (`topics.definitions.MAX_VALUE_BYTES`, 1 MiB less 1 KiB), else the
executor's send fails on every replay; the rest (ids, secret names) needs room too."""


class LaneKind(Enum):
    NEXT = 1  # `position` is the next task to start
    ACTIVE = 2  # a task run of the lane is not over
    FAILED = 3
    DONE = 4


@dataclass(slots=True)
class LaneStatus:
    kind: LaneKind
    position: int = 0
    warned: bool = False


def lane_status(step: Transition, parent_id: str | None, lane: Lane) -> LaneStatus:
    runs = step.execution.task_runs
    found = {}
    for task in lane.tasks:
        index = step.child(parent_id, task.id, lane.iteration)
        if index is None:
            break  # the lane has not gone further
        found[task.id] = runs[index]
    return status_of(lane.tasks, found)


def status_of(tasks: list[Task], runs: dict[str, TaskRun]) -> LaneStatus:
    """The status of a lane of `tasks`, given its task runs by task id."""
    warned = False
    for position, task in enumerate(tasks):
        run = runs.get(task.id)
        if run is None:
            return LaneStatus(LaneKind.NEXT, position, warned)
        state = run.state
        if not state.is_terminal:
            return LaneStatus(LaneKind.ACTIVE, position, warned)
        if state in FAILED_STATES:
            return LaneStatus(LaneKind.FAILED, position, warned)
        warned = warned or state is State.WARNING
    return LaneStatus(LaneKind.DONE, len(tasks), warned)


# ------------------------------------------------------------------- contexts


def context_for(
    step: Transition, index: int | None, attempt: int = 1, secrets: SecretScope | None = None
) -> dict[str, Any]:
    """The expression context of the task run at `index` (None: the execution);
    `secrets` only for an attempt's task properties."""
    execution = step.execution
    task_run = None if index is None else execution.task_runs[index]
    parents: list[str] = []
    top = index
    iteration = None if task_run is None else task_run.iteration
    if index is not None:
        # Kestra's `parent`/`parents`: the enclosing task runs that hold a loop item
        # (`value`), closest first. A task run inside a loop holds the item of the
        # closest loop around it, so `parent.taskrun.value` is that of its parent.
        current = step.parent_index(index)
        while current is not None:
            top = current
            run = execution.task_runs[current]
            if run.value is not None:
                parents.append(run.value)
            if iteration is None:
                iteration = run.iteration
            current = step.parent_index(current)
    context = render_context(
        execution,
        task_run,
        attempt,
        now=step.now,
        variables=step.flow.variables,
        parents=parents,
        secrets=secrets,
        outputs=step.outputs(),
        task=None if index is None else step.task_of(index),
        iteration=iteration,
    )
    if top is not None and step.node_of(top).branch == "afterExecution":
        # Kestra's afterExecution tasks read the end state the execution is going to.
        pending = pending_end_state(step)
        if pending is not None:
            context["execution"] = {**context["execution"], "state": str(pending)}
    return context


def render(step: Transition, index: int, value: Any, path: str, attempt: int = 1) -> Any:
    """`value` rendered for the task run at `index`; raises `ExpressionError`."""
    return render_value(value, context_for(step, index, attempt), path)


def truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("", "false", "0", "no", "none", "null")
    return bool(value)


def item_text(value: Any) -> str:
    """A for-each item as `taskrun.value` shows it: text as is, the rest as JSON."""
    if isinstance(value, str):
        return value
    return json_text(value)


def json_text(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


# ------------------------------------------------------------- starting runs


def start_child(step: Transition, task: Task, parent: int | None, lane: Lane) -> int:
    """Create the run of `task` in `lane` under `parent` (None: top level) and begin it.

    The run may end at once (SKIPPED, a render error, an empty container): the caller
    looks at its state.
    """
    execution = step.execution
    parent_run = None if parent is None else execution.task_runs[parent]
    parent_id = None if parent_run is None else parent_run.id
    if lane.iteration is not None:
        value = lane.value
    else:
        value = None if parent_run is None else parent_run.value
    node = step.plan.node(task.id)
    # `errors`/`finally`/`afterExecution` run again after a restart with new ids
    # (`Transition.generation`): a late result of the earlier run must not end the new one.
    generation = step.generation if node.branch in _BRANCHES else 0
    run_id = task_run_id(execution.id, task.id, parent_id, lane.iteration, generation)
    index = step.add_task_run(
        TaskRun(
            id=run_id,
            task_id=task.id,
            state=State.CREATED,
            histories=[StateChange(State.CREATED, step.now)],
            attempts=[],
            outputs={},
            parent_task_run_id=parent_id,
            value=value,
            iteration=lane.iteration,
        )
    )
    if task.run_if is not None:
        try:
            go = truthy(render(step, index, task.run_if, "runIf"))
        except ExpressionError as exc:
            fail_run(step, index, f"task {task.id!r}: cannot render {exc.path!r}: {exc.reason}")
            return index
        if not go:
            step.set_task_run_state(index, State.SKIPPED)
            return index
    begin(step, index, 1)
    return index


_BRANCHES = ("errors", "finally", "afterExecution")


def begin(step: Transition, index: int, number: int) -> None:
    """Begin (or, on restart, begin again) the run at `index` with attempt `number`."""
    task = step.task_of(index)
    if task.type in f.CONTAINERS:
        open_container(step, index)
    elif task.type == f.PAUSE:
        pause(step, index, number)
    elif task.type == f.FAIL:
        fail_on_purpose(step, index, number)
    elif task.type == f.SUBFLOW:
        start_subflow(step, index, number)
    elif task.type == f.EXIT:
        exit_now(step, index, number)
    else:
        request_attempt(step, index, number)


def open_container(step: Transition, index: int) -> None:
    step.set_task_run_state(index, State.RUNNING)
    run = step.execution.task_runs[index]
    if run.data is None:
        try:
            decide(step, index)
        except ExpressionError as exc:
            task = step.task_of(index)
            fail_run(step, index, f"task {task.id!r}: cannot render {exc.path!r}: {exc.reason}")
            return
        except ValueError as exc:
            fail_run(step, index, f"task {step.task_of(index).id!r}: {exc}")
            return
    state = evaluate(step, index)
    if state is not None:
        end_run(step, index, state)


def decide(step: Transition, index: int) -> None:
    """Take a container's one-time decision (branch, items), rendered now, kept in `data`."""
    node = step.node_of(index)
    properties = node.properties
    run = step.task_run(index)
    match properties:
        case f.IfProperties(condition=condition):
            run.data = "then" if truthy(render(step, index, condition, "condition")) else "else"
        case f.SwitchProperties(value=value, cases=cases):
            rendered = render(step, index, value, "value")
            key = rendered if isinstance(rendered, str) else json_text(rendered)
            run.data = f"case:{key}" if key in cases else "defaults"
            run.outputs = {"value": key, "defaults": key not in cases}
        case f.ForEachProperties(values=values):
            items = render(step, index, values, "values")
            if isinstance(items, str):
                items = _parse_json_list(items)
            if not isinstance(items, list):
                raise ValueError(f"values must give a list, got {type(items).__name__}")
            if len(items) > MAX_FOREACH_ITEMS:
                raise ValueError(
                    f"values gave {len(items)} items; a for-each takes at most"
                    f" {MAX_FOREACH_ITEMS} (split the list, or loop in a subflow)"
                )
            run.data = [item_text(item) for item in items]
        case f.EachSequentialProperties(value=value) | f.EachParallelProperties(value=value):
            run.data = _each_items(render(step, index, value, "value"))


def _each_items(items: Any) -> list[str]:
    """Kestra's `Each*` items: a list (or JSON text of one), each as text, without
    repeats (Kestra runs each distinct value once), and no null."""
    if isinstance(items, str):
        items = _parse_json_list(items)
    if not isinstance(items, list):
        raise ValueError(f"value must give a list, got {type(items).__name__}")
    if any(item is None for item in items):
        raise ValueError("value holds a null item: each item must have a value")
    texts = list(dict.fromkeys(item_text(item) for item in items))
    if len(texts) > MAX_FOREACH_ITEMS:
        raise ValueError(
            f"value gave {len(texts)} items; a loop takes at most {MAX_FOREACH_ITEMS}"
            " (split the list, or loop in a subflow)"
        )
    return texts


def _parse_json_list(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"values must give a list, got text that is not JSON: {exc}") from exc


def request_attempt(step: Transition, index: int, number: int) -> None:
    execution = step.execution
    task = step.task_of(index)
    run_id = execution.task_runs[index].id
    nonce = request_nonce(current_secret_seed(), execution.id, run_id, number)
    secrets = SecretScope(nonce)
    try:
        properties = render_properties(task.properties, context_for(step, index, number, secrets))
    except ExpressionError as exc:
        # Rendering is deterministic: another attempt would fail the same way.
        error = f"task {task.id!r}: cannot render property {exc.path!r}: {exc.reason}"
        _fail_attempt(step, index, number, error)
        return
    size = len(orjson.dumps(properties))  # what the codec sends (JSON in the Avro record)
    if size > MAX_PROPERTIES_BYTES:
        # The producer would refuse the request, failing the whole batch on every replay.
        error = (
            f"task {task.id!r}: rendered properties are {size} bytes as JSON,"
            f" over the limit of {MAX_PROPERTIES_BYTES} bytes for a task request"
        )
        _fail_attempt(step, index, number, error)
        return
    task_run = step.task_run(index)
    task_run.attempts.append(Attempt(number, State.RUNNING, step.now, None, None))
    step.set_task_run_state(index, State.RUNNING)
    timeout_ms = None if task.timeout is None else task.timeout // _MILLISECOND
    step.emit(
        RequestTask(
            messages.TaskRequest(
                execution_id=execution.id,
                namespace=execution.namespace,
                flow_id=execution.flow_id,
                flow_revision=execution.flow_revision,
                task_run_id=task_run.id,
                task_id=task.id,
                attempt=number,
                type=task.type,
                properties=properties,
                time=step.now,
                timeout_ms=timeout_ms,
                secret_names=list(secrets.names),
                # read() markers take the secrets' nonce (headrace.stored_reads).
                secret_nonce=nonce if secrets.names or secrets.reads else "",
                log_level=task.log_level,
            )
        )
    )
    if task.timeout is not None:
        due = step.now + task.timeout + TIMEOUT_GRACE
        step.set_timer(Timer(due, TimerKind.TIMEOUT, task_run.id, number))


def _fail_attempt(step: Transition, index: int, number: int, error: str) -> None:
    """Attempt `number` fails before it is requested, and with it the run: a retry would
    render the same properties and fail the same way."""
    step.task_run(index).attempts.append(Attempt(number, State.FAILED, step.now, step.now, error))
    fail_run(step, index, error)


def pause(step: Transition, index: int, number: int) -> None:
    properties = pause_properties(step, index)
    run = step.task_run(index)
    run.data = None  # how it ended, once it has (a restart pauses afresh)
    run.attempts.append(Attempt(number, State.RUNNING, step.now, None, None))
    step.set_task_run_state(index, State.PAUSED)
    # Without a duration, the task's `timeout` bounds the wait: past it the pause fails.
    wait = properties.duration or step.task_of(index).timeout
    if wait is not None:
        step.set_timer(Timer(step.now + wait, TimerKind.PAUSE, run.id, number))
    if step.execution.state is State.RUNNING:
        step.set_execution_state(State.PAUSED)


def pause_properties(step: Transition, index: int) -> f.PauseProperties:
    properties = step.node_of(index).properties
    assert isinstance(properties, f.PauseProperties)
    return properties


_BEHAVIOR_STATES = {
    "RESUME": State.SUCCESS,
    "WARN": State.WARNING,
    "FAIL": State.FAILED,
    "CANCEL": State.CANCELLED,
}


def resume(step: Transition, index: int, given: Mapping[str, Any]) -> None:
    """A resume of the PAUSED task run at `index` with the inputs `given` (checked by
    `resume_inputs` already): it succeeds. The caller settles its parent."""
    outputs = pause_outputs(pause_properties(step, index), dict(given), State.SUCCESS, step)
    end_pause(step, index, State.SUCCESS, outputs)


def pause_elapsed(step: Transition, index: int) -> None:
    """The pause's duration (or its `timeout`) is over: it ends as its `behavior` says
    (a timeout: FAILED); CANCEL ends the execution CANCELLED."""
    properties = pause_properties(step, index)
    behavior = properties.behavior if properties.duration is not None else "FAIL"
    state = _BEHAVIOR_STATES[behavior]
    given = {d.id: _default_of(d) for d in properties.on_resume}
    end_pause(step, index, state, pause_outputs(properties, given, state, step))


def _default_of(definition: Input) -> Any:
    if definition.defaults is None:
        return None
    return validate_input(definition, definition.defaults)


def pause_outputs(
    properties: f.PauseProperties, given: dict[str, Any], state: State, step: Transition
) -> dict[str, Any]:
    """Kestra's outputs (`onResume`, `resumed`); a pause without `onResume` also keeps the
    resume's inputs at the top, as headrace always did (`outputs.<pause>.<key>`)."""
    outputs: dict[str, Any] = {
        "onResume": given,
        "resumed": {"on": step.now.isoformat(), "to": str(state)},
    }
    return outputs if properties.on_resume else {**outputs, **given}


def end_pause(step: Transition, index: int, state: State, outputs: dict[str, Any]) -> None:
    """End the PAUSED run at `index` in `state`, or run its own tasks first (Kestra's
    deprecated `tasks`, its `errors` and `finally`); the caller settles its parent."""
    run = step.task_run(index)
    step.remove_timers_of(run.id)
    current = run.attempts[-1]
    run.attempts[-1] = Attempt(current.number, state, current.started_at, step.now)
    run.outputs = outputs
    properties = pause_properties(step, index)
    if state is State.CANCELLED:
        step.set_task_run_state(index, state)
        step.log(
            LogLevel.WARN,
            "pause elapsed: the execution is cancelled (behavior: CANCEL)",
            index,
            current.number,
        )
        run.data = {"exit": str(State.CANCELLED)}
        start_kill(step)
        return
    if properties.tasks or properties.errors or properties.finally_:
        run.data = str(state)
        step.set_task_run_state(index, State.RUNNING)
        _unpause(step)
        ended = evaluate(step, index)
        if ended is not None:
            end_run(step, index, ended)
        return
    if state is State.FAILED:
        fail_run(step, index, f"task {step.task_of(index).id!r}: not resumed in time")
    else:
        step.set_task_run_state(index, state)
    _unpause(step)


def _unpause(step: Transition) -> None:
    if step.execution.state is State.PAUSED and not any(
        other.state is State.PAUSED for other in step.execution.task_runs
    ):
        step.set_execution_state(State.RUNNING)


def resume_inputs(step: Transition, index: int, raw: Mapping[str, Any]) -> dict[str, Any]:
    """The inputs of a resume of the pause at `index`: with `onResume`, every declared
    input validated and coerced as flow inputs are (defaults fill the missing ones);
    without it, `raw` as given. Raises `ValueError` saying what is wrong."""
    definitions = pause_properties(step, index).on_resume
    if not definitions:
        return dict(raw)
    problems: list[str] = []
    declared = {d.id for d in definitions}
    problems += [f"{name!r}: not an onResume input" for name in raw if name not in declared]
    resolved: dict[str, Any] = {}
    for definition in definitions:
        value = raw.get(definition.id)
        if value is None:
            value = definition.defaults
        if value is None:
            if definition.required:
                problems.append(f"{definition.id!r}: required, and no value given")
            resolved[definition.id] = None
            continue
        try:
            resolved[definition.id] = validate_input(definition, value)
        except ValueError as exc:
            problems.append(f"{definition.id!r}: {exc}")
    if problems:
        known = ", ".join(sorted(declared))
        raise ValueError(f"invalid onResume inputs ({known}): " + "; ".join(problems))
    return resolved


def subflow_depth(trigger: dict[str, Any]) -> int:
    """How many subflow calls led to an execution with this trigger (0: started directly)."""
    depth = trigger.get("depth") if trigger.get("type") == "subflow" else 0
    # A child started before depths were counted: 1, as the chain above it is unknown.
    return depth if isinstance(depth, int) and depth >= 0 else 1


def fail_on_purpose(step: Transition, index: int, number: int) -> None:
    properties = step.node_of(index).properties
    assert isinstance(properties, f.FailProperties)
    if properties.condition is not None:
        try:
            failing = truthy(render(step, index, properties.condition, "condition", number))
        except ExpressionError as exc:
            error = f"task {step.task_of(index).id!r}: cannot render {exc.path!r}: {exc.reason}"
            step.task_run(index).attempts.append(
                Attempt(number, State.FAILED, step.now, step.now, error)
            )
            fail_run(step, index, error)
            return
        if not failing:  # Kestra: a false condition lets the flow go on
            step.task_run(index).attempts.append(
                Attempt(number, State.SUCCESS, step.now, step.now, None)
            )
            step.set_task_run_state(index, State.SUCCESS)
            return
    try:
        message = str(render(step, index, properties.reason, "message", number))
    except ExpressionError as exc:
        message = f"cannot render {exc.path!r}: {exc.reason}"
    step.task_run(index).attempts.append(Attempt(number, State.FAILED, step.now, step.now, message))
    attempt_failed(step, index, message)  # Kestra retries a Fail task like any other


_EXIT_STATES = {"CANCELED": State.CANCELLED}


def exit_now(step: Transition, index: int, number: int) -> None:
    """Kestra's `Exit`: this run ends in `state`, nothing new starts, what runs is
    cancelled, and the execution ends in `state` (`exit_state`)."""
    properties = step.node_of(index).properties
    assert isinstance(properties, f.ExitProperties)
    state = _EXIT_STATES.get(properties.state) or State(properties.state)
    run = step.task_run(index)
    run.attempts.append(Attempt(number, state, step.now, step.now, None))
    run.data = {"exit": str(state)}
    step.set_task_run_state(index, state)
    step.log(LogLevel.INFO, f"exit: the execution ends {state}", index, number)
    start_kill(step)


def exit_state(step: Transition) -> State:
    """The end state of an execution being killed: an `Exit` task's (or a pause's
    CANCEL), else KILLED."""
    for run in step.execution.task_runs:
        if isinstance(run.data, dict) and isinstance(run.data.get("exit"), str):
            return State(run.data["exit"])
    return State.KILLED


def start_kill(step: Transition) -> None:
    """The execution goes KILLING: nothing new starts; running work is cancelled; task
    runs that wait (paused, retrying) end KILLED. Containers end from their children."""
    if step.execution.state is State.KILLING:
        return
    step.set_execution_state(State.KILLING)
    # Retry and pause timers are dropped; timeouts stay: they are the backstop for a
    # worker that died and will never report the killed attempt.
    execution = step.execution
    execution.timers = [t for t in execution.timers if t.kind is TimerKind.TIMEOUT]
    ended: list[int] = []
    for index, run in enumerate(execution.task_runs):
        if run.state.is_terminal or is_container_run(step, index):
            continue  # a container ends from its children
        if cancel_run(step, index):
            continue  # KILLED when its result arrives
        current = run.attempts[-1] if run.attempts else None
        if current is not None and not current.state.is_terminal:
            step.task_run(index).attempts[-1] = Attempt(
                current.number, State.KILLED, current.started_at, step.now, "killed"
            )
        step.set_task_run_state(index, State.KILLED)
        ended.append(index)
    for index in reversed(ended):  # deepest first: children come after their parents
        settle_parent(step, index)


def is_container_run(step: Transition, index: int) -> bool:
    """Whether the run at `index` ends from children: a container's, or a resumed pause
    running its own tasks."""
    task_type = step.task_of(index).type
    if task_type in f.CONTAINERS:
        return True
    return task_type == f.PAUSE and step.execution.task_runs[index].state is State.RUNNING


def cancel_run(step: Transition, index: int) -> bool:
    """Ask whoever runs the task run at `index` to stop: the worker running its attempt
    (True: a KILLED result will come), or its subflow's child execution."""
    run = step.execution.task_runs[index]
    task_type = step.task_of(index).type
    current = run.attempts[-1] if run.attempts else None
    if task_type == f.SUBFLOW and run.state is State.RUNNING:
        child = run.outputs["executionId"]
        step.emit(SendCommand(command_to(child, CommandKind.KILL, step.now)))
    elif (
        task_type not in f.PROPERTY_MODELS
        and run.state is State.RUNNING
        and current is not None
        and current.state is State.RUNNING
    ):
        step.emit(KillTask(step.execution.id, run.id, current.number))
        return True
    return False


def command_to(execution_id: str, kind: CommandKind, now: Any) -> messages.ExecutionCommand:
    return messages.ExecutionCommand(
        command_id=command_id(execution_id, str(kind), int(now.timestamp() * 1_000_000)),
        execution_id=execution_id,
        kind=kind,
        time=now,
    )


def _inherited_chain(trigger: dict[str, Any]) -> dict[str, Any]:
    chain = trigger.get("chain")
    return {"chain": list(chain)} if isinstance(chain, list) else {}


def start_subflow(step: Transition, index: int, number: int) -> None:
    execution = step.execution
    task = step.task_of(index)
    properties = step.node_of(index).properties
    assert isinstance(properties, f.SubflowProperties)
    run = step.task_run(index)
    try:
        inputs = render(step, index, properties.inputs, "inputs", number)
        labels = render(step, index, properties.labels, "labels", number)
        if properties.inherit_labels:  # Kestra: the execution's labels, the task's win
            labels = {**execution.labels, **labels}
    except ExpressionError as exc:
        error = f"task {task.id!r}: cannot render {exc.path!r}: {exc.reason}"
        run.attempts.append(Attempt(number, State.FAILED, step.now, step.now, error))
        fail_run(step, index, error)
        return
    depth = subflow_depth(execution.trigger) + 1
    if depth > MAX_SUBFLOW_DEPTH:
        error = (
            f"task {task.id!r}: subflow {properties.namespace}/{properties.flow_id} would run"
            f" {depth} levels deep; the limit is {MAX_SUBFLOW_DEPTH} (a flow calling itself?)"
        )
        run.attempts.append(Attempt(number, State.FAILED, step.now, step.now, error))
        fail_run(step, index, error)
        return
    child = child_execution_id(execution.id, run.id, number)
    step.emit(
        StartExecution(
            messages.TriggerEvent(
                event_id=command_id(child, "trigger"),
                execution_id=child,
                namespace=properties.namespace,
                flow_id=properties.flow_id,
                # 0: the latest, which the executor shell resolves
                flow_revision=properties.revision or 0,
                inputs=inputs,
                time=step.now,
                labels={str(k): str(v) for k, v in labels.items()},
                trigger={
                    "type": "subflow",
                    "parentExecutionId": execution.id,
                    "parentTaskRunId": run.id,
                    "parentNamespace": execution.namespace,
                    "parentFlowId": execution.flow_id,
                    "depth": depth,
                    # Flow triggers bound loops by this chain; a subflow must not reset it.
                    **_inherited_chain(execution.trigger),
                    # Kestra's deprecated `outputs`: the child renders them as it ends.
                    **({} if properties.outputs is None else {"outputs": properties.outputs}),
                },
            )
        )
    )
    run.outputs = {"executionId": child}
    if properties.wait:
        run.attempts.append(Attempt(number, State.RUNNING, step.now, None, None))
        step.set_task_run_state(index, State.RUNNING)
    else:
        run.attempts.append(Attempt(number, State.SUCCESS, step.now, step.now, None))
        step.set_task_run_state(index, State.SUCCESS)


# --------------------------------------------------------------- ending runs


def fail_run(step: Transition, index: int, error: str) -> None:
    """End the run FAILED (WARNING with allowFailure) and log why; no settling."""
    attempts = step.execution.task_runs[index].attempts
    number = attempts[-1].number if attempts else None
    step.log(LogLevel.ERROR, error, index, number)
    end_run(step, index, State.FAILED)


def end_run(step: Transition, index: int, state: State) -> None:
    task = step.task_of(index)
    if state is State.FAILED and task.type == f.ALLOW_FAILURE:
        state = State.WARNING
        step.log(LogLevel.WARN, f"task {task.id!r}: a task inside failed; allowed", index, None)
    elif state is State.FAILED and task.allow_failure:
        state = State.WARNING
        step.log(LogLevel.WARN, f"task {task.id!r} failed; allowed (allowFailure)", index, None)
    if state is State.WARNING and task.allow_warning:
        state = State.SUCCESS  # Kestra's allowWarning: a warning does not spread up
    step.set_task_run_state(index, state)


def attempt_failed(step: Transition, index: int, error: str) -> None:
    """The current attempt has just failed: retry it later, or end the task run.

    The governing `retry` (`retries.governing_retry`) decides: another attempt of this
    run, or (CREATE_NEW_EXECUTION) a new execution of the flow, both after a timer.
    """
    task = step.task_of(index)
    task_run = step.task_run(index)
    number = task_run.attempts[-1].number
    if step.killing:
        step.set_task_run_state(index, State.KILLED)
        return
    governing = retry_of(step, index)
    base = _restart_base(task_run)
    if governing is not None and governing.new_execution:
        execution = step.execution
        chain = chain_of(execution.id, execution.trigger, execution.created_at)
        done, limit = chain.attempt, governing.policy.attempt_limit
        delay = retry_delay(
            governing.policy, done, chain.original_created_at, step.now, execution.id
        )
        then = "a new execution starts in"
    else:
        first = next(a for a in task_run.attempts if a.number > base)  # since the last restart
        first_started_at = first.started_at or task_run.histories[0].date
        policy = None if governing is None else governing.policy
        done, limit = number - base, 0 if policy is None else policy.attempt_limit
        delay = retry_delay(policy, done, first_started_at, step.now, task_run.id)
        then = "retrying in"
    if delay is not None:
        step.set_task_run_state(index, State.RETRYING)
        step.set_timer(Timer(step.now + delay, TimerKind.RETRY, task_run.id, number + 1))
        step.log(
            LogLevel.WARN,
            f"attempt {done} of {limit} failed: {error}; {then} {format_duration(delay)}",
            index,
            number,
        )
        return
    attempts = f" after {number - base} attempts" if number - base > 1 else ""
    fail_run(step, index, f"task {task.id!r} failed{attempts}: {error}")


def retry_of(step: Transition, index: int) -> Governing | None:
    """The `retry` governing the run at `index`: its task's, an ancestor's or the flow's."""
    ancestors = []
    parent = step.parent_index(index)
    while parent is not None:
        ancestors.append(step.task_of(parent))
        parent = step.parent_index(parent)
    return governing_retry(step.task_of(index), ancestors, getattr(step.flow, "retry", None))


def retry_attempt(step: Transition, index: int, number: int) -> None:
    """Start attempt `number` of a RETRYING run, in place (RETRY_FAILED_TASK)."""
    if step.task_of(index).type == f.FAIL:
        fail_on_purpose(step, index, number)
    elif step.task_of(index).type == f.SUBFLOW:
        start_subflow(step, index, number)
    else:
        request_attempt(step, index, number)


def succeeded_state(step: Transition, index: int, state: State) -> State:
    """A worker attempt's successful end state: WARNING when the task's own `retry` has
    `warningOnRetry` and this was not the run's first attempt (Kestra's worker rule)."""
    task = step.task_of(index)
    run = step.execution.task_runs[index]
    retried = run.attempts[-1].number - _restart_base(run) > 1
    if state is State.SUCCESS and retried and task.retry and task.retry.warning_on_retry:
        return State.WARNING
    return state


def _restart_base(task_run: TaskRun) -> int:
    """Attempts made before the last restart: they do not count against the retry budget.

    A restarted worker task run keeps that count (its last attempt number then) in
    `data` (containers keep decisions).
    """
    return task_run.data if isinstance(task_run.data, int) else 0


def settle(step: Transition, container: int | None) -> None:
    """Re-evaluate `container` (None: the top level) and, as it ends, its ancestors."""
    while container is not None:
        if step.execution.task_runs[container].state.is_terminal:
            # Ended earlier in this step: a kill ends several runs of one container,
            # and the first one settled it (re-evaluating would end it twice).
            return
        state = evaluate(step, container)
        if state is None:
            return
        end_run(step, container, state)
        container = step.parent_index(container)
    settle_root(step)


def settle_parent(step: Transition, index: int) -> None:
    """After the run at `index` may have ended: move its parent on."""
    if step.execution.task_runs[index].state.is_terminal:
        settle(step, step.parent_index(index))


def evaluate(step: Transition, index: int) -> State | None:
    """Start what can start in the container at `index`; its end state once it is over."""
    run = step.execution.task_runs[index]
    task = step.task_of(index)
    lanes, limit = step.plan.lanes(task, run.data)
    statuses = _started_lanes(step, run.id, lanes)
    try:
        state = _evaluate(step, index, lanes, limit, statuses)
    finally:
        # Every change to its children since `_started_lanes` is in `statuses` now: the
        # lanes it started were looked at again.
        step.dirty.pop(run.id, None)
        step.lanes[run.id] = statuses
    if state is not None and task.type == f.PAUSE and isinstance(run.data, str):
        state = _worst(state, State(run.data))  # how the pause itself ended
    return None if state is None else _own_branches(step, index, state)


_SEVERITY = (State.SUCCESS, State.WARNING, State.FAILED, State.KILLED)


def _worst(a: State, b: State) -> State:
    return max(a, b, key=lambda s: _SEVERITY.index(s) if s in _SEVERITY else 0)


def _own_branches(step: Transition, index: int, state: State) -> State | None:
    """A flowable's own `errors` (when its tasks failed), then `finally`; its end state
    once they are over: FAILED if any of the three failed, else WARNING if one warned."""
    errors, finally_ = step.plan.branches(step.task_of(index))
    if not (errors or finally_) or step.killing:
        return state
    run_id = step.execution.task_runs[index].id
    lanes = (Lane(errors), Lane(finally_))
    while True:
        caught, last = (lane_status(step, run_id, lane) for lane in lanes)
        if LaneKind.ACTIVE in (caught.kind, last.kind):
            return None
        if step.killing:  # a task of a branch was killed as it started
            return exit_state(step)
        if state in FAILED_STATES and caught.kind is LaneKind.NEXT:
            start_child(step, errors[caught.position], index, lanes[0])
        elif last.kind is LaneKind.NEXT:
            start_child(step, finally_[last.position], index, lanes[1])
        else:
            break
    if state in FAILED_STATES or LaneKind.FAILED in (caught.kind, last.kind):
        return State.FAILED if state is not State.KILLED else state
    warned = state is State.WARNING or caught.warned or last.warned
    return State.WARNING if warned else State.SUCCESS


def _evaluate(
    step: Transition,
    index: int,
    lanes: Sequence[Lane],
    limit: int,
    statuses: dict[int, LaneStatus],
) -> State | None:
    run = step.execution.task_runs[index]
    while True:
        failed = any(s.kind is LaneKind.FAILED for s in statuses.values())
        started = (
            [] if step.killing or failed else _start_lanes(step, index, lanes, limit, statuses)
        )
        if not started:
            break
        # Only the lanes just moved changed (a task run may end as it starts: skipped,
        # a render error); the loop goes on until nothing more can start.
        for position in started:
            statuses[position] = lane_status(step, run.id, lanes[position])
        _sort(statuses)  # lane order: starts stay in flow order
    if any(s.kind is LaneKind.ACTIVE for s in statuses.values()):
        return None
    # A lane left out of `statuses` has not started: NEXT at its first task.
    unstarted = len(statuses) < len(lanes)
    if step.killing and (unstarted or any(s.kind is not LaneKind.DONE for s in statuses.values())):
        return exit_state(step)
    if failed or unstarted or any(s.kind is LaneKind.NEXT for s in statuses.values()):
        return State.FAILED  # NEXT here: a dag whose remaining tasks can never start
    return State.WARNING if any(s.warned for s in statuses.values()) else State.SUCCESS


def _sort(statuses: dict[int, LaneStatus]) -> None:
    """In lane order, in place (`evaluate` keeps this very dict for the next step)."""
    ordered = sorted(statuses.items())
    statuses.clear()
    statuses.update(ordered)


def _started_lanes(
    step: Transition, parent_id: str, lanes: Sequence[Lane]
) -> dict[int, LaneStatus]:
    """The status of every lane that has started, by position, in lane order.

    The statuses of the container's last evaluation with only the lanes of children
    changed since looked at again (`Transition.lanes`, `Transition.dirty`), or one pass
    over its children: a result of a for-each of thousands of items looks at its own
    item, not at every started one.
    """
    statuses = step.lanes.get(parent_id)
    if statuses is None or (statuses and next(reversed(statuses)) >= len(lanes)):
        return _scan_lanes(step, parent_id, lanes)
    runs = step.execution.task_runs
    count = len(lanes)
    position_of = lane_positions(lanes)
    moved = set()
    for child in step.dirty.pop(parent_id, ()):
        run = runs[child]
        position = position_of(run.task_id, run.iteration)
        if position is not None and position < count:
            moved.add(position)
    inserted = False
    for position in moved:
        status = lane_status(step, parent_id, lanes[position])
        if status.kind is LaneKind.NEXT and status.position == 0:
            statuses.pop(position, None)  # not started (its runs dropped)
        else:
            inserted = inserted or position not in statuses
            statuses[position] = status
    if inserted:
        _sort(statuses)
    return statuses


def _scan_lanes(step: Transition, parent_id: str, lanes: Sequence[Lane]) -> dict[int, LaneStatus]:
    """`_started_lanes` from the container's task runs alone: one pass over them, not a
    lookup per lane and task."""
    step.dirty.pop(parent_id, None)
    runs = step.execution.task_runs
    count = len(lanes)
    position_of = lane_positions(lanes)
    by_lane: dict[int, dict[str, TaskRun]] = {}
    for child in step.children_of(parent_id):
        run = runs[child]
        position = position_of(run.task_id, run.iteration)
        if position is not None and position < count:
            by_lane.setdefault(position, {})[run.task_id] = run
    shared = lanes.tasks if isinstance(lanes, ItemLanes) else None  # no Lane per item
    statuses = {}
    for position in sorted(by_lane):
        tasks = shared if shared is not None else lanes[position].tasks
        status = status_of(tasks, by_lane[position])
        if status.kind is not LaneKind.NEXT or status.position > 0:
            statuses[position] = status
    return statuses


def lane_positions(lanes: Sequence[Lane]) -> Any:
    """`(task id, iteration) -> lane position` for these lanes (None: a child in none of
    them, e.g. a task of the flowable's `errors`). Static lanes know theirs (made once per
    plan); a loop's are computed, never listed: it may have thousands of items."""
    if isinstance(lanes, PairLanes):
        return lambda task_id, iteration: (
            None if iteration is None else lanes.position(task_id, iteration)
        )
    if isinstance(lanes, ItemLanes):
        return lambda task_id, iteration: iteration
    lane_of = (
        lanes.position_of
        if isinstance(lanes, StaticLanes)
        else {task.id: i for i, lane in enumerate(lanes) for task in lane.tasks}
    )
    return lambda task_id, iteration: lane_of.get(task_id) if iteration is None else None


def _start_lanes(
    step: Transition,
    index: int,
    lanes: Sequence[Lane],
    limit: int,
    statuses: dict[int, LaneStatus],
) -> list[int]:
    """Start the next task of each going lane, then new lanes up to `limit` (0: none).

    Returns the positions of the lanes that moved.
    """
    going = sum(
        1
        for s in statuses.values()
        if s.kind is LaneKind.ACTIVE or (s.kind is LaneKind.NEXT and s.position > 0)
    )
    done: set[str] | None = None  # a dag's succeeded tasks, found when first needed
    started = []
    for i, s in statuses.items():
        if s.kind is LaneKind.NEXT and s.position > 0:
            start_child(step, lanes[i].tasks[s.position], index, lanes[i])
            started.append(i)
    for i in range(len(lanes)):
        if limit and going >= limit:
            break  # checked first: a full for-each looks at none of its waiting items
        if i in statuses:
            continue
        lane = lanes[i]
        if lane.depends_on:
            if done is None:
                done = {
                    lanes[j].tasks[0].id for j, s in statuses.items() if s.kind is LaneKind.DONE
                }
            if any(d not in done for d in lane.depends_on):
                continue
        start_child(step, lane.tasks[0], index, lane)
        going += 1
        started.append(i)
    return started


def settle_root(step: Transition) -> None:
    """Move the top level on: `tasks`, then `errors` after a failure, then `finally`,
    then `afterExecution` (which sees the end state and cannot change it)."""
    if step.execution.state.is_terminal:
        return  # ended earlier in this step
    plan = step.plan
    lanes = [Lane(plan.main), Lane(plan.errors), Lane(plan.finally_), Lane(plan.after_execution)]
    reported: set[str] = set()
    while True:
        main, errors, finally_, after = (lane_status(step, None, lane) for lane in lanes)
        for name, lane, status in (("errors", lanes[1], errors), ("finally", lanes[2], finally_)):
            if status.kind is LaneKind.FAILED and name not in reported:
                reported.add(name)
                _report_stopped_branch(step, name, lane, status.position)
        if any(s.kind is LaneKind.ACTIVE for s in (main, errors, finally_, after)):
            return
        if step.killing:
            end_execution(step, exit_state(step))
            return
        if main.kind is LaneKind.NEXT:
            start_child(step, plan.main[main.position], None, lanes[0])
            continue
        if main.kind is LaneKind.FAILED and errors.kind is LaneKind.NEXT:
            start_child(step, plan.errors[errors.position], None, lanes[1])
            continue
        if finally_.kind is LaneKind.NEXT:
            start_child(step, plan.finally_[finally_.position], None, lanes[2])
            continue
        if after.kind is LaneKind.NEXT:
            start_child(step, plan.after_execution[after.position], None, lanes[3])
            continue
        break
    end_execution(step, _end_state((main, errors, finally_)))


def _end_state(statuses: Sequence[LaneStatus]) -> State:
    """The execution's end from its `tasks`, `errors` and `finally` lanes, all over."""
    if any(s.kind is LaneKind.FAILED for s in statuses):
        return State.FAILED
    return State.WARNING if any(s.warned for s in statuses) else State.SUCCESS


def pending_end_state(step: Transition) -> State | None:
    """The state the execution will end in, once its `tasks`, `errors` and `finally` are
    over (what `afterExecution` tasks read as `execution.state`); None before that."""
    plan = step.plan
    lanes = (Lane(plan.main), Lane(plan.errors), Lane(plan.finally_))
    statuses = [lane_status(step, None, lane) for lane in lanes]
    main, errors, finally_ = statuses
    if main.kind in (LaneKind.NEXT, LaneKind.ACTIVE) or LaneKind.ACTIVE in (
        errors.kind,
        finally_.kind,
    ):
        return None
    if (main.kind is LaneKind.FAILED and errors.kind is LaneKind.NEXT) or (
        finally_.kind is LaneKind.NEXT
    ):
        return None
    return _end_state(statuses)


def _report_stopped_branch(step: Transition, name: str, lane: Lane, position: int) -> None:
    """Say once, in the step where it happened, which tasks a failed branch skipped."""
    failed = lane.tasks[position]
    index = step.child(None, failed.id, None)
    skipped = [task.id for task in lane.tasks[position + 1 :]]
    if index is None or not skipped or not step.changed_now(index):
        return
    step.log(
        LogLevel.WARN,
        f"{name} branch stopped after {failed.id!r} failed; skipped: {', '.join(map(repr, skipped))}",
        index,
        None,
    )


def end_execution(step: Transition, state: State) -> None:
    execution = step.execution
    if state in (State.SUCCESS, State.WARNING):
        try:
            execution.outputs = flow_outputs(step)
        except (ExpressionError, ValueError) as exc:
            step.log(LogLevel.ERROR, f"cannot render the flow's outputs: {exc}", None, None)
            state = State.FAILED
    step.set_execution_state(state)
    parent = execution.trigger.get("parentExecutionId")
    if isinstance(parent, str):
        given = _outputs_for_parent(step)
        step.emit(
            SendCommand(
                messages.ExecutionCommand(
                    command_id=command_id(execution.id, "child-ended", len(execution.histories)),
                    execution_id=parent,
                    kind=CommandKind.CHILD_ENDED,
                    time=step.now,
                    task_run_id=execution.trigger.get("parentTaskRunId"),
                    payload={
                        "childExecutionId": execution.id,
                        "state": str(state),
                        **given,
                    },
                )
            )
        )


def _outputs_for_parent(step: Transition) -> dict[str, Any]:
    """What a subflow task reads of this (child) execution as `outputs`: the flow's own
    outputs, or, when it declares none, the calling task's (deprecated) `outputs`
    rendered over this execution (Kestra's order); `outputsError` when they do not
    render. A child that did not succeed gives none: its end state says why."""
    execution = step.execution
    asked = execution.trigger.get("outputs")
    if not isinstance(asked, dict) or getattr(step.flow, "outputs", None):
        return {"outputs": execution.outputs}
    if execution.state not in (State.SUCCESS, State.WARNING):
        return {"outputs": {}}
    try:
        return {"outputs": render_value(asked, context_for(step, None), "outputs")}
    except ExpressionError as exc:
        return {"outputs": {}, "outputsError": f"cannot render {exc.path!r}: {exc.reason}"}


def flow_outputs(step: Transition) -> dict[str, Any]:
    """The flow's `outputs` rendered at the end; raises `ExpressionError`/`ValueError`."""
    definitions = getattr(step.flow, "outputs", None) or []
    if not definitions:
        return {}
    context = context_for(step, None)
    result: dict[str, Any] = {}
    for definition in definitions:
        value = render_value(definition.value, context, f"outputs.{definition.id}")
        output_type = getattr(definition, "type", None)
        if output_type is not None:
            try:
                value = coerce_input(output_type, value)
            except ValueError as exc:
                raise ValueError(f"output {definition.id!r}: {exc}") from exc
        result[definition.id] = value
    return result
