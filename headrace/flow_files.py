"""Flows kept as files in Git: find, validate and apply a folder of them.

`apply_folder` sends the whole folder in one request (`POST /api/v1/flows/bulk`): the
gateway validates every file before it changes anything, then applies them as one record
of the `flows` topic, so a folder is applied whole or not at all, even if something
fails halfway. What it prints is the plan: a unified diff of every updated flow.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from headrace.api_client import ApiClient, ApiError
from headrace.errors import HeadraceError
from headrace.flow.errors import FlowError, FlowValidationError
from headrace.flow.loader import load_flow, load_flow_with_warnings
from headrace.flow.model import Flow

FLOW_SUFFIXES = (".yaml", ".yml")
DBT_PROJECT_FILE = "dbt_project.yml"
# Flows per listing request (the gateway's maximum page size).
LIST_PAGE_SIZE = 1_000
# A folder is validated whole by the gateway before it answers: give it time.
APPLY_TIMEOUT_S = 300.0
# How each action is marked and coloured in the plan.
MARKS = {
    "created": ("+", "create", "green"),
    "updated": ("~", "update", "yellow"),
    "unchanged": (" ", "unchanged", None),
    "deleted": ("-", "delete", "red"),
}


class InvalidFlowFiles(HeadraceError):
    """Files that cannot be applied: `errors` says, one line each, file:line: field: reason."""

    def __init__(self, message: str, errors: list[str]) -> None:
        super().__init__(message)
        self.errors = errors


@dataclass(frozen=True, slots=True)
class FlowFile:
    path: Path
    source: str
    flow: Flow

    @property
    def key(self) -> tuple[str, str]:
        return (self.flow.namespace, self.flow.id)


def find_flow_files(paths: Iterable[Path]) -> list[Path]:
    """The flow files of `paths`: files as given, folders searched through, except the
    dbt projects in them (a folder with a `DBT_PROJECT_FILE`), whose YAML is dbt's: flows
    and the dbt projects their tasks build live side by side in one repository."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            files = [p for p in path.rglob("*") if p.suffix in FLOW_SUFFIXES and p.is_file()]
            projects = [p.parent for p in files if p.name == DBT_PROJECT_FILE]
            found += sorted(
                p for p in files if not any(p.is_relative_to(project) for project in projects)
            )
        else:
            found.append(path)
    return found


def read_flow_source(path: Path) -> str:
    """The file's text as UTF-8 (flows are UTF-8 whatever the locale); an unreadable
    file is a `FlowValidationError` naming it, as `load_flow_file` reports it."""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FlowValidationError(
            str(path), [FlowError("", None, None, f"cannot read the file: {exc}")]
        ) from exc


def flow_file_warnings(paths: Iterable[Path]) -> list[str]:
    """The warnings of the flow files of `paths` that load (`file:line:col: path:
    message`): what they ask for that headrace does differently. Files that do not load
    have errors instead, which the validation or the apply reports."""
    found = []
    for path in find_flow_files(paths):
        try:
            _, warnings = load_flow_with_warnings(read_flow_source(path), str(path))
        except FlowValidationError:
            continue
        found += [warning.format(str(path)) for warning in warnings]
    return found


def list_flows(api: ApiClient, namespace: str | None) -> list[dict[str, Any]]:
    """Every flow the server lists under `namespace`, following the pages."""
    flows: list[dict[str, Any]] = []
    page = 1
    while True:
        params = {"namespace": namespace, "page": page, "size": LIST_PAGE_SIZE}
        answer = api.request("GET", "/flows", params=params)
        flows += answer["results"]
        if not answer["results"] or len(flows) >= answer["total"]:
            return flows
        page += 1


def load_folder(paths: Iterable[Path]) -> tuple[list[FlowFile], list[HeadraceError]]:
    files: list[FlowFile] = []
    errors: list[HeadraceError] = []
    seen: dict[tuple[str, str], Path] = {}
    for path in find_flow_files(paths):
        try:
            source = read_flow_source(path)
            flow = load_flow(source, str(path))
        except FlowValidationError as exc:
            errors.append(exc)
            continue
        item = FlowFile(path, source, flow)
        if item.key in seen:
            errors.append(
                HeadraceError(
                    f"{path}: flow {flow.namespace}/{flow.id} is also in {seen[item.key]}"
                )
            )
            continue
        seen[item.key] = path
        files.append(item)
    return files, errors


