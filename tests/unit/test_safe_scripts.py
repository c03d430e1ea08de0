"""No example flow or documentation snippet pastes outside text into a script.

A `commands` or `script` property may only template values headrace makes itself
(attempt numbers, ids); inputs, trigger bodies, for-each items and outputs go through
`env` (docs/flows.md, "Passing inputs to scripts safely").
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

ROOT = Path(__file__).resolve().parents[2]
YAML_BLOCK = re.compile(r"^```yaml[^\n]*\n(.*?)^```", re.DOTALL | re.MULTILINE)
TEMPLATE = re.compile(r"\{\{(.*?)\}\}|\{%(.*?)%\}", re.DOTALL)
SAFE = re.compile(r"\s*(taskrun\.attempt|execution\.id|flow\.id|flow\.namespace)\s*")
SCRIPT_KEYS = ("commands", "script")


def sources() -> Iterator[tuple[str, str]]:
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        yield str(path.relative_to(ROOT)), path.read_text()
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for index, block in enumerate(YAML_BLOCK.findall(path.read_text())):
            yield f"{path.relative_to(ROOT)} yaml block {index + 1}", block


def scripts(node: Any) -> Iterator[str]:
    """The text of every `commands` and `script` property, however deep."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in SCRIPT_KEYS:
                yield from value if isinstance(value, list) else [value]
            else:
                yield from scripts(value)
    elif isinstance(node, list):
        for item in node:
            yield from scripts(item)


def unsafe_templates(source: str) -> list[str]:
    try:
        documents = list(YAML(typ="safe", pure=True).load_all(source))
    except YAMLError:
        return []  # an example of invalid YAML: it runs nothing
    found = []
    for document in documents:
        for text in scripts(document):
            for match in TEMPLATE.finditer(str(text)):
                if match[2] is not None or not SAFE.fullmatch(match[1]):
                    found.append(match[0])
    return found


SOURCES = dict(sources())


@pytest.mark.parametrize("where", list(SOURCES))
def test_scripts_template_nothing_from_outside(where: str) -> None:
    assert unsafe_templates(SOURCES[where]) == []


def test_the_check_finds_what_the_tester_found() -> None:
    pasted = "tasks:\n  - id: t\n    type: shell\n    commands:\n      - echo {{ inputs.name }}\n"
    assert unsafe_templates(pasted) == ["{{ inputs.name }}"]
    nested = "tasks:\n  - id: p\n    type: flow.foreach\n    tasks:\n      - script: '{{ taskrun.value }}'\n"
    assert unsafe_templates(nested) == ["{{ taskrun.value }}"]
    attempt = "tasks:\n  - commands: ['test {{ taskrun.attempt }} -ge 2']\n"
    assert unsafe_templates(attempt) == []
