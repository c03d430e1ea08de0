"""The flow loader: good flows become `Flow` values; bad ones say where and why."""

from __future__ import annotations

import textwrap
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headrace.flow import FlowError, FlowValidationError, load_flow, load_flow_file

NIGHTLY = """\
id: nightly-elt
namespace: company.data
description: Loads the warehouse every night.
labels:
  team: data
inputs:
  - id: full_refresh
    type: BOOLEAN
    defaults: false
  - id: since
    type: DATETIME
    required: false
  - id: batch_size
    type: INT
    defaults: 500
tasks:
  - id: announce
    type: log
    message: "{{ flow.id }} starts, full refresh: {{ inputs.full_refresh }}"
  - id: extract
    type: shell
    commands:
      - ./extract.sh --since "{{ inputs.since }}"
      - echo done
    env:
      API_TOKEN: "{{ secret('API_TOKEN') }}"
    workingDirectory: /srv/elt
    retry: {type: exponential, interval: PT10S, maxAttempts: 5, maxInterval: PT5M}
    timeout: PT1H
  - id: transform
    type: python
    script: |
      import json
      print(json.dumps({"rows": {{ inputs.batch_size }}}))
    retry:
      type: constant
      interval: PT0.1S
      maxAttempts: 3
errors:
  - id: alert
    type: log
    level: ERROR
    message: "{{ flow.id }} failed: {{ execution.id }}"
finally:
  - id: goodbye
    type: log
    message: bye
triggers:
  - id: every-night
    type: schedule
    cron: "0 2 * * *"
    timezone: Europe/Paris
"""


def errors_of(text: str) -> list[FlowError]:
    with pytest.raises(FlowValidationError) as caught:
        load_flow(textwrap.dedent(text), "flow.yaml")
    return caught.value.errors


def only_error(text: str) -> FlowError:
    errors = errors_of(text)
    assert len(errors) == 1, errors
    return errors[0]


# ------------------------------------------------------------------ good flows


def test_a_realistic_flow_loads_with_every_section() -> None:
    flow = load_flow(NIGHTLY, "nightly.yaml")

    assert (flow.id, flow.namespace, flow.labels) == (
        "nightly-elt",
        "company.data",
        {"team": "data"},
    )
    assert [i.id for i in flow.inputs] == ["full_refresh", "since", "batch_size"]
    assert flow.inputs[1].required is False
    assert [t.id for t in flow.tasks] == ["announce", "extract", "transform"]
    extract = flow.task("extract")
    assert extract.properties == {
        "commands": ['./extract.sh --since "{{ inputs.since }}"', "echo done"],
        "env": {"API_TOKEN": "{{ secret('API_TOKEN') }}"},
        "workingDirectory": "/srv/elt",
    }
    assert extract.timeout == timedelta(hours=1)
    assert extract.retry is not None
    assert extract.retry.max_attempts == 5
    assert extract.retry.delay_before(2) == timedelta(seconds=10)
    assert extract.retry.delay_before(4) == timedelta(seconds=40)
    assert extract.retry.delay_before(10) == timedelta(minutes=5)  # capped by maxInterval
    assert flow.task("transform").retry.interval == timedelta(milliseconds=100)
    assert [t.id for t in flow.errors] == ["alert"]
    assert [t.id for t in flow.finally_] == ["goodbye"]
    assert flow.task("goodbye").properties == {"message": "bye"}
    assert flow.triggers[0].properties == {"cron": "0 2 * * *", "timezone": "Europe/Paris"}


def test_a_minimal_flow_loads() -> None:
    flow = load_flow("id: hello\nnamespace: demo\ntasks:\n  - {id: hi, type: log, message: hi}\n")
    assert flow.tasks[0].properties == {"message": "hi"}
    assert flow.inputs == [] and flow.errors == [] and flow.triggers == []


def test_templates_may_stand_where_a_property_needs_another_type() -> None:
    flow = load_flow(
        textwrap.dedent("""\
        id: dynamic
        namespace: demo
        tasks:
          - id: run
            type: shell
            commands: "{{ inputs.commands }}"
            env: "{{ outputs.setup.env }}"
          - id: say
            type: log
            message: hi
            level: "{{ inputs.level }}"
        """)
    )
    assert flow.task("run").properties["commands"] == "{{ inputs.commands }}"