def apply_folder(
    api: ApiClient,
    paths: Iterable[Path],
    *,
    dry_run: bool,
    prune: bool,
    echo: Callable[[str], None],
    output: str = "text",
) -> dict[str, Any]:
    """Apply the flow files of `paths` in one request, all or nothing, and print what
    changed (or, with `dry_run`, what would): a line per flow, the diff of each update,
    a summary; `output="json"` prints the gateway's answer instead. `prune`: also delete
    the flows of these files' namespaces that no file holds. Returns the answer
    (`changes` counts what changed); raises `InvalidFlowFiles` when any file is invalid
    (then nothing changed)."""
    paths = list(paths)
    found = find_flow_files(paths)
    if not found:
        raise HeadraceError(f"no flow files (*.yaml, *.yml) in {', '.join(str(p) for p in paths)}")
    documents, unreadable = [], []
    for path in found:
        try:
            documents.append({"name": str(path), "source": read_flow_source(path)})
        except FlowValidationError as exc:
            unreadable.append(str(exc))
    if unreadable:
        raise InvalidFlowFiles(
            f"{len(unreadable)} of {len(found)} flow file(s) unreadable: nothing applied",
            unreadable,
        )
    params = {"dryRun": "true" if dry_run else None, "delete": "true" if prune else None}
    try:
        answer = api.request(
            "POST",
            "/flows/bulk",
            params=params,
            json_body={"flows": documents},
            timeout_s=APPLY_TIMEOUT_S,
        )
    except ApiError as exc:
        if exc.status == 422 and exc.errors:
            raise InvalidFlowFiles(str(exc), [format_error(e) for e in exc.errors]) from None
        raise
    if output == "json":
        echo(json.dumps(answer, indent=2))
    else:
        for line in plan_lines(answer):
            echo(line)
    return answer


def changes(answer: dict[str, Any]) -> int:
    """How many flows an answer of the bulk endpoint created, updated or deleted."""
    summary = answer["summary"]
    return int(summary["created"] + summary["updated"] + summary["deleted"])


def format_error(error: Any) -> str:
    """An error of the bulk endpoint as `file:line:column: field: reason (hint: ...)`."""
    if not isinstance(error, dict):
        return str(error)
    where = str(error.get("file") or "")
    for part in ("line", "column"):
        if error.get(part) is None:
            break
        where += f":{error[part]}"
    text = ": ".join(str(p) for p in (where, error.get("path"), error.get("message", "")) if p)
    return text + (f" (hint: {error['hint']})" if error.get("hint") else "")


def plan_lines(answer: dict[str, Any]) -> list[str]:
    """The answer as `flow apply` prints it: one line per flow (marked `+` created, `~`
    updated, `-` deleted), each update's diff under it, then a summary. Styled: click
    drops the colours when the output is not a terminal."""
    dry_run = answer["dryRun"]
    lines = []
    for item in answer["flows"]:
        mark, verb, color = MARKS[item["action"]]
        if not dry_run:
            verb = item["action"]
        line = f"{mark} {verb:<9} {item['namespace']}/{item['id']}{_revisions(item, dry_run)}"
        if item.get("file"):
            line += f"  ({item['file']})"
        lines.append(click.style(line, fg=color))
        lines += ["    " + styled_diff_line(d) for d in (item.get("diff") or "").splitlines()]
    summary = answer["summary"]
    if dry_run:
        lines.append(
            f"plan: {summary['created']} to create, {summary['updated']} to update,"
            f" {summary['deleted']} to delete, {summary['unchanged']} unchanged"
        )
        lines.append("dry run: nothing applied")
    else:
        applied = summary["created"] + summary["updated"]
        lines.append(
            f"{applied} applied ({summary['created']} created, {summary['updated']} updated),"
            f" {summary['unchanged']} unchanged, {summary['deleted']} deleted"
        )
    return lines


def _revisions(item: dict[str, Any], dry_run: bool) -> str:
    revision, before = item.get("revision"), item.get("fromRevision")
    if dry_run or item["action"] == "unchanged":
        shown = revision if revision is not None else before
        return f" revision {shown}" if shown is not None else ""
    if item["action"] == "deleted":
        return f" (was revision {before})" if before is not None else ""
    return f" revision {revision}" + (f" (was {before})" if before is not None else "")


def styled_diff_line(line: str) -> str:
    """A unified diff's line in the colours of `git diff`."""
    if line.startswith(("+++", "---")):
        return click.style(line, bold=True)
    if line.startswith("@@"):
        return click.style(line, fg="cyan")
    if line.startswith("+"):
        return click.style(line, fg="green")
    if line.startswith("-"):
        return click.style(line, fg="red")
    return line
