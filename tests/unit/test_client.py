"""`TriggerClient` argument checks, and the documented pure-fastavro producer encoding."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import orjson
import pytest

from headrace import codec
from headrace.client import TriggerClient, TriggerClientError
from headrace.messages import TriggerEvent

DOCS = Path(__file__).resolve().parents[2] / "docs" / "triggers.md"


def producer_example() -> str:
    """The pure-fastavro example of docs/triggers.md (the last Python block)."""
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.DOTALL)
    example = blocks[-1]
    assert "import headrace" not in example and "from headrace" not in example
    return example


async def test_without_a_server_the_revision_is_required() -> None:
    client = TriggerClient("127.0.0.1:1")  # never started: the check comes first
    with pytest.raises(TriggerClientError, match="revision is required"):
        await client.trigger("ns", "flow", {})


async def test_an_unstarted_client_refuses_to_publish() -> None:
    client = TriggerClient("127.0.0.1:1")
    with pytest.raises(TriggerClientError, match="not started"):
        await client.trigger("ns", "flow", {}, revision=1)


def test_the_documented_encoding_is_what_headrace_decodes(monkeypatch) -> None:
    with resources.as_file(resources.files("headrace.schemas") / "TriggerEvent.avsc") as path:
        monkeypatch.setenv("TRIGGER_EVENT_AVSC", str(path))
        definitions = producer_example().split("async def main")[0]
        scope: dict = {}
        exec(compile(definitions, str(DOCS), "exec"), scope)
    moment = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    event = {
        "event_id": "e1",
        "execution_id": "x1",
        "namespace": "company.data",
        "flow_id": "nightly-elt",
        "flow_revision": 3,
        "inputs": orjson.dumps({"full_refresh": True}).decode(),
        "labels": {"source": "test"},
        "trigger": '{"type": "producer"}',
        "time": int(moment.timestamp() * 1_000_000),
    }
    encoded = scope["encode"](event)
    assert codec.decode(encoded) == TriggerEvent(
        event_id="e1",
        execution_id="x1",
        namespace="company.data",
        flow_id="nightly-elt",
        flow_revision=3,
        inputs={"full_refresh": True},
        time=moment,
        labels={"source": "test"},
        trigger={"type": "producer"},
    )
    # Same marker and schema fingerprint as headrace writes (JSON spacing may differ).
    assert encoded[: codec.HEADER_SIZE] == codec.encode(codec.decode(encoded))[: codec.HEADER_SIZE]