def test_load_flow_file_reads_the_file_and_names_it_in_errors(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(NIGHTLY)
    assert load_flow_file(good).id == "nightly-elt"

    bad = tmp_path / "bad.yaml"
    bad.write_text("id: x\nnamespace: demo\ntasks: []\n")
    with pytest.raises(FlowValidationError) as caught:
        load_flow_file(bad)
    assert str(caught.value).startswith(f"{bad}:3:8: tasks: a flow needs at least one task")


def test_a_missing_file_is_a_flow_error(tmp_path: Path) -> None:
    with pytest.raises(FlowValidationError, match="cannot read the file"):
        load_flow_file(tmp_path / "absent.yaml")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("PT0.1S", timedelta(milliseconds=100)),
        ("PT10S", timedelta(seconds=10)),
        ("PT1H", timedelta(hours=1)),
        ("P1D", timedelta(days=1)),
        ("PT1M30S", timedelta(seconds=90)),
    ],
)
def test_iso_durations_are_accepted(text: str, expected: timedelta) -> None:
    flow = load_flow(
        f"id: d\nnamespace: n\ntasks:\n  - {{id: t, type: log, message: m, timeout: {text}}}\n"
    )
    assert flow.tasks[0].timeout == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("10s", "invalid duration '10s'"),
        ("garbage", "invalid duration 'garbage'"),
        ("P1M", "months or years"),
        ("-PT1S", "is negative"),
        ("10", "expected a string like PT10S"),
        ("PT0S", "timeout must be longer than zero"),
    ],
)
def test_bad_durations_name_the_field(text: str, message: str) -> None:
    error = only_error(f"""\
        id: d
        namespace: n
        tasks:
          - id: t
            type: log
            message: m
            timeout: {text}
        """)
    assert (error.path, error.line, error.column) == ("tasks[0].timeout", 7, 14)
    assert message in error.message


# ---------------------------------------------------------- one error per kind


def test_invalid_yaml_gives_the_parser_position() -> None:
    error = only_error("id: x\nnamespace: n\ntasks: [\n  {id: a, type: log\n")
    assert error.path == ""
    assert error.line == 5 and error.column == 1
    assert error.message.startswith("invalid YAML:")


def test_duplicate_yaml_keys_are_invalid_yaml() -> None:
    error = only_error("id: x\nnamespace: n\nid: y\ntasks: []\n")
    assert error.line == 3
    assert "duplicate key" in error.message


@pytest.mark.parametrize(
    ("text", "found"),
    [("", "an empty document"), ("- id: x\n", "a list"), ("just text\n", "'just text'")],
)
def test_the_top_level_must_be_a_mapping(text: str, found: str) -> None:
    error = only_error(text)
    assert error.message == f"a flow must be a YAML mapping, found {found}"


def test_missing_id_namespace_and_tasks_are_all_reported() -> None:
    errors = errors_of("description: nothing else\n")
    assert [(e.path, e.message) for e in errors] == [
        ("id", "is required"),
        ("namespace", "is required"),
        ("tasks", "is required"),
    ]
    assert all(e.line == 1 and e.hint for e in errors)


def test_invalid_id_and_namespace_explain_the_rule() -> None:
    errors = errors_of(
        "id: my flow\nnamespace: Company.Data\ntasks: [{id: t, type: log, message: m}]\n"
    )
    assert [(e.path, e.line, e.column) for e in errors] == [("id", 1, 5), ("namespace", 2, 12)]
    assert errors[0].message == "invalid value 'my flow'"
    assert "letters, digits" in errors[0].hint
    assert "lowercase" in errors[1].hint


def test_an_empty_task_list_is_refused() -> None:
    error = only_error("id: x\nnamespace: n\ntasks: []\n")
    assert (error.path, error.line, error.message) == ("tasks", 3, "a flow needs at least one task")


def test_unknown_top_level_keys_suggest_the_right_one() -> None:
    error = only_error(
        "id: x\nnamespace: n\ntask:\n  - {id: a, type: log, message: m}\n"
        "tasks: [{id: t, type: log, message: m}]\n"
    )
    assert (error.path, error.line, error.column) == ("task", 3, 1)
    assert error.message == "unknown key 'task'"
    assert error.hint.startswith("did you mean 'tasks'?")


