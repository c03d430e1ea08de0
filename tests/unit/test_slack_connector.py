"""`slack.message` against `tests.fakes.slack`, which answers as Slack's incoming webhooks do."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestServer

from headrace.flow.loader import load_flow
from headrace.states import State
from headrace.testing import run_task
from tests.fakes.slack import ARCHIVED, DROPPED, HOOK, LIMITED, FakeSlack
from tests.unit.test_flow_loader import errors_of


@pytest.fixture
async def slack() -> AsyncIterator[tuple[FakeSlack, str]]:
    fake = FakeSlack()
    async with TestServer(fake.app(), host="127.0.0.1") as server:
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
