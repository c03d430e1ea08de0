"""Two executors and two workers share the partitions; kill -9 of one of each mid-run loses
no execution and runs no task twice; kill -9 of the indexer loses and doubles no row.

The processes are not restarted: the survivors must take over the dead ones' partitions
(the executor rebuilding their state from the changelog, re-arming nothing twice). The
module runs on a broker of its own: on the embedded broker, consumer groups whose members
come and go can wedge (docs/architecture.md), and that must not spill into other modules.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator

import pytest

from headrace.api_client import ApiClient
from headrace.client import TriggerClient
from headrace.config import Settings
from headrace.local import LocalStack
from headrace.local_server import services_to_run
from tests.integration.stacks import put_flows, running_stack_on_own_broker
from tests.integration.waiting import wait_until

NAMESPACE = "tests.scale-out"
EXECUTIONS = 150
# The middle task runs long enough for a killed worker to hold some of them.
CHAIN = f"""\
id: chain
namespace: {NAMESPACE}
tasks:
  - id: one
    type: log
    message: one
  - id: two
    type: shell
    commands: ["sleep 0.3"]
  - id: three
    type: log
    message: three
"""
NOT_ENDED = "CREATED,QUEUED,RUNNING,PAUSED,RETRYING,KILLING"


@pytest.fixture(scope="module")
def stack(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with running_stack_on_own_broker(
        settings, tmp_path_factory, "scale-out-logs", services_to_run(executors=2, workers=2)
    ) as stack:
        yield stack


def count(api: ApiClient, states: str | None = None) -> int:
    params = {"namespace": NAMESPACE, "flowId": "chain", "state": states, "size": 1}
    return api.request("GET", "/executions", params=params)["total"]


def kill_one(stack: LocalStack, service: str) -> None:
    alive = [p for p in stack.processes if p.name == service and p.alive]
    assert len(alive) == 2, f"two {service}s should run, {len(alive)} do"
    alive[0].process.send_signal(signal.SIGKILL)
    alive[0].process.wait(10)


@pytest.fixture(scope="module")
def api(stack: LocalStack) -> ApiClient:
    api = ApiClient(stack.url, timeout_s=60)
    put_flows(api, NAMESPACE, {"chain": CHAIN})
    return api


def start_burst(stack: LocalStack, api: ApiClient) -> list[str]:
    """EXECUTIONS more executions of `chain`, straight on the triggers topic."""
    revision = api.request("GET", f"/flows/{NAMESPACE}/chain")["revision"]

    async def start() -> list[str]:
        async with TriggerClient(stack.settings.kafka_bootstrap) as client:
            starts = [
                client.trigger(NAMESPACE, "chain", {}, revision=revision) for _ in range(EXECUTIONS)
            ]
            return list(await asyncio.gather(*starts))

    return asyncio.run(start())


def wait_for_all(api: ApiClient, total: int) -> None:
    wait_until(
        lambda: count(api) == total and count(api, NOT_ENDED) == 0,
        timeout_s=240,
        what=f"every execution ended ({count(api, NOT_ENDED)} not ended)",
    )


def test_killing_one_executor_and_one_worker_mid_run_loses_nothing(
    stack: LocalStack, api: ApiClient
) -> None:
    before = count(api)
    ids = start_burst(stack, api)
    wait_until(
        lambda: count(api, "SUCCESS") - before >= EXECUTIONS // 10,
        timeout_s=120,
        what="a tenth of the executions ended",
    )
    kill_one(stack, "executor")
    kill_one(stack, "worker")
    wait_for_all(api, before + EXECUTIONS)

    rerun = 0
    for execution_id in ids:
        execution = api.request("GET", f"/executions/{execution_id}")
        assert execution["state"]["current"] == "SUCCESS", execution_id
        runs = execution["taskRunList"]
        assert [run["taskId"] for run in runs] == ["one", "two", "three"], execution_id
        for run in runs:
            states = [attempt["state"]["current"] for attempt in run["attempts"]]
            # A run lost with its worker shows as a FAILED attempt, then a new one: never
            # two that succeeded (the task ran to its end once).
            assert states[-1] == "SUCCESS" and states.count("SUCCESS") == 1, (run, states)
            rerun += len(states) > 1
    # Informative: how many task runs the dead worker held (0 is possible, not likely).
    print(f"{rerun} task runs re-ran after the worker's death")


def test_killing_the_indexer_mid_run_loses_and_doubles_no_row(
    stack: LocalStack, api: ApiClient
) -> None:
    before = count(api)
    ids = start_burst(stack, api)
    wait_until(
        lambda: count(api) - before >= EXECUTIONS // 10,
        timeout_s=120,
        what="a tenth of the executions indexed",
    )
    (indexer,) = [p for p in stack.processes if p.name == "indexer" and p.alive]
    indexer.process.send_signal(signal.SIGKILL)
    indexer.process.wait(10)
    stack.restart(indexer)  # it replays from its last commit
    stack.wait_ready()
    wait_for_all(api, before + EXECUTIONS)

    for execution_id in ids:
        execution = api.request("GET", f"/executions/{execution_id}")
        assert execution["state"]["current"] == "SUCCESS", execution_id
        runs = execution["taskRunList"]
        assert [run["taskId"] for run in runs] == ["one", "two", "three"], execution_id
        assert all(len(run["attempts"]) == 1 for run in runs), runs
        # Each `log` task wrote one line: a replayed batch must not write it again.
        messages = [line["message"] for line in api.request("GET", f"/logs/{execution_id}")]
        assert messages.count("one") == 1 and messages.count("three") == 1, messages