def test_unknown_task_types_suggest_and_list_the_known_ones() -> None:
    error = only_error("""\
        id: x
        namespace: n
        tasks:
          - id: a
            type: shel
            commands: [ls]
        """)
    assert (error.path, error.line, error.column) == ("tasks[0].type", 5, 11)
    assert error.message == "unknown task type 'shel'"
    assert error.hint.startswith("did you mean 'shell'?")
    assert "known types: " in error.hint and "log" in error.hint


def test_task_ids_are_unique_across_tasks_errors_and_finally() -> None:
    errors = errors_of("""\
        id: x
        namespace: n
        tasks:
          - {id: a, type: log, message: m}
          - {id: a, type: log, message: m}
        errors:
          - {id: a, type: log, message: m}
        """)
    assert [(e.path, e.line) for e in errors] == [("tasks[1].id", 5), ("errors[0].id", 7)]
    assert errors[0].message == "duplicate task id 'a'"
    assert errors[0].hint == "first used at line 4"


def test_retry_policies_are_checked_field_by_field() -> None:
    errors = errors_of("""\
        id: x
        namespace: n
        tasks:
          - id: a
            type: log
            message: m
            retry:
              type: linear
              interval: 10s
              maxAttempts: 0
        """)
    assert [(e.path, e.line, e.column) for e in errors] == [
        ("tasks[0].retry.type", 8, 13),
        ("tasks[0].retry.interval", 9, 17),
        ("tasks[0].retry.maxAttempts", 10, 20),
    ]
    assert errors[0].message == "must be 'constant', 'exponential' or 'random', got 'linear'"
    assert "ISO-8601" in errors[1].hint
    assert errors[2].message == "must be greater than or equal to 1, got 0"


def test_a_misspelt_retry_key_is_unknown_where_written() -> None:
    errors = errors_of("""\
        id: x
        namespace: n
        tasks:
          - id: a
            type: log
            message: m
            retry: {type: constant, interval: PT1S, maxAtempts: 3}
        """)
    # maxAttempts is optional (as in Kestra): the typo alone is reported, at itself.
    assert [(e.path, e.line, e.column, e.message) for e in errors] == [
        ("tasks[0].retry.maxAtempts", 7, 45, "unknown key 'maxAtempts'"),
    ]
    assert errors[0].hint.startswith("did you mean 'maxAttempts'?")


def test_connector_properties_unknown_and_missing() -> None:
    errors = errors_of("""\
        id: x
        namespace: n
        tasks:
          - id: a
            type: log
            mesage: hello
          - id: b
            type: shell
            commands: []
            workingDir: /tmp
        """)
    assert [(e.path, e.line) for e in errors] == [
        ("tasks[0].message", 4),
        ("tasks[0].mesage", 6),
        ("tasks[1].commands", 9),
        ("tasks[1].workingDir", 10),
    ]
    assert errors[0].message == "property 'message' is required by task type 'log'"
    assert errors[1].message == "unknown property 'mesage' for task type 'log'"
    assert errors[1].hint.startswith("did you mean 'message'?")
    assert "workingDirectory" in errors[3].hint


def test_template_values_still_need_known_properties() -> None:
    errors = errors_of("""\
        id: x
        namespace: n
        tasks:
          - id: a
            type: log
            text: "{{ inputs.text }}"
        """)
    assert {e.path for e in errors} == {"tasks[0].message", "tasks[0].text"}


def test_property_types_are_checked_when_not_templates() -> None:
    error = only_error("""\
        id: x
        namespace: n
        tasks:
          - id: a
            type: log
            message: hi
            level: LOUD
        """)
    assert (error.path, error.line, error.column) == ("tasks[0].level", 7, 12)
    assert "got 'LOUD'" in error.message


def test_template_syntax_errors_name_the_property() -> None:
    errors = errors_of("""\
        id: x
        namespace: n
        tasks:
          - id: a
            type: log
            message: "{{ inputs.name }"
          - id: b
            type: shell
            commands:
              - echo ok
              - "echo {% if x %}yes"
            env:
              A: "{{ inputs.a | nosuchfilter }}"
        """)
    assert [(e.path, e.line) for e in errors] == [
        ("tasks[0].message", 6),
        ("tasks[1].commands[1]", 11),
        ("tasks[1].env.A", 13),
    ]
    assert all(e.message.startswith("template syntax error:") for e in errors)
    assert "nosuchfilter" in errors[2].message


