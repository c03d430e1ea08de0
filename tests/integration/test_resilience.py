"""A dead service mid-execution loses nothing: its successor picks the execution up.

The executor keeps each execution's state (and its pending timers) in a Faust table
backed by a changelog topic; a new executor process recovers it. Services run as real
processes (as under `headrace server local`) and are killed with SIGKILL, the hard way.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from headrace.api_client import ApiClient, ApiError
from headrace.config import Settings
from headrace.local import LocalStack, ServiceProcess
from tests.integration.stacks import running_stack
from tests.integration.waiting import wait_until

SLOW_TASK = """\
id: slow
namespace: tests.resilience
tasks:
  - id: sleep
    type: shell
    commands:
      - touch {marker}
      - sleep 2
  - id: after
    type: log
    message: "after the sleep"
"""

RETRY_LATER = """\
id: retry-later
namespace: tests.resilience
tasks:
  - id: second-time-lucky
    type: shell
    retry:
      type: constant
      interval: PT4S
      maxAttempts: 2
    commands:
      - if [ -e {marker} ]; then exit 0; fi
      - touch {marker}
      - exit 1
"""

# Each run records its pid, and whether a copy of the same task was still alive when it
# started (an overlap), then works for 2 s.
SIDE_EFFECTS = """\
id: side-effects
namespace: tests.resilience
tasks:
  - id: effect
    type: shell
    commands:
      - |
        runs={folder}/{{{{ execution.id }}}}
        for pid in $(cat "$runs" 2>/dev/null); do
          if kill -0 "$pid" 2>/dev/null; then echo "$pid" >> {folder}/overlaps; fi
        done
        echo $$ >> "$runs"
        echo "$PWD" >> {folder}/workdirs
        sleep 2
"""

# Six outputs of 200 KB: a state of ~1.2 MB, over Kafka's 1 MiB default record size.
BIG_STATE = """\
id: big-state
namespace: tests.resilience
tasks:
  - id: blobs
    type: flow.foreach
    values: "{{{{ range(6) | list }}}}"
    concurrencyLimit: 0
    tasks:
      - id: blob
        type: python
        script: |
          from headrace import task
          task.outputs(blob="x" * 200_000)
  - id: sleep
    type: shell
    commands:
      - touch {marker}
      - sleep 2
