"""`secret()` from the flow to the task, without a broker: the core renders the request,
the codec carries it, the worker's `run_attempt` resolves it. Marker text that comes
from outside (an input, an upstream output) reaches the task as plain text."""

from __future__ import annotations

from typing import Any

from headrace import codec
from headrace.core.context import secret_seed
from headrace.flow.model import Flow
from headrace.messages import TaskRequest
from headrace.secret_markers import marker
from headrace.states import State
from tests.unit.test_core_helpers import Run, finished, logs, requests, trigger
from tests.unit.test_worker import RecordingConnector, attempt

VAULT = {"API_TOKEN": "tok-1234", "DB": "db-pass-5678"}

FLOW = Flow.model_validate(
    {
        "id": "demo",
        "namespace": "company.team",
        "variables": {"auth": "Bearer {{ secret('API_TOKEN') }}"},
        "tasks": [
            {
                "id": "fetch",
                "type": "recording",
                "headers": {"Authorization": "{{ vars.auth }}"},
                "body": "{{ inputs.note }}",
            },
            {
                "id": "forward",
                "type": "recording",
                "password": "{{ secret('DB') }}",
                "body": "{{ outputs.fetch.echo }}",
            },
        ],
    }
)


async def run_in_worker(request: TaskRequest) -> dict[str, Any]:
    """What the task got, after a trip through the wire format and the worker."""
    decoded = codec.decode(codec.encode(request))
    assert isinstance(decoded, TaskRequest)
    RecordingConnector.received.clear()
    result, _ = await attempt(decoded, VAULT)
    assert result.state is State.SUCCESS, result.error
    (received,) = RecordingConnector.received
    return received


async def test_flow_secrets_resolve_and_marker_text_from_outside_does_not() -> None:
    # An execution input holding marker text for both secrets the flow uses.
    note = "".join(
        [
            "\x00secret:API_TOKEN\x00",
            marker("DB", ""),
            marker("API_TOKEN", "0" * 32),
        ]
    )
    run = Run(FLOW)
    with secret_seed("seed-of-the-first-call"):
        (fetch,) = requests(run.send(trigger(inputs={"note": note})))
    assert fetch.secret_names == ["API_TOKEN"]  # asked for by `vars.auth`, nothing else
    assert len(fetch.secret_nonce) == 32
    assert await run_in_worker(fetch) == {
        "headers": {"Authorization": "Bearer tok-1234"},
        "body": note,
    }

    # The upstream output replays fetch's own markers: that nonce leaked, but each attempt
    # has its own, so in `forward` these are text too, next to a genuine secret('DB').
    echo = marker("DB", fetch.secret_nonce) + marker("API_TOKEN", fetch.secret_nonce)
    with secret_seed("seed-of-the-second-call"):
        (forward,) = requests(run.send(finished(fetch, outputs={"echo": echo})))
    assert forward.secret_names == ["API_TOKEN", "DB"]
    assert forward.secret_nonce not in ("", fetch.secret_nonce)
    assert await run_in_worker(forward) == {"password": "db-pass-5678", "body": echo}


def test_the_same_seed_renders_the_same_request() -> None:
    # The seed is an input like the time: replays with it are byte-identical.
    def first_request(seed: str) -> TaskRequest:
        with secret_seed(seed):
            (request,) = requests(Run(FLOW).send(trigger(inputs={"note": "hi"})))
        return request

    assert codec.encode(first_request("a")) == codec.encode(first_request("a"))
    assert first_request("a").secret_nonce != first_request("b").secret_nonce


def test_without_a_seed_a_task_using_secret_fails_and_says_why() -> None:
    # An executor that forgot `secret_seed`: loud, never a marker anyone could forge.
    run = Run(FLOW)
    assert requests(run.send(trigger(inputs={"note": "hi"}))) == []
    assert run.execution is not None
    (fetch,) = run.execution.task_runs
    assert fetch.state is State.FAILED
    assert "needs the executor's secret seed" in (fetch.attempts[-1].error or "")
    assert run.state is State.FAILED


def test_text_from_outside_cannot_reach_a_secret_through_render() -> None:
    # The flow renders an input (text from outside) and holds a secret in a variable the
    # input can name: render() refuses to give out the marker, whole or in pieces.
    flow = Flow.model_validate(
        {
            "id": "demo",
            "namespace": "company.team",
            "variables": {"auth": "Bearer {{ secret('API_TOKEN') }}"},
            "tasks": [
                {"id": "echo", "type": "recording", "body": "{{ render(inputs.note) }}"},
            ],
        }
    )
    for note in ("{{ vars.auth }}", "{{ vars.auth[:12] }}", "{{ vars.auth[12:] }}"):
        run = Run(flow)
        with secret_seed("seed"):
            assert requests(run.send(trigger(inputs={"note": note}))) == []
        assert run.state is State.FAILED
        (error,) = [line.message for line in logs(run.history) if line.task_id == "echo"]
        assert "render() may not use a secret" in error
    run = Run(flow)  # plain text from outside still renders
    with secret_seed("seed"):
        (request,) = requests(run.send(trigger(inputs={"note": "hi {{ 1 + 1 }}"})))
    assert request.properties == {"body": "hi 2"}
