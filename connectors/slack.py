"""`slack.message`: post to a Slack incoming webhook (Kestra's `SlackIncomingWebhook`)."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import orjson
from pydantic import Field, field_validator, model_validator

from headrace.connectors.base import ConnectorProperties, TaskContext, TaskFailed
from headrace.connectors.http import HttpRequestProperties, WebUrl, answer_header, send_request
from headrace.connectors.network_policy import NetworkPolicy

# Slack answers 429 with Retry-After when a webhook posts faster than about one message a
# second: wait as told, a few times, then fail (the task's `retry` can take over).
MAX_RATE_LIMITED = 3
MAX_RETRY_AFTER_S = 30.0
WEBHOOK_LABEL = "the Slack webhook"  # the URL is a secret: logs and errors never show it


class SlackMessageProperties(ConnectorProperties):
    url: WebUrl = Field(
        description="The incoming webhook's URL (https://hooks.slack.com/services/…): a"
        " secret, so write `{{ secret('SLACK_WEBHOOK') }}`."
    )
    text: str | None = Field(
        default=None, description="The message; with `blocks`, the notification's text."
    )
    message_text: str | None = Field(
        default=None, alias="messageText", description="Kestra's name for `text`."
    )
    blocks: list[dict[str, Any]] | None = Field(
        default=None, description="Block Kit blocks, as Slack's documentation writes them."
    )
    payload: dict[str, Any] | str | None = Field(
        default=None,
        description="Kestra's form: the whole message as Slack's JSON (text or a mapping),"
        " instead of `text` and `blocks`.",
    )

    # At load, the flow loader excuses a field that holds an expression; at run time
    # the text is rendered and must be JSON.
    @field_validator("payload")
    @classmethod
    def _json_text(cls, payload: Any) -> Any:
        if isinstance(payload, str):
            try:
                parsed = orjson.loads(payload)
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"is not JSON: {exc}") from None
            if not isinstance(parsed, dict):
                raise ValueError("must be a JSON object")
        return payload

    @model_validator(mode="after")
    def _one_message(self) -> SlackMessageProperties:
        if self.text is not None and self.message_text is not None:
            raise ValueError("set `text` or `messageText` (Kestra's name for it), not both")
        text = self.text if self.text is not None else self.message_text
        if self.payload is not None and (text is not None or self.blocks is not None):
            raise ValueError("set `payload`, or `text` and `blocks`, not both")
        if self.payload is None and text is None and self.blocks is None:
            raise ValueError("set `text` or `blocks` (or Kestra's `payload`)")
        return self


class SlackMessage:
    """Posts a message to Slack through an incoming webhook.

    Slack's refusal fails the task with Slack's reason (`invalid_payload`,
    `channel_is_archived`, `no_service`…). When Slack asks to slow down (429), the task
    waits as long as it says (at most 30 s), three times at most. Logs and errors never
    show the webhook's URL, which is a secret.
    """

    Properties = SlackMessageProperties
    aliases = (
        "io.kestra.plugin.notifications.slack.SlackIncomingWebhook",
        "io.kestra.plugin.slack.notifications.SlackIncomingWebhook",  # its newer name
    )
    uses_workdir = False

    async def run(self, properties: SlackMessageProperties, context: TaskContext) -> dict[str, Any]:
        request = HttpRequestProperties.model_validate(
            {"uri": properties.url, "method": "POST", "body": _message(properties)}
        )
        policy = NetworkPolicy.from_environment()
        for waits in range(MAX_RATE_LIMITED + 1):
            answer = await send_request(request, policy, context, label=WEBHOOK_LABEL)
            if answer["code"] != 429 or waits == MAX_RATE_LIMITED:
                break
            wait = _retry_after(answer_header(answer, "Retry-After"))
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
    text = properties.text if properties.text is not None else properties.message_text
    if text is not None:
        message["text"] = text
    if properties.blocks is not None:
        message["blocks"] = properties.blocks
    return message


def _retry_after(values: list[str]) -> float:
    try:
        seconds = float(values[0]) if values else math.nan
    except ValueError:  # an HTTP date: Slack sends seconds
        seconds = math.nan
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S) if math.isfinite(seconds) else 1.0
