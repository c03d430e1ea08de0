"""Execution inputs: coercion by type, defaults, and every problem reported at once."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from headrace.flow import (
    InputType,
    InputValidationError,
    coerce_input,
    load_flow,
    resolve_inputs,
    validate_input,
)

FLOW = load_flow("""\
id: inputs-demo
namespace: demo
inputs:
  - id: name
    type: STRING
  - id: count
    type: INT
    defaults: 3
  - id: ratio
    type: FLOAT
    required: false
  - id: dry_run
    type: BOOLEAN
    defaults: "no"
  - id: config
    type: JSON
    defaults: '{"a": 1}'
  - id: since
    type: DATETIME
    required: false
tasks:
  - {id: t, type: log, message: "{{ inputs.name }}"}
""")


@pytest.mark.parametrize(
    ("input_type", "given", "expected"),
    [
        (InputType.STRING, "hello", "hello"),
        (InputType.STRING, 42, "42"),
        (InputType.INT, "42", 42),
        (InputType.INT, " -7 ", -7),
        (InputType.INT, 42, 42),
        (InputType.INT, 4.0, 4),
        (InputType.FLOAT, "1.5", 1.5),
        (InputType.FLOAT, 2, 2.0),
        (InputType.FLOAT, "1e3", 1000.0),
        (InputType.BOOLEAN, "true", True),
        (InputType.BOOLEAN, "TRUE", True),
        (InputType.BOOLEAN, "Yes", True),
        (InputType.BOOLEAN, "1", True),
        (InputType.BOOLEAN, "false", False),
        (InputType.BOOLEAN, "no", False),
        (InputType.BOOLEAN, "0", False),
        (InputType.BOOLEAN, False, False),
        (InputType.BOOLEAN, 1, True),
        (InputType.JSON, '{"a": [1, 2]}', {"a": [1, 2]}),
        (InputType.JSON, "3", 3),
        (InputType.JSON, {"already": "parsed"}, {"already": "parsed"}),
        (InputType.JSON, [1, "x"], [1, "x"]),
        (InputType.DATETIME, "2024-05-01T12:00:00Z", "2024-05-01T12:00:00+00:00"),
        (InputType.DATETIME, "2024-05-01T14:00:00+02:00", "2024-05-01T12:00:00+00:00"),
        (InputType.DATETIME, "2024-05-01T12:00:00", "2024-05-01T12:00:00+00:00"),
        (InputType.DATETIME, "2024-05-01", "2024-05-01T00:00:00+00:00"),
        (InputType.DATETIME, "2024-05-01T12:00:00.250Z", "2024-05-01T12:00:00.250000+00:00"),
    ],
)
def test_values_are_coerced_to_their_type(input_type: InputType, given: Any, expected: Any) -> None:
    result = coerce_input(input_type, given)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("input_type", "given", "reason"),
    [
        (InputType.STRING, {"a": 1}, "expected a string, got an object"),
        (InputType.STRING, True, "expected a string, got a boolean"),
        (InputType.INT, "1.5", "expected an integer"),
        (InputType.INT, 1.5, "expected an integer"),
        (InputType.INT, True, "got a boolean"),
        (InputType.INT, "ten", "expected an integer"),
        (InputType.FLOAT, "abc", "expected a number"),
        (InputType.FLOAT, "nan", "finite"),
        (InputType.FLOAT, False, "got a boolean"),
        (InputType.BOOLEAN, "maybe", "expected a boolean"),
        (InputType.BOOLEAN, 2, "expected a boolean"),
        (InputType.JSON, "{not json", "invalid JSON"),
        (InputType.DATETIME, "tomorrow", "ISO-8601"),
        (InputType.DATETIME, 1714560000, "ISO-8601"),
    ],
)
def test_values_that_do_not_fit_are_refused(input_type: InputType, given: Any, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        coerce_input(input_type, given)


def test_defaults_apply_and_optional_inputs_are_none() -> None:
    resolved = resolve_inputs(FLOW, {"name": "Ada"})
    assert resolved == {
        "name": "Ada",
        "count": 3,
        "ratio": None,
        "dry_run": False,
        "config": {"a": 1},
        "since": None,
    }


def test_given_values_override_defaults_and_the_result_is_json() -> None:
    raw = {
        "name": "Ada",
        "count": "10",
        "ratio": "0.25",
        "dry_run": "TRUE",
        "config": '{"b": [1, 2]}',
        "since": "2024-01-01T01:00:00+01:00",
    }
    resolved = resolve_inputs(FLOW, raw)
    assert resolved == {
        "name": "Ada",
        "count": 10,
        "ratio": 0.25,
        "dry_run": True,
        "config": {"b": [1, 2]},
        "since": "2024-01-01T00:00:00+00:00",
    }
    assert orjson.loads(orjson.dumps(resolved)) == resolved


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(InputValidationError) as caught:
        resolve_inputs(FLOW, {"count": "many", "dry_run": "perhaps", "colour": "blue"})
    errors = dict(caught.value.errors)
    assert set(errors) == {"colour", "name", "count", "dry_run"}
    assert errors["name"] == "required input has no value"
    assert errors["colour"].startswith("unknown input (declared inputs: config, count,")
    assert "expected an integer" in errors["count"]
    assert str(caught.value).startswith("invalid inputs: ")


def test_an_explicit_null_counts_as_missing() -> None:
    with pytest.raises(InputValidationError) as caught:
        resolve_inputs(FLOW, {"name": None})
    assert caught.value.errors == [("name", "required input has no value")]


# ------------------------------------------------ rich types and validation rules

RULES = load_flow("""\
id: rules-demo
namespace: demo
inputs:
  - id: env
    type: SELECT
    displayName: Environment
    values: [dev, prod]
    defaults: dev
  - id: legacy
    type: ENUM
    values: [a, b]
    required: false
  - id: ids
    type: ARRAY
    itemType: INT
    min: 1
    required: false
  - id: tags
    type: ARRAY
    itemType: SELECT
    values: [red, blue]
    required: false
  - id: endpoint
    type: URI
    required: false
  - id: report
    type: FILE
    required: false
  - id: code
    type: STRING
    validator: "[A-Z]{3}"
    required: false
  - id: size
    type: FLOAT
    min: 0.5
    max: 10
    required: false
  - id: since
    type: DATETIME
    after: 2020-01-01T00:00:00Z
    before: "2030-01-01T00:00:00+00:00"
    required: false
