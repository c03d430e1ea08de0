"""The core, walked event by event: what state follows, what gets emitted."""

from __future__ import annotations

from datetime import timedelta

from headrace import codec
from headrace.core.advance import TIMEOUT_GRACE, advance
from headrace.core.events import KillTask, PublishEvent
from headrace.core.state import Execution, Timer, TimerKind
from headrace.core.tree import MAX_PROPERTIES_BYTES
from headrace.messages import LogLevel
from headrace.states import State
from headrace.topics.definitions import MAX_VALUE_BYTES
from tests.unit.test_core_helpers import (
    T0,
    Run,
    events,
    finished,
    fired,
    log_task,
    logs,
    make_flow,
    requests,
    timers,
    trigger,
)

RETRY_CONSTANT = {"type": "constant", "interval": "PT0.1S", "maxAttempts": 3}


def test_three_tasks_succeed_in_sequence_with_outputs_flowing():
    flow = make_flow(
        log_task("a"),
        {"id": "b", "type": "log", "message": "x is {{ outputs.a.x }}", "n": "{{ inputs.n }}"},
        {
            "id": "c",
            "type": "log",
            "message": "{{ outputs.b.y }} in {{ flow.namespace }}.{{ flow.id }} "
            "rev {{ flow.revision }} for {{ execution.id }} ({{ labels.team }}, "
            "{{ trigger.type }}) run {{ taskrun.id }} try {{ taskrun.attempt }}",
        },
    )
    run = Run(flow)

    commands = run.send(trigger(inputs={"n": 7}))
    assert run.state is State.RUNNING
    assert [h.state for h in run.execution.histories] == [State.CREATED, State.RUNNING]
    assert run.task_states() == {"a": State.RUNNING}
    (request_a,) = requests(commands)
    assert (request_a.task_id, request_a.attempt, request_a.type) == ("a", 1, "log")
    assert request_a.properties == {"message": "hello from a"}
    assert request_a.time == T0 and request_a.timeout_ms is None
    # One event per step: the execution and its new task run; seq counts from 1.
    (published,) = events(commands)
    assert published.seq == 1
    assert published.execution.state is State.RUNNING
    (created,) = published.task_runs
    assert (created.state, created.index) == (State.RUNNING, 0)
    assert [h.state for h in created.histories] == [State.CREATED, State.RUNNING]

    commands = run.send(finished(request_a, outputs={"x": 42}), T0 + timedelta(seconds=1))
    (request_b,) = requests(commands)
    assert request_b.properties == {"message": "x is 42", "n": 7}
    assert run.task_states() == {"a": State.SUCCESS, "b": State.RUNNING}
    (published,) = events(commands)
    assert published.seq == 2 and published.execution is None
    assert [(r.task_id, r.state, r.index) for r in published.task_runs] == [
        ("a", State.SUCCESS, 0),
        ("b", State.RUNNING, 1),
    ]

    commands = run.send(finished(request_b, outputs={"y": "why"}), T0 + timedelta(seconds=2))
    (request_c,) = requests(commands)
    assert request_c.properties["message"] == (
        f"why in company.team.demo rev 1 for ex1 (data, api) run {request_c.task_run_id} try 1"
    )

    commands = run.send(finished(request_c), T0 + timedelta(seconds=3))
    assert run.state is State.SUCCESS
    assert requests(commands) == []
    (final,) = events(commands)
    assert final.seq == 4
    assert [(r.task_id, r.state) for r in final.task_runs] == [("c", State.SUCCESS)]
    assert final.execution.state is State.SUCCESS
    assert run.execution.task_runs[0].outputs == {"x": 42}
    attempt = run.execution.task_runs[0].attempts[0]
    assert (attempt.state, attempt.started_at) == (State.SUCCESS, T0)


def test_ids_are_deterministic_and_distinct():
    flow = make_flow(log_task("a"), log_task("b"))
    first = Run(flow)
    first.send(trigger("ex1"))
    again = Run(flow)
    again.send(trigger("ex1"))
    other = Run(flow)
    other.send(trigger("ex2"))
    id1 = first.execution.task_runs[0].id
    assert id1 == again.execution.task_runs[0].id
    assert id1 != other.execution.task_runs[0].id
    assert len(id1) == 22 and id1.isalnum()


def test_duplicate_start_is_ignored():
    run = Run(make_flow(log_task("a")))
    run.send(trigger())
    state = run.execution
    assert run.send(trigger()) == []
    assert run.execution is state


