"""Property-based: random task trees against a random, unreliable world.

Flows nest sequential, parallel (with `concurrency`), if, for-each (with
`concurrencyLimit`) and dag tasks up to three levels deep, over worker tasks (with retry
policies and timeouts), pause and fail tasks; any task may carry `allowFailure`,
`disabled` or a literal `runIf`. The world answers attempts SUCCESS or FAILED (or never:
then only a timeout tells), in any order, redelivers what it already delivered, kills the
execution and resumes paused task runs (some of them long over) whenever it likes.

After every step the task runs are checked against a model of the tree built here from
the flow's own definition, independently of the core's `plan`: a run starts only after
its lane predecessor succeeded or its dag dependencies did, never twice, never while the
execution is being killed; running lanes stay within their limit; attempts within the
retry budget; event sequence numbers grow by one; the execution ends once and then is
silent. At the end, replaying the recorded events gives the same commands and bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import event as label
from hypothesis import strategies as st

from headrace import messages
from headrace.core.advance import Carry
from headrace.core.events import (
    Event,
    Kill,
    KillTask,
    PublishEvent,
    RequestTask,
    Resume,
    SetTimer,
    Start,
    TaskFinished,
)
from headrace.core.state import Execution, TaskRun
from headrace.flow.model import Flow
from headrace.messages import CommandKind
from headrace.states import State
from tests.unit.test_core_helpers import (
    T0,
    Run,
    events,
    finished,
    fired,
    make_flow,
    started,
    trigger,
)

MAX_DEPTH = 3  # containers nest at most this deep
MAX_TASKS = 14  # per flow, containers included: keeps for-each products small
MAX_STEPS = 3_000  # far above what the largest flow needs; reaching it is a failure
MAX_REPLAYS = 40
MAX_KILLS = 3  # after the first, a kill is a duplicate by construction
SUCCEEDED = (State.SUCCESS, State.WARNING, State.SKIPPED)
LANE_KINDS = ("top", "flow.sequential", "flow.if", "flow.foreach")  # one task after another

# ----------------------------------------------------------------- flows


@dataclass
class Budget:
    """Shared by the draws of one flow: unique ids, and a cap on the number of tasks."""

    left: int = MAX_TASKS
    next_id: int = 0

    def take(self, prefix: str) -> str:
        self.left -= 1
        self.next_id += 1
        return f"{prefix}{self.next_id}"


@st.composite
def retry_policies(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "type": draw(st.sampled_from(["constant", "exponential"])),
        "interval": timedelta(milliseconds=draw(st.integers(1, 2_000))),
        "maxAttempts": draw(st.integers(1, 4)),
    }


def common(draw: st.DrawFn, task: dict[str, Any]) -> dict[str, Any]:
    """allowFailure, disabled and runIf, on any task."""
    roll = draw(st.integers(0, 11))
    if roll == 1:
        task["allowFailure"] = True
    elif roll == 2:
        task["disabled"] = True
    elif roll in (3, 4):
        task["runIf"] = draw(st.sampled_from(["true", "false", True, False]))
    return task


@st.composite
def leaves(draw: st.DrawFn, budget: Budget) -> dict[str, Any]:
    kind = draw(st.integers(0, 11))
    if kind == 10:
        task: dict[str, Any] = {"id": budget.take("p"), "type": "flow.pause"}
        if draw(st.booleans()):
            task["delay"] = timedelta(seconds=draw(st.integers(1, 30)))
    elif kind == 11:
        task = {"id": budget.take("x"), "type": "flow.fail", "message": "on purpose"}
    else:
        task = {"id": budget.take("w"), "type": "log", "message": "{{ taskrun.value }}"}
        if draw(st.integers(0, 1)) == 1:
            task["retry"] = draw(retry_policies())
        if draw(st.integers(0, 3)) == 3:
            task["timeout"] = timedelta(seconds=draw(st.integers(1, 60)))
    return common(draw, task)


@st.composite
def task_lists(draw: st.DrawFn, budget: Budget, depth: int) -> list[dict[str, Any]]:
    count = draw(st.integers(1, 4))
    result = [draw(task_nodes(budget, depth))]
    while len(result) < count and budget.left > 0:
        result.append(draw(task_nodes(budget, depth)))
    return result


@st.composite
def task_nodes(draw: st.DrawFn, budget: Budget, depth: int) -> dict[str, Any]:
    # 0 is a leaf: hypothesis shrinks towards flat flows.
    kind = draw(st.integers(0, 8)) if depth < MAX_DEPTH and budget.left > 2 else 0
    if kind <= 3:
        return draw(leaves(budget))
    deeper = depth + 1
    if kind == 4:
        task: dict[str, Any] = {"id": budget.take("s"), "type": "flow.sequential"}
        task["tasks"] = draw(task_lists(budget, deeper))
    elif kind == 5:
        task = {"id": budget.take("q"), "type": "flow.parallel"}
        task["tasks"] = draw(task_lists(budget, deeper))
        if draw(st.booleans()):
            task["concurrency"] = draw(st.integers(1, 2))
    elif kind == 6:
        task = {"id": budget.take("i"), "type": "flow.if", "condition": draw(st.booleans())}
        task["then"] = draw(task_lists(budget, deeper))
        task["else"] = draw(task_lists(budget, deeper)) if draw(st.booleans()) else []
    elif kind == 7:
        task = {"id": budget.take("f"), "type": "flow.foreach"}
        task["values"] = draw(st.lists(st.integers(0, 9), max_size=3))
        task["concurrencyLimit"] = draw(st.integers(0, 2))
        task["tasks"] = draw(task_lists(budget, deeper))
    else:
        task = {"id": budget.take("d"), "type": "flow.dag"}
        children = draw(task_lists(budget, deeper))
        entries = []
        for position, child in enumerate(children):
            earlier = [c["id"] for c in children[:position]]
            depends = draw(st.lists(st.sampled_from(earlier), unique=True)) if earlier else []
            entries.append({"task": child, "dependsOn": depends})
        task["tasks"] = entries
        if draw(st.booleans()):
            task["concurrency"] = draw(st.integers(1, 2))
    return common(draw, task)


@st.composite
def flows(draw: st.DrawFn) -> Flow:
    return make_flow(*draw(task_lists(Budget(), 0)))


# ----------------------------------------------------------------- the model


@dataclass
class Info:
    """What the flow's definition says about one task (independent of `core.plan`)."""

    task: dict[str, Any]
    parent: str | None
    kind: str  # the parent's type, "top" at the top level
    previous: str | None = None  # the enabled task before it in its lane
    branch: str | None = None  # under an if: "then" or "else"
    depends_on: tuple[str, ...] = ()
    disabled: bool = False  # itself or an ancestor

    @property
    def max_attempts(self) -> int:
        retry = self.task.get("retry")
        return retry["maxAttempts"] if retry else 1


