"""GitOps against a real gateway, broker and PostgreSQL: `flow apply` of a folder through
the bulk endpoint (all or nothing, the plan's diffs, CI exit codes, prune), revisions
listed, shown and diffed, `-o json` on the listing commands, and the HTTP calls of
Terraform's generic REST provider (docs/gitops.md)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from headrace.config import Settings
from headrace.flow.limits import MAX_FLOW_BYTES
from headrace.flow_log import FlowLog
from headrace.services.gateway.flows_bulk import MAX_SOURCES_BYTES
from headrace.topics.definitions import MAX_MESSAGE_BYTES
from tests.integration.stacks import ROOT, in_process_gateway

YAML = {"Content-Type": "application/x-yaml"}


def flow(namespace: str, flow_id: str, message: str = "hi", extra: str = "") -> str:
    return (
        f"id: {flow_id}\nnamespace: {namespace}\ntasks:\n"
        f"  - id: say\n    type: log\n    message: {message}\n{extra}"
    )


@pytest.fixture(scope="module")
async def base_url(settings: Settings) -> AsyncIterator[str]:
    async with in_process_gateway(settings) as url:
        yield url


@pytest.fixture
async def http(base_url: str, auth_headers: dict[str, str]) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url, headers=auth_headers) as session:
        yield session


@pytest.fixture
def namespace() -> str:
    return f"test.gitops{uuid.uuid4().hex[:8]}"


async def cli(base_url: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """`headrace ARGS…` as a user runs it (the session's token in HEADRACE_TOKEN), off the
    event loop that serves the gateway."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "headrace", *args],
        cwd=cwd,
        env={**os.environ, "HEADRACE_URL": base_url},
        capture_output=True,
        text=True,
        timeout=120,
    )


async def call(
    http: aiohttp.ClientSession, method: str, path: str, **kwargs: Any
) -> tuple[int, Any]:
    async with http.request(method, "/api/v1" + path, **kwargs) as response:
        body = await response.read()
        assert response.content_type == "application/json" or not body, body[:200]
        return response.status, json.loads(body) if body else None


async def revision_of(http: aiohttp.ClientSession, namespace: str, flow_id: str) -> int | None:
    status, body = await call(http, "GET", f"/flows/{namespace}/{flow_id}")
    return body["revision"] if status == 200 else None


def write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


async def test_a_folder_with_one_invalid_file_applies_nothing(
    base_url: str, http: aiohttp.ClientSession, namespace: str, tmp_path: Path
) -> None:
    folder = write(tmp_path / "flows", {"kept.yaml": flow(namespace, "kept")})
    first = await cli(base_url, "flow", "apply", str(folder))
    assert first.returncode == 0, first.stderr
    write(
        folder,
        {
            "kept.yaml": flow(namespace, "kept", "changed"),
            "new.yaml": flow(namespace, "new"),
            # Line 5: the task's type; line 4 of the other: a duplicate key.
            "bad.yaml": f"id: bad\nnamespace: {namespace}\ntasks:\n  - id: t\n    type: nope\n",
            "worse.yaml": f"id: worse\nnamespace: {namespace}\nid: again\ntasks: []\n",
        },
    )
    refused = await cli(base_url, "flow", "apply", str(folder))
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "2 of 4 flows are invalid: nothing was applied" in refused.stderr
    assert f"{folder / 'bad.yaml'}:5:" in refused.stderr
    assert "tasks[0].type" in refused.stderr
    assert f"{folder / 'worse.yaml'}:" in refused.stderr
    # Nothing moved: the valid update and the valid creation were not applied either.
    assert await revision_of(http, namespace, "kept") == 1
    assert await revision_of(http, namespace, "new") is None