def test_events_before_start_are_ignored():
    flow = make_flow(log_task("a"))
    probe = Run(flow)
    (request,) = requests(probe.send(trigger()))
    step = advance(None, finished(request), flow, T0)
    assert step.execution is None and step.commands == []


def test_retry_constant_three_attempts_then_failed():
    run = Run(make_flow(log_task("a", retry=RETRY_CONSTANT), log_task("b")))
    (request,) = requests(run.send(trigger()))
    now = T0
    for number in (1, 2):
        now += timedelta(seconds=1)
        commands = run.send(finished(request, State.FAILED, error="boom"), now)
        assert run.task_states() == {"a": State.RETRYING}
        assert requests(commands) == []
        (timer,) = timers(commands)
        assert timer == Timer(
            now + timedelta(seconds=0.1), TimerKind.RETRY, request.task_run_id, number + 1
        )
        assert run.execution.timers == [timer]
        (warning,) = logs(commands)
        assert warning.level is LogLevel.WARN
        assert warning.message == f"attempt {number} of 3 failed: boom; retrying in 0.1s"
        assert (warning.task_id, warning.attempt) == ("a", number)
        assert (warning.namespace, warning.flow_id) == ("company.team", "demo")

        commands = run.send(fired("ex1", timer), timer.due)
        (request,) = requests(commands)
        assert request.attempt == number + 1
        assert run.task_states() == {"a": State.RUNNING}
        assert run.execution.timers == []

    commands = run.send(finished(request, State.FAILED, error="boom"), now + timedelta(seconds=2))
    assert run.state is State.FAILED
    assert run.task_states() == {"a": State.FAILED}
    assert requests(commands) == [] and timers(commands) == []
    (error,) = logs(commands)
    assert error.level is LogLevel.ERROR
    assert error.message == "task 'a' failed after 3 attempts: boom"
    attempts = run.execution.task_runs[0].attempts
    assert [(a.number, a.state, a.error) for a in attempts] == [
        (n, State.FAILED, "boom") for n in (1, 2, 3)
    ]
    histories = [h.state for h in run.execution.task_runs[0].histories]
    running, retrying = [State.RUNNING], [State.RETRYING, State.RUNNING]
    assert histories == [State.CREATED, *running, *retrying, *retrying, State.FAILED]
    assert events(commands)[-1].execution.state is State.FAILED


def test_exponential_delays_grow_and_are_capped():
    retry = {"type": "exponential", "interval": "PT1S", "maxAttempts": 6, "maxInterval": "PT5S"}
    run = Run(make_flow(log_task("a", retry=retry)))
    (request,) = requests(run.send(trigger()))
    now = T0
    delays = []
    for _ in range(5):
        commands = run.send(finished(request, State.FAILED, error="e"), now)
        (timer,) = timers(commands)
        delays.append((timer.due - now).total_seconds())
        now = timer.due
        (request,) = requests(run.send(fired("ex1", timer), now))
    assert delays == [1, 2, 4, 5, 5]
    assert request.attempt == 6


def test_max_duration_stops_retries():
    retry = {"type": "constant", "interval": "PT10S", "maxAttempts": 10, "maxDuration": "PT25S"}
    run = Run(make_flow(log_task("a", retry=retry)))
    (request,) = requests(run.send(trigger()))
    now = T0
    for _ in range(2):  # retries start at 10 s and 20 s: within 25 s of the first start
        (timer,) = timers(run.send(finished(request, State.FAILED, error="e"), now))
        now = timer.due
        (request,) = requests(run.send(fired("ex1", timer), now))
    # The next retry would start 30 s after the first attempt: past maxDuration.
    commands = run.send(finished(request, State.FAILED, error="e"), now)
    assert timers(commands) == []
    assert run.state is State.FAILED
    assert len(run.execution.task_runs[0].attempts) == 3


def test_killed_attempt_is_retried_like_a_failure():
    run = Run(make_flow(log_task("a", retry=RETRY_CONSTANT)))
    (request,) = requests(run.send(trigger()))
    commands = run.send(finished(request, State.KILLED))
    assert run.task_states() == {"a": State.RETRYING}
    assert "attempt ended KILLED" in logs(commands)[0].message


def test_no_retry_policy_fails_at_once():
    run = Run(make_flow(log_task("a"), log_task("b")))
    (request,) = requests(run.send(trigger()))
    commands = run.send(finished(request, State.FAILED, error="exit code 2"))
    assert run.state is State.FAILED
    assert run.task_states() == {"a": State.FAILED}
    (error,) = logs(commands)
    assert error.message == "task 'a' failed: exit code 2"