def test_input_definitions_are_checked() -> None:
    errors = errors_of("""\
        id: x
        namespace: n
        inputs:
          - id: size
            type: INT
            defaults: 1.5
          - id: size
            type: STRING
          - id: when
            type: DATETIME
            defaults: yesterday
          - id: kind
            type: TEXT
        tasks:
          - {id: a, type: log, message: m}
        """)
    assert [(e.path, e.line) for e in errors] == [
        ("inputs[0].defaults", 6),
        ("inputs[1].id", 7),
        ("inputs[2].defaults", 11),
        ("inputs[3].type", 13),
    ]
    assert errors[0].message == "invalid default: expected an integer, got 1.5"
    assert errors[1].message == "duplicate input id 'size'"
    assert "ISO-8601" in errors[2].message


def test_trigger_ids_are_unique() -> None:
    error = only_error("""\
        id: x
        namespace: n
        tasks:
          - {id: a, type: log, message: m}
        triggers:
          - {id: t, type: schedule, cron: "* * * * *"}
          - {id: t, type: schedule, cron: "0 * * * *"}
        """)
    assert (error.path, error.line, error.message) == (
        "triggers[1].id",
        7,
        "duplicate trigger id 't'",
    )


def test_a_task_that_is_not_a_mapping() -> None:
    error = only_error("id: x\nnamespace: n\ntasks:\n  - just a string\n")
    assert (error.path, error.line, error.column) == ("tasks[0]", 4, 5)
    assert error.message.startswith("must be a mapping")


# ------------------------------------------------------------ many at once


def test_several_errors_are_reported_together_in_line_order() -> None:
    with pytest.raises(FlowValidationError) as caught:
        load_flow(
            textwrap.dedent("""\
            id: bad flow
            namespace: demo
            colour: blue
            tasks:
              - id: a
                type: shel
              - id: a
                type: log
                message: "{{ x }"
                timeout: 5m
            """),
            "bad.yaml",
        )
    error = caught.value
    assert [(e.line, e.path) for e in error.errors] == [
        (1, "id"),
        (3, "colour"),
        (6, "tasks[0].type"),
        (7, "tasks[1].id"),
        (9, "tasks[1].message"),
        (10, "tasks[1].timeout"),
    ]
    lines = str(error).splitlines()
    assert len(lines) == 6
    assert lines[0] == (
        "bad.yaml:1:5: id: invalid value 'bad flow' "
        "(hint: ids use letters, digits, '_' and '-', and start with a letter or a digit)"
    )
    assert lines[5].startswith("bad.yaml:10:14: tasks[1].timeout: invalid duration '5m' (hint: ")
    as_json = error.to_json()
    assert as_json[2] == {
        "path": "tasks[0].type",
        "line": 6,
        "column": 11,
        "message": "unknown task type 'shel'",
        "hint": error.errors[2].hint,
    }


def test_an_alias_bomb_is_refused_quickly() -> None:
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        levels.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    text = "id: x\nnamespace: n\n" + "\n".join(levels) + "\ntasks: *a8\n"
    error = only_error(text)
    assert "more than" in error.message


_YAML_ALPHABET = "abt:-[]{},'\"\n #&*!|>?%@`\t0123456789.{}"
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.text(max_size=8),
    st.sampled_from(["{{ x", "PT1S"]),
)
_KEYS = st.sampled_from(["id", "namespace", "tasks", "type", "message", "retry", "inputs", "x"])
_TREES = st.recursive(
    _SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_KEYS, children, max_size=5),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(text=st.text(alphabet=_YAML_ALPHABET, max_size=80))
def test_any_text_loads_or_gives_flow_errors(text: str) -> None:
    try:
        load_flow(text)
    except FlowValidationError as error:
        assert error.errors
        assert all(e.line is None or e.line >= 1 for e in error.errors)


@settings(max_examples=150, deadline=None)
@given(tree=st.dictionaries(_KEYS, _TREES, max_size=6))
def test_any_structure_loads_or_gives_located_errors(tree: dict) -> None:
    text = orjson.dumps(tree).decode()  # JSON is YAML
    try:
        load_flow(text)
    except FlowValidationError as error:
        assert error.errors
        assert all(e.line is not None for e in error.errors)


