"""What a task can read, against a real `headrace server local` (its supervisor included).

The server is started as a user would, with two secrets in its environment (MINE, which
the flows ask for, and OTHER, which none does), one in a mounted secrets directory
(FILED), a database URL, and with its own embedded broker. A task then looks through every process environment it can read, its
own, its ancestors' (the worker, the supervisor) and everyone else's: neither OTHER nor
the database URL may be anywhere, MINE only in its own. Then a task prints MINE in every
encoding masking covers: no form of it may reach the logs API, PostgreSQL or any topic.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from headrace.api_client import ApiClient, ApiError
from headrace.broker import free_port
from headrace.config import Settings
from headrace.services.worker.masking import MASK
from tests.integration.waiting import wait_until

# Random per session, with characters whose encodings differ from the text itself.
MINE = f'Mine/{secrets.token_hex(6)}+é "q"'
OTHER = f"other-{secrets.token_hex(8)}"
FILED = f"filed-{secrets.token_hex(8)}"

LOOK_AROUND = """\
id: look-around
namespace: tests.isolation
tasks:
  - id: look
    type: python
    env:
      MINE: "{{ secret('MINE') }}"
      # What to look for, in halves: no environment holds them joined but by a leak.
      NEEDLES: '%s'
    script: |
      import glob, json, os
      from headrace import task

      halves = json.loads(os.environ["NEEDLES"])
      needles = {name: a + b for name, (a, b) in halves.items()}
      ancestors, pid = [], os.getppid()
      while pid > 1:
          ancestors.append(pid)
          with open(f"/proc/{pid}/stat") as stat:
              pid = int(stat.read().rsplit(")", 1)[1].split()[1])
      found, readable = [], 0
      for path in glob.glob("/proc/[0-9]*/environ"):
          pid = int(path.split("/")[2])
          if pid == os.getpid():
              continue
          try:
              with open(path, "rb") as file:
                  data = file.read().decode(errors="replace")
          except OSError:
              continue  # gone, or not ours to read
          readable += 1
          found += [[name, pid in ancestors] for name, value in needles.items() if value in data]
      own = sorted(name for name, value in needles.items() if value in os.environ.values())
      task.outputs(found=found, own=own, ancestors=ancestors, readable=readable)
"""

LEAK = """\
id: leak
namespace: tests.isolation
tasks:
  - id: print
    type: python
    env:
      MINE: "{{ secret('MINE') }}"
    script: |
      import base64, json, os, urllib.parse
      from headrace import task

      s = os.environ["MINE"]
      data = s.encode()
      print("exact", s)
      print("upper", s.upper())
      print("lower", s.lower())
      print("json", json.dumps({"token": s}))
      print("json-raw", json.dumps({"token": s}, ensure_ascii=False))
      print("url", urllib.parse.quote(s, safe=""))
      print("url-plus", urllib.parse.quote_plus(s))
      print("base64", base64.b64encode(data).decode())
      print("base64url", base64.urlsafe_b64encode(data).decode())
      print("base64-inside", base64.b64encode(b'{"token": "' + data + b'"}').decode())
      print("hex", data.hex())
      task.outputs(copy=s, nested={"upper": [s.upper()]})
  - id: fail
    type: python
    allowFailure: true
    env:
      MINE: "{{ secret('MINE') }}"
    script: |
      import os
      raise SystemExit("failing with " + os.environ["MINE"].lower())
