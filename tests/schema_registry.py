"""A small Confluent Schema Registry: `GET /schemas/ids/{id}` as Confluent documents it.

200 `{"schema": "<json text>"}` (plus `schemaType` when not AVRO), 404 with error code
40403 for an unknown id, and 500 with error code 50001 while `available` is False (the
documented "failure in the backend data store"). It runs on its own event loop in a
thread, so sync tests and a scheduler in another process can both reach it.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import orjson
from aiohttp import web

from headrace.broker import free_port

MEDIA_TYPE = "application/vnd.schemaregistry.v1+json"


class RegistryServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.schemas: dict[int, tuple[str, str]] = {}  # id -> (schemaType, schema text)
        self.available = True
        self.requests: list[int] = []  # ids asked, in order
        self.authorizations: list[str | None] = []
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def register(self, schema_id: int, schema: Any, schema_type: str = "AVRO") -> None:
        text = schema if isinstance(schema, str) else orjson.dumps(schema).decode()
        self.schemas[schema_id] = (schema_type, text)

    def asked(self, schema_id: int) -> int:
        return self.requests.count(schema_id)

    async def _schema_by_id(self, request: web.Request) -> web.Response:
        schema_id = int(request.match_info["id"])
        self.requests.append(schema_id)
        self.authorizations.append(request.headers.get("Authorization"))
        if not self.available:
            error = {"error_code": 50001, "message": "Error in the backend data store"}
            return _answer(error, 500)
        if schema_id not in self.schemas:
            return _answer({"error_code": 40403, "message": f"Schema {schema_id} not found"}, 404)
        schema_type, text = self.schemas[schema_id]
        body: dict[str, Any] = {"schema": text}
        if schema_type != "AVRO":  # Confluent leaves schemaType out for Avro
            body["schemaType"] = schema_type
        return _answer(body, 200)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get(r"/schemas/ids/{id:\d+}", self._schema_by_id)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def start(self) -> RegistryServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


def _answer(body: dict[str, Any], status: int) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type=MEDIA_TYPE)
