"""A result too large for outputs, from one task to the next through the file storage,
on the real services: `postgres.query` with `fetchType: STORE`, then a `python` task
reading the rows through `inputFiles`."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from headrace.api_client import ApiClient
from headrace.config import Settings
from headrace.local import LocalStack
from headrace.storage import Storage
from tests.integration.stacks import put_flows, running_stack

NAMESPACE = "tests.stored"
ROWS = 20_000  # about 600 KiB of JSON Lines: over the 256 KiB outputs may hold


def flow(database_url: str) -> str:
    return f"""\
id: rows-to-python
namespace: {NAMESPACE}
tasks:
  - id: query
    type: postgres.query
    url: {database_url}
    sql: |
      CREATE TEMP TABLE numbers AS SELECT g AS id, 'row ' || g AS name FROM generate_series(1, :n) g;
      SELECT * FROM numbers ORDER BY id
    parameters:
      n: {ROWS}
    fetchType: STORE
  - id: count
    type: python
    inputFiles:
      data/rows.jsonl: "{{{{ outputs.query.uri }}}}"
    script: |
      import json
      from headrace.task import outputs

      count, last = 0, None
      with open("data/rows.jsonl") as file:
          for line in file:
              count, last = count + 1, json.loads(line)
      outputs(count=count, last=last)
"""


@pytest.fixture(scope="module")
def stack(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with running_stack(settings, tmp_path_factory, "stored-results-logs") as stack:
        yield stack


def test_stored_rows_reach_a_python_task_through_input_files(
    stack: LocalStack, settings: Settings, database_url: str
) -> None:
    api = ApiClient(stack.url, timeout_s=60)
    put_flows(api, NAMESPACE, {"rows-to-python": flow(database_url)})
    execution = api.request(
        "POST",
        f"/executions/{NAMESPACE}/rows-to-python",
        params={"wait": "true", "timeout": "60"},
    )
    runs = {run["taskId"]: run for run in execution["taskRunList"]}
    assert execution["state"]["current"] == "SUCCESS", [
        run["attempts"][-1].get("error") for run in runs.values()
    ]
    query = runs["query"]["outputs"]
    assert query == {
        "uri": f"headrace:///{NAMESPACE}/rows-to-python/executions/{execution['id']}/tasks/query"
        f"/{runs['query']['id']}/query.jsonl",
        "size": ROWS,
    }
    assert runs["count"]["outputs"]["count"] == ROWS
    assert runs["count"]["outputs"]["last"] == {"id": ROWS, "name": f"row {ROWS}"}
    # The file stays in the storage, for later tasks and downloads.
    with Storage(settings.storage_path()).open(query["uri"]) as file:
        lines = file.read().splitlines()
    assert len(lines) == ROWS
    assert json.loads(lines[0]) == {"id": 1, "name": "row 1"}