async def test_the_plan_shows_each_update_as_a_diff_with_ci_exit_codes(
    base_url: str, http: aiohttp.ClientSession, namespace: str, tmp_path: Path
) -> None:
    folder = write(tmp_path / "flows", {"one.yaml": flow(namespace, "one", "uno")})
    applied = await cli(base_url, "flow", "apply", str(folder), "--detailed-exitcode")
    assert applied.returncode == 2, applied.stderr  # changes made
    assert f"+ created   {namespace}/one revision 1" in applied.stdout

    write(folder, {"one.yaml": flow(namespace, "one", "eins"), "two.yaml": flow(namespace, "two")})
    args = ("flow", "apply", str(folder), "--dry-run", "--detailed-exitcode")
    plan = await cli(base_url, *args)
    assert plan.returncode == 2, plan.stderr  # changes pending
    lines = plan.stdout.splitlines()
    assert f"~ update    {namespace}/one revision 1  ({folder / 'one.yaml'})" in lines
    assert f"    --- {namespace}/one revision 1" in lines
    assert f"    +++ {folder / 'one.yaml'}" in lines
    assert "    -    message: uno" in lines and "    +    message: eins" in lines
    assert f"+ create    {namespace}/two  ({folder / 'two.yaml'})" in lines
    assert "plan: 1 to create, 1 to update, 0 to delete, 0 unchanged" in lines
    # The dry run changed nothing.
    assert await revision_of(http, namespace, "one") == 1
    assert await revision_of(http, namespace, "two") is None

    applied = await cli(base_url, "flow", "apply", str(folder), "--detailed-exitcode")
    assert applied.returncode == 2, applied.stderr
    assert f"~ updated   {namespace}/one revision 2 (was 1)" in applied.stdout
    assert "    +    message: eins" in applied.stdout.splitlines()
    assert "2 applied (1 created, 1 updated), 0 unchanged, 0 deleted" in applied.stdout

    again = await cli(base_url, *args)
    assert again.returncode == 0, again.stderr  # nothing to change
    assert f"  unchanged {namespace}/one revision 2" in again.stdout

    (folder / "two.yaml").write_text(flow(namespace, "two", extra="oops: true\n"))
    broken = await cli(base_url, *args)
    assert broken.returncode == 1 and "two.yaml:7" in broken.stderr  # an error is 1, not 2
    usage = await cli(base_url, "flow", "apply", str(folder), "--detailed-exitcode", "--nope")
    assert usage.returncode == 1 and "No such option" in usage.stderr


async def test_prune_deletes_the_flows_the_folder_lacks_in_its_namespaces_only(
    base_url: str, http: aiohttp.ClientSession, namespace: str, tmp_path: Path
) -> None:
    child, other = f"{namespace}.child", f"{namespace}x"
    for ns, flow_id in ((namespace, "stays"), (namespace, "goes"), (child, "c"), (other, "o")):
        status, _ = await call(
            http, "PUT", f"/flows/{ns}/{flow_id}", data=flow(ns, flow_id), headers=YAML
        )
        assert status == 201
    folder = write(tmp_path / "flows", {"stays.yaml": flow(namespace, "stays")})
    plan = await cli(base_url, "flow", "apply", str(folder), "--prune", "--dry-run")
    assert plan.returncode == 0, plan.stderr
    assert f"- delete    {namespace}/goes revision 1" in plan.stdout.splitlines()
    assert await revision_of(http, namespace, "goes") == 1

    pruned = await cli(base_url, "flow", "apply", str(folder), "--prune", "-o", "json")
    assert pruned.returncode == 0, pruned.stderr
    answer = json.loads(pruned.stdout)
    assert answer["summary"] == {"created": 0, "updated": 0, "unchanged": 1, "deleted": 1}
    (deleted,) = [f for f in answer["flows"] if f["action"] == "deleted"]
    assert deleted == {
        "namespace": namespace,
        "id": "goes",
        "action": "deleted",
        "fromRevision": 1,
        "revision": 2,  # the tombstone
    }
    assert await revision_of(http, namespace, "goes") is None
    # Sub-namespaces and other namespaces are not the folder's: kept.
    assert await revision_of(http, child, "c") == 1
    assert await revision_of(http, other, "o") == 1


