"""No example flow or documentation snippet pastes outside text into code.

Code: a `commands`, `script` or `beforeCommands` property, an input file that is a
program (`main.py`, `deploy.sh`; in a dbt project every file but a seed's CSV, as dbt
renders them with its own Jinja) and dbt's `profiles`. It may only template values
headrace makes itself (attempt numbers, ids); inputs, trigger bodies, for-each items,
outputs and secrets go through `env` (docs/flows.md, "Passing inputs to scripts
safely"). What a `{% raw %}` block holds is not rendered: it is left to the program
(dbt's `env_var()`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

ROOT = Path(__file__).resolve().parents[2]
YAML_BLOCK = re.compile(r"^```yaml[^\n]*\n(.*?)^```", re.DOTALL | re.MULTILINE)
# An expression may hold `}}` in a quoted string: `{{ '}}' }}`.
TEMPLATE = re.compile(r"""\{\{((?:'[^']*'|"[^"]*"|.)*?)\}\}|\{%(.*?)%\}""", re.DOTALL)
# Values headrace makes itself, and text written in the expression (`{{ '{{' }}`).
SAFE = re.compile(
    r"""\s*(taskrun\.attempt|execution\.id|flow\.id|flow\.namespace|'[^']*'|"[^"]*")\s*"""
)
CODE_KEYS = ("commands", "script", "beforeCommands", "profiles")
RAW_BLOCK = re.compile(r"\{%-?\s*raw\s*-?%\}.*?\{%-?\s*endraw\s*-?%\}", re.DOTALL)
# Input files read as data, not run (a file without a suffix may be a program).
DATA_SUFFIXES = frozenset(
    {".csv", ".tsv", ".json", ".jsonl", ".ndjson", ".txt", ".xml", ".yaml", ".yml"}
)
DBT_TYPES = ("dbt.", "io.kestra.plugin.dbt.")
# `vars.NAME`, `vars.NAME.key`, `vars.NAME['key']`, and nothing else (no filter, no `~`).
VARIABLE = re.compile(r"""\s*vars\.(\w+)(?:\.\w+|\[(?:'[^']*'|"[^"]*"|\d+)\])*\s*""")


def sources() -> Iterator[tuple[str, str]]:
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        yield str(path.relative_to(ROOT)), path.read_text()
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for index, block in enumerate(YAML_BLOCK.findall(path.read_text())):
            yield f"{path.relative_to(ROOT)} yaml block {index + 1}", block


def holds_code(path: Any, dbt: bool) -> bool:
    suffix = PurePosixPath(str(path)).suffix.lower()
    return suffix != ".csv" if dbt else suffix not in DATA_SUFFIXES


def code(node: Any, dbt: bool = False) -> Iterator[str]:
    """The text of every property that is code (see the module's docstring), however
    deep (`pluginDefaults`, a flowable's tasks). `dbt`: in a dbt task."""
    if isinstance(node, dict):
        if "type" in node:
            dbt = str(node["type"]).startswith(DBT_TYPES)
        for key, value in node.items():
            if key in CODE_KEYS:
                yield from value if isinstance(value, list) else [value]
            elif key == "inputFiles" and isinstance(value, dict):
                yield from (text for path, text in value.items() if holds_code(path, dbt))
            else:
                yield from code(value, dbt)
    elif isinstance(node, list):
        for item in node:
            yield from code(item, dbt)


def texts(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for value in node.values():
            yield from texts(value)
    elif isinstance(node, list):
        for item in node:
            yield from texts(item)
    else:
        yield str(node)


def written_variables(document: Any) -> set[str]:
    """The flow's variables that hold only text its author wrote (no expression, which
    could bring an input in): reading one is as safe as the script's own text."""
    variables = document.get("variables") if isinstance(document, dict) else None
    if not isinstance(variables, dict):
        return set()
    return {
        name
        for name, value in variables.items()
        if not any(TEMPLATE.search(text) for text in texts(value))
    }


def unsafe_templates(source: str) -> list[str]:
    try:
        documents = list(YAML(typ="safe", pure=True).load_all(source))
    except YAMLError:
        return []  # an example of invalid YAML: it runs nothing
    found = []
    for document in documents:
        written = written_variables(document)
        for text in code(document):
            for match in TEMPLATE.finditer(RAW_BLOCK.sub("", str(text))):
                if match[2] is not None:
                    found.append(match[0])
                elif not SAFE.fullmatch(match[1]):
                    variable = VARIABLE.fullmatch(match[1])
                    if variable is None or variable[1] not in written:
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


def test_a_variable_is_safe_only_when_it_holds_what_the_author_wrote() -> None:
    flow = (
        "variables:\n  db: {host: warehouse, port: 5432}\n  who: '{{ inputs.name }}'\n"
        "tasks:\n  - type: shell\n    commands:\n"
        "      - psql -h {{ vars.db.host }} -p {{ vars.db['port'] }}\n"
        "      - echo {{ vars.who }} {{ vars.db.host ~ inputs.x }}\n"
    )
    assert unsafe_templates(flow) == ["{{ vars.who }}", "{{ vars.db.host ~ inputs.x }}"]


def test_the_check_covers_before_commands_code_files_and_dbt_profiles() -> None:
    before = "tasks:\n  - type: shell\n    beforeCommands: ['cd {{ inputs.dir }}']\n"
    assert unsafe_templates(before) == ["{{ inputs.dir }}"]
    files = (
        "tasks:\n  - type: python.commands\n    inputFiles:\n"
        "      main.py: 'n = {{ inputs.n }}'\n"
        "      deploy.sh: 'echo {{ trigger.body }}'\n"
        "      settings.json: '{{ inputs.settings | toJson }}'\n"  # data: safe
    )
    assert unsafe_templates(files) == ["{{ inputs.n }}", "{{ trigger.body }}"]
    dbt = (
        "tasks:\n  - type: dbt.build\n    inputFiles:\n"
        "      models/orders.sql: 'select {{ inputs.columns }}'\n"
        "      seeds/days.csv: '{{ inputs.days }}'\n"  # a seed is data: dbt reads it as is
        "    profiles: |\n"
        "      password: \"{{ secret('PG') }}\"\n"
        "      user: \"{% raw %}{{ env_var('PG_USER') }}{% endraw %}\"\n"  # dbt's, not ours
        "      host: \"{{ '{{' }} env_var('PG_HOST') {{ '}}' }}\"\n"  # the same, as text
    )
    assert unsafe_templates(dbt) == ["{{ inputs.columns }}", "{{ secret('PG') }}"]
    kestra = "tasks:\n  - type: io.kestra.plugin.dbt.cli.DbtCLI\n    inputFiles:\n"
    assert unsafe_templates(kestra + "      dbt_project.yml: '{{ inputs.name }}'\n") == [
        "{{ inputs.name }}"
    ]