def test_duplicate_and_stale_results_are_ignored():
    run = Run(make_flow(log_task("a", retry=RETRY_CONSTANT), log_task("b")))
    (first,) = requests(run.send(trigger()))
    (timer,) = timers(run.send(finished(first, State.FAILED, error="e")))
    # The failure delivered again: no second retry timer.
    assert run.send(finished(first, State.FAILED, error="e")) == []
    (second,) = requests(run.send(fired("ex1", timer)))
    # A late SUCCESS of attempt 1 is stale: attempt 2 is the one that counts.
    assert run.send(finished(first, State.SUCCESS)) == []
    # The retry timer delivered twice starts nothing new.
    assert run.send(fired("ex1", timer)) == []
    (request_b,) = requests(run.send(finished(second, outputs={"ok": True})))
    assert run.send(finished(second)) == []
    run.send(finished(request_b))
    assert run.state is State.SUCCESS
    # After the end nothing is emitted, whatever arrives.
    assert run.send(finished(request_b)) == []
    assert run.send(finished(first, State.FAILED)) == []
    assert run.send(fired("ex1", timer)) == []
    assert run.send(trigger()) == []
    seqs = [e.seq for e in events(run.history)]
    assert seqs == list(range(1, len(seqs) + 1))


def test_result_for_unknown_task_run_is_ignored():
    run = Run(make_flow(log_task("a")))
    (request,) = requests(run.send(trigger()))
    request.task_run_id = "not-a-task-run"
    assert run.send(finished(request)) == []


def test_timeout_sets_a_backstop_timer_and_fails_a_silent_attempt():
    retry = {"type": "constant", "interval": "PT1S", "maxAttempts": 2}
    run = Run(make_flow(log_task("a", timeout="PT5S", retry=retry)))
    commands = run.send(trigger())
    (request,) = requests(commands)
    assert request.timeout_ms == 5000
    (timeout,) = timers(commands)
    assert timeout == Timer(
        T0 + timedelta(seconds=5) + TIMEOUT_GRACE, TimerKind.TIMEOUT, request.task_run_id, 1
    )

    commands = run.send(fired("ex1", timeout), timeout.due)
    attempt = run.execution.task_runs[0].attempts[0]
    assert attempt.state is State.FAILED and attempt.ended_at == timeout.due
    assert attempt.error == "timed out: no result within 5s (+30s grace)"
    assert run.task_states() == {"a": State.RETRYING}
    (retry_timer,) = timers(commands)
    assert logs(commands)[0].message.startswith("attempt 1 of 2 failed: timed out")
    # A hung worker may still run it: it is told to stop before the retry starts.
    assert [c for c in commands if isinstance(c, KillTask)] == [
        KillTask("ex1", request.task_run_id, 1)
    ]

    # The dead worker's result arriving after all is stale.
    assert run.send(finished(request), timeout.due + timedelta(seconds=1)) == []
    commands = run.send(fired("ex1", retry_timer), retry_timer.due)
    (second,) = requests(commands)
    (second_timeout,) = timers(commands)
    assert second.attempt == 2 and second_timeout.attempt == 2
    # A result in time cancels the backstop: the timer is dropped from the state...
    run.send(finished(second), retry_timer.due + timedelta(seconds=1))
    assert run.state is State.SUCCESS
    assert run.execution.timers == []
    # ...and when it fires anyway, nothing happens.
    assert run.send(fired("ex1", second_timeout), second_timeout.due) == []


def test_timeout_timer_is_forgotten_when_the_result_arrives():
    run = Run(make_flow(log_task("a", timeout="PT1M"), log_task("b")))
    (request,) = requests(run.send(trigger()))
    (timeout,) = run.execution.timers
    run.send(finished(request))
    assert run.execution.timers == []
    assert run.send(fired("ex1", timeout), timeout.due) == []
    assert run.task_states() == {"a": State.SUCCESS, "b": State.RUNNING}


def test_render_error_fails_the_task_without_retry():
    flow = make_flow(
        log_task("a"),
        {"id": "b", "type": "log", "message": "{{ outputs.a.missing }}", "retry": RETRY_CONSTANT},
    )
    run = Run(flow)
    (request,) = requests(run.send(trigger()))
    commands = run.send(finished(request, outputs={"x": 1}))
    assert requests(commands) == [] and timers(commands) == []
    assert run.state is State.FAILED
    assert run.task_states() == {"a": State.SUCCESS, "b": State.FAILED}
    (error,) = logs(commands)
    assert error.level is LogLevel.ERROR
    assert error.task_id == "b"
    assert "'b'" in error.message and "'message'" in error.message and "missing" in error.message
    (attempt,) = run.execution.task_runs[1].attempts
    assert attempt.state is State.FAILED and attempt.error == error.message


