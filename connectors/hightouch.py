"""`hightouch.sync`: trigger a Hightouch sync and follow its run (Kestra's `hightouch.Sync`).

Through Hightouch's REST API (`https://api.hightouch.com/api/v1`, a bearer token): `POST
/syncs/{syncId}/trigger` starts a run (or queues one behind a run in progress), `GET
/syncs/{syncId}/runs?runId=` reads its state. The API has no call to cancel a run, so a
kill, a timeout or `maxDuration` stops following the run and says so: the run goes on in
Hightouch. Following and polling are `remote_job`'s.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import BaseModel, Field

from headrace.connectors.base import TaskContext, TaskFailed
from headrace.connectors.http import WebUrl
from headrace.connectors.remote_job import (
    RemoteJob,
    RemoteJobConnector,
    RemoteJobProperties,
    Snapshot,
)
from headrace.connectors.vendor_api import VendorApi
from headrace.flow.durations import Duration
from headrace.messages import LogLevel

# A run's statuses: queued, querying, processing, reporting, then one of these.
SUCCEEDED = frozenset({"success", "warning"})  # warning: some rows were rejected
FAILED = frozenset({"failed", "cancelled", "interrupted", "aborted"})
NOT_LISTED = "triggered"  # our word for a run Hightouch does not list yet
_REASONS = {
    "cancelled": "cancelled in Hightouch",
    "interrupted": "interrupted; Hightouch resumes it in a new run",
}


class HightouchSyncProperties(RemoteJobProperties):
    token: str = Field(
        description="An API key of the workspace: `{{ secret('HIGHTOUCH_TOKEN') }}`."
    )
    sync_id: int = Field(alias="syncId", gt=0, description="The sync to run.")
    full_resynchronization: bool = Field(
        default=False,
        alias="fullResynchronization",
        description="Sync every row of the model's query again, not only what changed.",
    )
    max_duration: Duration = Field(  # Kestra's default for Hightouch
        default=timedelta(minutes=5),
        alias="maxDuration",
        gt=timedelta(0),
        description="Longest wait for the run to end: past it the task fails (the run goes"
        " on in Hightouch, whose API cannot cancel it).",
    )
    fail_on_warning: bool = Field(
        default=False,
        alias="failOnWarning",
        description="Fail when the run ends `warning` (the destination rejected some rows).",
    )
    url: WebUrl = Field(
        default="https://api.hightouch.com",
        description="Hightouch's API: change it only to go through a proxy, or in tests.",
    )


class HightouchSyncOutputs(BaseModel):
    run_id: int | str = Field(alias="runId", description="The sync run started.")
    status: str | None = Field(default=None, description="How it ended: success or warning.")
    query_size: int | None = Field(
        default=None, alias="querySize", description="Rows in the model's query results."
    )
    planned_rows: dict[str, int] | None = Field(
        default=None,
        alias="plannedRows",
        description="Rows the run was to add, change and remove (addedCount, changedCount,"
        " removedCount).",
    )
    successful_rows: dict[str, int] | None = Field(
        default=None, alias="successfulRows", description="Those the destination took."
    )
    failed_rows: dict[str, int] | None = Field(
        default=None, alias="failedRows", description="Those the destination rejected."
    )


class HightouchSync(RemoteJobConnector):
    """Triggers a Hightouch sync and follows its run to its end.

    Logs the run's status and rows as they change, and fails with Hightouch's error when
    the run fails. Hightouch's API cannot cancel a run: a kill or a timeout only stops
    following it.
    """

    Properties = HightouchSyncProperties
    Outputs = HightouchSyncOutputs
    aliases = ("io.kestra.plugin.hightouch.Sync",)

    def job(self, properties: HightouchSyncProperties, context: TaskContext) -> HightouchRun:
        return HightouchRun(properties, context)


class HightouchRun(RemoteJob):
    vendor = "Hightouch"
    noun = "sync run"
    can_cancel = False

    def __init__(self, properties: HightouchSyncProperties, context: TaskContext) -> None:
        super().__init__()
        self.properties = properties
        self.api = VendorApi(
            "Hightouch", properties.url, context, {"type": "BEARER", "token": properties.token}
        )
        self._sync = f"/api/v1/syncs/{properties.sync_id}"

    async def start(self) -> bool:
        body = {"fullResync": self.properties.full_resynchronization}
        run = await self.api.call("POST", f"{self._sync}/trigger", body)
        if run.get("id") is None:
            raise TaskFailed(f"Hightouch started no run: its answer has no run id: {run}")
        run_id = str(run["id"])
        self.id = int(run_id) if run_id.isdigit() else run_id  # documented as text
        self.status = "queued"
        return True

    async def check(self) -> Snapshot:
        answer = await self.api.call("GET", f"{self._sync}/runs?runId={self.id}")
        runs = answer.get("data")
        if not isinstance(runs, list):
            raise TaskFailed(
                f"Hightouch's list of the runs of sync {self.properties.sync_id} has no"
                f" `data` list: {str(answer)[:300]}"
            )
        run = next(
            (r for r in runs if isinstance(r, dict) and str(r.get("id")) == str(self.id)), None
        )
        if run is None:  # the trigger answers before the run is listed
            return Snapshot(NOT_LISTED, progress="waiting for Hightouch to list the run")
        status = str(run.get("status", "unknown"))
        rejected = _total(run.get("failedRows"))
        lines: list[tuple[LogLevel, str]] = []
        error = None
        if status in FAILED:
            error = run.get("error") or _REASONS.get(status, "Hightouch gave no reason")
        elif status == "warning":
            planned = _total(run.get("plannedRows"))
            said = f"{self.name}: the destination rejected {rejected} of {planned} rows"
            lines.append((LogLevel.WARN, said))
            if self.properties.fail_on_warning:
                error = f"the destination rejected {rejected} rows (failOnWarning)"
        return Snapshot(
            status,
            finished=status in SUCCEEDED or status in FAILED,
            error=error,
            progress=_progress(status, run),
            lines=lines,
            data=run,
        )

    async def close(self) -> None:
        await self.api.close()

    def outputs(self, final: Snapshot | None) -> dict[str, Any]:
        outputs: dict[str, Any] = {"runId": self.id}
        if final is not None:
            run = final.data
            outputs |= {
                "status": run.get("status"),
                "querySize": run.get("querySize"),
                "plannedRows": run.get("plannedRows"),
                "successfulRows": run.get("successfulRows"),
                "failedRows": run.get("failedRows"),
            }
        return outputs


def _total(rows: Any) -> int:
    """Added, changed and removed rows, together."""
    if not isinstance(rows, dict):
        return 0
    return sum(int(rows.get(key) or 0) for key in ("addedCount", "changedCount", "removedCount"))


def _progress(status: str, run: dict[str, Any]) -> str:
    planned = _total(run.get("plannedRows"))
    if not planned:
        return status
    synced, rejected = _total(run.get("successfulRows")), _total(run.get("failedRows"))
    text = f"{status}: {synced} of {planned} planned rows synced, {rejected} rejected"
    ratio = run.get("completionRatio")
    if isinstance(ratio, int | float) and status not in SUCCEEDED | FAILED:
        text += f" ({ratio:.0%})"
    return text
