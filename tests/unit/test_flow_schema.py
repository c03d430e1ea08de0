"""The JSON Schema of flows (headrace/flow_schema.py) agrees with the loader: every flow the
loader accepts (examples/, docs/flows.md) is valid against it, it flags what the loader
refuses at the same place, and the copy shipped for editors is the one generated."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from jsonschema import Draft7Validator
from jsonschema.exceptions import ValidationError

from headrace.cli import cli
from headrace.flow import FlowValidationError, load_flow
from headrace.flow.durations import parse_duration
from headrace.flow.triggers import TRIGGER_ALIASES, TRIGGER_TYPES
from headrace.flow.yaml_reader import read_yaml
from headrace.flow_schema import (
    DIALECT,
    DURATION_PATTERN,
    REGENERATE,
    flow_json_schema,
    flow_json_schema_bytes,
    unread_validators,
)
from headrace.plugins import CONNECTOR, plugins
from tests.unit.test_docs_flows import examples as docs_examples

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "docs" / "flow.schema.json"
VALIDATOR = Draft7Validator(flow_json_schema())
HEAD = "id: f\nnamespace: company.team\n"


def schema_errors(text: str) -> list[ValidationError]:
    return list(VALIDATOR.iter_errors(read_yaml(text).data))


def _path(parts: Any) -> str:
    """`tasks[0].retry`: a location as the loader writes it."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text


def _locations(error: ValidationError) -> Iterator[str]:
    """Where `error`, and the errors of the alternatives it tried, point: the key a
    mapping lacks or should not have, else the value."""
    where = list(error.absolute_path)
    instance = error.instance if isinstance(error.instance, dict) else {}
    if error.validator == "required":
        yield from (_path([*where, key]) for key in error.validator_value if key not in instance)
    elif error.validator == "additionalProperties":
        known = error.schema.get("properties", {})
        yield from (_path([*where, key]) for key in instance if key not in known)
    else:
        yield _path(where)
    for alternative in error.context or ():
        yield from _locations(alternative)


def schema_locations(text: str) -> set[str]:
    return {where for error in schema_errors(text) for where in _locations(error)}


def loader_locations(text: str) -> set[str]:
    with pytest.raises(FlowValidationError) as raised:
        load_flow(text)
    return {error.path for error in raised.value.errors}


def assert_both_accept(text: str) -> None:
    load_flow(text)
    assert [error.message for error in schema_errors(text)] == []


# ---------------------------------------------------------------- the schema itself