tasks:
  - {id: hi, type: log, message: hi}
""")


def test_rule_inputs_load_with_their_rules() -> None:
    env = RULES.inputs[0]
    assert (env.type, env.display_name, env.values) == (
        InputType.SELECT,
        "Environment",
        ["dev", "prod"],
    )
    assert RULES.inputs[2].item_type is InputType.INT
    assert RULES.inputs[2].min == 1 and isinstance(RULES.inputs[2].min, int)


def test_valid_values_pass_every_rule() -> None:
    resolved = resolve_inputs(
        RULES,
        {
            "legacy": "b",
            "ids": "[1, 2, 3]",
            "tags": ["red", "blue"],
            "endpoint": "s3://bucket/key",
            "report": "/data/report.csv",
            "code": "ABC",
            "size": "0.5",
            "since": "2024-05-01T00:00:00+02:00",
        },
    )
    assert resolved == {
        "env": "dev",
        "legacy": "b",
        "ids": [1, 2, 3],
        "tags": ["red", "blue"],
        "endpoint": "s3://bucket/key",
        "report": "/data/report.csv",
        "code": "ABC",
        "size": 0.5,
        "since": "2024-04-30T22:00:00+00:00",
    }
    orjson.dumps(resolved)


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("env", "staging", "'staging' is not one of the allowed values (dev, prod)"),
        ("legacy", "c", "'c' is not one of the allowed values (a, b)"),
        ("ids", "[1, 0]", "item 1: 0 is less than the minimum 1"),
        ("ids", "[1, 'x']", "expected a JSON array"),
        ("ids", {"a": 1}, "expected a list, got an object"),
        ("ids", ["x"], "item 0: expected an integer, got 'x'"),
        ("tags", ["green"], "item 0: 'green' is not one of the allowed values (red, blue)"),
        ("endpoint", "example.com/path", "expected an absolute URI with a scheme"),
        ("endpoint", "https://a b", "cannot contain blanks"),
        ("report", "", "expected a file path or URI"),
        ("code", "ABCD", "'ABCD' does not match the pattern '[A-Z]{3}'"),
        ("code", "xABC", "does not match"),
        ("size", 0.4, "0.4 is less than the minimum 0.5"),
        ("size", 11, "11.0 is more than the maximum 10"),
        ("since", "2019-12-31T23:59:59Z", "is not after 2020-01-01T00:00:00"),
        ("since", "2030-01-01T00:00:00Z", "is not before 2030-01-01T00:00:00+00:00"),
    ],
)
def test_values_breaking_a_rule_are_refused_with_the_reason(
    name: str, value: Any, reason: str
) -> None:
    with pytest.raises(InputValidationError) as caught:
        resolve_inputs(RULES, {name: value})
    assert caught.value.errors[0][0] == name
    assert reason in caught.value.errors[0][1]


def test_every_broken_rule_is_reported_at_once() -> None:
    with pytest.raises(InputValidationError) as caught:
        resolve_inputs(RULES, {"env": "x", "code": "x", "size": 99})
    assert [name for name, _ in caught.value.errors] == ["env", "code", "size"]


def test_validate_input_applies_rules_of_a_definition() -> None:
    assert validate_input(RULES.inputs[0], " prod".strip()) == "prod"
    with pytest.raises(ValueError, match="not one of"):
        validate_input(RULES.inputs[0], "PROD")


# ------------------------------------------------ what the wire and the database cannot carry


@pytest.mark.parametrize("given", [2**63, -(2**63) - 1, 1e20, "99999999999999999999", 2**64])
def test_int_inputs_are_bounded_to_signed_64_bits(given: Any) -> None:
    with pytest.raises(ValueError, match="out of the INT range"):
        coerce_input(InputType.INT, given)


@pytest.mark.parametrize("given", [2**63 - 1, -(2**63), str(2**63 - 1)])
def test_the_int_range_ends_are_accepted(given: Any) -> None:
    assert coerce_input(InputType.INT, given) == int(given)


def test_json_nested_deeper_than_can_be_encoded_is_refused() -> None:
    with pytest.raises(ValueError, match="not a JSON value we can carry"):
        coerce_input(InputType.JSON, "[" * 300 + "]" * 300)
    with pytest.raises(ValueError, match="not a JSON value we can carry"):
        coerce_input(InputType.JSON, {"n": 2**64})


NUL_FLOW = load_flow("""\
id: nul-demo
namespace: demo
inputs:
  - {id: text, type: STRING, required: false}
  - {id: choice, type: ENUM, values: [a, b], required: false}
  - {id: link, type: URI, required: false}
  - {id: report, type: FILE, required: false}
  - {id: config, type: JSON, required: false}
  - {id: names, type: ARRAY, itemType: STRING, required: false}
tasks:
  - {id: hi, type: log, message: hi}
""")


@pytest.mark.parametrize(
    ("input_id", "given"),
    [
        ("text", "a\x00b"),
        ("choice", "a\x00"),
        ("link", "https://example.com/\x00"),
        ("report", "s3://bucket/\x00key"),
        ("config", {"deep": [{"x": "\x00"}]}),
        ("config", {"key\x00": 1}),
        ("config", '{"a": "\\u0000"}'),
        ("names", ["fine", "not\x00fine"]),
    ],
)
def test_nul_characters_are_refused_in_every_text_input(input_id: str, given: Any) -> None:
    with pytest.raises(InputValidationError) as caught:
        resolve_inputs(NUL_FLOW, {input_id: given})
    [(name, reason)] = caught.value.errors
    assert name == input_id and "NUL character" in reason
    if input_id == "names":
        assert reason.startswith("item 1:")
