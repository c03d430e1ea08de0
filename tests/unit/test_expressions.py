"""Expressions: native values, strict undefined names, the sandbox, secrets, the cache."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from headrace.expressions import (
    NOW_KEY,
    ExpressionError,
    cache_info,
    render_properties,
    render_value,
    render_variables,
    template_syntax_errors,
)
from headrace.secret_markers import (
    SCOPE_KEY,
    SecretError,
    SecretScope,
    marker,
    request_nonce,
    resolve_secrets,
)

CONTEXT: dict[str, Any] = {
    "inputs": {"n": 3, "name": "Ada", "on": True, "cfg": {"a": [1, 2]}, "none": None},
    "outputs": {"extract": {"rows": 120, "items": ["x", "y"]}},
    "execution": {"id": "exec-1", "startDate": "2024-05-01T12:00:00+00:00"},
    "flow": {"id": "nightly", "namespace": "company.data", "revision": 4},
    "labels": {"team": "data"},
    "trigger": {"body": {"event": "push"}},
    "taskrun": {"id": "tr-1", "attempt": 2},
}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ inputs.n }}", 3),
        ("  {{ inputs.n }}  ", 3),
        ("{{- inputs.n -}}", 3),
        ("{{ inputs.on }}", True),
        ("{{ inputs.cfg }}", {"a": [1, 2]}),
        ("{{ inputs.none }}", None),
        ("{{ inputs.n * 2 + 1 }}", 7),
        ("{{ -1 }}", -1),
        ("{{ outputs.extract.items }}", ["x", "y"]),  # the output, not dict.items
        ("{{ outputs['extract'].rows }}", 120),
        ("{{ trigger.body.event }}", "push"),
        ("{{ inputs.get('missing', 'fallback') }}", "fallback"),
        ("{{ (1, 2) }}", [1, 2]),
    ],
)
def test_a_lone_expression_gives_its_native_value(template: str, expected: Any) -> None:
    assert render_value(template, CONTEXT) == expected


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("n={{ inputs.n }}", "n=3"),
        ("{{ inputs.n }}{{ inputs.n }}", "33"),
        ("{{ flow.namespace }}.{{ flow.id }} r{{ flow.revision }}", "company.data.nightly r4"),
        ("{% if inputs.on %}yes{% else %}no{% endif %}", "yes"),
        ("{% for i in outputs.extract['items'] %}{{ i }},{% endfor %}", "x,y,"),
        ("echo {{ inputs.name }}\n", "echo Ada\n"),  # the final newline survives
        ("{{ inputs.cfg | tojson }}", '{"a":[1,2]}'),
        ("{{ execution.id }}/{{ taskrun.attempt }}", "exec-1/2"),
        ("<{{ inputs.name }}>", "<Ada>"),  # no HTML escaping
    ],
)
def test_other_templates_give_text(template: str, expected: str) -> None:
    assert render_value(template, CONTEXT) == expected


def test_fromjson_gives_native_values() -> None:
    assert render_value("{{ '{\"r\": [5]}' | fromjson }}", CONTEXT) == {"r": [5]}


def test_strings_without_templates_come_back_untouched() -> None:
    text = "echo ${#ARR[@]} {not a template} }}"
    assert render_value(text, CONTEXT) is text
    assert render_value(5, CONTEXT) == 5


def test_containers_are_rendered_recursively() -> None:
    properties = {
        "commands": ["echo {{ inputs.name }}", "exit {{ inputs.n }}"],
        "env": {"COUNT": "{{ inputs.n }}", "PLAIN": "x"},
        "retries": 2,
    }
    assert render_properties(properties, CONTEXT) == {
        "commands": ["echo Ada", "exit 3"],
        "env": {"COUNT": 3, "PLAIN": "x"},
        "retries": 2,
    }


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("{{ missing }}", "'missing' is undefined"),
        ("{{ inputs.colour }}", "'colour' is undefined (available keys: cfg, n, name, none, on)"),
        ("hello {{ inputs.colour }}", "'colour' is undefined"),
        ("{{ outputs.load.rows }}", "'load' is undefined (available keys: extract)"),
        ("{{ inputs.colour | upper }}", "'colour' is undefined"),
    ],
)
def test_undefined_names_are_errors_naming_them(template: str, reason: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        render_properties({"env": {"A": template}}, CONTEXT)
    assert caught.value.path == "env.A"
    assert reason in caught.value.reason
    assert str(caught.value).startswith("env.A: ")


def test_paths_name_list_items() -> None:
    with pytest.raises(ExpressionError) as caught:
        render_properties({"commands": ["ok", "{{ nope }}"]}, CONTEXT)
    assert caught.value.path == "commands[1]"


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__ }}",
        "x {{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ inputs.__class__.__init__.__globals__ }}",
        "{{ cycler.__init__.__globals__.os }}",
        "{{ render_value }}",
        "{{ inputs.cfg.update({'a': 0}) }}",
        "{{ outputs.extract['items'].append('z') }}",
        "{{ 'a' * 100000000 }}",
        "{{ 9 ** 99999999 }}",
    ],
)
def test_the_sandbox_holds(template: str) -> None:
    with pytest.raises(ExpressionError):
        render_value(template, CONTEXT, "p")
    assert CONTEXT["inputs"]["cfg"] == {"a": [1, 2]}
    assert CONTEXT["outputs"]["extract"]["items"] == ["x", "y"]


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("{{ 1 / 0 }}", "ZeroDivisionError"),
        ("{{ 'x' | fromjson }}", "JSONDecodeError"),
        ("{{ inputs.n ", "template syntax error"),
    ],
)
def test_evaluation_failures_are_expression_errors(template: str, reason: str) -> None:
    with pytest.raises(ExpressionError, match=reason):
        render_value(template, CONTEXT, "p")


def test_template_syntax_errors_are_found_without_rendering() -> None:
    value = {
        "message": "{{ inputs.name }",
        "commands": ["ok", "{% for x in y %}no end"],
        "env": {"A": "{{ a | notafilter }}", "B": "{{ fine }}"},
        "n": 5,
    }
    found = dict(template_syntax_errors(value))
    assert set(found) == {"message", "commands[1]", "env.A"}
    assert all(reason.startswith("template syntax error:") for reason in found.values())
    assert template_syntax_errors("{{ undefined_is_fine_here }}") == []


NONCE = "0123456789abcdef0123456789abcdef"


def with_scope(scope: SecretScope) -> dict[str, Any]:
    """CONTEXT as the core builds it for an attempt's task properties."""
    return {**CONTEXT, SCOPE_KEY: scope}