"""


@pytest.fixture(scope="module")
def stack(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with running_stack(settings, tmp_path_factory, "resilience-logs") as stack:
        yield stack


def kill_hard(stack: LocalStack, name: str) -> ServiceProcess:
    (service,) = [p for p in stack.processes if p.name == name and p.alive]
    service.process.send_signal(signal.SIGKILL)
    service.process.wait(10)
    return service


def apply(api: ApiClient, source: str, flow_id: str) -> None:
    api.request(
        "PUT",
        f"/flows/tests.resilience/{flow_id}",
        body=source.encode(),
        content_type="application/x-yaml",
    )


def start(api: ApiClient, flow_id: str) -> str:
    return api.request("POST", f"/executions/tests.resilience/{flow_id}", json_body={})["id"]


def wait_for_end(api: ApiClient, execution_id: str) -> dict:
    answer = {}

    def ended() -> bool:
        nonlocal answer
        try:
            answer = api.request("GET", f"/executions/{execution_id}")
        except ApiError as exc:  # 404 until the indexer has written it
            if exc.status != 404:
                raise
            return False
        return answer["state"]["current"] in ("SUCCESS", "FAILED", "WARNING")

    def last_seen() -> str:  # what the failure message shows: where it got stuck
        runs = [
            (run["taskId"], run["state"]["current"], len(run["attempts"]))
            for run in answer.get("taskRunList", [])
        ]
        return f"{execution_id} to end; last seen {answer.get('state')}, task runs {runs}"

    try:
        wait_until(ended, timeout_s=90, what="the execution")
    except AssertionError:
        raise AssertionError(f"timed out waiting for {last_seen()}") from None
    return answer


def test_executor_killed_while_a_task_runs(stack: LocalStack, tmp_path) -> None:
    api = ApiClient(stack.url)
    marker = tmp_path / "started"
    apply(api, SLOW_TASK.format(marker=marker), "slow")
    execution_id = start(api, "slow")
    wait_until(marker.exists)

    kill_hard(stack, "executor")
    stack.start_service("executor")
    stack.wait_ready()

    execution = wait_for_end(api, execution_id)
    assert execution["state"]["current"] == "SUCCESS"
    assert [r["taskId"] for r in execution["taskRunList"]] == ["sleep", "after"]
    assert all(len(r["attempts"]) == 1 for r in execution["taskRunList"])


def test_retry_timer_survives_an_executor_restart(stack: LocalStack, tmp_path) -> None:
    api = ApiClient(stack.url)
    marker = tmp_path / "failed-once"
    apply(api, RETRY_LATER.format(marker=marker), "retry-later")
    execution_id = start(api, "retry-later")
    wait_until(marker.exists)  # attempt 1 ran and failed; a 4 s retry timer is pending

    kill_hard(stack, "executor")
    stack.start_service("executor")
    stack.wait_ready()

    execution = wait_for_end(api, execution_id)
    assert execution["state"]["current"] == "SUCCESS"
    (run,) = execution["taskRunList"]
    assert [a["state"]["current"] for a in run["attempts"]] == ["FAILED", "SUCCESS"]
    first_end = datetime.fromisoformat(run["attempts"][0]["state"]["endDate"])
    second_start = datetime.fromisoformat(run["attempts"][1]["state"]["startDate"])
    assert (second_start - first_end).total_seconds() >= 4  # the backoff was honoured


def test_worker_killed_mid_task_is_redelivered(stack: LocalStack, tmp_path) -> None:
    api = ApiClient(stack.url)
    marker = tmp_path / "started"
    apply(api, SLOW_TASK.format(marker=marker), "slow")
    execution_id = start(api, "slow")
    wait_until(marker.exists)

    kill_hard(stack, "worker")
    marker.unlink()
    stack.start_service("worker")
    stack.wait_ready()

    execution = wait_for_end(api, execution_id)
    assert execution["state"]["current"] == "SUCCESS"
    assert marker.exists()  # the task really ran a second time, on the new worker
    # ... and shows as a second attempt entry, the first lost with its worker.
    sleep = execution["taskRunList"][0]
    assert [a["state"]["current"] for a in sleep["attempts"]] == ["FAILED", "SUCCESS"]
    assert sleep["attempts"][0]["error"].startswith("lost: worker ")


def process_alive(pid: int) -> bool:
    """True while `pid` runs; a zombie (exited, not yet reaped) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_worker_killed_hard_leaves_no_task_running_and_reruns_show_as_attempts(
    stack: LocalStack, tmp_path: Path
) -> None:
    """kill -9 of the worker while 30 shell tasks run: their processes die with it (not
    one is alive when a redelivered copy starts), every execution ends, and a re-run is
    a second attempt entry, the first one FAILED as lost."""
    api = ApiClient(stack.url)
    apply(api, SIDE_EFFECTS.format(folder=tmp_path), "side-effects")
    ids = [start(api, "side-effects") for _ in range(30)]

    def running_pids() -> list[int]:
        files = [tmp_path / execution_id for execution_id in ids]
        return [int(pid) for f in files if f.exists() for pid in f.read_text().split()]

    wait_until(lambda: len(running_pids()) >= 10, what="10 tasks to be running")
    kill_hard(stack, "worker")
    orphans = running_pids()
    wait_until(
        lambda: not any(process_alive(pid) for pid in orphans),
        timeout_s=5,
        what="the dead worker's task processes to be killed",
    )
    # Their attempt directories are gone with them (the reaper removes them).
    workdirs = set((tmp_path / "workdirs").read_text().split())
    assert workdirs and all(Path(d).name.startswith("headrace-attempt-") for d in workdirs)
    wait_until(
        lambda: not any(Path(d).exists() for d in workdirs),
        timeout_s=5,
        what="the dead worker's attempt directories to be removed",
    )
    stack.start_service("worker")
    stack.wait_ready()

    executions = {execution_id: wait_for_end(api, execution_id) for execution_id in ids}
    assert not (tmp_path / "overlaps").exists(), "a task ran beside a live copy of itself"
    rerun = 0
    for execution_id, execution in executions.items():
        assert execution["state"]["current"] == "SUCCESS"
        (run,) = execution["taskRunList"]
        states = [a["state"]["current"] for a in run["attempts"]]
        copies = len((tmp_path / execution_id).read_text().split())
        # One entry per run the executor heard of: a run may be lost before its task
        # wrote its pid, never after.
        assert states[-1] == "SUCCESS" and copies <= len(states)
        for lost in run["attempts"][:-1]:
            assert lost["state"]["current"] == "FAILED"
            assert lost["error"].startswith("lost: worker ")
        rerun += copies > 1
    assert rerun > 0  # the kill did catch tasks mid-run


def test_a_state_over_one_mebibyte_survives_an_executor_restart(
    stack: LocalStack, tmp_path
) -> None:
    """The state table's record is the whole state: it must pass the producer and the
    changelog topic, and be fetched back by the successor's recovery."""
    api = ApiClient(stack.url)
    marker = tmp_path / "stored"
    apply(api, BIG_STATE.format(marker=marker), "big-state")
    execution_id = start(api, "big-state")
    wait_until(marker.exists)  # the six blobs are in the state

    kill_hard(stack, "executor")
    stack.start_service("executor")
    stack.wait_ready()

    execution = wait_for_end(api, execution_id)
    assert execution["state"]["current"] == "SUCCESS"
    blobs = [r for r in execution["taskRunList"] if r["taskId"] == "blob"]
    assert len(blobs) == 6 and all(len(r["outputs"]["blob"]) == 200_000 for r in blobs)
    (sleep,) = [r for r in execution["taskRunList"] if r["taskId"] == "sleep"]
    assert len(sleep["attempts"]) == 1  # recovered, not started over
