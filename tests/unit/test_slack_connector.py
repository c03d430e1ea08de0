"""`slack.message` against a local server that answers as Slack's incoming webhooks do.

Slack's documentation ("Sending messages using incoming webhooks", "Handling errors"):
a POST of JSON with `text` and/or `blocks` to the webhook URL answers 200 with the body
`ok`; errors are plain-text codes with a status: 400 `invalid_payload` (not JSON, or no
`text` nor `blocks`), 403 `action_prohibited`, 404 `no_service` (a revoked or mistyped
webhook), 410 `channel_is_archived`; too many messages get 429 with `Retry-After`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from headrace.flow.loader import load_flow
from headrace.states import State
from headrace.testing import run_task
from tests.unit.test_flow_loader import errors_of

HOOK = "/services/T0001/B0001/XXXXXXXXXXXXXXXXXXXXXXXX"
ARCHIVED = "/services/T0001/B0002/YYYYYYYYYYYYYYYYYYYYYYYY"
LIMITED = "/services/T0001/B0003/ZZZZZZZZZZZZZZZZZZZZZZZZ"
DROPPED = "/services/T0001/B0004/WWWWWWWWWWWWWWWWWWWWWWWW"  # the server hangs up


class FakeSlack:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.limited_left = 1  # LIMITED answers 429 this many times first
        self.retry_after = "1"
        self.posts = 0

    async def webhook(self, request: web.Request) -> web.Response:
        path = request.path
        self.posts += 1
        if path == DROPPED:
            assert request.transport is not None
            request.transport.close()
            return web.Response()
        if path not in (HOOK, ARCHIVED, LIMITED):
            return web.Response(status=404, text="no_service")
        if path == LIMITED and self.limited_left > 0:
            self.limited_left -= 1
            return web.Response(
                status=429, text="rate_limited", headers={"Retry-After": self.retry_after}
            )
        try:
            message = json.loads(await request.text())
        except ValueError:
            return web.Response(status=400, text="invalid_payload")
        if not isinstance(message, dict) or not (message.get("text") or message.get("blocks")):
            return web.Response(status=400, text="invalid_payload")
        if path == ARCHIVED:
            return web.Response(status=410, text="channel_is_archived")
        self.messages.append(message)
        return web.Response(text="ok", content_type="text/html")


@pytest.fixture
async def slack() -> AsyncIterator[tuple[FakeSlack, str]]:
    fake = FakeSlack()
    app = web.Application()
    app.router.add_post("/services/{team}/{bot}/{secret}", fake.webhook)
    async with TestServer(app, host="127.0.0.1") as server:
        yield fake, str(server.make_url(""))


async def test_text_blocks_and_kestras_payload_are_posted(slack: tuple[FakeSlack, str]) -> None:
    fake, base = slack
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*failed*"}}]
    runs = [
        await run_task("slack.message", {"url": base + HOOK, "text": "hello"}),
        await run_task("slack.message", {"url": base + HOOK, "text": "t", "blocks": blocks}),
        await run_task(
            "io.kestra.plugin.notifications.slack.SlackIncomingWebhook",
            {"url": base + HOOK, "payload": '{"text": "from kestra"}'},
        ),
        await run_task(
            "io.kestra.plugin.slack.notifications.SlackIncomingWebhook",
            {"url": base + HOOK, "messageText": "kestra's newer name"},
        ),
    ]
    assert [run.state for run in runs] == [State.SUCCESS] * 4, [run.error for run in runs]
    assert fake.messages == [
        {"text": "hello"},
        {"text": "t", "blocks": blocks},
        {"text": "from kestra"},
        {"text": "kestra's newer name"},
    ]
    assert runs[0].messages == ["posted to Slack"]


async def test_slacks_refusals_fail_with_slacks_reason(slack: tuple[FakeSlack, str]) -> None:
    _, base = slack
    archived = await run_task("slack.message", {"url": base + ARCHIVED, "text": "x"})
    assert archived.error == "Slack refused the message (410): channel_is_archived"
    revoked = await run_task("slack.message", {"url": base + "/services/T/B/gone", "text": "x"})
    assert revoked.error == "Slack refused the message (404): no_service"
    empty = await run_task("slack.message", {"url": base + HOOK, "payload": {"username": "x"}})
    assert empty.error == "Slack refused the message (400): invalid_payload"


async def test_a_rate_limit_is_waited_out_three_times_at_most(
    slack: tuple[FakeSlack, str],
) -> None:
    fake, base = slack
    run = await run_task("slack.message", {"url": base + LIMITED, "text": "later"})
    assert run.state is State.SUCCESS, run.error
    assert run.messages == ["Slack asks to slow down: posting again in 1 s", "posted to Slack"]
    assert fake.messages == [{"text": "later"}]
    fake.limited_left, fake.retry_after, fake.posts = 100, "0", 0
    run = await run_task("slack.message", {"url": base + LIMITED, "text": "never"})
    assert run.error == "Slack refused the message (429): rate_limited"
    assert fake.posts == 4  # the first post and three more after waiting
    assert run.messages == ["Slack asks to slow down: posting again in 0 s"] * 3


async def test_the_webhook_url_never_shows(slack: tuple[FakeSlack, str]) -> None:
    _, base = slack
    # Written with a trailing `?`: shown re-encoded, the URL would escape masking.
    url = base + DROPPED + "?"
    run = await run_task("slack.message", {"url": url, "text": "x"}, secrets={"SLACK": url})
    assert run.state is State.FAILED
    assert (
        run.error == "POST the Slack webhook failed: ServerDisconnectedError: Server disconnected"
    )
    url = "http://[::1/services/T/B/secret-path"  # malformed, refused by the property check
    run = await run_task("slack.message", {"url": url, "text": "x"}, secrets={"SLACK": url})
    assert run.state is State.FAILED
    assert run.error == "invalid property 'url': Value error, Invalid IPv6 URL"
    url = "ftp://hooks.example.com/services/secret-path"
    run = await run_task("slack.message", {"url": url, "text": "x"}, secrets={"SLACK": url})
    assert (run.error or "").endswith("must be an http or https URL, not '******'")


def test_a_message_is_required_and_payload_must_be_json() -> None:
    def errors(task: str) -> list[str]:
        source = f"id: f\nnamespace: n\ntasks:\n  - {{id: s, type: slack.message, {task}}}\n"
        return [error.message for error in errors_of(source)]

    url = "url: 'https://hooks.slack.com/x'"
    assert "set `text` or `blocks`" in errors(url)[0]
    assert "is not JSON" in errors(f"{url}, payload: '{{nope'")[0]
    assert "not both" in errors(f"{url}, text: a, payload: {{text: b}}")[0]
    assert "must be an http or https URL" in errors("url: hooks.slack.com, text: a")[0]
    # An expression waits for its value; rendered, it must be JSON all the same.
    load_flow(
        "id: f\nnamespace: n\ntasks:\n  - {id: s, type: slack.message, "
        + url
        + ", payload: '{{ vars.message }}'}\n"
    )


async def test_a_rendered_payload_that_is_not_json_fails_cleanly() -> None:
    run = await run_task("slack.message", {"url": "https://x.test/h", "payload": '{"a {{ b'})
    assert run.state is State.FAILED
    assert (run.error or "").startswith("invalid property 'payload': Value error, is not JSON")
