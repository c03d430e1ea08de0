"""What the fault tests share: a 3-task chain, a burst of its executions started straight
on the triggers topic, and the check that each execution ended exactly once, as if
nothing had happened."""

from __future__ import annotations

import asyncio

from headrace.api_client import ApiClient
from headrace.client import TriggerClient
from headrace.local import LocalStack
from tests.integration.stacks import put_flows
from tests.integration.waiting import wait_until

NOT_ENDED = "CREATED,QUEUED,RUNNING,PAUSED,RETRYING,KILLING"
TASKS = ["one", "two", "three"]


def chain(namespace: str, sleep_s: float, webhook_key: str | None = None) -> str:
    """`log`, a shell task sleeping `sleep_s` (long enough to be caught running), `log`;
    started by a webhook too with `webhook_key`."""
    triggers = (
        f"triggers:\n  - id: hook\n    type: webhook\n    key: {webhook_key}\n"
        if webhook_key
        else ""
    )
    return f"""\
id: chain
namespace: {namespace}
{triggers}tasks:
  - id: one
    type: log
    message: one
  - id: two
    type: shell
    commands: ["sleep {sleep_s}"]
  - id: three
    type: log
    message: three
"""


class Chain:
    """The `chain` flow of one namespace on a running stack."""

    def __init__(
        self,
        stack: LocalStack,
        namespace: str,
        sleep_s: float = 0.3,
        webhook_key: str | None = None,
    ) -> None:
        self.stack = stack
        self.namespace = namespace
        self.webhook_key = webhook_key
        self.api = ApiClient(stack.url, timeout_s=60)
        put_flows(self.api, namespace, {"chain": chain(namespace, sleep_s, webhook_key)})
        self.revision = self.api.request("GET", f"/flows/{namespace}/chain")["revision"]

    def count(self, states: str | None = None) -> int:
        params = {"namespace": self.namespace, "flowId": "chain", "state": states, "size": 1}
        return self.api.request("GET", "/executions", params=params)["total"]

    def start(self, how_many: int) -> list[str]:
        """Start `how_many` executions; their ids once the broker has every trigger."""

        async def publish() -> list[str]:
            async with TriggerClient(self.stack.settings.kafka_bootstrap) as client:
                starts = [
                    client.trigger(self.namespace, "chain", {}, revision=self.revision)
                    for _ in range(how_many)
                ]
                return list(await asyncio.gather(*starts))

        return asyncio.run(publish())

    def start_through_gateway(self) -> list[str]:
        """One execution started through the REST API and one through the webhook (with
        `webhook_key`): their ids, each answered 202."""
        path = f"/executions/{self.namespace}/chain"
        started = [self.api.request("POST", path, json_body={})]
        if self.webhook_key:
            hook = f"/executions/webhook/{self.namespace}/chain/{self.webhook_key}"
            started.append(self.api.request("POST", hook, json_body={}))
        assert all(answer["state"]["current"] == "CREATED" for answer in started), started
        return [answer["id"] for answer in started]

    def wait_for_all(self, total: int, timeout_s: float = 240) -> None:
        wait_until(
            lambda: self.count() == total and self.count(NOT_ENDED) == 0,
            timeout_s=timeout_s,
            what=f"every execution indexed and ended ({self.count()} indexed, "
            f"{self.count(NOT_ENDED)} not ended, dead services: {dead_services(self.stack)})",
        )

    def assert_ended_once(self, ids: list[str], *, reruns_allowed: bool = False) -> int:
        """Each execution SUCCESS with its three task runs, each succeeded once, each log
        line of the `log` tasks once. With `reruns_allowed` (a worker or an executor was
        killed), a task run may show earlier attempts lost with their worker (FAILED)
        before the one that succeeded, and a task may have run more than once: a lost
        run may have written its line, and a request the dead executor sent again may
        reach the worker that took the dead one's partitions, which runs it (the executor
        then keeps the first result). Its line is then there at least once.
        Returns how many task runs had more than one attempt."""
        reruns = 0
        for execution_id in ids:
            execution = self.api.request("GET", f"/executions/{execution_id}")
            assert execution["state"]["current"] == "SUCCESS", execution_id
            runs = execution["taskRunList"]
            assert [run["taskId"] for run in runs] == TASKS, execution_id
            for run in runs:
                states = [attempt["state"]["current"] for attempt in run["attempts"]]
                assert states[-1] == "SUCCESS" and states.count("SUCCESS") == 1, states
                assert reruns_allowed or len(states) == 1, (execution_id, run["taskId"], states)
                reruns += len(states) > 1
            lines = self.api.request("GET", f"/logs/{execution_id}")
            messages = [line["message"] for line in lines]
            for task in ("one", "three"):  # the `log` tasks write their id
                lines_of_task = messages.count(task)
                assert lines_of_task == 1 or (reruns_allowed and lines_of_task > 1), (
                    execution_id,
                    messages,
                )
        return reruns


def dead_services(stack: LocalStack) -> list[str]:
    return [p.name for p in stack.processes if not p.alive]