def _refs(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if "$ref" in node:
            yield node
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_the_schema_is_draft_07_with_every_reference_resolved() -> None:
    schema = flow_json_schema()
    Draft7Validator.check_schema(schema)
    assert schema["$schema"] == DIALECT
    assert "$defs" not in json.dumps(schema)
    definitions = schema["definitions"]
    for ref in _refs(schema):
        # Draft-07 ignores a `$ref`'s siblings: a description there would never show.
        assert set(ref) == {"$ref"}, ref
        assert ref["$ref"].removeprefix("#/definitions/") in definitions, ref


def test_every_task_type_and_trigger_type_has_its_schema_under_each_name() -> None:
    schema = flow_json_schema()["definitions"]
    names = {name for plugin in plugins() for name in (plugin.type, *plugin.aliases)}
    assert set(schema["task"]["properties"]["type"]["enum"]) == names
    for plugin in plugins():
        kind = schema[f"task.{plugin.type}"]
        assert kind["properties"]["type"]["enum"] == [plugin.type, *plugin.aliases]
    triggers = set(TRIGGER_TYPES) | set(TRIGGER_ALIASES)
    assert set(schema["trigger"]["properties"]["type"]["enum"]) == triggers


def test_every_validator_of_the_installed_models_is_read() -> None:
    # A new `mode="before"` validator may accept more than its field's type: say how
    # in headrace/flow_schema.py (_WIDENING or _SAME_INPUT), or declare
    # `json_schema_input_type` on it.
    assert unread_validators() == ()


def test_every_key_of_the_flow_language_has_help_for_hovering() -> None:
    schema = flow_json_schema()
    connectors = {plugin.type for plugin in plugins() if plugin.kind == CONNECTOR}
    places = {"flow": schema, **schema["definitions"]}
    lacking = []
    for name, node in places.items():
        if any(name == f"task.{c}" or name.startswith(f"{c}.") for c in connectors):
            continue  # a connector's own properties: the connector's to describe
        for key, value in node.get("properties", {}).items():
            # `task.type` and `trigger.type` leave hovering to the chosen type's schema.
            if not value.get("description") and name not in ("task", "trigger"):
                lacking.append(f"{name}.{key}")
    assert lacking == []


def test_the_shipped_schema_is_the_generated_one() -> None:
    shipped = SHIPPED.read_bytes() if SHIPPED.exists() else b""
    assert shipped == flow_json_schema_bytes(), (
        f"docs/flow.schema.json is out of date: run `{REGENERATE}`"
    )


# ------------------------------------------------------- flows the loader accepts


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_flow_is_valid_against_the_schema(path: Path) -> None:
    assert_both_accept(path.read_text(encoding="utf-8"))


def _docs_flows() -> list[Any]:
    found = []
    for number, example in enumerate(docs_examples()):
        for part, document in enumerate(example.documents):
            try:
                load_flow(document)
            except FlowValidationError:
                continue  # an example of an error: see the cases below
            found.append(pytest.param(document, id=f"block{number}-{part}"))
    return found


@pytest.mark.parametrize("text", _docs_flows())
def test_every_docs_flow_the_loader_accepts_is_valid_against_the_schema(text: str) -> None:
    assert [(list(e.absolute_path), e.message) for e in schema_errors(text)] == []


# ---------------------------------------------------- flows the loader refuses

BAD_FLOWS = {
    "a misspelt task property": HEAD
    + "tasks:\n  - id: t\n    type: log\n    message: hi\n    levl: INFO\n",
    "a wrong type for retry.maxAttempts": HEAD
    + "tasks:\n  - id: t\n    type: shell\n    commands: [exit 1]\n"
    "    retry: {type: constant, interval: PT1S, maxAttempts: three}\n",
    "an unknown task type": HEAD + "tasks:\n  - id: t\n    type: shel\n    commands: [ls]\n",
    "a task without an id": HEAD + "tasks:\n  - type: log\n    message: hi\n",
    "a flow without an id": "namespace: company.team\ntasks:\n  - {id: t, type: log, message: hi}\n",
    "an unknown trigger property": HEAD + "tasks:\n  - {id: t, type: log, message: hi}\n"
    "triggers:\n  - id: s\n    type: schedule\n    cron: '@daily'\n    timezon: UTC\n",
    "an unknown trigger type": HEAD
    + "tasks:\n  - {id: t, type: log, message: hi}\ntriggers:\n  - {id: s, type: cron}\n",
    "a missing required property": HEAD + "tasks:\n  - id: t\n    type: log\n",
    "a misspelt property in a task nested in a Kestra-named flowable": HEAD
    + "tasks:\n  - id: p\n    type: io.kestra.plugin.core.flow.Parallel\n    tasks:\n"
    "      - id: t\n        type: log\n        message: hi\n        mesage: hi\n",
    "a misspelt property in a dag's task": HEAD
    + "tasks:\n  - id: d\n    type: flow.dag\n    tasks:\n"
    "      - task: {id: t, type: log, message: hi, levle: WARN}\n",
    "a choice the type does not have": HEAD
    + "tasks:\n  - id: t\n    type: log\n    message: hi\n    level: LOUD\n",
    "a duration that is not ISO-8601": HEAD
    + "tasks:\n  - id: t\n    type: shell\n    commands: [ls]\n    timeout: 10s\n",
    "an expression as a task's timeout": HEAD
    + "tasks:\n  - id: t\n    type: shell\n    commands: [ls]\n    timeout: '{{ vars.t }}'\n",
    "a timeout on a flowable task": HEAD
    + "tasks:\n  - id: p\n    type: flow.sequential\n    timeout: PT1M\n    tasks:\n"
    "      - {id: t, type: log, message: hi}\n",
    "an unknown top-level key": HEAD + "task:\n  - {id: t, type: log, message: hi}\n",
    "an id with a space": HEAD + "tasks:\n  - {id: my task, type: log, message: hi}\n",
    "an unknown input key": HEAD
    + "inputs:\n  - {id: n, type: INT, default: 3}\ntasks:\n  - {id: t, type: log, message: hi}\n",
    "a number where a typed property wants a boolean": HEAD
    + "tasks:\n  - id: c\n    type: kafka.consume\n    properties: {bootstrap.servers: 'k:9092'}\n"
    "    topic: t\n    store: maybe\n",
}


@pytest.mark.parametrize("text", BAD_FLOWS.values(), ids=BAD_FLOWS.keys())
def test_the_schema_flags_what_the_loader_refuses_where_the_loader_does(text: str) -> None:
    refused = loader_locations(text)
    flagged = schema_locations(text)
    assert refused and refused <= flagged, (refused, flagged)


# -------------------------------------------------------------------- expressions

RENDERED = {
    "a number": "    maxRecords: '{{ inputs.n }}'\n",
    "a boolean, by a statement": "    store: '{% if inputs.big %}true{% else %}false{% endif %}'\n",
    "a duration": "    pollDuration: '{{ vars.poll }}'\n",
    "a choice": "    keyDeserializer: '{{ vars.serde }}'\n",
    "a whole mapping": "    properties: '{{ vars.kafka }}'\n",
    "a value in a mapping": "    properties:\n      bootstrap.servers: k:9092\n"
    "      request.timeout.ms: '{{ vars.ms }}'\n",
}


@pytest.mark.parametrize("line", RENDERED.values(), ids=RENDERED.keys())
def test_an_expression_is_accepted_wherever_a_worker_task_property_is_typed(line: str) -> None:
    task = "tasks:\n  - id: c\n    type: kafka.consume\n    topic: t\n"
    if "properties:" not in line:
        task += "    properties: {bootstrap.servers: 'k:9092'}\n"
    assert_both_accept(HEAD + task + line)


def test_an_expression_is_accepted_in_a_list_item_and_under_a_kestra_name() -> None:
    assert_both_accept(
        HEAD + "tasks:\n  - id: l\n    type: io.kestra.plugin.core.log.Log\n    message: hi\n"
        "    level: '{{ inputs.level }}'\n  - id: p\n    type: kafka.produce\n"
        "    properties: {bootstrap.servers: 'k:9092'}\n    topic: t\n"
        "    from: [{value: a}, '{{ outputs.l }}']\n"
    )


def test_text_without_an_expression_in_a_typed_property_is_flagged() -> None:
    text = (
        HEAD + "tasks:\n  - id: c\n    type: kafka.consume\n    topic: t\n"
        "    properties: {bootstrap.servers: 'k:9092'}\n    maxRecords: ten\n"
    )
    assert loader_locations(text) == schema_locations(text) == {"tasks[0].maxRecords"}


@pytest.mark.parametrize(
    "task",
    [
        "{id: p, type: flow.parallel, concurrency: '{{ vars.n }}', tasks: [{id: t, type: log,"
        " message: hi}]}",
        "{id: p, type: flow.pause, delay: '{{ vars.delay }}'}",
    ],
)
def test_an_expression_is_flagged_where_nothing_renders_it(task: str) -> None:
    # The core reads flowables' properties as written: such a flow could never run.
    assert schema_locations(HEAD + f"tasks:\n  - {task}\n")


# ------------------------------------------------------- other forms the models take


ACCEPTED = {
    "a Kestra-named type with its properties": "tasks:\n  - id: t\n"
    "    type: io.kestra.plugin.scripts.shell.Commands\n    commands: [ls]\n"
    "    env: {A: b}\n",
    "dbt's `thread`, Kestra's name for `threads`": "tasks:\n  - id: t\n    type: dbt.build\n"
    "    projectDir: /dbt\n    thread: 4\n",
    "dbt's `select` as one selector": "tasks:\n  - id: t\n    type: dbt.run\n"
    "    projectDir: /dbt\n    select: orders\n",
    "kafka.produce's `from` as one record": "tasks:\n  - id: t\n    type: kafka.produce\n"
    "    properties: {bootstrap.servers: 'k:9092'}\n    topic: t\n    from: {value: 1}\n",
    "labels as Kestra's list, with a number": "labels:\n  - {key: team, value: data}\n"
    "  - {key: tier, value: 1}\ntasks:\n  - {id: t, type: log, message: hi}\n",
    "a flowable's nested tasks, any depth": "tasks:\n  - id: s\n    type: flow.switch\n"
    "    value: '{{ inputs.x }}'\n    cases:\n      a:\n        - id: i\n"
    "          type: flow.if\n          condition: true\n          then:\n"
    "            - {id: t, type: log, message: hi}\n",
    "a trigger under Kestra's name": "tasks:\n  - {id: t, type: log, message: hi}\n"
    "triggers:\n  - id: s\n    type: io.kestra.plugin.core.trigger.Schedule\n"
    "    cron: '0 2 * * *'\n    timezone: Europe/Paris\n",
}


@pytest.mark.parametrize("body", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_forms_the_loader_accepts_are_valid(body: str) -> None:
    assert_both_accept(HEAD + body)


def test_a_kestra_named_type_refuses_another_types_property() -> None:
    text = HEAD + "tasks:\n  - id: t\n    type: io.kestra.plugin.core.log.Log\n    commands: [ls]\n"
    assert loader_locations(text) <= schema_locations(text)
    assert "tasks[0].commands" in schema_locations(text)


def test_plugin_defaults_may_supply_a_required_property() -> None:
    task = "tasks:\n  - id: t\n    type: io.kestra.plugin.core.log.Log\n"
    defaults = "pluginDefaults:\n  - type: log\n    values: {message: from the defaults}\n"
    assert_both_accept(HEAD + defaults + task)
    # Without them the property is missing, for both; a misspelt one is flagged either way.
    assert loader_locations(HEAD + task) == schema_locations(HEAD + task) == {"tasks[0].message"}
    misspelt = HEAD + defaults + task + "    mesage: hi\n"
    assert loader_locations(misspelt) == schema_locations(misspelt) == {"tasks[0].mesage"}


DURATIONS = [
    *("PT10S", "PT0.1S", "PT1,5S", "PT5M", "PT1H", "P1D", "P1W", "P1W2D", "P1DT2H3M4.5S"),
    *(" PT1M ", "+PT1S", "PT", "P1DT", "P0Y1D", "PT1H2S"),
    *("10s", "10", "P", "P1M", "P1Y", "-PT1S", "PT-1S", "pt10s", "P1.5Y", "PT1S2M", "T1S", "1D"),
]


@pytest.mark.parametrize("text", DURATIONS)
def test_the_duration_pattern_reads_durations_as_the_loader_does(text: str) -> None:
    try:
        parse_duration(text)
        accepted = True
    except ValueError:
        accepted = False
    assert (re.search(DURATION_PATTERN, text) is not None) == accepted


# ------------------------------------------------------------------------- the CLI


def test_flow_schema_prints_the_schema_or_writes_it_to_a_file(tmp_path: Path) -> None:
    printed = CliRunner().invoke(cli, ["flow", "schema"])
    assert printed.exit_code == 0, printed.output
    assert json.loads(printed.output) == flow_json_schema()
    target = tmp_path / "flow.schema.json"
    written = CliRunner().invoke(cli, ["flow", "schema", "-o", str(target)])
    assert written.exit_code == 0, written.output
    assert target.read_bytes() == flow_json_schema_bytes()
    assert written.output == f"wrote {target}\n"


def test_flow_schema_says_why_it_cannot_write_the_file(tmp_path: Path) -> None:
    target = tmp_path / "missing" / "flow.schema.json"
    result = CliRunner().invoke(cli, ["flow", "schema", "--output", str(target)])
    assert result.exit_code != 0
    assert f"cannot write {target}: No such file or directory" in str(result.exception)
