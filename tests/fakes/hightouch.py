"""A local Hightouch, answering as Hightouch's REST API documents.

Written from Hightouch's API reference (the OpenAPI document of its "Syncs" API: "Trigger
Sync", "List Sync Runs", "Get Sync"; the SyncRun, SyncRunStatus, TriggerRunInput,
TriggerRunOutput and ValidateErrorJSON schemas) and its "Syncs overview" page:

- every request carries `Authorization: Bearer API_KEY`; a wrong key gets 401 (the body is
  not documented: this fake answers `{"message": "Unauthorized"}`);
- `POST /api/v1/syncs/{syncId}/trigger {"fullResync": bool}` answers 200 `{"id": "RUN"}`
  (the run's id, as text). If a run of the sync is in progress, the new run is queued
  and starts once that one ends. An unknown sync is 404; a malformed id or body 422
  `{"message": "Validation failed", "details": {...}}`;
- `GET /api/v1/syncs/{syncId}/runs?runId=RUN` answers 200 `{"data": [SyncRun],
  "hasMore": false}`; a SyncRun has `id`, `createdAt`, `startedAt`, `finishedAt`,
  `querySize`, `status` (`queued`, `querying`, `processing`, `reporting`, then `success`,
  `warning`: some rows rejected, `failed`, `cancelled` or `interrupted`),
  `completionRatio`, `plannedRows`/`successfulRows`/`failedRows` (`addedCount`,
  `changedCount`, `removedCount`) and `error`;
- there is no route to cancel a run: anything else is 404, and recorded in `unknown`.

The sync's current run advances one step each time the sync's runs are read, so tests
see it progress over polls without waiting on a clock. `glitches` makes the next reads
fail (a status, or "drop": the connection is closed without an answer); `hold_reads`
makes reads wait for `release()`, as a Hightouch slow to answer.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from tests.fakes import Gate

TOKEN = "ht-test-api-key-0123456789"
FINAL = frozenset({"success", "warning", "failed", "cancelled", "interrupted"})


@dataclass
class SyncPlan:
    """How every run of one sync goes."""

    slug: str
    rows: int = 120  # rows the model's query returns (all added, the first time)
    outcome: str = "success"  # or "warning", "failed", "interrupted"
    rejected: int = 0  # rows the destination rejects
    error: str | None = None
    processing_reads: int = 3  # reads spent in `processing`
    endless: bool = False  # stays `processing`: a slow sync


@dataclass
class FakeRun:
    id: int
    plan: SyncPlan
    full_resync: bool
    created_at: str = field(default_factory=lambda: _now())
    steps: int = 0  # how far it has gone

    def frames(self) -> list[tuple[str, float]]:
        """Its states in order: the status and the share of rows done."""
        processing = [
            ("processing", step / self.plan.processing_reads)
            for step in range(self.plan.processing_reads)
        ]
        if self.plan.endless:
            return [("queued", 0.0), ("querying", 0.0), *processing]
        return [
            ("queued", 0.0),
            ("querying", 0.0),
            *processing,
            ("reporting", 1.0),
            (self.plan.outcome, 1.0),
        ]

    @property
    def status(self) -> str:
        return self.frames()[min(self.steps, len(self.frames()) - 1)][0]

    def read(self) -> dict[str, Any]:
        """The SyncRun Hightouch would answer now."""
        status, done = self.frames()[min(self.steps, len(self.frames()) - 1)]
        planned = self.plan.rows if status not in ("queued", "querying") else 0
        rejected = self.plan.rejected if status in FINAL else 0
        synced = int((planned - self.plan.rejected) * done) if status != "failed" else 0
        return {
            "id": self.id,
            "createdAt": self.created_at,
            "startedAt": self.created_at,
            "finishedAt": _now() if status in FINAL else None,
            "querySize": self.plan.rows if planned else 0,
            "status": status,
            "completionRatio": done,
            "plannedRows": _rows(planned),
            "successfulRows": _rows(synced),
            "failedRows": _rows(rejected),
            "error": self.plan.error if status in ("failed", "interrupted") else None,
        }


def _rows(added: int) -> dict[str, int]:
    return {"addedCount": added, "changedCount": 0, "removedCount": 0}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class FakeHightouch:
    """Hightouch's REST API for one workspace, with the syncs it was given."""

    def __init__(self, syncs: dict[int, SyncPlan] | None = None, token: str = TOKEN) -> None:
        self.syncs = dict(syncs or {})
        self.token = token
        self.runs: dict[int, list[FakeRun]] = {}  # sync id -> its runs, oldest first
        self.triggers: list[tuple[int, dict[str, Any]]] = []  # (sync id, body)
        self.reads = 0
        self.unknown: list[str] = []  # requests to routes Hightouch does not have
        self.glitches: list[int | str] = []  # the next reads of runs fail this way
        self.hold_reads = False
        self._gate = Gate()
        self._next_run = 5001

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/v1/syncs/{sync_id}/trigger", self.trigger)
        app.router.add_get("/api/v1/syncs/{sync_id}/runs", self.list_runs)
        app.router.add_route("*", "/{tail:.*}", self.not_a_route)
        return app

    def release(self) -> None:
        """Let held reads answer (before the server closes)."""
        self._gate.open()

    async def trigger(self, request: web.Request) -> web.Response:
        sync_id, refused = self._sync(request)
        if refused is not None:
            return refused
        try:
            body = json.loads(await request.text() or "{}")
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("fullResync", False), bool):
            return _invalid("requestBody.fullResync", body, "invalid boolean value")
        self.triggers.append((sync_id, body))
        run = FakeRun(self._next_run, self.syncs[sync_id], body.get("fullResync", False))
        self._next_run += 1
        self.runs.setdefault(sync_id, []).append(run)
        return web.json_response({"id": str(run.id)})

    async def list_runs(self, request: web.Request) -> web.Response:
        if self.glitches:
            glitch = self.glitches.pop(0)
            if glitch == "drop":
                assert request.transport is not None
                request.transport.close()
                return web.Response()
            return web.json_response({"message": "Internal server error"}, status=int(glitch))
        sync_id, refused = self._sync(request)
        if refused is not None:
            return refused
        wanted = request.query.get("runId")
        if wanted is not None and not wanted.isdigit():
            return _invalid("runId", wanted, "invalid float number")
        if self.hold_reads:
            await self._gate.wait()
        self.reads += 1
        runs = self.runs.get(sync_id, [])
        answer = [run.read() for run in runs if wanted is None or str(run.id) == wanted]
        # The sync works on its oldest unfinished run; later ones wait, queued.
        current = next((run for run in runs if run.status not in FINAL), None)
        if current is not None:
            current.steps += 1
        return web.json_response({"data": answer, "hasMore": False})

    async def not_a_route(self, request: web.Request) -> web.Response:
        self.unknown.append(f"{request.method} {request.path}")
        return web.json_response({"message": "Not found"}, status=404)

    def _sync(self, request: web.Request) -> tuple[int, web.Response | None]:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return 0, web.json_response({"message": "Unauthorized"}, status=401)
        text = request.match_info["sync_id"]
        if not text.isdigit():
            return 0, _invalid("syncId", text, "invalid float number")
        if int(text) not in self.syncs:
            return 0, web.json_response({"message": "Not found"}, status=404)
        return int(text), None


def _invalid(where: str, value: Any, message: str) -> web.Response:
    return web.json_response(
        {"message": "Validation failed", "details": {where: {"message": message, "value": value}}},
        status=422,
    )


# Syncs a standalone server starts with, for examples and end-to-end tests.
CONTACTS, AUDIENCE, BROKEN, SLOW = 1001, 1002, 1003, 1004


def demo_syncs() -> dict[int, SyncPlan]:
    return {
        CONTACTS: SyncPlan("warehouse-contacts-to-crm", rows=773),
        AUDIENCE: SyncPlan("vip-audience-to-ads", rows=200, outcome="warning", rejected=3),
        BROKEN: SyncPlan(
            "orders-to-support",
            outcome="failed",
            error="Destination error: the API key of the connected account is invalid",
        ),
        SLOW: SyncPlan("events-to-marketing", endless=True),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8002)
    parser.add_argument("--token", default=TOKEN, help=f"the API key to accept ({TOKEN})")
    options = parser.parse_args()
    fake = FakeHightouch(demo_syncs(), options.token)
    for sync_id, plan in fake.syncs.items():
        print(f"sync {sync_id}: {plan.slug}")
    web.run_app(fake.app(), host=options.host, port=options.port)


if __name__ == "__main__":
    main()