def test_render_error_in_the_first_task_fails_the_start():
    run = Run(make_flow({"id": "a", "type": "log", "message": "{{ inputs.nope }}"}))
    commands = run.send(trigger())
    assert run.state is State.FAILED
    assert requests(commands) == []
    (published,) = events(commands)
    assert published.seq == 1 and published.execution.state is State.FAILED
    assert [r.state for r in published.task_runs] == [State.FAILED]


def test_properties_too_large_for_a_task_request_fail_the_task_without_retry():
    # A lone `{{ … }}` may give 1,000,000 characters: 2 MB of UTF-8 here, a request the
    # producer would refuse (over 1 MiB) on every replay of the batch.
    big = {"id": "b", "type": "log", "message": "{{ 'é' * 1000000 }}", "retry": RETRY_CONSTANT}
    run = Run(make_flow(big))
    commands = run.send(trigger())
    assert requests(commands) == [] and timers(commands) == []
    assert run.state is State.FAILED
    (error,) = logs(commands)
    assert error.level is LogLevel.ERROR and error.task_id == "b"
    limit = f"limit of {MAX_PROPERTIES_BYTES} bytes"
    assert "'b'" in error.message and "2000014 bytes" in error.message and limit in error.message
    (attempt,) = run.execution.task_runs[0].attempts
    assert attempt.state is State.FAILED and attempt.error == error.message


def test_properties_within_the_limit_make_a_request_the_broker_takes():
    fill = MAX_PROPERTIES_BYTES - len('{"message":""}')
    run = Run(make_flow({"id": "b", "type": "log", "message": f"{{{{ 'x' * {fill} }}}}"}))
    (request,) = requests(run.send(trigger()))
    assert len(codec.encode(request)) <= MAX_VALUE_BYTES


def test_timers_survive_a_round_trip_through_bytes():
    retry = {"type": "constant", "interval": "PT1S", "maxAttempts": 2}
    run = Run(make_flow(log_task("a", timeout="PT5S", retry=retry), log_task("b")))
    (request,) = requests(run.send(trigger()))
    (timer,) = timers(run.send(finished(request, State.FAILED, error="e")))
    restored = Execution.from_bytes(run.execution.to_bytes())
    assert restored == run.execution
    assert restored.timers == [timer]
    run.execution = restored
    (second,) = requests(run.send(fired("ex1", timer), timer.due))
    assert second.attempt == 2


def test_seq_and_log_ids_are_unique_over_a_retrying_run():
    run = Run(make_flow(log_task("a", retry=RETRY_CONSTANT), log_task("b", retry=RETRY_CONSTANT)))
    (request,) = requests(run.send(trigger()))
    for _ in range(2):
        (timer,) = timers(run.send(finished(request, State.FAILED, error="e")))
        (request,) = requests(run.send(fired("ex1", timer), timer.due))
    request_b = requests(run.send(finished(request)))[0]
    (timer,) = timers(run.send(finished(request_b, State.FAILED, error="e")))
    ids = [record.id for record in logs(run.history)]
    assert len(ids) == 3 and len(set(ids)) == 3
    published = [c for c in run.history if isinstance(c, PublishEvent)]
    assert [c.event.seq for c in published] == list(range(1, len(published) + 1))
    assert run.execution.seq == len(published)


def test_warning_result_counts_as_success_and_marks_the_execution():
    run = Run(make_flow(log_task("a"), log_task("b")))
    (request,) = requests(run.send(trigger()))
    (request_b,) = requests(run.send(finished(request, State.WARNING)))
    run.send(finished(request_b))
    assert run.state is State.WARNING


def test_every_command_message_encodes_with_its_avro_schema():
    retry = {"type": "constant", "interval": "PT1S", "maxAttempts": 2}
    run = Run(make_flow(log_task("a", timeout="PT5S", retry=retry), log_task("b")))
    (request,) = requests(run.send(trigger(inputs={"n": [1, {"x": None}]})))
    (retry_timer,) = timers(run.send(finished(request, State.FAILED, error="e")))
    (second,) = requests(run.send(fired("ex1", retry_timer), retry_timer.due))
    run.send(finished(second, outputs={"rows": 3}))
    messages = [*requests(run.history), *events(run.history), *logs(run.history)]
    assert len(messages) > 6
    for message in messages:
        assert codec.decode(codec.encode(message)) == message
