"""Webhook triggers through the real services: what a call starts, and what it refuses.

Refusals are checked on the `triggers` topic itself (read from the start to the end
offsets), so "nothing was published" is observed, not assumed.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from headrace.config import Settings
from headrace.local import LocalStack
from headrace.messages import TriggerEvent
from headrace.services.gateway.app import MAX_BODY_BYTES
from headrace.topics.definitions import MAX_VALUE_BYTES
from tests.integration.stacks import running_stack
from tests.integration.test_gateway import triggers_on_topic

KEY = "k3y-0123456789abcdef"
DEADLINE_S = 60.0
TERMINAL = {"SUCCESS", "WARNING", "FAILED", "KILLED", "CANCELLED"}


def hook_flow(namespace: str, flow_id: str = "hook", extra: str = "") -> str:
    return f"""\
id: {flow_id}
namespace: {namespace}
inputs:
  - id: who
    type: STRING
  - id: count
    type: INT
    defaults: 1
tasks:
  - id: greet
    type: log
    message: "hello {{{{ inputs.who }}}} x{{{{ inputs.count }}}} body={{{{ trigger.body | tojson }}}}"
triggers:
  - id: incoming
    type: webhook
    key: {KEY}
    inputs:
      who: "{{{{ trigger.body.who | default(trigger.parameters.who | default('nobody')) }}}}"
      count: "{{{{ trigger.body.times | default(1) }}}}"
{extra}"""


@pytest.fixture(scope="module")
def stack(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with running_stack(settings, tmp_path_factory, "webhook-logs") as stack:
        yield stack


@pytest.fixture
async def http(
    stack: LocalStack, auth_headers: dict[str, str]
) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(stack.url, headers=auth_headers) as session:
        yield session


@pytest.fixture
def namespace() -> str:
    return f"test.hook{uuid.uuid4().hex[:8]}"


async def put_flow(http: aiohttp.ClientSession, namespace: str, flow_id: str, source: str) -> None:
    async with http.put(
        f"/api/v1/flows/{namespace}/{flow_id}",
        data=source,
        headers={"Content-Type": "application/x-yaml"},
    ) as response:
        assert response.status in (200, 201), await response.text()


def hook_url(namespace: str, flow_id: str = "hook", key: str = KEY) -> str:
    return f"/api/v1/executions/webhook/{namespace}/{flow_id}/{key}"


async def answer(response: aiohttp.ClientResponse) -> tuple[int, Any]:
    assert response.content_type == "application/json", await response.text()
    return response.status, await response.json()


async def until(fetch: Any, ok: Any, timeout_s: float = DEADLINE_S) -> Any:
    """Poll `fetch()` until `ok(value)`, failing after `timeout_s`."""
    async with asyncio.timeout(timeout_s):
        while not ok(value := await fetch()):
            await asyncio.sleep(0.05)
    return value


def by_id(triggers: list[TriggerEvent]) -> dict[str, TriggerEvent]:
    return {t.execution_id: t for t in triggers}


async def test_webhook_runs_the_flow_with_the_body(
    http: aiohttp.ClientSession, namespace: str
) -> None:
    await put_flow(http, namespace, "hook", hook_flow(namespace))
    async with http.post(
        hook_url(namespace),
        json={"who": "ada", "times": 3},
        headers={"Authorization": "Bearer secret-token", "X-Source": "ci"},
    ) as response:
        status, body = await answer(response)
    assert status == 202 and body["flowRevision"] == 1
    execution_id = body["id"]

    async def execution() -> dict | None:
        async with http.get(f"/api/v1/executions/{execution_id}") as response:
            return await response.json() if response.status == 200 else None

    ended = await until(execution, lambda e: e and e["state"]["current"] in TERMINAL)
    assert ended["state"]["current"] == "SUCCESS"
    assert ended["inputs"] == {"who": "ada", "count": 3}
    trigger = ended["trigger"]
    assert (trigger["type"], trigger["id"]) == ("webhook", "incoming")
    assert trigger["body"] == {"who": "ada", "times": 3}
    assert trigger["headers"]["x-source"] == "ci"
    assert trigger["headers"]["authorization"] == "***"  # name kept, credential dropped
    assert "secret-token" not in str(trigger)

    async def messages() -> list[str]:
        async with http.get(f"/api/v1/logs/{execution_id}") as response:
            return [line["message"] for line in await response.json()] if response.ok else []

    lines = await until(messages, lambda found: found)
    assert 'hello ada x3 body={"who":"ada","times":3}' in lines


async def test_wait_true_answers_with_the_ended_execution(
    http: aiohttp.ClientSession, namespace: str
) -> None:
    await put_flow(http, namespace, "hook", hook_flow(namespace))
    async with http.post(hook_url(namespace) + "?wait=true", json={"who": "bo"}) as response:
        status, body = await answer(response)
    assert status == 200
    assert body["state"]["current"] == "SUCCESS" and body["inputs"]["who"] == "bo"


async def test_get_with_query_parameters_form_and_text_bodies(
    http: aiohttp.ClientSession, namespace: str, settings: Settings
) -> None:
    await put_flow(http, namespace, "hook", hook_flow(namespace))
    async with http.get(hook_url(namespace), params=[("who", "bob"), ("t", "a"), ("t", "b")]) as r:
        status, get_answer = await answer(r)
        assert status == 202
    async with http.post(hook_url(namespace), data={"who": "cy", "times": "2"}) as r:
        status, form_answer = await answer(r)
        assert status == 202
    form = aiohttp.FormData()
    form.add_field("who", "di")
    form.add_field("note", b"file text", filename="note.txt")
    async with http.post(hook_url(namespace), data=form) as r:
        status, multipart_answer = await answer(r)
        assert status == 202
    async with http.post(
        hook_url(namespace), data="just text", headers={"Content-Type": "text/plain"}
    ) as r:
        status, text_answer = await answer(r)
        assert status == 202

    seen = by_id(await triggers_on_topic(settings, namespace))
    got = seen[get_answer["id"]]
    assert got.trigger["body"] is None
    assert got.trigger["parameters"] == {"who": "bob", "t": ["a", "b"]}
    assert got.inputs == {"who": "bob", "count": 1}
    posted = seen[form_answer["id"]]
    assert posted.trigger["body"] == {"who": "cy", "times": "2"}
    assert posted.inputs == {"who": "cy", "count": 2}
    multipart = seen[multipart_answer["id"]]
    assert multipart.trigger["body"] == {"who": "di", "note": "file text"}
    text = seen[text_answer["id"]]
    assert text.trigger["body"] == "just text" and text.inputs["who"] == "nobody"


async def test_every_refusal_before_the_key_is_the_same_404(
    http: aiohttp.ClientSession, namespace: str, settings: Settings
) -> None:
    await put_flow(http, namespace, "hook", hook_flow(namespace))
    disabled_trigger = hook_flow(namespace, "quiet").replace(
        "    type: webhook\n", "    type: webhook\n    disabled: true\n"
    )
    await put_flow(http, namespace, "quiet", disabled_trigger)
    await put_flow(http, namespace, "off", hook_flow(namespace, "off", "disabled: true\n"))
    await put_flow(
        http,
        namespace,
        "plain",
        f"id: plain\nnamespace: {namespace}\ntasks:\n  - {{id: a, type: log, message: hi}}\n",
    )

    refused = [
        hook_url(namespace, key=KEY[:-1] + "X"),  # wrong last character
        hook_url(namespace, key=KEY + "X"),  # longer
        hook_url(namespace, key="short"),
        hook_url(namespace, "missing"),
        hook_url("no.such.namespace"),
        hook_url(namespace, "quiet"),  # the trigger is disabled
        hook_url(namespace, "off"),  # the flow is disabled
        hook_url(namespace, "plain"),  # no webhook trigger at all
    ]
    bodies = set()
    for url in refused:
        for method in ("GET", "POST"):
            async with http.request(method, url, json={"who": "eve"}) as response:
                assert response.status == 404, (url, await response.text())
                bodies.add(await response.read())
    assert bodies == {b'{"message":"webhook not found"}'}

    async with http.post(hook_url(namespace), json={"who": "ok"}) as response:
        accepted = (await answer(response))[1]["id"]
    assert [t.execution_id for t in await triggers_on_topic(settings, namespace)] == [accepted]


async def test_refused_bodies_publish_nothing(
    http: aiohttp.ClientSession, namespace: str, settings: Settings
) -> None:
    conditions = "    conditions:\n      - \"{{ trigger.body.action | default('') == 'go' }}\"\n"
    source = hook_flow(namespace).replace("    key: ", conditions + "    key: ")
    await put_flow(http, namespace, "hook", source)

    async with http.post(hook_url(namespace), json={"action": "stop", "who": "x"}) as response:
        assert await answer(response) == (200, {"executed": False, "reason": "conditions not met"})
    async with http.get(hook_url(namespace)) as response:  # no body: condition false
        assert (await answer(response))[1]["executed"] is False

    async with http.post(hook_url(namespace), json={"action": "go", "times": "many"}) as response:
        status, body = await answer(response)
        assert status == 422 and [e["input"] for e in body["errors"]] == ["count"]
    async with http.post(hook_url(namespace), json={"action": "go", "who": "a\x00b"}) as response:
        status, body = await answer(response)
        assert status == 422 and "NUL" in body["message"]
    async with http.post(
        hook_url(namespace), data=b"{not json", headers={"Content-Type": "application/json"}
    ) as response:
        assert (await answer(response))[0] == 400
    oversize = b"x" * (1024 * 1024 + 1)
    async with http.post(
        hook_url(namespace), data=oversize, headers={"Content-Type": "text/plain"}
    ) as response:
        status, body = await answer(response)
        assert status == 413 and "message" in body

    async with http.post(hook_url(namespace), json={"action": "go", "who": "ok"}) as response:
        status, body = await answer(response)
        assert status == 202
    assert [t.execution_id for t in await triggers_on_topic(settings, namespace)] == [body["id"]]


async def test_the_documented_example(
    http: aiohttp.ClientSession, namespace: str, settings: Settings
) -> None:
    """docs/triggers.md's webhook flow and curl call do what the docs say."""
    docs = (Path(__file__).resolve().parents[2] / "docs" / "triggers.md").read_text()
    section = docs.split("## Webhook", 1)[1].split("\n## ", 1)[0]
    source = re.findall(r"```yaml\n(.*?)```", section, re.DOTALL)[0]
    source = source.replace("namespace: company.ci", f"namespace: {namespace}")
    call = re.findall(r"```sh\n(.*?)```", section, re.DOTALL)[0]
    url = re.search(r"http://127\.0\.0\.1:8080(\S+)", call).group(1)
    url = url.replace("/company.ci/", f"/{namespace}/")
    body = json.loads(re.search(r"-d '(.*?)'", call).group(1))
    await put_flow(http, namespace, "on-push", source)

    async with http.post(url, json=body, headers={"X-GitHub-Event": "push"}) as response:
        status, started = await answer(response)
        assert status == 202
    async with http.post(url, json=body, headers={"X-GitHub-Event": "issues"}) as response:
        assert (await answer(response))[1] == {"executed": False, "reason": "conditions not met"}
    [published] = await triggers_on_topic(settings, namespace)
    assert published.execution_id == started["id"] and published.inputs == {"branch": "main"}


