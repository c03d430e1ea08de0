"""Typed methods for every operation of the REST API, one per route of the gateway.

`ApiClient` (headrace/api_client.py) inherits them: `ApiClient(url).get_flow("examples",
"hello")`. Each method is the snake_case of its operation's `operationId` in the OpenAPI
document (headrace/openapi.py; tests/integration/test_openapi.py checks that none is
missing), sends what the operation takes and returns its JSON answer as it comes, or a
stream for downloads and live events. An error status raises `ApiError` (401:
`Unauthorized`), with the gateway's message and details.

This class only says which request each operation is; how a request travels (urllib,
credentials, errors) is `ApiClient`'s.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:  # api_client imports this module: its names only annotate here
    from headrace.api_client import Download
    from headrace.sse import Event

API_PREFIX = "/api/v1"
YAML = "application/x-yaml"
FlowJson = dict[str, Any]


def _segment(value: str) -> str:
    """One path segment: `/`, `?`, `#` and `%` in a value must not change the route."""
    return quote(value, safe="")


def _flag(value: bool) -> str | None:
    """A boolean query parameter: `true`, or left out."""
    return "true" if value else None


def _date(value: datetime | str | None) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else value


class ApiOperations(ABC):
    """Every operation of the API as a method; the transport is the subclass's."""

    # ------------------------------------------------------------------ transport

    @abstractmethod
    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json_body: Any = None,
        body: bytes | None = None,
        content_type: str | None = None,
        timeout_s: float | None = None,
        prefix: str = API_PREFIX,
    ) -> Any:
        """The JSON answer of `method path` (None when empty)."""

    @abstractmethod
    def download(
        self,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        timeout_s: float | None = None,
        prefix: str = API_PREFIX,
    ) -> contextlib.AbstractContextManager[Download]:
        """`GET path`'s body as a stream."""

    @abstractmethod
    def upload(
        self,
        path: str,
        data: IO[bytes],
        *,
        params: dict[str, Any] | None = None,
        content_type: str = "application/octet-stream",
        timeout_s: float | None = None,
    ) -> Any:
        """`POST path` with the open file `data` as its body; the JSON answer."""

    @abstractmethod
    def events(
        self,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        resume_tries: int = 5,
        final: str = "end",
    ) -> Iterator[Event]:
        """The Server-Sent Events of `GET path`, through the `final` one."""

    # ------------------------------------------------------------------ flows

    def list_flows(
        self, namespace: str | None = None, *, page: int | None = None, size: int | None = None
    ) -> dict[str, Any]:
        """A page of flows (latest revision of each, with its source): `results`,
        `total`, `page`, `size`. Without `size`, a page holds up to 1,000 flows."""
        params = {"namespace": namespace, "page": page, "size": size}
        return self.request("GET", "/flows", params=params)

    def create_flow(self, source: str) -> FlowJson:
        """Store a new flow from its YAML `source`: its first revision. 409 if it
        exists, 422 (with `errors`) if it is invalid."""
        return self.request("POST", "/flows", body=source.encode(), content_type=YAML)

    def validate_flow(self, source: str) -> dict[str, Any]:
        """Check a flow's YAML, storing nothing: `valid`, `errors` (path, line, column,
        message, hint) and, when valid, its `namespace` and `id`."""
        return self.request("POST", "/flows/validate", body=source.encode(), content_type=YAML)

    def apply_flows(
        self,
        flows: list[dict[str, str]],
        *,
        dry_run: bool = False,
        delete: bool = False,
        namespaces: list[str] | None = None,
    ) -> dict[str, Any]:
        """Apply many flows at once, all or nothing: `flows` is `[{"name": file name,
        "source": YAML}, …]` (names are what errors point at). `dry_run`: the plan only;
        `delete`: also delete the flows of `namespaces` (default: the flows') that are
        not given. The answer lists each flow's `action` (created, updated with its
        `diff`, unchanged, deleted) and a `summary`; an invalid flow is a 422 naming
        every error of every file, and nothing changes."""
        params = {"dryRun": _flag(dry_run), "delete": _flag(delete), "namespace": namespaces}
        return self.request("POST", "/flows/bulk", params=params, json_body={"flows": flows})

    def get_flow_schema(self) -> dict[str, Any]:
        """The JSON Schema of flows for the task types the gateway knows (docs/editors.md)."""
        return self.request("GET", "/flows/schema")

    def get_flow(self, namespace: str, flow_id: str, revision: int | None = None) -> FlowJson:
        """A flow's latest revision, or `revision`: its source, number, creation time and
        (when it still loads) the fields of its definition."""
        path = f"/flows/{_segment(namespace)}/{_segment(flow_id)}"
        return self.request("GET", path, params={"revision": revision})

    def list_flow_revisions(self, namespace: str, flow_id: str) -> list[dict[str, Any]]:
        """Every revision of a flow, oldest first: `revision`, `createdAt`, and whether
        it is the flow's deletion (`deleted`). Sources: `get_flow(…, revision=N)`."""
        path = f"/flows/{_segment(namespace)}/{_segment(flow_id)}/revisions"
        return self.request("GET", path)

    def diff_flow_revisions(
        self, namespace: str, flow_id: str, from_revision: int, to_revision: int
    ) -> dict[str, Any]:
        """The unified diff of a flow's source from one revision to another (`diff`;
        a deletion's source is empty)."""
        path = f"/flows/{_segment(namespace)}/{_segment(flow_id)}/diff"
        return self.request("GET", path, params={"from": from_revision, "to": to_revision})

    def put_flow(self, namespace: str, flow_id: str, source: str) -> FlowJson:
        """Create or update `namespace/flow_id` from its YAML `source` (idempotent: the
        same source again makes no new revision). The answer is the stored revision."""
        path = f"/flows/{_segment(namespace)}/{_segment(flow_id)}"
        return self.request("PUT", path, body=source.encode(), content_type=YAML)

    def delete_flow(self, namespace: str, flow_id: str) -> None:
        """Delete a flow (404 if there is none)."""
        self.request("DELETE", f"/flows/{_segment(namespace)}/{_segment(flow_id)}")

    # ------------------------------------------------------------------ webhooks

    def _webhook_path(self, namespace: str, flow_id: str, key: str) -> str:
        return f"/executions/webhook/{_segment(namespace)}/{_segment(flow_id)}/{_segment(key)}"

    def post_webhook(
        self,
        namespace: str,
        flow_id: str,
        key: str,
        body: Any = None,
        *,
        params: dict[str, Any] | None = None,
        wait: bool = False,
        timeout: str | float | None = None,
    ) -> dict[str, Any]:
        """Call a flow's webhook trigger with `body` (sent as JSON; None: no body) and
        `params` (`trigger.parameters`). The started execution (`wait`: once ended,
        within `timeout` seconds or ISO 8601), or `{"executed": false, "reason": …}`
        when its conditions are not met. Any wrong part of the URL answers 404."""
        query = {**(params or {}), "wait": _flag(wait), "timeout": timeout}
        path = self._webhook_path(namespace, flow_id, key)
        return self.request("POST", path, params=query, json_body=body)

    def get_webhook(
        self,
        namespace: str,
        flow_id: str,
        key: str,
        *,
        params: dict[str, Any] | None = None,
        wait: bool = False,
        timeout: str | float | None = None,
    ) -> dict[str, Any]:
        """As `post_webhook`, with a GET and no body."""
        query = {**(params or {}), "wait": _flag(wait), "timeout": timeout}
        return self.request("GET", self._webhook_path(namespace, flow_id, key), params=query)

    # ------------------------------------------------------------------ executions

    def start_execution(
        self,
        namespace: str,
        flow_id: str,
        inputs: dict[str, Any] | None = None,
        *,
        labels: dict[str, str] | None = None,
        wait: bool = False,
        timeout: str | float | None = None,
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        """Start the flow's latest revision with `inputs`. Without `wait`, the start as
        published (`id`, `state.current` CREATED); with it, the execution once ended,
        waiting up to `timeout` (seconds, or ISO 8601; default 300 s; past it 504).
        `timeout_s` bounds the HTTP request itself: give more than `timeout`."""
        params = {
            "wait": _flag(wait),
            "timeout": timeout,
            "labels": [f"{k}:{v}" for k, v in (labels or {}).items()] or None,
        }
        return self.request(
            "POST",
            f"/executions/{_segment(namespace)}/{_segment(flow_id)}",
            params=params,
            json_body=inputs or {},
            timeout_s=timeout_s,
        )

    def get_execution(self, execution_id: str) -> dict[str, Any]:
        """One execution with its task runs (`taskRunList`)."""
        return self.request("GET", f"/executions/{_segment(execution_id)}")

    def list_executions(
        self,
        namespace: str | None = None,
        flow_id: str | None = None,
        state: str | list[str] | None = None,
        *,
        labels: dict[str, str] | None = None,
        start_date: datetime | str | None = None,
        end_date: datetime | str | None = None,
        q: str | None = None,
        stuck: bool = False,
        page: int | None = None,
        size: int | None = None,
    ) -> dict[str, Any]:
        """A page of executions, newest first, without task runs: `results`, `total`,
        `page`, `size`. Every filter given must match: `namespace` takes those below it
        too; `state` is one state, a comma-separated list or a list; `labels` each
        key with its value; `start_date` / `end_date` bound when they were created; `q`
        an id's start or text in the flow id or namespace (any case); `stuck`: those the
        watchdog found stuck."""
        states = ",".join(state) if isinstance(state, list) else state
        params = {
            "namespace": namespace,
            "flowId": flow_id,
            "state": states,
            "labels": [f"{key}:{value}" for key, value in (labels or {}).items()] or None,
            "startDate": _date(start_date),
            "endDate": _date(end_date),
            "q": q,
            "stuck": _flag(stuck),
            "page": page,
            "size": size,
        }
        return self.request("GET", "/executions", params=params)

    def _command(self, execution_id: str, command: str, **kwargs: Any) -> dict[str, Any]:
        return self.request("POST", f"/executions/{_segment(execution_id)}/{command}", **kwargs)

    def kill_execution(self, execution_id: str) -> dict[str, Any]:
        """Kill an execution: `outcome` APPLIED (with the `state` it left) or PENDING (the
        executor has not answered yet); 409 when its state does not allow it."""
        return self._command(execution_id, "kill")

    def restart_execution(self, execution_id: str) -> dict[str, Any]:
        """Re-run a FAILED or KILLED execution from its failed task runs; answered as
        `kill_execution`."""
        return self._command(execution_id, "restart")

    def resume_execution(
        self, execution_id: str, inputs: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Resume a PAUSED execution; `inputs` become the paused task's outputs. Answered
        as `kill_execution`."""
        return self._command(execution_id, "resume", json_body=inputs or {})

    def replay_execution(self, execution_id: str, task_run_id: str | None = None) -> dict[str, Any]:
        """Start a new execution replaying an ended one: from `task_run_id` (keeping what
        ran before it) or from the start. `{"id": new id, "replayOf": execution_id}`."""
        return self._command(execution_id, "replay", params={"taskRunId": task_run_id})

    def follow_execution(self, execution_id: str) -> Iterator[Event]:
        """The execution live: `execution` events (JSON in `data`), then `end` once it
        ended; a broken stream is resumed where it stopped."""
        return self.events(f"/executions/{_segment(execution_id)}/follow")

    def download_execution_file(
        self, execution_id: str, uri: str
    ) -> contextlib.AbstractContextManager[Download]:
        """A file a task of the execution stored (`uri`: `headrace:///…`, from its
        outputs), as a stream: `with api.download_execution_file(id, uri) as body:
        body.read(n)`."""
        return self.download(f"/executions/{_segment(execution_id)}/file", params={"path": uri})

    def get_execution_file_metas(self, execution_id: str, uri: str) -> dict[str, Any]:
        """A stored file's `uri`, `name` and `size` in bytes."""
        path = f"/executions/{_segment(execution_id)}/file/metas"
        return self.request("GET", path, params={"path": uri})

    # ------------------------------------------------------------------ logs

    @staticmethod
    def _log_filters(
        min_level: str | None,
        task_id: str | None,
        task_run_id: str | None,
        attempt: int | None,
        start_date: datetime | str | None,
        end_date: datetime | str | None,
    ) -> dict[str, Any]:
        return {
            "minLevel": min_level,
            "taskId": task_id,
            "taskRunId": task_run_id,
            "attempt": attempt,
            "startDate": _date(start_date),
            "endDate": _date(end_date),
        }

    def list_logs(
        self,
        execution_id: str,
        *,
        min_level: str | None = None,
        task_id: str | None = None,
        task_run_id: str | None = None,
        attempt: int | None = None,
        start_date: datetime | str | None = None,
        end_date: datetime | str | None = None,
        page: int | None = None,
        size: int | None = None,
    ) -> list[dict[str, Any]]:
        """A page of the execution's log lines, oldest first (up to 1,000 by default,
        `size` up to 10,000): those at `min_level` or above, of a task, task run or
        attempt, at or after `start_date` and before `end_date`."""
        params = self._log_filters(min_level, task_id, task_run_id, attempt, start_date, end_date)
        params |= {"page": page, "size": size}
        return self.request("GET", f"/logs/{_segment(execution_id)}", params=params)

    def download_logs(
        self,
        execution_id: str,
        *,
        min_level: str | None = None,
        task_id: str | None = None,
        task_run_id: str | None = None,
        attempt: int | None = None,
        start_date: datetime | str | None = None,
        end_date: datetime | str | None = None,
    ) -> contextlib.AbstractContextManager[Download]:
        """Every matching line as UTF-8 text, streamed: one line per record."""
        params = self._log_filters(min_level, task_id, task_run_id, attempt, start_date, end_date)
        return self.download(f"/logs/{_segment(execution_id)}/download", params=params)

    def follow_logs(
        self,
        execution_id: str,
        *,
        min_level: str | None = None,
        task_id: str | None = None,
        task_run_id: str | None = None,
        attempt: int | None = None,
        start_date: datetime | str | None = None,
        end_date: datetime | str | None = None,
    ) -> Iterator[Event]:
        """The execution's lines live: `log` events (a line as JSON in `data`), the
        stored ones first, then `end` once it ended; a broken stream is resumed."""
        params = self._log_filters(min_level, task_id, task_run_id, attempt, start_date, end_date)
        return self.events(f"/logs/{_segment(execution_id)}/follow", params=params)

    # ------------------------------------------------------------------ triggers

    def list_triggers(
        self, namespace: str | None = None, flow_id: str | None = None
    ) -> dict[str, Any]:
        """The declared triggers with their state (disabled, last and next fire time):
        `results`, `total`."""
        return self.request("GET", "/triggers", params={"namespace": namespace, "flowId": flow_id})

    def set_trigger(
        self, namespace: str, flow_id: str, trigger_id: str, *, disabled: bool
    ) -> dict[str, Any]:
        """Switch a trigger off (`disabled=True`) or back on at runtime; the trigger."""
        path = f"/triggers/{_segment(namespace)}/{_segment(flow_id)}/{_segment(trigger_id)}"
        return self.request("PUT", path, json_body={"disabled": disabled})

    def backfill_trigger(
        self, namespace: str, flow_id: str, trigger_id: str, start: str, end: str
    ) -> dict[str, Any]:
        """Start every tick of a schedule in [start, end) (ISO 8601; no offset: the
        trigger's zone): `count` and `executionIds`. Again, it starts nothing new."""
        path = f"/triggers/{_segment(namespace)}/{_segment(flow_id)}/{_segment(trigger_id)}"
        return self.request("POST", path + "/backfill", json_body={"start": start, "end": end})

    # ------------------------------------------------------------------ plugins

    def list_plugins(self) -> list[dict[str, Any]]:
        """Every task type the gateway validates flows against, with its schemas."""
        return self.request("GET", "/plugins")

    def get_plugin(self, task_type: str) -> dict[str, Any]:
        """One task type, by its name or an alias."""
        return self.request("GET", f"/plugins/{_segment(task_type)}")

    # ------------------------------------------------------------------ namespace files

    @staticmethod
    def _files(namespace: str) -> str:
        return f"/namespaces/{_segment(namespace)}/files"

    def list_namespace_files(
        self, namespace: str, path: str = "", *, recursive: bool = False, sha256: bool = False
    ) -> list[dict[str, Any]]:
        """The entries of a namespace's folder (`path`; "" the root): `fileName`, `type`
        (File or Directory), `size`, `lastModifiedTime` (epoch ms). `recursive`: the
        whole tree, paths relative to the folder; `sha256`: each file's digest too."""
        params = {"path": path or None, "recursive": _flag(recursive), "sha256": _flag(sha256)}
        return self.request("GET", self._files(namespace) + "/directory", params=params)

    def download_namespace_file(
        self, namespace: str, path: str
    ) -> contextlib.AbstractContextManager[Download]:
        """A namespace file, as a stream (see `download_execution_file`)."""
        return self.download(self._files(namespace), params={"path": path})

    def upload_namespace_file(self, namespace: str, path: str, data: IO[bytes]) -> dict[str, Any]:
        """Create or replace the file `path` with the open binary file `data`, sent a
        chunk at a time; the entry as stored."""
        return self.upload(self._files(namespace), data, params={"path": path})

    def delete_namespace_file(self, namespace: str, path: str) -> dict[str, Any]:
        """Delete a file, or a folder with all it holds: `path`, `type`, `deletedFiles`."""
        return self.request("DELETE", self._files(namespace), params={"path": path})

    # ------------------------------------------------------------------ the web UI's

    def list_namespaces(self) -> dict[str, Any]:
        """The namespaces that hold flows: `results` (`namespace`, its own `flows`
        count), by name, and `total`."""
        return self.request("GET", "/namespaces")

    def get_me(self) -> dict[str, Any]:
        """Who the client's credentials are: `name`, `role` (reader, writer), `scheme`."""
        return self.request("GET", "/me")

    def get_stats(self, hours: int | None = None) -> dict[str, Any]:
        """The dashboard over the last `hours` (default 24): executions per state in
        `buckets`, `states` totals, `failuresByFlow`, what runs `now`, and the `workers`
        the gateway's HEADRACE_METRICS_TARGETS report."""
        return self.request("GET", "/stats", params={"hours": hours})

    def list_blueprints(self) -> dict[str, Any]:
        """The example flows shipped with headrace: `results` (id, title, description,
        namespace, flowId, taskTypes, triggerTypes, inputs, source) and `total`."""
        return self.request("GET", "/blueprints")

    def get_blueprint(self, blueprint_id: str) -> dict[str, Any]:
        """One example flow, by its file's name (`hello`)."""
        return self.request("GET", f"/blueprints/{_segment(blueprint_id)}")

    def copy_blueprint(
        self, blueprint_id: str, namespace: str, flow_id: str | None = None
    ) -> FlowJson:
        """Save a copy of an example flow in `namespace` (as `flow_id`, default its own):
        the new flow's first revision. 409 if it exists, 422 if the copy is invalid."""
        body: dict[str, Any] = {"namespace": namespace}
        if flow_id is not None:
            body["id"] = flow_id
        return self.request("POST", f"/blueprints/{_segment(blueprint_id)}/copy", json_body=body)

    # ------------------------------------------------------------------ service

    def get_health(self) -> dict[str, Any]:
        """`{"status": "ok"}`; an unhealthy gateway raises `ApiError` (503) whose message
        lists its problems."""
        return self.request("GET", "/healthz", prefix="")

    def get_readiness(self) -> dict[str, Any]:
        """`{"status": "ready"}` when the gateway reaches the broker and PostgreSQL; else
        `ApiError` (503) whose message says what it cannot reach."""
        return self.request("GET", "/readyz", prefix="")

    def get_metrics(self) -> str:
        """The gateway's Prometheus metrics, as text."""
        with self.download("/metrics", prefix="") as body:
            chunks = []
            while chunk := body.read(64 * 1024):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def get_api_index(self) -> dict[str, Any]:
        """The server's name, version and main endpoints (`/` is the web UI)."""
        return self.request("GET", "")

    def get_open_api(self) -> dict[str, Any]:
        """The OpenAPI 3.1 document of the API (docs/api.md)."""
        return self.request("GET", "/openapi.json")
