"""A local Slack incoming webhook, answering as Slack's documentation says.

Slack's documentation ("Sending messages using incoming webhooks", "Handling errors"):
a POST of JSON with `text` and/or `blocks` to the webhook URL answers 200 with the body
`ok`; errors are plain-text codes with a status: 400 `invalid_payload` (not JSON, or no
`text` nor `blocks`), 403 `action_prohibited`, 404 `no_service` (a revoked or mistyped
webhook), 410 `channel_is_archived`; too many messages get 429 with `Retry-After`.

`python -m tests.fakes.slack --port 8003` serves it standalone: post to
`http://127.0.0.1:8003/services/T0001/B0001/XXXXXXXXXXXXXXXXXXXXXXXX` and the messages are printed.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from aiohttp import web

HOOK = "/services/T0001/B0001/XXXXXXXXXXXXXXXXXXXXXXXX"
ARCHIVED = "/services/T0001/B0002/YYYYYYYYYYYYYYYYYYYYYYYY"
LIMITED = "/services/T0001/B0003/ZZZZZZZZZZZZZZZZZZZZZZZZ"
DROPPED = "/services/T0001/B0004/WWWWWWWWWWWWWWWWWWWWWWWW"  # the server hangs up


class FakeSlack:
    """Slack's incoming webhooks: HOOK posts, ARCHIVED's channel is archived, LIMITED is
    rate-limited `limited_left` times, DROPPED hangs up; any other path is revoked."""

    def __init__(self, *, echo: bool = False) -> None:
        self.echo = echo  # print each message posted (standalone)
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
        if self.echo:
            print(f"message: {json.dumps(message)}", flush=True)
        return web.Response(text="ok", content_type="text/html")

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/services/{team}/{bot}/{secret}", self.webhook)
        return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8003)
    options = parser.parse_args()
    fake = FakeSlack(echo=True)
    print(
        f"webhook: http://{options.host}:{options.port}/services/T0001/B0001/XXXXXXXXXXXXXXXXXXXXXXXX"
    )
    web.run_app(fake.app(), host=options.host, port=options.port)


if __name__ == "__main__":
    main()