def test_secrets_render_to_markers_and_resolve_in_the_worker() -> None:
    scope = SecretScope(NONCE)
    rendered = render_properties(
        {
            "url": "{{ secret('API_URL') }}",
            "headers": {"Authorization": "Bearer {{ secret('TOKEN') }}"},
            "commands": ["curl -H 'x: {{ secret(\"TOKEN\") }}' {{ inputs.name }}"],
        },
        with_scope(scope),
    )
    assert rendered["headers"]["Authorization"] == f"Bearer \x00secret:{NONCE}:TOKEN\x00"
    assert scope.names == ["API_URL", "TOKEN"]  # each once, in order of first call
    assert "s3cr3t" not in repr(rendered)  # the executor never sees a value

    vault = {"API_URL": "https://api.example", "TOKEN": "s3cr3t"}
    resolved, used = resolve_secrets(rendered, vault.get, nonce=NONCE, names=scope.names)
    assert resolved == {
        "url": "https://api.example",
        "headers": {"Authorization": "Bearer s3cr3t"},
        "commands": ["curl -H 'x: s3cr3t' Ada"],
    }
    assert used == ["https://api.example", "s3cr3t"]


def test_marker_text_from_outside_is_data_even_for_a_name_the_flow_uses() -> None:
    """An input holding marker text lands next to a genuine secret('DB'): only the
    genuine one resolves, whatever the forgery looks like."""
    forgeries = [
        "\x00secret:DB\x00",  # the format before nonces
        marker("DB", ""),  # what secret() gives outside task properties
        marker("DB", "f" * 32),  # a guessed nonce
        marker("DB", request_nonce("other seed", "ex1", "tr-1", 2)),  # another attempt's
    ]
    scope = SecretScope(NONCE)
    context = {**with_scope(scope), "inputs": {"note": "".join(forgeries)}}
    rendered = render_properties(
        {"password": "{{ secret('DB') }}", "body": "note: {{ inputs.note }}"}, context
    )
    resolved, used = resolve_secrets(rendered, {"DB": "db-pass"}.get, nonce=NONCE, names=["DB"])
    assert resolved == {"password": "db-pass", "body": "note: " + "".join(forgeries)}
    assert used == ["db-pass"]


