"""Producers start executions straight through Kafka: `TriggerClient`, `headrace trigger
publish`, and the pure-fastavro example of docs/triggers.md, against the real services."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest

from headrace.api_client import ApiClient, ApiError
from headrace.client import TriggerClient, TriggerClientError
from headrace.config import Settings
from headrace.flow.inputs import InputValidationError
from headrace.local import LocalStack
from headrace.topics.definitions import MAX_VALUE_BYTES
from tests.integration.stacks import running_stack
from tests.integration.test_gateway import triggers_on_topic
from tests.unit.test_client import producer_example

DEADLINE_S = 60.0
TERMINAL = {"SUCCESS", "WARNING", "FAILED", "KILLED", "CANCELLED"}


def flow_source(namespace: str, message: str = "run") -> str:
    return f"""\
id: target
namespace: {namespace}
inputs:
  - id: full_refresh
    type: BOOLEAN
    defaults: false
  - id: size
    type: INT
    defaults: 1
tasks:
  - id: say
    type: log
    message: "{message} {{{{ inputs.full_refresh }}}} {{{{ inputs.size }}}} {{{{ trigger.type }}}}"
"""


@pytest.fixture(scope="module")
def stack(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with running_stack(settings, tmp_path_factory, "client-logs") as stack:
        yield stack


@pytest.fixture
def api(stack: LocalStack) -> ApiClient:
    return ApiClient(stack.url)


@pytest.fixture
def namespace(api: ApiClient) -> str:
    namespace = f"test.client{uuid.uuid4().hex[:8]}"
    put_flow(api, namespace, flow_source(namespace))
    return namespace


def put_flow(api: ApiClient, namespace: str, source: str) -> int:
    answer = api.request(
        "PUT", f"/flows/{namespace}/target", body=source.encode(), content_type="application/x-yaml"
    )
    return answer["revision"]


async def ended(api: ApiClient, execution_id: str) -> dict:
    async with asyncio.timeout(DEADLINE_S):
        while True:
            try:
                execution = await asyncio.to_thread(
                    api.request, "GET", f"/executions/{execution_id}"
                )
            except ApiError as exc:
                if exc.status != 404:  # 404: not indexed yet
                    raise
            else:
                if execution["state"]["current"] in TERMINAL:
                    return execution
            await asyncio.sleep(0.05)


async def test_client_with_a_server_types_inputs_and_runs_the_latest_revision(
    stack: LocalStack, api: ApiClient, namespace: str, settings: Settings
) -> None:
    async with TriggerClient(
        settings.kafka_bootstrap, server_url=stack.url, revision_ttl_s=0
    ) as client:
        first = await client.trigger(
            namespace, "target", {"full_refresh": "true", "size": "3"}, labels={"from": "test"}
        )
        put_flow(api, namespace, flow_source(namespace, message="second"))
        second = await client.trigger(namespace, "target")

        with pytest.raises(InputValidationError, match="size"):
            await client.trigger(namespace, "target", {"size": "many"})
        with pytest.raises(TriggerClientError, match="not found"):
            await client.trigger(namespace, "missing")

    execution = await ended(api, first)
    assert execution["state"]["current"] == "SUCCESS"
    assert execution["inputs"] == {"full_refresh": True, "size": 3}  # typed by the client
    assert execution["labels"]["from"] == "test"
    assert execution["trigger"] == {"type": "producer"}
    assert execution["flowRevision"] == 1
    later = await ended(api, second)
    assert later["flowRevision"] == 2 and later["inputs"] == {"full_refresh": False, "size": 1}

    # The refused calls published nothing.
    published = sorted(t.execution_id for t in await triggers_on_topic(settings, namespace))
    assert published == sorted([first, second])


async def test_client_without_a_server_needs_the_revision(
    api: ApiClient, namespace: str, settings: Settings
) -> None:
    async with TriggerClient(settings.kafka_bootstrap) as client:
        with pytest.raises(TriggerClientError, match="revision is required"):
            await client.trigger(namespace, "target", {})
        chosen = f"chosen-{uuid.uuid4().hex}"
        execution_id = await client.trigger(
            namespace, "target", {"full_refresh": True, "size": 2}, revision=1, execution_id=chosen
        )
    assert execution_id == chosen
    execution = await ended(api, chosen)
    assert execution["state"]["current"] == "SUCCESS" and execution["inputs"]["size"] == 2


async def test_a_trigger_larger_than_the_topic_takes_is_refused_before_sending(
    namespace: str, settings: Settings
) -> None:
    async with TriggerClient(settings.kafka_bootstrap) as client:
        with pytest.raises(TriggerClientError, match=f"over the {MAX_VALUE_BYTES}"):
            await client.trigger(namespace, "target", {"blob": "x" * MAX_VALUE_BYTES}, revision=1)
    assert await triggers_on_topic(settings, namespace) == []


async def test_cli_trigger_publish(stack: LocalStack, api: ApiClient, namespace: str) -> None:
    env = {**os.environ, "HEADRACE_URL": stack.url}
    command = [sys.executable, "-m", "headrace", "trigger", "publish", namespace, "target"]
    options = ["--input", "size=7", "--bootstrap", stack.settings.kafka_bootstrap]
    done = await asyncio.to_thread(
        subprocess.run, command + options, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    execution_id = done.stdout.split()[-1]
    execution = await ended(api, execution_id)
    assert execution["inputs"] == {"full_refresh": False, "size": 7}

    refused = await asyncio.to_thread(
        subprocess.run,
        [*command, "--input", "size=x", "--bootstrap", stack.settings.kafka_bootstrap],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 1 and "size" in refused.stderr


async def test_the_documented_fastavro_producer_starts_an_execution(
    api: ApiClient, namespace: str, settings: Settings, tmp_path: Path
) -> None:
    # The example sends {"full_refresh": true}: every input of this flow, typed. Nothing
    # fills in defaults on this path (see the report on executor-side validation).
    elt = f"""\
id: elt
namespace: {namespace}
inputs:
  - id: full_refresh
    type: BOOLEAN
tasks:
  - id: say
    type: log
    message: "full refresh: {{{{ inputs.full_refresh }}}}"
"""
    api.request(
        "PUT", f"/flows/{namespace}/elt", body=elt.encode(), content_type="application/x-yaml"
    )
    script = tmp_path / "producer.py"
    script.write_text(producer_example())
    with resources.as_file(resources.files("headrace.schemas") / "TriggerEvent.avsc") as avsc:
        env = {
            **os.environ,
            "TRIGGER_EVENT_AVSC": str(avsc),
            "KAFKA": settings.kafka_bootstrap,
            "FLOW_NAMESPACE": namespace,
            "FLOW_ID": "elt",
            "FLOW_REVISION": "1",
        }
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, str(script)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 0, done.stderr
    execution = await ended(api, done.stdout.strip())
    assert execution["state"]["current"] == "SUCCESS"
    assert execution["inputs"]["full_refresh"] is True
    assert execution["labels"]["source"] == "my-producer"