def tree_of(tasks: list[dict[str, Any]]) -> dict[str, Info]:
    infos: dict[str, Info] = {}

    def walk(
        children: list[dict[str, Any]],
        parent: str | None,
        kind: str,
        branch: str | None = None,
        disabled: bool = False,
        depends: dict[str, list[str]] | None = None,
    ) -> None:
        previous = None
        for task in children:
            off = disabled or bool(task.get("disabled"))
            info = Info(task, parent, kind, branch=branch, disabled=off)
            if kind in LANE_KINDS:
                info.previous = previous
            if depends is not None:
                info.depends_on = tuple(depends[task["id"]])
            infos[task["id"]] = info
            if not task.get("disabled"):
                previous = task["id"]
            match task["type"]:
                case "flow.sequential" | "flow.parallel" | "flow.foreach":
                    walk(task["tasks"], task["id"], task["type"], disabled=off)
                case "flow.if":
                    walk(task["then"], task["id"], "flow.if", "then", off)
                    walk(task["else"], task["id"], "flow.if", "else", off)
                case "flow.dag":
                    entries = task["tasks"]
                    dependencies = {e["task"]["id"]: e["dependsOn"] for e in entries}
                    walk(
                        [e["task"] for e in entries],
                        task["id"],
                        "flow.dag",
                        None,
                        off,
                        dependencies,
                    )

    walk(tasks, None, "top")
    for info in infos.values():  # a disabled dependency counts as absent
        info.depends_on = tuple(d for d in info.depends_on if not infos[d].disabled)
    return infos


