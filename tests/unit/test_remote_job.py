"""The remote-job base (`connectors/remote_job.py`) and the vendor API client under it.

The vendors' own tests (`test_airbyte_connector.py`, `test_hightouch_connector.py`) run
the base against servers that answer as the vendors do. Here: what no vendor fake can
show, with a job written in the test (its start, states and cancel scripted) and a
`TaskContext` that collects log lines.
"""

from __future__ import annotations

import asyncio
import socket
import time
from datetime import timedelta
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from headrace.connectors.base import TaskContext, TaskFailed
from headrace.connectors.remote_job import (
    NewLines,
    RemoteJob,
    RemoteJobProperties,
    Snapshot,
    follow,
)
from headrace.connectors.vendor_api import (
    Answer,
    TransientFailure,
    VendorApi,
    _retry_after,
    reason,
)
from headrace.messages import LogLevel
from tests.unit.waiting import until


class Lines:
    """A log sink that keeps what it is given."""

    def __init__(self) -> None:
        self.lines: list[tuple[LogLevel, str]] = []

    async def __call__(self, level: LogLevel, message: str) -> None:
        self.lines.append((level, message))

    @property
    def messages(self) -> list[str]:
        return [message for _, message in self.lines]


def context(sink: Lines) -> TaskContext:
    return TaskContext("e", "n", "f", "t", "tr", 1, sink, Path("/tmp"))


class ScriptedJob(RemoteJob):
    """A job of "Acme" that runs until cancelled; its cancel as the test says."""

    vendor = "Acme"

    def __init__(self, cancel: str = "answers") -> None:
        super().__init__()
        self.cancel_behaviour = cancel
        self.checks = 0
        self.cancel_started = asyncio.Event()
        self.cancel_done = False

    async def start(self) -> bool:
        self.id = 7
        return True

    async def check(self) -> Snapshot:
        self.checks += 1
        return Snapshot("running")

    async def cancel(self) -> None:
        self.cancel_started.set()
        if self.cancel_behaviour == "refused":
            raise TaskFailed("Acme refused POST /cancel (403): not yours")
        if self.cancel_behaviour == "hangs":
            await asyncio.Event().wait()
        await asyncio.sleep(0.05)  # a vendor that takes its time
        self.cancel_done = True

    def outputs(self, final: Snapshot | None) -> dict[str, Any]:
        return {"id": self.id}


SETTINGS = RemoteJobProperties.model_validate({"pollFrequency": "PT0.005S"})


class SlowToStart(ScriptedJob):
    """A job whose start request is answered when the test says: `answer.set()`."""

    def __init__(self) -> None:
        super().__init__()
        self.answer = asyncio.Event()
        self.start_sent = False

    async def start(self) -> bool:
        self.start_sent = True
        await self.answer.wait()
        self.id = 7
        return True


async def test_a_cancel_under_way_outlives_a_second_cancellation() -> None:
    sink, job = Lines(), ScriptedJob()
    task = asyncio.create_task(follow(job, SETTINGS, context(sink), cancel_timeout_s=1))
    await until(lambda: job.checks >= 2)
    task.cancel()  # a kill...
    await job.cancel_started.wait()
    task.cancel()  # ...then the worker shuts down
    with pytest.raises(asyncio.CancelledError):
        await task
    await until(lambda: job.cancel_done)  # the vendor's cancel was not cut short
    await until(lambda: "cancelled Acme job 7" in sink.messages)