def test_valid_flows_are_cached_and_errors_keep_their_source() -> None:
    assert load_flow(NIGHTLY, "a.yaml") is load_flow(NIGHTLY, "b.yaml")
    bad = "id: x\nnamespace: n\ntasks: []\n"
    for source in ("first.yaml", "second.yaml"):
        with pytest.raises(FlowValidationError) as caught:
            load_flow(bad, source)
        assert caught.value.source == source
        assert str(caught.value).startswith(f"{source}:3:8: ")


# --------------------------------------------------- flow properties (issue 5)

PROPERTIES = """\
id: properties
namespace: demo
labels:
  - {key: team, value: data}
  - {key: priority, value: 1}
variables:
  greeting: "hello {{ inputs.who }}"
  static: 42
outputs:
  - id: message
    type: STRING
    value: "{{ vars.greeting }}"
  - id: rows
    value: "{{ outputs.count.rows }}"
concurrency:
  limit: 2
  behavior: CANCEL
disabled: true
inputs:
  - {id: who, type: STRING, defaults: world}
tasks:
  - {id: count, type: log, message: hi}
"""


def test_flow_properties_load() -> None:
    flow = load_flow(PROPERTIES)
    assert flow.labels == {"team": "data", "priority": "1"}
    assert flow.variables == {"greeting": "hello {{ inputs.who }}", "static": 42}
    assert [(o.id, o.type, o.value) for o in flow.outputs] == [
        ("message", "STRING", "{{ vars.greeting }}"),
        ("rows", None, "{{ outputs.count.rows }}"),
    ]
    assert flow.concurrency is not None
    assert (flow.concurrency.limit, flow.concurrency.behavior) == (2, "CANCEL")
    assert flow.disabled is True


def test_flow_properties_default_to_off() -> None:
    flow = load_flow("id: a\nnamespace: n\ntasks:\n  - {id: t, type: log, message: m}\n")
    assert (flow.variables, flow.outputs, flow.concurrency, flow.disabled) == ({}, [], None, False)
    assert flow.concurrency is None and flow.plugin_defaults == []


def test_labels_as_a_map_keep_working_and_scalars_become_text() -> None:
    flow = load_flow(
        "id: a\nnamespace: n\nlabels: {team: data, n: 2, on: true}\n"
        "tasks:\n  - {id: t, type: log, message: m}\n"
    )
    assert flow.labels == {"team": "data", "n": "2", "on": "true"}


@pytest.mark.parametrize(
    ("snippet", "path", "message"),
    [
        ("labels:\n  - {key: a}\n", "labels", "item 0 must be a mapping with `key` and `value`"),
        (
            "labels:\n  - {key: a, value: b}\n  - {key: a, value: c}\n",
            "labels",
            "label 'a' is given twice",
        ),
        ("concurrency: {limit: 0}\n", "concurrency.limit", "greater than or equal to 1"),
        ("concurrency: {limit: 1, behavior: WAIT}\n", "concurrency.behavior", "'QUEUE'"),
        ("concurrency: {behavior: FAIL}\n", "concurrency.limit", "is required"),
        ("disabled: maybe\n", "disabled", "valid boolean"),
        ("variables: [a]\n", "variables", "must be a mapping"),
        ("outputs:\n  - {id: o}\n", "outputs[0].value", "is required"),
        ("outputs:\n  - {id: o, value: '{{ x '}\n", "outputs[0].value", "template syntax"),
        ("variables:\n  a: '{% if %}'\n", "variables.a", "template syntax"),
        ("pluginDefaults:\n  - {type: log}\n", "pluginDefaults[0].values", "is required"),
        ("pluginDefaults:\n  - {values: {}}\n", "pluginDefaults[0].type", "is required"),
    ],
)
def test_bad_flow_properties_name_the_path(snippet: str, path: str, message: str) -> None:
    errors = errors_of(
        "id: a\nnamespace: n\n" + snippet + "tasks:\n  - {id: t, type: log, message: m}\n"
    )
    assert any(e.path == path and message in e.message for e in errors), errors
    assert all(e.line is not None for e in errors)


def test_duplicate_output_ids_are_refused() -> None:
    error = only_error("""\
        id: a
        namespace: n
        outputs:
          - {id: o, value: "1"}
          - {id: o, value: "2"}
        tasks:
          - {id: t, type: log, message: m}
        """)
    assert (error.path, error.line, error.message) == (
        "outputs[1].id",
        5,
        "duplicate output id 'o'",
    )
    assert error.hint == "first used at line 4"


@pytest.mark.parametrize(
    ("definition", "path", "message"),
    [
        ("{id: e, type: ENUM}", "inputs[0].type", "an ENUM input needs a non-empty `values`"),
        ("{id: e, type: SELECT, values: []}", "inputs[0].values", "a SELECT input needs"),
        (
            "{id: e, type: SELECT, values: [a], defaults: b}",
            "inputs[0].defaults",
            "invalid default",
        ),
        ("{id: e, type: ARRAY}", "inputs[0].type", "an ARRAY input needs `itemType`"),
        ("{id: e, type: ARRAY, itemType: FILE}", "inputs[0].itemType", "items cannot be FILE"),
        ("{id: e, type: STRING, itemType: INT}", "inputs[0].itemType", "only applies to ARRAY"),
        ("{id: e, type: INT, validator: x}", "inputs[0].validator", "applies to STRING inputs"),
        ("{id: e, type: STRING, validator: '('}", "inputs[0].validator", "invalid regular"),
        ("{id: e, type: STRING, min: 1}", "inputs[0].min", "applies to FLOAT and INT inputs"),
        ("{id: e, type: INT, min: 5, max: 1}", "inputs[0].min", "min 5 is above max 1"),
        ("{id: e, type: INT, max: 1, defaults: 2}", "inputs[0].defaults", "more than the maximum"),
        ("{id: e, type: DATETIME, after: soon}", "inputs[0].after", "ISO-8601"),
        ("{id: e, type: BOOLEAN, values: [a]}", "inputs[0].values", "applies to ENUM and SELECT"),
        ("{id: e, type: URI, defaults: nowhere}", "inputs[0].defaults", "absolute URI"),
        ("{id: e, type: ARRAY, itemType: INT, defaults: [a]}", "inputs[0].defaults", "item 0"),
        ("{id: e, type: STRING, displayname: x}", "inputs[0].displayname", "unknown key"),
    ],
)
def test_bad_input_definitions_are_refused_at_load(
    definition: str, path: str, message: str
) -> None:
    error = only_error(f"""\
        id: a
        namespace: n
        inputs:
          - {definition}
        tasks:
          - {{id: t, type: log, message: m}}
        """)
    assert error.path == path and message in error.message, error
    assert error.line == 4


def test_a_missing_values_list_has_a_hint() -> None:
    error = only_error("""\
        id: a
        namespace: n
        inputs:
          - id: env
            type: SELECT
        tasks:
          - {id: t, type: log, message: m}
        """)
    assert (error.path, error.line, error.column) == ("inputs[0].type", 5, 11)
    assert error.hint == "list the choices, e.g. `values: [dev, prod]`"


# ---------------------------------------------------------------- pluginDefaults

DEFAULTS = """\
id: defaults
namespace: demo
pluginDefaults:
  - type: log
    values: {level: WARN, message: from the defaults}
  - type: shell
    forced: true
    values:
      env: {A: forced}
tasks:
  - {id: own, type: log, message: mine}
  - {id: bare, type: log}
  - id: sh
    type: shell
    commands: [env]
    env: {A: own, B: kept}
errors:
  - {id: alert, type: log, level: ERROR}
"""


def test_plugin_defaults_fill_what_a_task_leaves_unset() -> None:
    flow = load_flow(DEFAULTS)
    assert flow.task("own").properties == {"level": "WARN", "message": "mine"}
    assert flow.task("bare").properties == {"level": "WARN", "message": "from the defaults"}
    assert flow.task("alert").properties == {"level": "ERROR", "message": "from the defaults"}
    assert flow.plugin_defaults[0].type == "log"


def test_forced_plugin_defaults_win_and_maps_merge_key_by_key() -> None:
    flow = load_flow(DEFAULTS)
    assert flow.task("sh").properties["env"] == {"A": "forced", "B": "kept"}


def test_plugin_defaults_are_validated_like_the_task_own_properties() -> None:
    errors = errors_of("""\
        id: a
        namespace: n
        pluginDefaults:
          - {type: log, values: {colour: red}}
        tasks:
          - {id: t, type: log, message: m}
        """)
    assert [(e.path, e.message) for e in errors] == [
        ("tasks[0].colour", "unknown property 'colour' for task type 'log'")
    ]


