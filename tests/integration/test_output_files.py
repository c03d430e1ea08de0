"""A script task's `outputFiles` through the real services, as a Kestra flow passes them:
the file goes to the storage and its URI to the outputs; the next task reads its text with
`{{ read(...) }}`, a third gets the file through `inputFiles` and through the URI in a
command (a local copy, as Kestra makes), and the API downloads the very bytes the task
wrote."""

from __future__ import annotations

import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator

import pytest

from headrace.api_client import ApiClient
from headrace.config import Settings
from headrace.local import LocalStack
from headrace.storage import stored_file
from tests.integration.stacks import put_flows, running_stack
from tests.integration.waiting import wait_until

NAMESPACE = f"tests.outfiles{uuid.uuid4().hex[:6]}"
# Not ASCII, several lines, a tab: what comes back must be exactly this.
TEXT = "héllo\tworld\nsecond line\n"
FLOW = f"""\
id: pass-files
namespace: {NAMESPACE}
tasks:
  - id: t
    type: io.kestra.plugin.scripts.shell.Commands
    commands:
      - printf 'héllo\\tworld\\nsecond line\\n' > out.txt
    outputFiles:
      - out.txt
  - id: show
    type: io.kestra.plugin.core.log.Log
    message: "read: {{{{ read(outputs.t.outputFiles['out.txt']) }}}}"
  - id: copy
    type: io.kestra.plugin.scripts.shell.Commands
    inputFiles:
      in.txt: "{{{{ outputs.t.outputFiles['out.txt'] }}}}"
      expected.txt: "héllo\\tworld\\nsecond line\\n"
    commands:
      - cmp in.txt expected.txt
      - wc -c < in.txt
      - cat {{{{ outputs.t.outputFiles['out.txt'] }}}}
"""


@pytest.fixture(scope="module")
def stack(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    assert settings.storage_dir  # the session's own (tests/conftest.py)
    services = ("indexer", "executor", "worker", "gateway")
    with running_stack(settings, tmp_path_factory, "output-files", services) as stack:
        yield stack


@pytest.fixture(scope="module")
def api(stack: LocalStack) -> ApiClient:
    client = ApiClient(stack.url, timeout_s=60)
    put_flows(client, NAMESPACE, {"pass-files": FLOW})
    return client


def download(stack: LocalStack, token: str, execution_id: str, uri: str) -> bytes:
    query = urllib.parse.urlencode({"path": uri})
    request = urllib.request.Request(
        f"{stack.url}/api/v1/executions/{execution_id}/file?{query}",
        headers={"Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read()


def test_output_files_pass_by_uri_to_read_input_files_and_the_api(
    stack: LocalStack, api: ApiClient, api_token: str
) -> None:
    execution = api.request(
        "POST",
        f"/executions/{NAMESPACE}/pass-files",
        params={"wait": "true", "timeout": "90"},
        json_body={},
        timeout_s=100,
    )
    assert execution["state"]["current"] == "SUCCESS", execution
    runs = {run["taskId"]: run for run in execution["taskRunList"]}
    (uri,) = runs["t"]["outputs"]["outputFiles"].values()
    assert list(runs["t"]["outputs"]["outputFiles"]) == ["out.txt"]
    assert stored_file(uri).execution_id == execution["id"]
    assert stored_file(uri).name.endswith("-out.txt")

    def lines() -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for line in api.request("GET", f"/logs/{execution['id']}"):
            found.setdefault(line["taskId"], []).append(line["message"])
        return found if {"show", "copy"} <= found.keys() else {}

    logged = wait_until(lines, 60, "the tasks' log lines")
    assert logged["show"] == [f"read: {TEXT}"]  # the file's text, in the Log's message
    # cmp was silent (the same bytes), and the URI in a command was a local copy's path.
    assert logged["copy"] == [str(len(TEXT.encode())), *TEXT.splitlines()]
    assert download(stack, api_token, execution["id"], uri) == TEXT.encode()