async def test_the_bulk_endpoint_takes_kestra_yaml_documents_and_says_what_it_did(
    http: aiohttp.ClientSession, namespace: str
) -> None:
    documents = "---\n" + flow(namespace, "a") + "---\n" + flow(namespace, "b") + "\n---\n"
    status, body = await call(http, "POST", "/flows/bulk", data=documents, headers=YAML)
    assert status == 200, body
    assert [(f["id"], f["action"], f["file"], f["revision"]) for f in body["flows"]] == [
        ("a", "created", "document 1", 1),
        ("b", "created", "document 2", 1),
    ]
    # Kestra's `delete` with `namespace`: an empty request empties the namespace.
    status, body = await call(
        http,
        "POST",
        "/flows/bulk",
        params={"delete": "true", "namespace": namespace},
        json={"flows": []},
    )
    assert status == 200 and body["summary"]["deleted"] == 2, body
    assert await revision_of(http, namespace, "a") is None


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"flows": "x"}, 400, 'a "flows" list'),
        ({"flows": [{"name": "a.yaml"}]}, 400, 'flows[0] must be an object with a string "source"'),
        ({"flows": [{"name": 7, "source": "id: x"}]}, 400, "flows[0].name must be a string"),
        ({"flows": []}, 400, "no flows in the request"),
    ],
)
async def test_the_bulk_endpoint_refuses_malformed_requests(
    http: aiohttp.ClientSession, body: Any, status: int, message: str
) -> None:
    answered, error = await call(http, "POST", "/flows/bulk", json=body)
    assert (answered, message in error["message"]) == (status, True), error


async def test_the_bulk_endpoint_names_duplicates_and_foreign_namespaces(
    http: aiohttp.ClientSession, namespace: str
) -> None:
    flows = [
        {"name": "a.yaml", "source": flow(namespace, "a")},
        {"name": "copy.yaml", "source": flow(namespace, "a", "again")},
        {"name": "elsewhere.yaml", "source": flow("somewhere.else", "b")},
    ]
    status, body = await call(
        http, "POST", "/flows/bulk", params={"namespace": namespace}, json={"flows": flows}
    )
    assert status == 422, body
    assert {(e["file"], e["path"]) for e in body["errors"]} == {
        ("copy.yaml", "id"),
        ("elsewhere.yaml", "namespace"),
    }
    assert any(f"{namespace}/a is also in a.yaml" in e["message"] for e in body["errors"])
    assert await revision_of(http, namespace, "a") is None


async def test_a_change_set_the_topic_refuses_leaves_every_flow_as_it_was(
    settings: Settings, http: aiohttp.ClientSession, namespace: str
) -> None:
    """The failure in the middle that flow-by-flow publishing would half apply: the
    producer refuses a record over the topic's limit, so none of the set is written.
    Each flow alone fits; together they do not."""
    padding = "x" * (MAX_FLOW_BYTES - 4096)
    count = MAX_MESSAGE_BYTES // len(padding) + 2
    sources = {
        f"big{i}": flow(namespace, f"big{i}", extra=f"description: {padding}\n")
        for i in range(count)
    }
    status, _ = await call(
        http, "PUT", f"/flows/{namespace}/big0", data=flow(namespace, "big0"), headers=YAML
    )
    assert status == 201
    flows = [{"name": f"{name}.yaml", "source": source} for name, source in sources.items()]
    status, body = await call(http, "POST", "/flows/bulk", json={"flows": flows})
    assert status == 413, body
    assert "too large to apply as one" in body["message"]
    assert "nothing was changed" in body["message"]
    assert await revision_of(http, namespace, "big0") == 1  # not updated
    for flow_id in list(sources)[1:]:
        assert await revision_of(http, namespace, flow_id) is None  # not created
    # A reader starting now, from the topic's beginning, holds none of them either.
    reader = FlowLog(settings, "test-gitops")
    await reader.start()
    try:
        assert [r.revision for r in reader.history(namespace, "big0")] == [1]
        assert all(reader.history(namespace, flow_id) == [] for flow_id in list(sources)[1:])
    finally:
        await reader.stop()
    # Each alone is a flow the gateway takes.
    for flow_id in ("big1", "big2"):
        status, _ = await call(
            http, "PUT", f"/flows/{namespace}/{flow_id}", data=sources[flow_id], headers=YAML
        )
        assert status == 201


