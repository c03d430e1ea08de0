"""`github.*` against a local server that answers as GitHub's REST API documents.

GitHub's documentation ("Issues", "Issue comments", "Workflows: create a workflow
dispatch event", "Troubleshooting the REST API"): requests carry `Authorization: Bearer
TOKEN`, `Accept: application/vnd.github+json` and `X-GitHub-Api-Version`; creating an
issue or a comment answers 201 with the new object (`number`/`id`, `html_url`); a
dispatch answers 204 with no body. A bad token is 401 `{"message": "Bad credentials"}`,
an unknown repository or workflow 404 `{"message": "Not Found"}`, an invalid body 422
`{"message": "Validation Failed", "errors": [...]}`, and a used-up rate limit 403 with
`X-RateLimit-Remaining: 0`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from headrace.states import State
from headrace.testing import run_task

TOKEN = "ghp_test_token_0123456789"
REPO = "acme/warehouse"


class FakeGitHub:
    def __init__(self) -> None:
        self.issues: list[dict[str, Any]] = []
        self.comments: list[tuple[int, str]] = []
        self.dispatches: list[tuple[str, dict[str, Any]]] = []
        self.rate_limited = False

    def refusal(self, request: web.Request) -> web.Response | None:
        if self.rate_limited:
            return web.json_response(
                {"message": "API rate limit exceeded for user ID 1."},
                status=403,
                headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1767225600"},
            )
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response({"message": "Bad credentials"}, status=401)
        wanted = (request.headers.get("Accept"), request.headers.get("X-GitHub-Api-Version"))
        assert wanted == ("application/vnd.github+json", "2022-11-28")
        if f"{request.match_info['owner']}/{request.match_info['repo']}" != REPO:
            return web.json_response({"message": "Not Found"}, status=404)
        return None

    async def create_issue(self, request: web.Request) -> web.Response:
        if (refused := self.refusal(request)) is not None:
            return refused
        body = json.loads(await request.text())
        if not body.get("title"):
            return web.json_response(
                {
                    "message": "Validation Failed",
                    "errors": [{"resource": "Issue", "code": "missing_field", "field": "title"}],
                },
                status=422,
            )
        number = len(self.issues) + 1
        self.issues.append(body)
        url = f"https://github.com/{REPO}/issues/{number}"
        return web.json_response({"number": number, "html_url": url}, status=201)

    async def comment(self, request: web.Request) -> web.Response:
        if (refused := self.refusal(request)) is not None:
            return refused
        number = int(request.match_info["number"])
        if number > len(self.issues):
            return web.json_response({"message": "Not Found"}, status=404)
        self.comments.append((number, json.loads(await request.text())["body"]))
        url = f"https://github.com/{REPO}/issues/{number}#issuecomment-{len(self.comments)}"
        return web.json_response({"id": len(self.comments), "html_url": url}, status=201)

    async def dispatch(self, request: web.Request) -> web.Response:
        if (refused := self.refusal(request)) is not None:
            return refused
        if request.match_info["workflow"] != "load.yml":
            return web.json_response({"message": "Not Found"}, status=404)
        body = json.loads(await request.text())
        if not all(isinstance(v, str) for v in body.get("inputs", {}).values()):
            return web.json_response({"message": "Invalid value for input"}, status=422)
        self.dispatches.append((body["ref"], body.get("inputs", {})))
        return web.Response(status=204)


@pytest.fixture
async def github() -> AsyncIterator[tuple[FakeGitHub, str]]:
    fake = FakeGitHub()
    app = web.Application()
    app.router.add_post("/repos/{owner}/{repo}/issues", fake.create_issue)
    app.router.add_post("/repos/{owner}/{repo}/issues/{number}/comments", fake.comment)
    app.router.add_post(
        "/repos/{owner}/{repo}/actions/workflows/{workflow}/dispatches", fake.dispatch
    )
    async with TestServer(app, host="127.0.0.1") as server:
        yield fake, str(server.make_url("")).rstrip("/")


def base(url: str, **properties: Any) -> dict[str, Any]:
    return {"url": url, "repository": REPO, "oauthToken": TOKEN, **properties}


async def test_an_issue_a_comment_and_a_workflow_run(github: tuple[FakeGitHub, str]) -> None:
    fake, url = github
    issue = await run_task(
        "io.kestra.plugin.github.issues.Create",
        base(url, title="Nightly load failed", body="see logs", labels=["data"]),
        secrets={"GITHUB_TOKEN": TOKEN},
    )
    assert issue.state is State.SUCCESS, issue.error
    assert issue.outputs == {
        "issueNumber": 1,
        "issueUrl": f"https://github.com/{REPO}/issues/1",
    }
    assert fake.issues == [{"title": "Nightly load failed", "body": "see logs", "labels": ["data"]}]
    comment = await run_task("github.comment", base(url, issueNumber=1, body="rerun ok"))
    assert comment.outputs["commentId"] == 1 and fake.comments == [(1, "rerun ok")]
    run = await run_task(
        "github.dispatch",
        base(url, workflowId="load.yml", ref="v2", inputs={"tables": 3, "full": True, "d": "x"}),
    )
    assert run.state is State.SUCCESS, run.error
    assert fake.dispatches == [("v2", {"tables": "3", "full": "true", "d": "x"})]
    assert run.messages == ["started load.yml on v2"]


async def test_githubs_refusals_say_why(github: tuple[FakeGitHub, str]) -> None:
    fake, url = github
    bad_token = await run_task("github.issue", {**base(url, title="t"), "oauthToken": "nope"})
    assert bad_token.error == f"GitHub refused POST /repos/{REPO}/issues (401): Bad credentials"
    unknown = await run_task("github.issue", base(url, title="t") | {"repository": "acme/x"})
    assert unknown.error == "GitHub refused POST /repos/acme/x/issues (404): Not Found"
    invalid = await run_task("github.issue", base(url, title=""))
    assert (invalid.error or "").endswith(
        '(422): Validation Failed [{"resource":"Issue","code":"missing_field","field":"title"}]'
    )
    no_workflow = await run_task("github.dispatch", base(url, workflowId="nope.yml"))
    assert (no_workflow.error or "").endswith("(404): Not Found")
    fake.rate_limited = True
    limited = await run_task("github.comment", base(url, issueNumber=1, body="x"))
    assert (limited.error or "").endswith(
        "(403): API rate limit exceeded for user ID 1. (the token's rate limit is used up;"
        " it resets at X-RateLimit-Reset)"
    )


async def test_bad_properties_are_refused_by_name() -> None:
    run = await run_task(
        "github.issue", {"repository": "no-slash", "oauthToken": "t", "title": "x"}
    )
    assert run.state is State.FAILED and "invalid property 'repository'" in (run.error or "")
    run = await run_task(
        "github.dispatch", {"repository": REPO, "oauthToken": "t", "workflowId": "../x"}
    )
    assert "invalid property 'workflowId'" in (run.error or "")