def test_only_the_listed_names_and_a_nonce_resolve() -> None:
    value = {"a": marker("A", NONCE), "b": marker("B", NONCE)}
    vault = {"A": "alpha", "B": "bravo"}
    assert resolve_secrets(value, vault.get, nonce=NONCE, names=["A"]) == (
        {"a": "alpha", "b": marker("B", NONCE)},
        ["alpha"],
    )
    # A request without a nonce (an older executor's) resolves nothing: fail closed.
    assert resolve_secrets(value, vault.get, nonce="", names=["A", "B"]) == (value, [])


def test_an_unknown_secret_is_an_error_naming_it() -> None:
    rendered = render_value({"env": ["{{ secret('NOPE') }}"]}, with_scope(SecretScope(NONCE)))
    with pytest.raises(SecretError) as caught:
        resolve_secrets(rendered, {}.get, nonce=NONCE, names=["NOPE"])
    assert caught.value.reason.startswith("secret NOPE is not defined: set HEADRACE_SECRET_NOPE")
    assert caught.value.path == "env[0]"


def test_values_without_markers_resolve_to_themselves() -> None:
    value = {"a": ["plain", 1, None]}
    assert resolve_secrets(value, {}.get, nonce=NONCE, names=["A"]) == (value, [])


def test_outside_task_properties_a_secret_never_resolves() -> None:
    # Flow outputs, for-each values, conditions: no scope, so no nonce.
    rendered = render_value("{{ secret('TOKEN') }}", CONTEXT)
    assert rendered == marker("TOKEN", "")
    assert resolve_secrets(rendered, {"TOKEN": "s3cr3t"}.get, nonce="", names=["TOKEN"]) == (
        rendered,
        [],
    )


def test_secret_needs_a_nonce_in_task_properties() -> None:
    with pytest.raises(ExpressionError, match="secret seed"):
        render_value("{{ secret('TOKEN') }}", with_scope(SecretScope("")))


def test_text_rendered_by_render_cannot_call_secret() -> None:
    # render() renders text that may come from outside: an input must not ask for secrets.
    scope = SecretScope(NONCE)
    context = {**with_scope(scope), "inputs": {"template": "{{ secret('DB') }}"}}
    with pytest.raises(ExpressionError, match=r"secret\(\) cannot be called in text rendered"):
        render_value("{{ render(inputs.template) }}", context)
    assert scope.names == []


def test_request_nonces_are_distinct_per_attempt_and_empty_without_a_seed() -> None:
    nonces = {
        request_nonce("seed", "ex1", "tr-1", 1),
        request_nonce("seed", "ex1", "tr-1", 2),
        request_nonce("seed", "ex1", "tr-2", 1),
        request_nonce("seed", "ex2", "tr-1", 1),
        request_nonce("other", "ex1", "tr-1", 1),
    }
    assert len(nonces) == 5
    assert all(len(n) == 32 and int(n, 16) >= 0 for n in nonces)
    assert request_nonce("seed", "ex1", "tr-1", 1) == request_nonce("seed", "ex1", "tr-1", 1)
    assert request_nonce("", "ex1", "tr-1", 1) == ""