async def test_sources_far_over_one_record_are_refused_before_validation(
    http: aiohttp.ClientSession, namespace: str
) -> None:
    """Twice what one record holds: refused at once, no flow loaded (a writer cannot
    hold the loader's processes with a set that could never be written)."""
    padding = "x" * (MAX_FLOW_BYTES - 4096)
    count = MAX_SOURCES_BYTES // len(padding) + 1
    flows = [
        {
            "name": f"big{i}.yaml",
            "source": flow(namespace, f"big{i}", extra=f"description: {padding}\n"),
        }
        for i in range(count)
    ]
    flows.append({"name": "broken.yaml", "source": "id: [unclosed"})  # would be a 422
    status, body = await call(http, "POST", "/flows/bulk", json={"flows": flows})
    assert status == 413, body
    assert (
        "too large to apply as one" in body["message"] and "nothing was changed" in body["message"]
    )
    assert await revision_of(http, namespace, "big0") is None


async def test_revisions_are_listed_shown_and_diffed(
    base_url: str, http: aiohttp.ClientSession, namespace: str
) -> None:
    path = f"/flows/{namespace}/f"
    for message in ("one", "two"):
        status, _ = await call(http, "PUT", path, data=flow(namespace, "f", message), headers=YAML)
        assert status == 201
    assert (await call(http, "DELETE", path))[0] == 204
    status, _ = await call(http, "PUT", path, data=flow(namespace, "f", "three"), headers=YAML)
    assert status == 201

    status, revisions = await call(http, "GET", path + "/revisions")
    assert status == 200
    assert [(r["revision"], r["deleted"]) for r in revisions] == [
        (1, False),
        (2, False),
        (3, True),
        (4, False),
    ]
    status, diff = await call(http, "GET", path + "/diff", params={"from": "1", "to": "4"})
    assert status == 200
    assert diff["diff"].splitlines()[:2] == [
        f"--- {namespace}/f revision 1",
        f"+++ {namespace}/f revision 4",
    ]
    assert "-    message: one" in diff["diff"] and "+    message: three" in diff["diff"]
    # A deletion's source is empty: from it, everything is added.
    status, diff = await call(http, "GET", path + "/diff", params={"from": "3", "to": "4"})
    assert status == 200 and f"+id: f\n+namespace: {namespace}\n" in diff["diff"]

    listed = await cli(base_url, "flow", "revisions", namespace, "f")
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[:2] for line in listed.stdout.splitlines()[:4]] == [
        ["revision", str(n)] for n in range(1, 5)
    ]
    assert listed.stdout.splitlines()[2].endswith("deleted")
    shown = await cli(base_url, "flow", "show", namespace, "f", "--revision", "2")
    assert shown.returncode == 0 and shown.stdout == flow(namespace, "f", "two")
    latest = await cli(base_url, "flow", "show", namespace, "f")
    assert latest.stdout == flow(namespace, "f", "three")
    diffed = await cli(base_url, "flow", "diff", namespace, "f", "1", "2")
    assert diffed.returncode == 0, diffed.stderr
    assert "-    message: one\n+    message: two\n" in diffed.stdout
    same = await cli(base_url, "flow", "diff", namespace, "f", "2", "2")
    assert same.stdout == "revisions 2 and 2 have the same source\n"

    # What is missing is named.
    cases = [
        (f"/flows/{namespace}/nope/revisions", {}, f"flow {namespace}/nope not found"),
        (path + "/diff", {"from": "1", "to": "9"}, "has no revision 9 (its revisions: 1 to 4)"),
        (path + "/diff", {"from": "1"}, "query parameter 'to' is required"),
        (path, {"revision": "3"}, "revision 3 not found: that revision is the flow's deletion"),
        (path, {"revision": "7"}, "revision 7 not found: its latest revision is 4"),
    ]
    for url, params, message in cases:
        status, error = await call(http, "GET", url, params=params)
        assert status in (400, 404) and message in error["message"], (url, error)
    missing = await cli(base_url, "flow", "show", namespace, "f", "--revision", "3")
    assert missing.returncode == 1 and "that revision is the flow's deletion" in missing.stderr


