"""`slack.message`: post to a Slack incoming webhook (Kestra's `SlackIncomingWebhook`)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from pydantic import Field, field_validator, model_validator

from headrace.connectors.base import ConnectorProperties, TaskContext, TaskFailed
from headrace.connectors.http import HttpRequestProperties, send_request, web_url
from headrace.connectors.network_policy import NetworkPolicy

# Slack answers 429 with Retry-After when a webhook posts faster than about one message a
# second: wait as told, a few times, then fail (the task's `retry` can take over).
MAX_RATE_LIMITED = 3
MAX_RETRY_AFTER_S = 30.0


class SlackMessageProperties(ConnectorProperties):
    url: str = Field(
        description="The incoming webhook's URL (https://hooks.slack.com/services/…): a"
        " secret, so write `{{ secret('SLACK_WEBHOOK') }}`."
    )
    text: str | None = Field(
        default=None, description="The message; with `blocks`, the notification's text."
    )
    blocks: list[dict[str, Any]] | None = Field(
        default=None, description="Block Kit blocks, as Slack's documentation writes them."
    )
    payload: dict[str, Any] | str | None = Field(
        default=None,
        description="Kestra's form: the whole message as Slack's JSON (text or a mapping),"
        " instead of `text` and `blocks`.",
    )

    @field_validator("url")
    @classmethod
    def _web_url(cls, url: str) -> str:
        return web_url(url)

    @field_validator("payload")
    @classmethod
    def _json_text(cls, payload: Any) -> Any:
        if isinstance(payload, str) and "{{" not in payload:  # an expression renders later
            try:
                parsed = orjson.loads(payload)
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"is not JSON: {exc}") from None
            if not isinstance(parsed, dict):
                raise ValueError("must be a JSON object")
        return payload

    @model_validator(mode="after")
    def _one_message(self) -> SlackMessageProperties:
        if self.payload is not None and (self.text is not None or self.blocks is not None):
            raise ValueError("set `payload`, or `text` and `blocks`, not both")
        if self.payload is None and self.text is None and self.blocks is None:
            raise ValueError("set `text` or `blocks` (or Kestra's `payload`)")
        return self


class SlackMessage:
    """Posts a message to Slack through an incoming webhook.

    Slack's refusal fails the task with Slack's reason (`invalid_payload`,
    `channel_is_archived`, `no_service`…). When Slack asks to slow down (429), the task
    waits as long as it says, up to three times.
    """

    Properties = SlackMessageProperties
    aliases = ("io.kestra.plugin.notifications.slack.SlackIncomingWebhook",)
    uses_workdir = False

    async def run(self, properties: SlackMessageProperties, context: TaskContext) -> dict[str, Any]:
        request = HttpRequestProperties.model_validate(
            {"uri": properties.url, "method": "POST", "body": _message(properties)}
        )
        policy = NetworkPolicy.from_environment()
        for _ in range(MAX_RATE_LIMITED + 1):
            answer = await send_request(request, policy, context)
            if answer["code"] != 429:
                break
            wait = _retry_after(answer["headers"])
            await context.info(f"Slack asks to slow down: posting again in {wait:g} s")
            await asyncio.sleep(wait)
        body = (answer["body"] or "").strip()
        if answer["code"] != 200:
            raise TaskFailed(f"Slack refused the message ({answer['code']}): {body[:300]}")
        await context.info("posted to Slack")
        return {}


def _message(properties: SlackMessageProperties) -> dict[str, Any]:
    if isinstance(properties.payload, str):
        return orjson.loads(properties.payload)
    if properties.payload is not None:
        return properties.payload
    message: dict[str, Any] = {}
    if properties.text is not None:
        message["text"] = properties.text
    if properties.blocks is not None:
        message["blocks"] = properties.blocks
    return message


def _retry_after(headers: dict[str, list[str]]) -> float:
    for name, values in headers.items():
        if name.lower() == "retry-after" and values:
            try:
                return min(max(float(values[0]), 0.0), MAX_RETRY_AFTER_S)
            except ValueError:
                break
    return 1.0
