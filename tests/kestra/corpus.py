"""The Kestra corpus: flows written as a Kestra user writes them (Kestra's type names,
keys and expressions) in `flows/`, and in `expected.yaml` the end each must reach, as
Kestra documents it. Unit tests check the verdicts, integration tests run them all."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).parent
FLOWS = HERE / "flows"
NAMESPACE = "company.kestra"


@dataclass(frozen=True)
class Case:
    file: str
    source: str
    flow_id: str
    state: str
    inputs: dict[str, Any] = field(default_factory=dict)
    tasks: dict[str, str] = field(default_factory=dict)
    absent: list[str] = field(default_factory=list)
    runs: dict[str, int] = field(default_factory=dict)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    flow_outputs: dict[str, Any] | None = None
    logs: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    resume: dict[str, Any] | None = None  # inputs of a resume once the execution is PAUSED
    verdict: str = "AS_IS"
    run: bool = True  # False: a flow only other flows call, or one only checked


def cases() -> list[Case]:
    expected = yaml.safe_load((HERE / "expected.yaml").read_text())
    found = []
    for name, spec in expected.items():
        source = (FLOWS / name).read_text()
        flow_id = yaml.safe_load(source)["id"]
        spec = dict(spec)
        flow_outputs = spec.pop("flowOutputs", None)
        found.append(Case(name, source, flow_id, flow_outputs=flow_outputs, **spec))
    return found


def files() -> list[str]:
    return sorted(p.name for p in FLOWS.glob("*.y*ml"))