def flow_tasks(flow: Flow) -> list[dict[str, Any]]:
    return [task.model_dump(by_alias=True, exclude_none=True) for task in flow.tasks]


def lane_limit(task: dict[str, Any]) -> int:
    """0: no limit."""
    if task["type"] == "flow.foreach":
        return task.get("concurrencyLimit", 1)
    if task["type"] in ("flow.parallel", "flow.dag"):
        return task.get("concurrency") or 0
    return 0


# ----------------------------------------------------------------- the world


@dataclass
class World:
    """Drives one execution; records every (event, time) it delivered, in order."""

    flow: Flow
    data: st.DataObject
    infos: dict[str, Info] = field(init=False)
    run: Run = field(init=False)
    now: datetime = T0
    pending: list[Event] = field(default_factory=list)
    delivered: list[Event] = field(default_factory=list)
    trace: list[tuple[Event, datetime]] = field(default_factory=list)
    requests: dict[tuple[str, int], messages.TaskRequest] = field(default_factory=dict)
    seen: set[tuple[str | None, str, int | None]] = field(default_factory=set)
    ended: State | None = None
    kills: int = 0
    killed: bool = False  # a kill reached the execution before its end
    # Runs: what follows a run's start report once delivered (its re-run, its result),
    # and the latest run id of each attempt (what a kill of the attempt reaches).
    follow_ups: dict[str, list[Event]] = field(default_factory=dict)
    latest_run: dict[tuple[str, int], str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.infos = tree_of(flow_tasks(self.flow))
        # The executor's way: each step hands what it learnt to the next (`Carry`); the
        # replay below, without it, must give the very same commands and bytes.
        self.run = Run(self.flow, carry=Carry())

    # -------------------------------------------------------------- delivery

    def deliver(self, event: Event, *, redelivery: bool = False) -> None:
        if isinstance(event, TaskFinished):
            self.now += timedelta(milliseconds=self.data.draw(st.integers(0, 3_000)))
        elif not isinstance(event, Start):
            self.now = max(self.now, event.command.time)  # a timer fires when due
        before = self.run.execution
        commands = self.run.send(event, self.now)
        self.trace.append((event, self.now))
        self.delivered.append(event)
        if self.ended is not None:
            # Nothing, but the kill of a run that reports its start after the end, and
            # the answer to a kill, resume or restart (ignored, saying why).
            assert all(
                (
                    is_start_report(event)
                    and isinstance(c, KillTask)
                    and c.run_id == event.result.run_id
                )
                or (
                    isinstance(c, PublishEvent)
                    and c.event.command is not None
                    and c.event.command.status is messages.CommandStatus.IGNORED
                )
                for c in commands
            ), "an ended execution emits nothing"
        # A redelivered event is a no-op; "resume every paused run" is not idempotent
        # by nature (it may meet a pause that started since), so it is left out.
        if redelivery and is_start_report(event):
            # A start report again: at most its own run is killed (it is over or lost).
            assert self.run.execution is before
            assert all(
                isinstance(c, KillTask) and c.run_id == event.result.run_id for c in commands
            ), "a redelivered start report did more than kill its run"
        elif redelivery and not (isinstance(event, Resume) and event.command.task_run_id is None):
            assert commands == [], f"a redelivered {type(event).__name__} emitted"
        self.check_step(before, commands)
        if is_start_report(event) and not redelivery:
            result = event.result
            self.latest_run[(result.task_run_id, result.attempt)] = result.run_id
            self.pending += self.follow_ups.pop(result.run_id, [])
        for command in commands:
            if isinstance(command, RequestTask):
                self.answer(command.request)
            elif isinstance(command, SetTimer):
                self.pending.append(fired(command.execution_id, command.timer))
            elif isinstance(command, KillTask):
                key = (command.task_run_id, command.attempt)
                run_id = command.run_id or self.latest_run.get(key, "")
                self.pending.append(
                    finished(self.requests[key], State.KILLED, error="killed", run_id=run_id)
                )

    def answer(self, request: messages.TaskRequest) -> None:
        key = (request.task_run_id, request.attempt)
        self.requests[key] = request
        # 0: an older worker, no start report; 1-2: one run; 3: the first run's worker
        # dies after reporting it, the request is redelivered and runs again elsewhere
        # (the lost run's result may still come, late, from a worker cut off).
        runs = self.data.draw(st.integers(0, 3))
        if runs == 0:
            self.pending += self.outcome(request, "")
            return
        first = f"run-{len(self.trace)}-{request.task_run_id}-{request.attempt}"
        self.pending.append(started(request, first))
        if runs < 3:
            self.follow_ups[first] = self.outcome(request, first)
            return
        second = first + "-again"
        self.follow_ups[first] = [started(request, second)]
        if self.data.draw(st.booleans()):
            self.follow_ups[first].append(
                finished(request, State.FAILED, error="late", run_id=first)
            )
        self.follow_ups[second] = self.outcome(request, second)

    def outcome(self, request: messages.TaskRequest, run_id: str) -> list[Event]:
        roll = self.data.draw(st.integers(0, 9))  # shrinks towards success
        if roll < 7:
            return [finished(request, outputs={"n": roll}, run_id=run_id)]
        if roll < 9 or not request.timeout_ms:
            return [finished(request, State.FAILED, error="boom", run_id=run_id)]
        return []  # silent: the worker died; only the timeout timer will tell

    def command(self, kind: CommandKind, task_run_id: str | None = None, **payload: Any):
        return messages.ExecutionCommand(
            f"{kind}-{len(self.trace)}", "ex1", kind, self.now, task_run_id, payload=payload
        )

    def stale_results(self) -> list[Event]:
        going = {r.id for r in self.run.execution.task_runs if not r.state.is_terminal}
        return [
            e
            for e in self.delivered
            if isinstance(e, TaskFinished) and e.result.task_run_id in going
        ]

    def paused(self) -> list[TaskRun]:
        execution = self.run.execution
        return [r for r in execution.task_runs if r.state is State.PAUSED] if execution else []

    def play(self) -> None:
        self.deliver(trigger())
        replays = 0
        # A third of the worlds kill the execution early on (0: never; shrinks to calm).
        kill_at = self.data.draw(st.integers(0, 2)) and self.data.draw(st.integers(1, 20))
        for step in range(1, MAX_STEPS + 1):
            # Low numbers deliver what is pending: hypothesis shrinks towards a calm world.
            roll = self.data.draw(st.integers(0, 39))
            if (step == kill_at or roll == 39) and self.kills < MAX_KILLS:
                self.kills += 1
                self.killed = self.killed or self.ended is None
                self.deliver(Kill(self.command(CommandKind.KILL)))
            elif roll >= 36:
                runs = self.run.execution.task_runs
                target = self.data.draw(st.sampled_from([None, *[r.id for r in runs]]))
                self.deliver(Resume(self.command(CommandKind.RESUME, target, inputs={"ok": 1})))
            elif roll >= 32 and replays < MAX_REPLAYS:
                replays += 1
                self.deliver(self.data.draw(st.sampled_from(self.delivered)), redelivery=True)
            elif roll >= 28 and (stale := self.stale_results()):
                # Results of runs still going: earlier attempts, the redeliveries most
                # likely to confuse an executor.
                self.deliver(self.data.draw(st.sampled_from(stale)), redelivery=True)
            elif self.pending:
                index = self.data.draw(st.integers(0, len(self.pending) - 1))
                self.deliver(self.pending.pop(index))
            elif paused := self.paused():
                self.deliver(Resume(self.command(CommandKind.RESUME, paused[0].id)))
            else:
                return
        raise AssertionError("the world still had events to deliver after MAX_STEPS")

    # -------------------------------------------------------------- checks

    def check_step(self, before: Execution | None, commands: list) -> None:
        execution = self.run.execution
        assert execution is not None
        was_killing = before is not None and before.state is State.KILLING
        existed = {} if before is None else {r.id: r for r in before.task_runs}
        by_id = {r.id: r for r in execution.task_runs}

        # seq grows by one per published event, across steps.
        seqs = [e.seq for e in events(commands)]
        first = 1 if before is None else before.seq + 1
        assert (
            seqs == list(range(first, first + len(seqs))) and execution.seq == first + len(seqs) - 1
        )

        # At most one end, and nothing after it.
        ends = [e for e in events(commands) if e.execution and e.execution.state.is_terminal]
        if ends:
            assert self.ended is None and len(ends) == 1, "ended twice"
            self.ended = ends[0].execution.state
            assert execution.state is self.ended
        if self.ended is not None:
            assert execution.state is self.ended
        # Within a step too: histories keep every state, and no restart happens here.
        assert sum(c.state.is_terminal for c in execution.histories) <= 1, "ended twice"

        for run in execution.task_runs:
            if run.id not in existed:
                self.check_new_run(run, by_id, existed, was_killing)
            info = self.infos[run.task_id]
            if info.task["type"] == "log":
                # Entries of lost runs share their attempt's number: not a retry.
                numbers = {attempt.number for attempt in run.attempts}
                assert len(numbers) <= info.max_attempts, "retried beyond maxAttempts"
            assert all(a.state.is_terminal for a in run.attempts[:-1]), "two runs at once"
            ends = sum(c.state.is_terminal for c in run.histories)
            assert ends <= 1, f"task run {run.task_id} ended twice"
        for command in commands:
            if isinstance(command, RequestTask):
                request = command.request
                run = by_id[request.task_run_id]
                assert run.state is State.RUNNING and run.attempts[-1].number == request.attempt
                assert request.attempt <= self.infos[run.task_id].max_attempts
        self.check_limits(execution)

    def check_new_run(
        self,
        run: TaskRun,
        by_id: dict[str, TaskRun],
        existed: dict[str, TaskRun],
        was_killing: bool,
    ) -> None:
        info = self.infos[run.task_id]
        assert not was_killing, "a task run started while killing"
        assert not info.disabled, "a disabled task ran"
        key = (run.parent_task_run_id, run.task_id, run.iteration)
        assert key not in self.seen, "a task ran twice"
        self.seen.add(key)
        if info.parent is None:
            assert run.parent_task_run_id is None and run.iteration is None
        else:
            parent = by_id[run.parent_task_run_id]
            assert parent.task_id == info.parent, "under the wrong parent"
            assert parent.id not in existed or not existed[parent.id].state.is_terminal, (
                "started under an ended container"
            )
            if info.kind == "flow.foreach":
                values = info_task(self.infos, info.parent)["values"]
                assert run.iteration is not None and 0 <= run.iteration < len(values)
                assert run.value == str(values[run.iteration])
            else:
                assert run.iteration is None
            if info.kind == "flow.if":
                condition = info_task(self.infos, info.parent)["condition"]
                assert info.branch == ("then" if condition else "else"), "wrong branch"
        if info.previous is not None:
            previous = self.find(run.parent_task_run_id, info.previous, run.iteration)
            assert previous is not None, f"{run.task_id} before its predecessor"
            assert previous.state in SUCCEEDED, f"{run.task_id} after a failed predecessor"
        for dependency in info.depends_on:
            done = self.find(run.parent_task_run_id, dependency, run.iteration)
            assert done is not None and done.state in SUCCEEDED, "dag dependency not met"

    def find(self, parent_id: str | None, task_id: str, iteration: int | None) -> TaskRun | None:
        for run in self.run.execution.task_runs:
            if (run.parent_task_run_id, run.task_id, run.iteration) == (
                parent_id,
                task_id,
                iteration,
            ):
                return run
        return None

    def check_limits(self, execution: Execution) -> None:
        children: dict[str, list[TaskRun]] = {}
        for run in execution.task_runs:
            if run.parent_task_run_id is not None:
                children.setdefault(run.parent_task_run_id, []).append(run)
        for run in execution.task_runs:
            task = self.infos[run.task_id].task
            limit = lane_limit(task)
            if not limit:
                continue
            mine = children.get(run.id, [])
            if task["type"] == "flow.foreach":
                lanes: dict[int | None, list[TaskRun]] = {}
                for child in mine:
                    lanes.setdefault(child.iteration, []).append(child)
                last = [t["id"] for t in task["tasks"] if not t.get("disabled")][-1:]
                going = sum(1 for lane in lanes.values() if lane_going(lane, last))
            else:
                going = sum(1 for child in mine if not child.state.is_terminal)
            assert going <= limit, f"{going} lanes of {run.task_id} run, limit {limit}"


def is_start_report(event: Event) -> bool:
    return isinstance(event, TaskFinished) and event.result.state is State.RUNNING


def expected_children(task: dict[str, Any] | None, flow: Flow) -> list[tuple[str, int | None]]:
    """(task id, iteration) of every run a container (None: the top level) must have
    started before it may end SUCCESS or WARNING."""
    if task is None:
        children = flow_tasks(flow)
    elif task["type"] == "flow.if":
        children = task["then"] if task["condition"] else task["else"]
    elif task["type"] == "flow.dag":
        children = [entry["task"] for entry in task["tasks"]]
    elif task["type"] == "flow.foreach":
        enabled = [t["id"] for t in task["tasks"] if not t.get("disabled")]
        return [(t, i) for i in range(len(task["values"])) for t in enabled]
    else:
        children = task.get("tasks", [])
    return [(t["id"], None) for t in children if not t.get("disabled")]


def check_end(world: World, run: TaskRun | None) -> None:
    """A container's (or the execution's) end state follows from its children's."""
    execution = world.run.execution
    state = execution.state if run is None else run.state
    task = None if run is None else world.infos[run.task_id].task
    if task is not None and task["type"] not in (
        "flow.sequential",
        "flow.parallel",
        "flow.if",
        "flow.foreach",
        "flow.dag",
    ):
        return
    parent_id = None if run is None else run.id
    children = [r for r in execution.task_runs if r.parent_task_run_id == parent_id]
    ran = {(r.task_id, r.iteration) for r in children}
    broken = any(r.state in (State.FAILED, State.KILLED) for r in children)
    if state is State.KILLED:
        assert world.killed, "KILLED without a kill"
    elif state is State.FAILED:
        assert broken, "FAILED with no failed child"
    elif state is State.WARNING and broken:
        assert task is not None and task.get("allowFailure"), "WARNING over a failed child"
    elif state in (State.SUCCESS, State.WARNING):
        assert set(expected_children(task, world.flow)) <= ran, "succeeded before all ran"


def depth(infos: dict[str, Info], task_id: str) -> int:
    parent = infos[task_id].parent
    return 0 if parent is None else 1 + depth(infos, parent)


def info_task(infos: dict[str, Info], task_id: str) -> dict[str, Any]:
    return infos[task_id].task


def lane_going(lane: list[TaskRun], last: list[str]) -> bool:
    """A for-each lane counts from its first task run until it is over (or stopped)."""
    if any(run.state in (State.FAILED, State.KILLED) for run in lane):
        return any(not run.state.is_terminal for run in lane)
    finished_last = any(run.task_id in last and run.state.is_terminal for run in lane)
    return not finished_last


# ----------------------------------------------------------------- the property


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flow=flows(), data=st.data())
def test_any_tree_in_any_world_runs_in_order_within_limits_and_ends_once(flow, data):
    world = World(flow, data)
    world.play()
    execution = world.run.execution
    history = world.run.history

    label(f"execution {execution.state}")
    label(f"{len(execution.task_runs) // 10 * 10}+ task runs")
    label(f"killed: {world.killed}")
    lost = [
        a for r in execution.task_runs for a in r.attempts if (a.error or "").startswith("lost")
    ]
    label(f"a run lost with its worker: {bool(lost)}")
    label(f"nesting depth {max(depth(world.infos, i) for i in world.infos)}")
    for kind in {info.task["type"] for info in world.infos.values()}:
        label(f"has {kind}")

    # The world went quiet: the execution ended, with nothing left waiting.
    assert execution.state.is_terminal, f"stalled {execution.state}"
    assert execution.timers == []
    assert all(run.state.is_terminal for run in execution.task_runs), "a run left behind"
    if world.killed:
        assert execution.state is State.KILLED
    top = [run for run in execution.task_runs if run.parent_task_run_id is None]
    if execution.state is not State.KILLED:
        failed = any(run.state in (State.FAILED, State.KILLED) for run in top)
        assert (execution.state is State.FAILED) == failed

    for run in [None, *execution.task_runs]:
        check_end(world, run)

    # Replaying the same events gives the same commands and the same stored bytes, with
    # no step handing anything to the next.
    replay = Run(flow)
    for event, now in world.trace:
        replay.send(event, now)
    assert replay.history == history
    assert replay.execution.to_bytes() == execution.to_bytes()
