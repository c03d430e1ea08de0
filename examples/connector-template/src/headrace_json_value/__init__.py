"""`json.value`: a template headrace connector (docs/connectors.md walks through it)."""

from __future__ import annotations

from typing import Any

import aiohttp
from pydantic import BaseModel, Field

from headrace.connectors.base import ConnectorProperties, TaskContext, TaskFailed


class JsonValueProperties(ConnectorProperties):
    url: str = Field(description="The JSON document's URL (GET).")
    path: str = Field(default="", description="Dot-separated keys to the value, e.g. `data.count`.")
    token: str | None = Field(
        default=None, description="Sent as `Authorization: Bearer …`: use `{{ secret('…') }}`."
    )


class JsonValueOutputs(BaseModel):
    value: Any = Field(description="The value found at `path`.")


class JsonValue:
    """Reads one value from a JSON HTTP API.

    Fails with the server's answer when it is not 200, and names the missing key when
    `path` does not lead to a value.
    """

    Properties = JsonValueProperties
    Outputs = JsonValueOutputs
    uses_workdir = False  # no files: skip the per-attempt temporary directory

    async def run(self, properties: JsonValueProperties, context: TaskContext) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {properties.token}"} if properties.token else {}
        await context.info(f"GET {properties.url}")
        # No timeout of our own: the worker ends the attempt at the task's `timeout`.
        async with (
            aiohttp.ClientSession() as session,
            session.get(properties.url, headers=headers) as response,
        ):
            if response.status != 200:
                reason = (await response.text())[:200]
                raise TaskFailed(f"{properties.url} answered {response.status}: {reason}")
            value = await response.json(content_type=None)
        for key in filter(None, properties.path.split(".")):
            if not isinstance(value, dict) or key not in value:
                raise TaskFailed(f"no key {key!r} on the way to {properties.path!r}")
            value = value[key]
        return {"value": value}