async def test_the_runtime_switch_closes_the_webhook_and_the_listing_shows_the_last_call(
    http: aiohttp.ClientSession, namespace: str, settings: Settings
) -> None:
    await put_flow(http, namespace, "hook", hook_flow(namespace))
    switch = f"/api/v1/triggers/{namespace}/hook/incoming"
    async with http.put(switch, json={"disabled": True}) as response:
        status, item = await answer(response)
    assert status == 200 and item["runtimeDisabled"] and item["lastFiredAt"] is None
    async with http.post(hook_url(namespace), json={"who": "eve"}) as response:
        assert response.status == 404
        assert await response.read() == b'{"message":"webhook not found"}'

    async with http.put(switch, json={"disabled": False}) as response:
        assert (await answer(response))[1]["runtimeDisabled"] is False
    async with http.post(hook_url(namespace), json={"who": "ok"}) as response:
        accepted = (await answer(response))[1]["id"]
    assert [t.execution_id for t in await triggers_on_topic(settings, namespace)] == [accepted]

    async def listed() -> dict:
        params = {"namespace": namespace, "flowId": "hook"}
        async with http.get("/api/v1/triggers", params=params) as response:
            return (await answer(response))[1]["results"][0]

    item = await until(listed, lambda found: found["lastFiredExecutionId"] is not None)
    assert item["lastFiredExecutionId"] == accepted and item["lastFiredAt"] is not None