"""


def forms(value: str) -> list[str]:
    """The encodings of `value` that must never be seen outside the task."""
    data = value.encode()
    return [
        value,
        value.upper(),
        value.lower(),
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        urllib.parse.quote(value, safe=""),
        urllib.parse.quote_plus(value),
        base64.b64encode(data).decode().rstrip("="),
        base64.urlsafe_b64encode(data).decode().rstrip("="),
        data.hex(),
    ]


def leaks_in(text: str, value: str) -> list[str]:
    """The forms of `value` in `text`, including a base64 run that decodes to it."""
    found = [form for form in forms(value) if form.lower() in text.lower()]
    for run in re.findall(r"[A-Za-z0-9+/=_-]{12,}", text):
        padded = run.rstrip("=") + "=" * (-len(run.rstrip("=")) % 4)
        for decode in (base64.b64decode, base64.urlsafe_b64decode):
            try:
                if value.encode() in decode(padded):
                    found.append(f"base64 {run}")
            except ValueError:  # binascii.Error: not base64 after all
                pass
    return found


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    api: ApiClient
    broker: str
    database_url: str


@pytest.fixture(scope="module")
def server(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    port = free_port()
    output = tmp_path_factory.mktemp("server-local") / "output.txt"
    mounted = tmp_path_factory.mktemp("secrets")
    (mounted / "FILED").write_text(FILED + "\n")  # as `echo` writes it
    (mounted / "..data").mkdir()  # Kubernetes' own entry: not a secret
    env = {
        **os.environ,
        "HEADRACE_DATABASE_URL": settings.database_url,
        "HEADRACE_SECRET_MINE": MINE,
        "HEADRACE_SECRET_OTHER": OTHER,
        "HEADRACE_SECRETS_DIR": str(mounted),
    }
    env.pop("HEADRACE_KAFKA_BOOTSTRAP", None)  # its own embedded broker, as a user gets
    with output.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "headrace", "server", "local", "--port", str(port)],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        api = ApiClient(f"http://127.0.0.1:{port}", timeout_s=60)

        def up() -> bool:
            assert process.poll() is None, output.read_text()
            return "headrace is up" in output.read_text()

        wait_until(up, timeout_s=180, what="headrace server local to start")
        broker = re.search(r"embedded broker at (\S+)", output.read_text())
        assert broker is not None
        yield Server(process, api, broker[1], settings.database_url)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_flow(server: Server, source: str, flow_id: str) -> dict:
    server.api.request(
        "PUT",
        f"/flows/tests.isolation/{flow_id}",
        body=source.encode(),
        content_type="application/x-yaml",
    )
    execution_id = server.api.request(
        "POST", f"/executions/tests.isolation/{flow_id}", json_body={}
    )["id"]
    answer: dict = {}

    def ended() -> bool:
        nonlocal answer
        try:
            answer = server.api.request("GET", f"/executions/{execution_id}")
        except ApiError as exc:
            if exc.status != 404:
                raise
            return False
        return answer["state"]["current"] in ("SUCCESS", "WARNING", "FAILED", "KILLED")

    wait_until(ended, timeout_s=120, what=f"execution {execution_id} to end")
    return answer


def halves(value: str) -> list[str]:
    return [value[: len(value) // 2], value[len(value) // 2 :]]


def test_a_task_reads_only_the_secrets_its_flow_names(server: Server) -> None:
    needles = {
        "MINE": halves(MINE),
        "OTHER": halves(OTHER),
        "FILED": halves(FILED),
        "DB": halves(server.database_url),
    }
    source = LOOK_AROUND % json.dumps(needles).replace("'", "''")
    execution = run_flow(server, source, "look-around")
    assert execution["state"]["current"] == "SUCCESS", execution
    outputs = execution["taskRunList"][0]["outputs"]
    assert outputs["own"] == ["MINE"]  # asked for: in its own environment
    assert outputs["found"] == []  # not in any other environment, ancestors included
    # It did look at its parent worker and at `headrace server local` above it.
    assert server.process.pid in outputs["ancestors"] and len(outputs["ancestors"]) >= 2
    assert outputs["readable"] > 0
    # The supervisor, read from here too: its environment no longer holds them (the
    # kernel keeps the one a process was started with: it re-executed itself).
    try:
        environ = Path(f"/proc/{server.process.pid}/environ").read_bytes()
    except PermissionError:  # non-dumpable: not readable by its user (tests run as root)
        environ = b""
    for value in (MINE, OTHER, FILED, server.database_url):
        assert value.encode() not in environ


FROM_FILE = """\
id: from-file
namespace: tests.isolation
tasks:
  - id: use
    type: python
    env:
      FILED: "{{ secret('FILED') }}"
    script: |
      import hashlib, os
      from headrace import task

      value = os.environ["FILED"]
      print("got", value)
      task.outputs(copy=value, digest=hashlib.sha256(value.encode()).hexdigest())
"""


def test_a_secret_from_the_mounted_directory_reaches_the_task_that_names_it(
    server: Server,
) -> None:
    execution = run_flow(server, FROM_FILE, "from-file")
    assert execution["state"]["current"] == "SUCCESS", execution
    outputs = execution["taskRunList"][0]["outputs"]
    # The file's text less its newline, and masked like any secret.
    assert outputs["digest"] == hashlib.sha256(FILED.encode()).hexdigest()
    assert outputs["copy"] == MASK
    lines = [line["message"] for line in server.api.request("GET", f"/logs/{execution['id']}")]
    assert f"got {MASK}" in lines and not any(FILED in line for line in lines)


def test_every_encoding_of_a_secret_is_masked_in_logs_outputs_errors_and_topics(
    server: Server,
) -> None:
    execution = run_flow(server, LEAK, "leak")
    execution_id = execution["id"]
    assert execution["state"]["current"] == "WARNING"  # `fail` failed, allowed

    lines: list[str] = []

    def all_lines() -> bool:
        nonlocal lines
        lines = [line["message"] for line in server.api.request("GET", f"/logs/{execution_id}")]
        return sum(MASK in line for line in lines) >= 11

    wait_until(all_lines, timeout_s=60, what="the task's 11 log lines")
    assert leaks_in("\n".join(lines), MINE) == []
    assert leaks_in(json.dumps(execution), MINE) == []
    (printed,) = [r for r in execution["taskRunList"] if r["taskId"] == "print"]
    assert printed["outputs"]["copy"] == MASK
    (failed,) = [r for r in execution["taskRunList"] if r["taskId"] == "fail"]
    assert failed["attempts"][-1]["error"] == f"exit code 1: failing with {MASK}"

    stored = asyncio.run(database_text(server.database_url, execution_id))
    assert MASK in stored and leaks_in(stored, MINE) == []
    published = asyncio.run(topic_text(server.broker, execution_id))
    assert MASK in published and leaks_in(published, MINE) == []


async def database_text(url: str, execution_id: str) -> str:
    """Everything PostgreSQL holds of the execution, as text."""
    connection = await asyncpg.connect(url)
    try:
        rows = await connection.fetch(
            """
            SELECT message AS text FROM logs WHERE execution_id = $1
            UNION ALL SELECT outputs::text || attempts::text FROM task_runs
                WHERE execution_id = $1
            UNION ALL SELECT outputs::text FROM executions WHERE id = $1
            """,
            execution_id,
        )
    finally:
        await connection.close()
    return "\n".join(row["text"] for row in rows)


async def topic_text(bootstrap: str, execution_id: str) -> str:
    """Every record of every topic keyed by the execution (logs, task-results,
    executions, the executor's changelog...), as text."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [
            TopicPartition(topic, p)
            for topic in await consumer.topics()
            for p in consumer.partitions_for_topic(topic) or ()
        ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        texts = []
        async with asyncio.timeout(60):
            while [p for p, end in ends.items() if await consumer.position(p) < end]:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    texts += [
                        r.value.decode(errors="replace")
                        for r in records
                        if r.key == execution_id.encode() and r.value
                    ]
    finally:
        await consumer.stop()
    return "\n".join(texts)