async def test_a_refused_or_unanswered_cancel_is_logged_and_bounded() -> None:
    sink, job = Lines(), ScriptedJob("refused")
    task = asyncio.create_task(follow(job, SETTINGS, context(sink)))
    await until(lambda: job.checks >= 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sink.lines[-1] == (
        LogLevel.WARN,
        "could not cancel Acme job 7: Acme refused POST /cancel (403): not yours",
    )
    sink, job = Lines(), ScriptedJob("hangs")
    task = asyncio.create_task(follow(job, SETTINGS, context(sink), cancel_timeout_s=0.05))
    await until(lambda: job.checks >= 1)
    killed_at = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - killed_at < 0.5
    assert sink.lines[-1] == (LogLevel.WARN, "could not cancel Acme job 7: no answer within 0.05 s")


async def test_a_job_started_as_the_task_is_cancelled_is_cancelled_once_known() -> None:
    sink, job = Lines(), SlowToStart()
    task = asyncio.create_task(follow(job, SETTINGS, context(sink), cancel_timeout_s=5))
    await until(lambda: job.start_sent)
    task.cancel()  # a kill while the vendor has not answered yet...
    job.answer.set()  # ...whose answer then says which job it started
    with pytest.raises(asyncio.CancelledError):
        await task
    assert job.cancel_done and job.checks == 0
    assert sink.lines == [(LogLevel.INFO, "cancelled Acme job 7")]


async def test_a_start_that_is_never_answered_holds_a_cancellation_up_no_longer() -> None:
    sink, job = Lines(), SlowToStart()
    task = asyncio.create_task(follow(job, SETTINGS, context(sink), cancel_timeout_s=0.05))
    await until(lambda: job.start_sent)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sink.lines == [
        (
            LogLevel.WARN,
            "Acme did not answer the request starting the job within 0.05 s: if it started"
            " one, that job goes on in Acme",
        )
    ]
    assert not job.cancel_started.is_set()


def test_new_lines_are_taken_once_per_log() -> None:
    lines = NewLines()
    assert lines.take(0, ["a", "b"]) == ["a", "b"]
    assert lines.take(0, ["a", "b", "c"]) == ["c"]
    assert lines.take(1, ["x"]) == ["x"]  # another attempt's log
    assert lines.take(0, ["a", "b", "c"]) == []
    assert lines.take(0, ["a"]) == []  # a log that shrank sends nothing again


def test_a_vendors_reason_is_read_from_json_html_or_text() -> None:
    def answer(text: str, data: Any = None) -> Answer:
        return Answer(400, data, text, None)

    invalid = {"message": "Validation failed", "details": {"syncId": {"message": "bad"}}}
    assert reason(answer("", invalid)) == 'Validation failed {"syncId":{"message":"bad"}}'
    assert reason(answer("", {"error": "rate limited"})) == "rate limited"
    page = "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
    assert reason(answer(page)) == "502 Bad Gateway"
    assert reason(answer("<p>down\n for  maintenance</p>")) == "down for maintenance"
    assert reason(answer("")) == "no reason given"


def test_only_answers_worth_asking_again_are_transient() -> None:
    api = VendorApi("Acme", "https://acme.test", context(Lines()))
    later = Answer(503, None, "busy", 2.0)
    with pytest.raises(TransientFailure) as caught:
        api.check(later, "GET", "/jobs/7?verbose=1")
    assert str(caught.value) == "Acme answered GET /jobs/7 with 503: busy"
    assert caught.value.retry_after == 2.0
    for code in (400, 401, 404, 422, 501):
        with pytest.raises(TaskFailed) as refused:
            api.check(Answer(code, {"message": "no"}, "", None), "GET", "/jobs/7")
        assert not isinstance(refused.value, TransientFailure)
        assert str(refused.value) == f"Acme refused GET /jobs/7 ({code}): no"
    api.check(Answer(200, {}, "{}", None), "GET", "/jobs/7")  # no error


async def test_a_server_that_is_not_there_is_a_blip() -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    api = VendorApi(
        "Acme", f"http://127.0.0.1:{port}", context(Lines()), timeout=timedelta(seconds=1)
    )
    try:
        with pytest.raises(TransientFailure) as caught:
            await api.call("GET", "/jobs/7")
    finally:
        await api.close()
    assert str(caught.value).startswith(f"could not connect to 127.0.0.1:{port}")


async def test_a_2xx_answer_that_is_no_json_object_fails_saying_what_came() -> None:
    """What a proxy or a login page in front of the vendor may answer, with a 200."""
    answers = {
        "/list": web.json_response([]),
        "/text": web.json_response("ok"),
        "/empty": web.Response(),
        "/page": web.Response(text="<title>Sign in</title>", content_type="text/html"),
    }

    async def answer(request: web.Request) -> web.StreamResponse:
        return answers[request.path]

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    async with TestServer(app, host="127.0.0.1") as server:
        api = VendorApi("Acme", str(server.make_url("")), context(Lines()))
        came = {}
        try:
            for path in answers:
                with pytest.raises(TaskFailed) as caught:
                    await api.call("POST", f"{path}?id=7", {"id": 7})
                assert not isinstance(caught.value, TransientFailure)
                came[path] = str(caught.value)
        finally:
            await api.close()
    advice = "not the JSON object its API answers: is `url` Acme's API, with no proxy or"
    assert came == {
        "/list": f"Acme answered POST /list (200) with JSON that is not an object ('[]'), {advice}"
        " login page in the way?",
        "/text": f"Acme answered POST /text (200) with JSON that is not an object ('\"ok\"'),"
        f" {advice} login page in the way?",
        "/empty": f"Acme answered POST /empty (200) with an empty body, {advice} login page in"
        " the way?",
        "/page": f"Acme answered POST /page (200) with text that is not JSON ('Sign in'),"
        f" {advice} login page in the way?",
    }


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert _retry_after(["3"]) == 3.0
    assert _retry_after(["3600"]) == 60.0  # capped
    assert _retry_after(["soon"]) is None and _retry_after([]) is None
    in_ten = _retry_after([formatdate(time.time() + 10, usegmt=True)])
    assert in_ten is not None and 8 <= in_ten <= 10


async def test_a_jobs_requests_share_one_connection_until_it_is_closed() -> None:
    ports: list[int] = []  # the client's port of each request: one per connection

    async def answer(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        ports.append(request.transport.get_extra_info("peername")[1])
        return web.json_response({"status": "running"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    async with TestServer(app, host="127.0.0.1") as server:
        api = VendorApi("Acme", str(server.make_url("")), context(Lines()))
        try:
            for _ in range(3):  # a job's polls
                assert await api.call("GET", "/jobs/7") == {"status": "running"}
        finally:
            await api.close()
        await api.call("GET", "/jobs/7")  # after `close`: a connection of its own
        await api.close()
    assert len(ports) == 4 and len(set(ports[:3])) == 1 and ports[3] != ports[0]
