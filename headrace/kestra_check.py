"""`headrace kestra check DIR`: which of a folder of Kestra flows headrace runs as they are.

Each file gets one verdict: it runs as is, it runs with warnings (keys headrace accepts
and acts on differently, `headrace.flow.warnings`), or it is refused, with every reason
at its line. Nothing is sent anywhere: this is the loader that `flow apply` runs, on a
copy of the files, so a team can measure a migration before it starts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from headrace.flow.errors import FlowError, FlowValidationError
from headrace.flow.loader import load_flow_with_warnings
from headrace.flow_files import find_flow_files, read_flow_source

_KNOWN_TYPES = "known types: "
_NO_CONNECTOR = "headrace has no connector of this type: `headrace plugins list` shows those it has"


class Verdict(StrEnum):
    AS_IS = "runs as is"
    WARNINGS = "runs with warnings"
    REFUSED = "refused"
    NOT_A_FLOW = "skipped: not a flow"


# A flow's file has a top-level `namespace:` or `tasks:` key; a repository's other YAML
# (CI workflows, compose files, dbt projects) has neither.
_FLOW_KEY = re.compile(r"^(namespace|tasks)\s*:", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class FileCheck:
    path: Path
    verdict: Verdict
    problems: list[FlowError] = field(default_factory=list)  # errors, or else warnings
    flow: tuple[str, str] | None = None  # (namespace, id) of a flow that loads

    def lines(self) -> list[str]:
        return [problem.format(str(self.path)) for problem in self.problems]

    def to_json(self) -> dict[str, Any]:
        severity = "error" if self.verdict is Verdict.REFUSED else "warning"
        return {
            "path": str(self.path),
            "verdict": self.verdict.name,
            "flow": None if self.flow is None else {"namespace": self.flow[0], "id": self.flow[1]},
            "problems": [{**asdict(p), "severity": severity} for p in self.problems],
        }


def check_files(paths: Iterable[Path]) -> Iterator[FileCheck]:
    """A verdict per flow file of `paths` (folders searched through), in path order."""
    seen: dict[tuple[str, str], Path] = {}
    for path in find_flow_files(paths):
        if any(part.startswith(".") for part in path.parts if part not in (".", "..")):
            continue  # `.github/`, `.venv/`: not where flows live
        result = check_file(path)
        if result.flow is not None and result.flow in seen:
            namespace, flow_id = result.flow
            twice = FlowError(
                "id", None, None, f"flow {namespace}/{flow_id} is also in {seen[result.flow]}"
            )
            result = FileCheck(path, Verdict.REFUSED, [twice], result.flow)
        elif result.flow is not None:
            seen[result.flow] = path
        yield result


def check_file(path: Path) -> FileCheck:
    try:
        source = read_flow_source(path)
        if not _FLOW_KEY.search(source):
            return FileCheck(path, Verdict.NOT_A_FLOW)
        flow, warnings = load_flow_with_warnings(source, str(path))
    except FlowValidationError as exc:
        return FileCheck(path, Verdict.REFUSED, [_shorter(error) for error in exc.errors])
    verdict = Verdict.WARNINGS if warnings else Verdict.AS_IS
    return FileCheck(path, verdict, warnings, (flow.namespace, flow.id))


def _shorter(error: FlowError) -> FlowError:
    """An unknown task type's hint lists every known type: for a folder of Kestra flows,
    where most refusals are plugins headrace lacks, point at the listing instead."""
    if error.hint is None or _KNOWN_TYPES not in error.hint:
        return error
    suggestion = error.hint.split(_KNOWN_TYPES)[0].strip()
    hint = f"{suggestion} Otherwise {_NO_CONNECTOR}" if suggestion else _NO_CONNECTOR
    return FlowError(error.path, error.line, error.column, error.message, hint)


def counts(results: list[FileCheck]) -> dict[str, int]:
    """How many files got each verdict, by its name (`AS_IS`, …)."""
    return {verdict.name: sum(r.verdict is verdict for r in results) for verdict in Verdict}


def summary(results: list[FileCheck]) -> str:
    found = counts(results)
    flows = [verdict for verdict in Verdict if verdict is not Verdict.NOT_A_FLOW]

    def count(verdict: Verdict) -> str:
        n = found[verdict.name]
        return f"{n} {verdict}" if n == 1 else f"{n} {verdict}".replace("runs ", "run ")

    total = sum(found[verdict.name] for verdict in flows)
    files = "file" if total == 1 else "files"
    text = f"{total} flow {files}: " + ", ".join(count(verdict) for verdict in flows)
    skipped = found[Verdict.NOT_A_FLOW.name]
    return text + (f" ({skipped} other YAML file(s) skipped)" if skipped else "")