def test_decoding_filters_never_output_nul() -> None:
    # Encoded text from outside: the NUL it hides comes out as U+FFFD.
    inputs = {
        "b64": "AHNlY3JldDpEQgA=",  # base64 of "\x00secret:DB\x00"
        "json": '{"k\\u0000": ["\\u0000secret:DB\\u0000"]}',
        "literal": '{"a": "\\\\u0000"}',  # an escaped backslash: text, not a NUL
    }
    context = {**CONTEXT, "inputs": inputs}
    assert render_value("{{ inputs.b64 | b64decode }}", context) == "\ufffdsecret:DB\ufffd"
    assert render_value("{{ inputs.json | fromJson }}", context) == {
        "k\ufffd": ["\ufffdsecret:DB\ufffd"]
    }
    assert render_value("{{ inputs.literal | fromJson }}", context) == {"a": "\\u0000"}


@pytest.mark.parametrize("name", ["", "a b", "../x"])
def test_secret_names_are_checked(name: Any) -> None:
    with pytest.raises(ExpressionError, match="invalid secret name"):
        render_value(f"{{{{ secret({name!r}) }}}}", CONTEXT)


@pytest.mark.parametrize(
    "template",
    [
        "{{ secret(inputs.name) }}",  # whoever starts the flow would pick the secret
        "{{ secret('A' ~ inputs.name) }}",
        "{{ secret(5) }}",
        "{{ secret(name='DB') }}",
        "{% set s = secret %}{{ s('DB') }}",
        "{{ [secret][0]('DB') }}",
    ],
)
def test_a_secret_name_must_be_one_literal_string(template: str) -> None:
    assert template_syntax_errors({"env": {"S": template}}, "tasks[0]") == [
        (
            "tasks[0].env.S",
            "template syntax error: secret() takes the secret's name as one literal "
            "string, as in secret('DB_PASSWORD'), never a value computed when the flow runs",
        )
    ]
    with pytest.raises(ExpressionError, match="one literal string"):
        render_value(template, CONTEXT)


def test_a_literal_secret_name_may_go_through_filters() -> None:
    assert template_syntax_errors("{{ secret('DB') | upper }}") == []


def test_compiled_templates_are_cached() -> None:
    template = f"{uuid.uuid4().hex}: {{{{ inputs.name }}}} has {{{{ inputs.n }}}}"
    before = cache_info()
    for _ in range(100):
        assert render_value(template, CONTEXT).endswith(": Ada has 3")
    after = cache_info()
    assert after.misses - before.misses == 1
    assert after.hits - before.hits == 99


# --------------------------------------------- functions and filters (issue 5)

NOW = "2024-05-01T12:30:00+00:00"
TIMED: dict[str, Any] = {
    **CONTEXT,
    NOW_KEY: NOW,
    "vars": {"env": "prod"},
    "inputs": {
        **CONTEXT["inputs"],
        "template": "{{ flow.id }}-{{ vars.env }}",
        "loop": "{{ render(inputs.loop) }}",
        "evil": "{{ ''.__class__.__mro__ }}",
        "text": "{{ 7 * 6 }}",
    },
}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ now() }}", "2024-05-01T12:30:00.000000Z"),  # Kestra's `iso` format
        ("{{ now() | date('%Y/%m/%d') }}", "2024/05/01"),
        ("{{ now() | date('%H:%M', 'Europe/Paris') }}", "14:30"),
        ("{{ '2024-05-01' | date('%d.%m.%Y') }}", "01.05.2024"),
        ("{{ now() | dateAdd(-1, 'DAYS') }}", "2024-04-30T12:30:00.000000Z"),
        ("{{ now() | dateAdd(90, 'minutes') }}", "2024-05-01T14:00:00.000000Z"),
        ("{{ '2024-03-31T00:00:00Z' | dateAdd(-1, 'MONTHS') }}", "2024-02-29T00:00:00.000000Z"),
        ("{{ '2024-02-29T00:00:00Z' | dateAdd(1, 'YEAR') }}", "2025-02-28T00:00:00.000000Z"),
        ("{{ now() | timestamp }}", 1714566600),
        ("{{ now() | timestampMilli }}", 1714566600000),
        ("{{ 0 | date('%Y') }}", "1970"),
        ("{{ {'a': [1, 2]} | toJson }}", '{"a":[1,2]}'),
        ("{{ ('{\"a\": 1}' | fromJson).a }}", 1),
        ("{{ ' Ada ' | trim | upper }}", "ADA"),
        ("{{ 'a-b' | replace('-', '+') }}", "a+b"),
        ("{{ 'Héllo, World!' | slugify }}", "hello-world"),
        ("{{ 'a.b.c' | substringBefore('.') }}", "a"),
        ("{{ 'a.b.c' | substringAfter('.') }}", "b.c"),
        ("{{ 'a.b.c' | substringBeforeLast('.') }}", "a.b"),
        ("{{ 'a.b.c' | substringAfterLast('.') }}", "c"),
        ("{{ 'abc' | substringBefore('/') }}", "abc"),
        ("{{ 'abc' | substringAfter('/') }}", ""),
        ("{{ 'hi' | b64encode }}", "aGk="),
        ("{{ 'aGk=' | base64decode }}", "hi"),
        ("{{ 'x' | sha256 }}", "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"),
        ("{{ inputs.none | default('fallback') }}", "fallback"),
        ("{{ render(inputs.template) }}", "nightly-prod"),
        ("{{ render(inputs.text) }}", "42"),
        ("{{ render(42) }}", 42),
        ("{{ vars.env }}", "prod"),
    ],
)
def test_functions_and_filters(template: str, expected: Any) -> None:
    assert render_value(template, TIMED, "p") == expected