async def test_a_body_and_what_its_inputs_copy_must_fit_in_a_start(
    http: aiohttp.ClientSession, namespace: str, settings: Settings
) -> None:
    # Up to the body limit, a body copied once into the inputs fits in a start.
    await put_flow(http, namespace, "hook", hook_flow(namespace))
    async with http.post(
        hook_url(namespace), json={"who": "x" * (MAX_BODY_BYTES - 100)}
    ) as response:
        status, started = await answer(response)
        assert status == 202
    async with http.post(hook_url(namespace), json={"who": "x" * MAX_BODY_BYTES}) as response:
        status, body = await answer(response)
        assert status == 413 and str(MAX_BODY_BYTES) in body["message"]

    # Copied more often, a body under the limit makes a start over what `triggers` takes.
    copies = ["a", "b", "c", "d"]
    declared = "".join(f"  - {{id: {name}, type: STRING}}\n" for name in copies)
    copied = "".join(f"      {name}: '{{{{ trigger.body.who }}}}'\n" for name in copies)
    source = f"""\
id: copies
namespace: {namespace}
inputs:
{declared}tasks:
  - id: say
    type: log
    message: hi
triggers:
  - id: incoming
    type: webhook
    key: {KEY}
    inputs:
{copied}"""
    await put_flow(http, namespace, "copies", source)
    who = "x" * (MAX_BODY_BYTES - 100)
    async with http.post(hook_url(namespace, "copies"), json={"who": who}) as response:
        status, body = await answer(response)
        assert status == 413 and str(MAX_VALUE_BYTES) in body["message"]
    published = await triggers_on_topic(settings, namespace)
    assert [t.execution_id for t in published] == [started["id"]]


async def test_a_new_key_works_at_the_next_call_and_the_old_one_no_longer(
    http: aiohttp.ClientSession, namespace: str, settings: Settings
) -> None:
    """Webhooks read flows from the `flows` topic; the gateway that saved a revision
    serves it at once, without waiting to read it back."""
    await put_flow(http, namespace, "hook", hook_flow(namespace))
    new_key = "n3w-k3y-0123456789abcdef"
    await put_flow(http, namespace, "hook", hook_flow(namespace).replace(KEY, new_key))

    async with http.post(hook_url(namespace), json={"who": "old"}) as response:
        assert response.status == 404
    new_url = hook_url(namespace, key=new_key)
    async with http.post(new_url, json={"who": "new"}) as response:
        status, started = await answer(response)
    assert status == 202 and started["flowRevision"] == 2
    [published] = await triggers_on_topic(settings, namespace)
    assert published.execution_id == started["id"] and published.flow_revision == 2
