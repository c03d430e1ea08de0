"""`ApiClient.events`: a live stream read to its `end` event, across broken connections."""

from __future__ import annotations

import pytest
from aiohttp import web

from headrace.api_client import ApiClient, ServerUnreachable
from tests.fakes import serving


def stream_app(script: list[list[tuple[int, str]]]) -> tuple[web.Application, list[str | None]]:
    """A server whose n-th connection sends script[n]'s events (id, name), then closes
    (with no `end` unless the script has one); it records each Last-Event-ID asked."""
    asked: list[str | None] = []

    async def follow(request: web.Request) -> web.StreamResponse:
        asked.append(request.query.get("lastEventId"))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for event_id, name in script[min(len(asked) - 1, len(script) - 1)]:
            await response.write(f"id: {event_id}\nevent: {name}\ndata: {{}}\n\n".encode())
        return response

    app = web.Application()
    app.router.add_get("/api/v1/follow", follow)
    return app, asked


def test_a_stream_closed_before_its_end_is_resumed_after_the_last_event() -> None:
    app, asked = stream_app([[(1, "log"), (2, "log")], [(3, "log"), (4, "end")]])
    with serving(app) as url:
        events = list(ApiClient(url, token="").events("/follow"))
    assert [(e.id, e.event) for e in events] == [
        ("1", "log"),
        ("2", "log"),
        ("3", "log"),
        ("4", "end"),
    ]
    assert asked == [None, "2"]


def test_a_stream_that_never_ends_gives_up_after_its_tries() -> None:
    app, asked = stream_app([[(1, "log")], []])
    with (
        serving(app) as url,
        pytest.raises(ServerUnreachable, match="while following its stream"),
    ):
        list(ApiClient(url, token="").events("/follow", resume_tries=2))
    assert asked == [None, "1", "1"]