def test_data_is_never_rendered_unless_render_is_asked() -> None:
    assert render_value("{{ inputs.text }}", TIMED, "p") == "{{ 7 * 6 }}"


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("{{ render(inputs.loop) }}", "render() nested more than 5 levels"),
        ("{{ render(inputs.evil) }}", "unsafe"),
        ("{{ render(\"{{ ''.__class__ }}\") }}", "unsafe"),
        ("{{ now() | dateAdd(1, 'FORTNIGHTS') }}", "unknown unit 'FORTNIGHTS'"),
        ("{{ now() | dateAdd('1', 'DAYS') }}", "amount must be an integer"),
        ("{{ 'soon' | date('%Y') }}", "not an ISO-8601 date-time: 'soon'"),
        ("{{ now() | date('%Y', 'Mars/Olympus') }}", "unknown time zone"),
        ("{{ '%%%' | b64decode }}", "not base64-encoded text"),
    ],
)
def test_function_failures_name_the_property_and_reason(template: str, reason: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        render_value(template, TIMED, "message")
    assert caught.value.path == "message"
    assert reason in caught.value.reason


def test_now_without_the_event_time_is_an_error_not_the_clock() -> None:
    with pytest.raises(
        ExpressionError, match="now\\(\\) needs the event time in the context key '_now'"
    ):
        render_value("{{ now() }}", CONTEXT, "p")


def test_variables_render_in_order_and_see_earlier_ones_as_vars() -> None:
    rendered = render_variables(
        {"who": "{{ inputs.name }}", "greeting": "hello {{ vars.who }}", "n": 3},
        CONTEXT,
    )
    assert rendered == {"who": "Ada", "greeting": "hello Ada", "n": 3}


def test_a_variable_failing_names_its_key() -> None:
    with pytest.raises(ExpressionError) as caught:
        render_variables({"a": "{{ vars.b }}", "b": "x"}, CONTEXT)
    assert caught.value.path == "variables.a"
    assert "'b' is undefined" in caught.value.reason


def test_a_lone_expression_gives_json_data_with_text_keys() -> None:
    # The value travels in an Avro message as JSON: a number key or a tuple must not make
    # the executor fail after sending part of a step.
    assert render_value("{{ {1: 2, 'd': [1, (2, 3)]} }}", {}, "p") == {"1": 2, "d": [1, [2, 3]]}
    with pytest.raises(ExpressionError, match="not JSON serializable"):
        render_value("{{ {'a': cycler} }}", {}, "p")
