"""`examples/consume_logs.py` reads the `logs` and `executions` topics as docs/streams.md
describes them: the same lines the API serves, the states the execution went through,
with nothing but aiokafka, fastavro and the `.avsc` files (it does not import headrace)."""

from __future__ import annotations

import ast
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from headrace.api_client import ApiClient
from headrace.config import Settings
from headrace.local import LocalStack
from tests.integration.stacks import running_stack_on_own_broker
from tests.integration.waiting import wait_until

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "consume_logs.py"
NAMESPACE = "tests.streams"
FLOW = """
id: chatty
namespace: tests.streams
tasks:
  - id: greet
    type: log
    message: "hello from the stream"
  - id: count
    type: shell
    commands:
      - echo "counted 3 rows"
      - echo "a warning" >&2
"""


@pytest.fixture(scope="module")
def stack(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with running_stack_on_own_broker(settings, tmp_path_factory, "streams") as stack:
        yield stack


class Follower:
    """The example, running as a user runs it; its output lines collected as they come."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(EXAMPLE), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self.errors: list[str] = []
        self._readers = [
            threading.Thread(target=_collect, args=(self.process.stdout, self.lines)),
            threading.Thread(target=_collect, args=(self.process.stderr, self.errors)),
        ]
        for reader in self._readers:
            reader.start()

    def following(self) -> bool:
        """It has fixed where it reads from: a record produced now reaches it."""
        assert self.process.poll() is None, self.errors
        return any(line.startswith("following ") for line in self.errors)

    def printed_logs(self, execution_id: str) -> list[str]:
        """Its log lines of the execution, without their time and execution id."""
        return [
            line.split(" ", 2)[2]
            for line in self.lines
            if line.split(" ")[1:2] == [execution_id]
            and " -> " not in line
            and " outputs " not in line
        ]

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=15)
        for reader in self._readers:
            reader.join(timeout=5)


def _collect(stream: IO[str], into: list[str]) -> None:
    for line in stream:
        into.append(line.rstrip("\n"))


def test_the_example_imports_nothing_of_headrace() -> None:
    tree = ast.parse(EXAMPLE.read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert "headrace" not in imported and {"aiokafka", "fastavro"} <= imported


def test_the_example_prints_the_lines_and_states_the_api_has(stack: LocalStack) -> None:
    api = ApiClient(stack.url)
    api.request(
        "PUT", f"/flows/{NAMESPACE}/chatty", body=FLOW.encode(), content_type="application/x-yaml"
    )
    bootstrap = stack.settings.kafka_bootstrap
    live = Follower("--bootstrap", bootstrap)  # from the end: what comes after it started
    try:
        wait_until(live.following, what="the live follower to fix its positions")
        execution = api.request(
            "POST", f"/executions/{NAMESPACE}/chatty", params={"wait": "true", "timeout": "60"}
        )
        assert execution["state"]["current"] == "SUCCESS"
        execution_id = execution["id"]

        def indexed() -> list[dict[str, Any]]:
            logs = api.request("GET", f"/logs/{execution_id}")
            return logs if len(logs) >= 3 else []

        stored = wait_until(indexed, what="the execution's lines in the index")
        replay = Follower("--bootstrap", bootstrap, "--from-beginning", "--execution", execution_id)
        try:
            ended = f"{execution_id} execution of {NAMESPACE}/chatty -> SUCCESS"
            for follower in (live, replay):
                wait_until(
                    lambda f=follower: (
                        any(line.endswith(ended) for line in f.lines)
                        and len(f.printed_logs(execution_id)) >= len(stored)
                    ),
                    what="the example to print the execution's lines and its end",
                )
        finally:
            replay.stop()
    finally:
        live.stop()
    expected = sorted(_as_printed(record) for record in stored)
    assert "greet #1 INFO  hello from the stream" in expected
    assert "count #1 WARN  a warning" in expected
    for follower in (live, replay):
        assert follower.errors == [f"following logs, executions on {bootstrap}"]
        # The lines the API has, none twice.
        assert sorted(follower.printed_logs(execution_id)) == expected
        mine = [line.split(" ", 1)[1] for line in follower.lines if execution_id in line]
        states = [line.split(" -> ")[1] for line in mine if " execution of " in line]
        assert states[-1] == "SUCCESS" and "RUNNING" in states
        assert f"{execution_id} greet -> SUCCESS" in mine
    assert all(execution_id in line for line in replay.lines)  # --execution filters


def _as_printed(record: dict[str, Any]) -> str:
    where = record.get("taskId") or "(execution)"
    if record.get("attempt") is not None:
        where += f" #{record['attempt']}"
    return f"{where} {record['level']:<5} {record['message']}"
