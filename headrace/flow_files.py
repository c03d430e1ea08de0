"""Flows kept as files in Git: find, validate and apply a folder of them.

`apply` is all-or-nothing on validation: every file is validated before the first one is
sent, so a typo in one file never leaves the server with half a folder applied.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from headrace.api_client import ApiClient, ApiError
from headrace.errors import HeadraceError
from headrace.flow.errors import FlowError, FlowValidationError
from headrace.flow.loader import load_flow
from headrace.flow.model import Flow

FLOW_SUFFIXES = (".yaml", ".yml")
DBT_PROJECT_FILE = "dbt_project.yml"
# Flows per listing request when pruning (the gateway's maximum page size).
LIST_PAGE_SIZE = 1_000


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
) -> None:
    paths = list(paths)
    files, errors = load_folder(paths)
    if errors:
        for error in errors:
            echo(str(error))
        raise HeadraceError(f"{len(errors)} invalid flow file(s): nothing applied")
    if not files:
        raise HeadraceError(f"no flow files (*.yaml, *.yml) in {', '.join(str(p) for p in paths)}")

    plan: list[tuple[str, FlowFile]] = []
    for item in files:
        current = _current_source(api, *item.key)
        action = (
            "create" if current is None else ("unchanged" if current == item.source else "update")
        )
        plan.append((action, item))
    to_delete: list[tuple[str, str]] = []
    if prune:
        wanted = {item.key for item in files}
        for namespace in sorted({item.flow.namespace for item in files}):
            listing = list_flows(api, namespace)
            # The listing includes sub-namespaces; prune only the namespaces this folder owns.
            to_delete += [
                (f["namespace"], f["id"])
                for f in listing
                if f["namespace"] == namespace and (f["namespace"], f["id"]) not in wanted
            ]

    for action, item in plan:
        echo(f"{action:<9} {item.flow.namespace}/{item.flow.id}  ({item.path})")
    for namespace, flow_id in to_delete:
        echo(f"{'delete':<9} {namespace}/{flow_id}")
    if dry_run:
        echo("dry run: nothing applied")
        return

    changed = 0
    for action, item in plan:
        if action == "unchanged":
            continue
        answer = api.request(
            "PUT",
            f"/flows/{item.flow.namespace}/{item.flow.id}",
            body=item.source.encode(),
            content_type="application/x-yaml",
        )
        changed += 1
        echo(f"applied   {item.flow.namespace}/{item.flow.id} revision {answer['revision']}")
    for namespace, flow_id in to_delete:
        api.request("DELETE", f"/flows/{namespace}/{flow_id}")
        echo(f"deleted   {namespace}/{flow_id}")
    echo(f"{changed} applied, {len(plan) - changed} unchanged, {len(to_delete)} deleted")


def _current_source(api: ApiClient, namespace: str, flow_id: str) -> str | None:
    try:
        return api.request("GET", f"/flows/{namespace}/{flow_id}")["source"]
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise
