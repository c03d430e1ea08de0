"""GitHub: open an issue, comment on one, start a workflow (the REST API, version 2022-11-28)."""

from __future__ import annotations

from typing import Any, ClassVar

import orjson
from pydantic import BaseModel, Field

from headrace.connectors.base import ConnectorProperties, TaskContext, TaskFailed
from headrace.connectors.http import HttpRequestProperties, WebUrl, answer_header, send_request
from headrace.connectors.network_policy import NetworkPolicy

API_VERSION = "2022-11-28"
REPOSITORY_PATTERN = r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$"


class GitHubProperties(ConnectorProperties):
    repository: str = Field(pattern=REPOSITORY_PATTERN, description="owner/name.")
    oauth_token: str = Field(
        alias="oauthToken",
        description="A token allowed to do this (fine-grained: Issues or Actions write):"
        " `{{ secret('GITHUB_TOKEN') }}`.",
    )
    url: WebUrl = Field(
        default="https://api.github.com",
        description="The API's URL: GitHub Enterprise Server's is https://HOST/api/v3.",
    )


async def call_github(
    properties: GitHubProperties, path: str, body: dict[str, Any], context: TaskContext
) -> dict[str, Any]:
    """POST `body` to `path` of the API; the answer's JSON (empty for 204). GitHub's
    refusal fails the task with its message and, for a 422, what it found invalid."""
    request = HttpRequestProperties.model_validate(
        {
            "uri": properties.url.rstrip("/") + path,
            "method": "POST",
            "body": body,
            "headers": {
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": API_VERSION,
            },
            "options": {"auth": {"type": "BEARER", "token": properties.oauth_token}},
        }
    )
    answer = await send_request(request, NetworkPolicy.from_environment(), context)
    text = answer["body"] or ""
    try:
        data = orjson.loads(text) if text else {}
    except orjson.JSONDecodeError:
        data = {"message": text[:300]}
    if answer["code"] >= 400:
        raise TaskFailed(f"GitHub refused POST {path} ({answer['code']}): {_reason(answer, data)}")
    return data if isinstance(data, dict) else {}


def _reason(answer: dict[str, Any], data: Any) -> str:
    message = data.get("message", "") if isinstance(data, dict) else ""
    details = data.get("errors") if isinstance(data, dict) else None
    if details:
        message += f" {orjson.dumps(details).decode()}"
    if answer_header(answer, "X-RateLimit-Remaining") == ["0"]:
        message += " (the token's rate limit is used up; it resets at X-RateLimit-Reset)"
    return message or "no reason given"


class CreateIssueProperties(GitHubProperties):
    title: str
    body: str | None = None
    labels: list[str] = Field(default_factory=list)
    assignees: list[str] = Field(default_factory=list)


class CreateIssueOutputs(BaseModel):
    issue_number: int = Field(alias="issueNumber", description="The new issue's number.")
    issue_url: str = Field(alias="issueUrl", description="Its page.")


class CreateIssue:
    """Opens an issue in a GitHub repository."""

    Properties = CreateIssueProperties
    Outputs = CreateIssueOutputs
    aliases: ClassVar[tuple[str, ...]] = ("io.kestra.plugin.github.issues.Create",)
    uses_workdir = False

    async def run(self, properties: CreateIssueProperties, context: TaskContext) -> dict[str, Any]:
        body: dict[str, Any] = {"title": properties.title}
        if properties.body is not None:
            body["body"] = properties.body
        if properties.labels:
            body["labels"] = properties.labels
        if properties.assignees:
            body["assignees"] = properties.assignees
        issue = await call_github(
            properties, f"/repos/{properties.repository}/issues", body, context
        )
        await context.info(f"opened {properties.repository}#{issue.get('number')}")
        return {"issueNumber": issue.get("number"), "issueUrl": issue.get("html_url")}


class CommentProperties(GitHubProperties):
    issue_number: int = Field(
        alias="issueNumber", ge=1, description="An issue's or a pull request's."
    )
    body: str


class Comment:
    """Comments on an issue or a pull request."""

    Properties = CommentProperties
    aliases: ClassVar[tuple[str, ...]] = ("io.kestra.plugin.github.issues.Comment",)
    uses_workdir = False

    async def run(self, properties: CommentProperties, context: TaskContext) -> dict[str, Any]:
        path = f"/repos/{properties.repository}/issues/{properties.issue_number}/comments"
        comment = await call_github(properties, path, {"body": properties.body}, context)
        await context.info(f"commented on {properties.repository}#{properties.issue_number}")
        return {"commentId": comment.get("id"), "commentUrl": comment.get("html_url")}


class DispatchProperties(GitHubProperties):
    workflow_id: str = Field(
        alias="workflowId",
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="The workflow's file name (ci.yml) or numeric id.",
    )
    ref: str = Field(default="main", description="The branch or tag to run it on.")
    inputs: dict[str, Any] = Field(
        default_factory=dict, description="The workflow's `workflow_dispatch` inputs."
    )


class Dispatch:
    """Starts a GitHub Actions workflow (`workflow_dispatch`).

    GitHub answers before the run exists and gives no run id: follow the run in GitHub.
    """

    Properties = DispatchProperties
    aliases: ClassVar[tuple[str, ...]] = ("io.kestra.plugin.github.actions.RunWorkflow",)
    uses_workdir = False

    async def run(self, properties: DispatchProperties, context: TaskContext) -> dict[str, Any]:
        path = (
            f"/repos/{properties.repository}/actions/workflows/{properties.workflow_id}/dispatches"
        )
        body: dict[str, Any] = {"ref": properties.ref}
        if properties.inputs:
            # GitHub takes inputs as text (numbers and booleans as their JSON text).
            body["inputs"] = {
                name: value if isinstance(value, str) else orjson.dumps(value).decode()
                for name, value in properties.inputs.items()
            }
        await call_github(properties, path, body, context)
        await context.info(f"started {properties.workflow_id} on {properties.ref}")
        return {}
