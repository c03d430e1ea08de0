"""A small Confluent Schema Registry: `GET /schemas/ids/{id}` and `POST
/subjects/{subject}/versions` as Confluent documents them ("Schema Registry API
Reference", "Register schema under a subject").

Reading: 200 `{"schema": "<json text>"}` (plus `schemaType` when not AVRO), 404 with
error code 40403 for an unknown id. Registering: 200 `{"id": N}`, the same id for a
schema the registry already holds (under any subject); 422 with error code 42201 for
an invalid schema; 409 for a schema incompatible with the subject's latest version under
the default BACKWARD compatibility (here: a record field added without a default, which
data written with the older version cannot fill). Both answer 500 with error code 50001
while `available` is False (the documented "failure in the backend data store"). It runs
on its own event loop in a thread, so sync tests and a scheduler in another process can
both reach it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from typing import Any

import orjson
from aiohttp import web
from aiohttp.test_utils import TestServer
from fastavro.schema import SchemaParseException, parse_schema

from headrace.broker import free_port

MEDIA_TYPE = "application/vnd.schemaregistry.v1+json"


class RegistryServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.schemas: dict[int, tuple[str, str]] = {}  # id -> (schemaType, schema text)
        self.available = True
        self.requests: list[int] = []  # ids asked, in order
        self.subjects: dict[str, list[int]] = {}  # subject -> ids registered, oldest first
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

    async def _register(self, request: web.Request) -> web.Response:
        subject = request.match_info["subject"]
        self.authorizations.append(request.headers.get("Authorization"))
        if not self.available:
            error = {"error_code": 50001, "message": "Error in the backend data store"}
            return _answer(error, 500)
        try:
            body = orjson.loads(await request.read())
            schema = orjson.loads(body["schema"])
            parse_schema(schema)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, SchemaParseException):
            return _answer({"error_code": 42201, "message": "Invalid schema"}, 422)
        versions = self.subjects.setdefault(subject, [])
        if versions and not _reads_older_data(schema, self._schema_of(versions[-1])):
            message = (
                "Schema being registered is incompatible with an earlier schema for subject"
                f' "{subject}"'
            )
            return _answer({"error_code": 409, "message": message}, 409)
        known = [i for i, (_, text) in self.schemas.items() if orjson.loads(text) == schema]
        schema_id = known[0] if known else max(self.schemas, default=0) + 1
        self.register(schema_id, body["schema"])
        if schema_id not in versions:
            versions.append(schema_id)
        return _answer({"id": schema_id}, 200)

    def _schema_of(self, schema_id: int) -> Any:
        return orjson.loads(self.schemas[schema_id][1])

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get(r"/schemas/ids/{id:\d+}", self._schema_by_id)
        app.router.add_post("/subjects/{subject}/versions", self._register)
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
        if not self._thread.is_alive():
            self._loop.close()


def _reads_older_data(new: Any, old: Any) -> bool:
    """BACKWARD compatibility, for records only: every field `new` adds has a default."""
    if not (isinstance(new, dict) and isinstance(old, dict) and new.get("type") == "record"):
        return True
    old_fields = {field["name"] for field in old.get("fields", [])}
    added = [field for field in new["fields"] if field["name"] not in old_fields]
    return all("default" in field for field in added)


def _answer(body: dict[str, Any], status: int) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type=MEDIA_TYPE)


@contextlib.asynccontextmanager
async def redirecting_registry(to: str) -> AsyncIterator[str]:
    """The URL of a server that answers every request with a 307 to `to` and the same
    path, as a misconfigured proxy, or a hostile one, in front of a registry could (the
    registry itself never redirects)."""

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(to.rstrip("/") + request.path)

    app = web.Application()
    app.router.add_route("*", "/{path:.*}", redirect)
    async with TestServer(app, host="127.0.0.1") as server:
        yield str(server.make_url("")).rstrip("/")