async def test_listing_commands_print_json(
    base_url: str, http: aiohttp.ClientSession, namespace: str
) -> None:
    schedule = "triggers:\n  - id: nightly\n    type: schedule\n    cron: '0 3 * * *'\n"
    status, _ = await call(
        http,
        "PUT",
        f"/flows/{namespace}/f",
        data=flow(namespace, "f", extra=schedule),
        headers=YAML,
    )
    assert status == 201
    status, _ = await call(
        http,
        "POST",
        f"/namespaces/{namespace}/files",
        params={"path": "sql/q.sql"},
        data=b"select 1",
        headers={"Content-Type": "application/octet-stream"},
    )
    assert status == 200

    async def as_json(*args: str) -> Any:
        printed = await cli(base_url, *args, "-o", "json")
        assert printed.returncode == 0, printed.stderr
        return json.loads(printed.stdout)

    (listed,) = await as_json("flow", "list", "--namespace", namespace)
    assert (listed["id"], listed["revision"]) == ("f", 1)
    assert [r["revision"] for r in await as_json("flow", "revisions", namespace, "f")] == [1]
    (trigger,) = await as_json("trigger", "list", "--namespace", namespace)
    assert (trigger["triggerId"], trigger["type"]) == ("nightly", "schedule")
    (file,) = await as_json("namespace", "files", "list", namespace)
    assert (file["path"], file["size"]) == ("sql/q.sql", 8)
    # Executions: none run here (no indexer), but the answer is still a JSON list.
    assert await as_json("execution", "list", "--namespace", namespace) == []
    plugins = await as_json("plugins", "list")
    assert {"log", "shell"} <= {p["type"] for p in plugins}


def go_json(value: Any) -> str:
    """JSON as Go's `json.Marshal` writes a map: keys sorted, no spaces, and `<`, `>`, `&`
    escaped (what Terraform's restapi provider sends as a body)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


async def test_terraform_restapi_provider_calls(
    base_url: str, api_token: str, namespace: str
) -> None:
    """The requests Mastercard/restapi makes for docs/gitops.md's recipe, replayed as it
    sends them (its api_client.go and api_object.go): every one with the provider's
    `headers` (the token, `Content-Type: application/x-yaml`); create is `create_method`
    PUT on `create_path`, read a GET (its body `{}`), update a PUT, destroy a DELETE. It
    needs a 2xx for each, a JSON object whose `id` is the flow's id, a 404 once the flow
    is gone (it then drops the flow from its state), and takes a 404 on destroy as done."""
    headers = {"Authorization": f"Bearer {api_token}", "Content-Type": "application/x-yaml"}
    # `jsonencode(yamldecode(file("flows/etl.yaml")))`
    data = {
        "id": "etl",
        "namespace": namespace,
        "tasks": [{"id": "run", "type": "shell", "commands": ["test 1 -lt 2 && echo <ok>"]}],
    }
    object_path = f"/api/v1/flows/{namespace}/etl"  # path + "/{id}", create_path alike
    async with aiohttp.ClientSession(base_url, headers=headers) as provider:

        async def send(method: str, body: str | None) -> tuple[int, Any]:
            async with provider.request(method, object_path, data=body) as response:
                text = await response.text()
                return response.status, json.loads(text) if text else None

        async def read() -> tuple[int, Any]:
            return await send("GET", "{}")

        # terraform apply: create, then read back.
        status, created = await send("PUT", go_json(data))
        assert status == 201 and created["id"] == "etl", created
        status, state = await read()
        assert status == 200 and state["id"] == "etl" and state["revision"] == 1
        assert state["tasks"][0]["commands"] == ["test 1 -lt 2 && echo <ok>"]
        # terraform apply of the same data again: the PUT is idempotent.
        status, again = await send("PUT", go_json(data))
        assert status == 200 and again["revision"] == 1
        # terraform apply after an edit: update, then read back.
        data["tasks"][0]["commands"] = ["echo changed"]
        status, updated = await send("PUT", go_json(data))
        assert status == 201 and updated["id"] == "etl" and updated["revision"] == 2, updated
        status, state = await read()
        assert status == 200 and state["revision"] == 2
        # terraform destroy: delete; a refresh then finds nothing; deleting again is a 404.
        status, _ = await send("DELETE", None)
        assert status == 204
        status, _ = await read()
        assert status == 404
        status, _ = await send("DELETE", None)
        assert status == 404