def test_plugin_defaults_reach_nested_tasks_and_never_change_id_or_type() -> None:
    from headrace.flow.plugin_defaults import apply_plugin_defaults

    data = {
        "tasks": [
            {
                "id": "par",
                "type": "parallel",
                "tasks": [{"id": "inner", "type": "log"}],
                "then": {"branch": [{"id": "deep", "type": "log", "level": "ERROR"}]},
            }
        ]
    }
    merged = apply_plugin_defaults(
        data, [("log", {"id": "x", "type": "y", "level": "INFO", "message": "m"}, False)]
    )
    inner = merged["tasks"][0]["tasks"][0]
    deep = merged["tasks"][0]["then"]["branch"][0]
    assert inner == {"id": "inner", "type": "log", "level": "INFO", "message": "m"}
    assert deep == {"id": "deep", "type": "log", "level": "ERROR", "message": "m"}
    assert "message" not in merged["tasks"][0]
    assert data["tasks"][0]["tasks"][0] == {"id": "inner", "type": "log"}  # input untouched


def test_plugin_defaults_match_kestra_aliases_and_nested_flowable_tasks() -> None:
    flow = load_flow("""\
id: aliases
namespace: demo
pluginDefaults:
  - type: io.kestra.plugin.core.log.Log
    values: {level: WARN}
tasks:
  - id: par
    type: io.kestra.plugin.core.flow.Parallel
    tasks:
      - {id: a, type: log, message: hi}
      - id: b
        type: flow.if
        condition: "{{ true }}"
        then:
          - {id: c, type: io.kestra.plugin.core.log.Log, message: deep, level: ERROR}
""")
    children = flow.tasks[0].properties["tasks"]
    assert children[0] == {"id": "a", "type": "log", "message": "hi", "level": "WARN"}
    assert children[1]["then"][0]["level"] == "ERROR"


@pytest.mark.parametrize("text", ["? [a, b]: 1", "? {a: 1}\n: 2"])
def test_complex_yaml_keys_are_a_flow_error(text: str) -> None:
    with pytest.raises(FlowValidationError, match="a mapping key must be text or a number"):
        load_flow(text, "keys.yaml")


def test_an_empty_explicit_key_is_a_located_flow_error() -> None:
    # libyaml refuses `? :` as invalid YAML (the pure-Python parser read a complex key).
    error = only_error("? :")
    assert error.line == 1 and error.message.startswith("invalid YAML")


def test_a_webhook_key_written_anywhere_else_is_refused() -> None:
    key = "hook-key-0123456789abcdef"
    text = f"""\
id: copied
namespace: team
description: &hook {key}
labels:
  {key}: x
variables:
  port: 1234567890123456789
tasks:
  - {{id: t, type: log, message: "call .../copied/{key}"}}
triggers:
  - id: a
    type: webhook
    key: *hook
  - id: b
    type: webhook
    key: "1234567890123456789"
"""
    with pytest.raises(FlowValidationError) as caught:
        load_flow(text, "copied.yaml")
    errors = caught.value.errors
    assert sorted((e.path, e.line) for e in errors) == [
        ("description", 3),  # the anchor the trigger's key aliases
        (f"labels.{key}", 5),  # a mapping key
        ("tasks[0].message", 9),
        ("variables.port", 7),  # a number holding the digits of a key
    ]
    assert {e.message for e in errors} == {
        "holds the key of webhook trigger triggers[0]: anyone who may read the flow, its"
        " executions or their logs would see it",
        "holds the key of webhook trigger triggers[1]: anyone who may read the flow, its"
        " executions or their logs would see it",
    }


def test_a_webhook_key_written_once_is_valid() -> None:
    flow = load_flow(
        "id: f\nnamespace: team\ntasks: [{id: t, type: log, message: hi}]\n"
        "triggers: [{id: a, type: webhook, key: hook-key-0123456789abcdef}]\n"
    )
    assert flow.triggers[0].id == "a"


def test_a_triggers_properties_are_not_rendered_so_an_expression_is_refused() -> None:
    """Nothing renders a trigger's properties: `{{ }}` in a typed one fails at load, not
    in the scheduler later."""
    error = only_error(
        """
        id: f
        namespace: n
        tasks:
          - id: a
            type: log
            message: hi
        triggers:
          - id: s
            type: schedule
            cron: "{{ inputs.cron }}"
        """
    )
    assert (error.path, error.line) == ("triggers[0].cron", 11)
    assert "invalid cron expression" in error.message
