"""Kestra's Pebble expressions give Kestra's values (issue #13, item 3).

Expected values come from Kestra's expression documentation (kestra-io/docs,
content/docs/expressions/index.md, "Handling null and undefined values") and from the
sources of Pebble (PebbleTemplates/pebble, extension/core) and Kestra
(kestra-io/kestra, core/.../runners/pebble), cited per test where they decide.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from headrace.expressions import ExpressionError, render_value, template_syntax_errors
from headrace.flow.errors import FlowValidationError
from headrace.flow.loader import load_flow

NOW = "2024-07-09T06:17:01.171193+00:00"
CONTEXT: dict[str, Any] = {
    "flow": {"id": "demo", "namespace": "company.team", "revision": 1},
    "execution": {"id": "e1", "startDate": "2024-05-01T10:00:00.5+02:00"},
    "inputs": {
        "optional": None,
        "n": 3,
        "name": "hello",
        "blank": "  ",
        "flag": True,
        "payload": {"name": "John Doe", "score": {"English": 72, "Maths": 88, "French": 95}},
        "years": [2020, 2021, 2022, 2023],
        "text_json": '{"a": [1, 2]}',
    },
    "outputs": {
        "task1": {"value": 1, "text": "awesome1"},
        "task2": {"value": 2, "text": "awesome2"},
        "first": {"a": {"value": "x-a"}, "b": {"value": "x-b"}},
    },
    "taskrun": {"value": "b"},
    "parents": [],
    "_now": NOW,
}


def render(template: str) -> Any:
    return render_value(template, CONTEXT, "p")


def refusal(template: str) -> str:
    """The validation error of `template` (there must be exactly one)."""
    (problem,) = template_syntax_errors(template, "p")
    return problem[1]


# ------------------------------------------------------------ operators


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        # ternary: lowest precedence, nests to the right
        ("{{ inputs.n > 2 ? 'big' : 'small' }}", "big"),
        ("{{ inputs.n > 5 ? 'a' : inputs.n > 2 ? 'b' : 'c' }}", "b"),
        ("{{ inputs.n > 2 ? inputs.n > 5 ? 'a' : 'b' : 'c' }}", "b"),
        ("{{ inputs.optional ? 'yes' : 'no' }}", "no"),  # null is false (TernaryExpression)
        ("{{ inputs.optional == null ? 'none' : 'some' }}", "none"),  # `null` is a literal
        # ?? : undefined (at any depth) or null gives the right side
        ("{{ inputs.optional ?? 'mydefault' }}", "mydefault"),
        ("{{ inputs.undefined_input ?? 'mydefault' }}", "mydefault"),
        ("{{ trigger.body.dataField ?? 'data' }}", "data"),
        ("{{ inputs.name ?? 'mydefault' }}", "hello"),
        ("{{ foo ?? bar ?? 'baz' }}", "baz"),
        ("{{ inputs.optional ?? inputs.n > 2 ? 'x' : 'y' }}", "x"),
        # ??? : only undefined gives the right side; null stays null
        ("{{ inputs.undefined_input ??? 'mydefault' }}", "mydefault"),
        ("{{ inputs.optional ??? 'mydefault' }}", None),
        ("{{ (inputs.optional ??? 'mydefault') ?? 'other_default' }}", "other_default"),
        # ?? binds tighter than | (Pebble: ?? 120, | 100): the picked value is filtered
        (
            "{{ inputs.optional ?? now() | dateAdd(-1, 'MONTHS') | date('yyyy-MM-dd') }}",
            "2024-06-09",
        ),
        ("{{ '2024-01-31T00:00:00Z' ?? now() | date('yyyy-MM-dd') }}", "2024-01-31"),
        # contains: lists, map keys, texts; a list on the right: all of them
        ("{{ ['apple', 'pear', 'banana'] contains 'apple' }}", True),
        ("{{ {'apple': 'red', 'banana': 'yellow'} contains 'banana' }}", True),
        ("{{ ['apple', 'pear', 'banana', 'peach'] contains ['apple', 'peach'] }}", True),
        ("{{ ['apple', 'pear'] contains ['apple', 'peach'] }}", False),
        ("{{ inputs.name contains 'ell' }}", True),
        ("{{ inputs.optional contains 'x' }}", False),
        ("{{ not (inputs.years contains 2019) }}", True),
        # equals, ranges, concatenation
        ("{{ inputs.name equals 'hello' }}", True),
        ("{{ 1..4 }}", [1, 2, 3, 4]),
        ("{{ 'a'..'c' }}", ["a", "b", "c"]),
        ("{{ 'apple' ~ 'pear' ~ 'banana' }}", "applepearbanana"),
        ("{{ 'x' ~ true ~ inputs.optional ~ 2.5 }}", "xtrue2.5"),  # null adds nothing
        ("{{ 'n=' + 1 }}", "n=1"),  # Pebble's + with a text concatenates
        # integer arithmetic is Java's (OperatorUtils: long / long is a long)
        ("{{ 7 / 2 }}", 3),
        ("{{ -7 / 2 }}", -3),
        ("{{ -7 % 3 }}", -1),
        ("{{ 7.0 / 2 }}", 3.5),
        ("{{ 2 + 2 / (10 % 3) * (8 - 1) }}", 16),
        # tests
        ("{{ inputs.optional is null }}", True),
        ("{{ inputs.name is not null }}", True),
        ("{{ inputs.blank is empty }}", True),  # EmptyTest trims
        ("{{ [] is empty }}", True),
        ("{{ {} is not empty }}", False),
        ("{{ 2 is even and 3 is odd }}", True),
        ("{{ 3 is not even }}", True),
        ("{{ inputs.years is iterable }}", True),
        ("{{ inputs.name is iterable }}", False),  # a text is not a Java Iterable
        ("{{ inputs.payload is iterable }}", False),  # nor is a map
        ("{{ inputs.payload is map }}", True),
        ("{{ inputs.text_json is json }}", True),
        ("{{ 'not json' is json }}", False),
        ("{{ inputs.payload is json }}", True),
        ("{{ inputs.undefined_input is defined }}", False),
        ("{{ trigger.body.x is not defined }}", True),
        ("{{ (1 + 1) is even }}", True),
    ],
)
def test_operators_and_tests(template: str, expected: Any) -> None:
    assert render(template) == expected


def test_the_right_side_of_a_coalescing_is_evaluated_only_when_needed() -> None:
    assert render("{{ inputs.name ?? raise }}") == "hello"  # `raise` is undefined
    with pytest.raises(ExpressionError, match="'raise' is undefined"):
        render("{{ foo ?? bar ?? raise }}")  # Kestra: raises if all are undefined


# ------------------------------------------------------------ printing


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        # Kestra's JsonWriter: null prints nothing, booleans `true`, maps and lists JSON
        ("[{{ inputs.optional }}]", "[]"),
        ("{{ inputs.flag }}!", "true!"),
        ("{{ inputs.n > 5 }}!", "false!"),
        ("{{ inputs.payload.score }}!", '{"English":72,"Maths":88,"French":95}!'),
        ("{{ inputs.years }}!", "[2020,2021,2022,2023]!"),
        # doubles as Java's Double.toString
        ("{{ 2.5 }}!", "2.5!"),
        ("{{ 10.0 }}!", "10.0!"),
        ("{{ 12345678.9 }}!", "1.23456789E7!"),
        ("{{ 0.0001 }}!", "1.0E-4!"),
        # a map's entries in a loop (Pebble's Map.Entry)
        ("{% for e in inputs.payload.score %}{{ e.key }}={{ e.value }} {% endfor %}",
         "English=72 Maths=88 French=95 "),
        ("{% for e in {'a': 1} %}{{ e }}{% endfor %}", "a=1"),
        # loop.index counts from 0 in Pebble
        ("{% for i in ['x', 'y'] %}{{ loop.index }}{{ i }}{% endfor %}", "0x1y"),
        ("{% for i in ['x', 'y'] %}{{ loop.revindex }}{% endfor %}", "10"),
        ("{% for i in ['x', 'y'] %}{{ loop.first }}{% endfor %}", "truefalse"),
        ("{% if inputs.n == 1 %}one{% elseif inputs.n == 3 %}three{% else %}?{% endif %}", "three"),
        ("{% if inputs.n == 1 %}one{% elif inputs.n == 3 %}three{% endif %}", "three"),
    ],
)  # fmt: skip
def test_printing_follows_kestra(template: str, expected: str) -> None:
    assert render(template) == expected


# ------------------------------------------------------------ filters


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        # examples of Kestra's expression documentation, with their documented outputs
        ("{{ [1, 2, 3] | toJson }}", "[1,2,3]"),
        ("{{ true | toJson }}", "true"),
        ("{{ 'foo' | toJson }}", '"foo"'),
        ("{{ [1, 2, 3] | json }}", "[1,2,3]"),
        ("{{ [1, 2, 3] | jq('.') }}", [[1, 2, 3]]),
        ("{{ [1, 2, 3] | jq('.[0]') | first }}", 1),
        ("{{ outputs | jq('.task1.value') | first }}", 1),
        ("{{ inputs.payload.score | values | jq('reduce .[] as $num (0; .+$num)') | first }}", 255),
        ("{{ inputs.text_json | jq('.a[1]') }}", [2]),  # text is read as JSON
        ("{{ -7 | abs }}", 7),
        ("{{ 3.141592653 | numberFormat('#.##') }}", "3.14"),
        ("{{ 1234567.891 | numberFormat('#,##0.00') }}", "1,234,567.89"),
        ("{{ 0.125 | numberFormat('0.00') }}", "0.12"),  # DecimalFormat rounds half even
        ("{{ 0.5 | numberFormat('#.##') }}", ".5"),
        ("{{ 7 | numberformat('000') }}", "007"),
        ("{{ '12' | number }}", 12),
        ("{{ '12.3' | number + 1 }}", 13.3),
        ("{{ '9223372036854775807' | number('BIGINTEGER') }}", 9223372036854775807),
        ("{{ [1, 2, 3, 4, 5] | chunk(2) }}", [[1, 2], [3, 4], [5]]),
        ("{{ 'x' | className }}", "java.lang.String"),
        ("{{ 3 | className }}", "java.lang.Integer"),
        ("{{ ['1', '1', '2', '3'] | distinct }}", ["1", "2", "3"]),
        ("{{ ['apple', 'banana'] | first }}", "apple"),
        ("{{ 'Mitch' | first }}", "M"),
        ("{{ ['apple', 'banana'] | last }}", "banana"),
        ("{{ 'Mitch' | last }}", "h"),
        ("{{ ['apple', 'banana'] | join(', ') }}", "apple, banana"),
        ("{{ [true, null, 1.5] | join('|') }}", "true|null|1.5"),  # String.valueOf
        ("{{ {'foo': 'bar', 'baz': 'qux'} | keys }}", ["foo", "baz"]),
        ("{{ ['a', 'b'] | keys }}", [0, 1]),
        ("{{ {'foo': 'bar', 'baz': 'qux'} | values }}", ["bar", "qux"]),
        ("{{ 'Mitch' | length }}", 5),
        ("{{ inputs.optional | length }}", 0),  # LengthFilter: null is 0
        ("{{ inputs.payload.score | length }}", 3),
        ("{{ [1, 2] | merge([3, 4]) }}", [1, 2, 3, 4]),
        ("{{ {'a': 1} | merge({'b': 2}) }}", {"a": 1, "b": 2}),
        ("{{ ['apple', 'banana'] | reverse }}", ["banana", "apple"]),
        ("{{ [3, 1, 2] | rsort }}", [3, 2, 1]),
        ("{{ [3, 1, 2] | sort }}", [1, 2, 3]),
        ("{{ ['b', 'a', 'B'] | sort }}", ["B", "a", "b"]),  # Java's natural order
        ("{{ ['apple', 'banana', 'cherry'] | slice(1, 2) }}", ["banana"]),
        ("{{ 'Mitch' | slice(1, 3) }}", "it"),
        ("{{ 'apple,banana,cherry' | split(',') }}", ["apple", "banana", "cherry"]),
        ("{{ 'apple,banana,cherry,grape' | split(',', 2) }}", ["apple", "banana,cherry,grape"]),
        ("{{ 'a.b.c' | split('\\\\.') }}", ["a", "b", "c"]),  # a regex, as in Java
        ("{{ 'a,b,,' | split(',') }}", ["a", "b"]),  # trailing empty texts dropped
        ("{{ 'a,b,,' | split(',', -1) }}", ["a", "b", "", ""]),
        ("{{ [[1, 2], 3, [4]] | flatten }}", [1, 2, 3, 4]),
        ("{{ 'this is a long sentence.' | abbreviate(7) }}", "this..."),
        ("{{ 'dGVzdA==' | base64decode }}", "test"),
        ("{{ 'test' | base64encode }}", "dGVzdA=="),
        ("{{ 'article title' | capitalize }}", "Article title"),
        ("{{ 'hELLO' | capitalize }}", "HELLO"),  # the rest stays as it was
        ("{{ 'article title' | title }}", "Article Title"),
        ("{{ inputs.undefined_input | default('No phone number') }}", "No phone number"),
        ("{{ trigger.body.phone | default('none') }}", "none"),
        ("{{ inputs.blank | default('x') }}", "x"),  # DefaultFilter: empty (trimmed) text
        ("{{ [] | default('x') }}", "x"),
        ("{{ 0 | default('x') }}", 0),
        ("{{ \"Can't be here\" | escapeChar('single') }}", "Can\\'t be here"),
        ("{{ 'say \"hi\"' | escapeChar('double') }}", 'say \\"hi\\"'),
        ("{{ \"it's\" | escapeChar('shell') }}", "it'\\''s"),
        ("{{ 'LOUD TEXT' | lower }}", "loud text"),
        ("{{ 'I like %this% and %that%.' | replace({'%this%': 'foo', '%that%': 'bar'}) }}",
         "I like foo and bar."),
        ("{{ 'a1b22' | replace({'\\\\d+': '#'}, regexp=true) }}", "a#b#"),
        ("{{ 'a-b' | replace({'(a)-(b)': '$2-$1'}, regexp=true) }}", "b-a"),
        ("{{ 'hello' | replace('l', 'L') }}", "heLLo"),  # Jinja's form still works
        ("{{ 'test' | sha256 }}", "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"),
        ("{{ 'test' | sha1 }}", "a94a8fe5ccb19ba61c4c0873d391e987982fbbd3"),
        ("{{ 'hello world' | startsWith('hello') }}", True),
        ("{{ 'hello world' | endsWith('hello') }}", False),
        ("{{ 'Hello World!' | slugify }}", "hello-world"),
        ("{{ 'a.b.c' | substringAfter('.') }}", "b.c"),
        ("{{ 'a.b.c' | substringAfterLast('.') }}", "c"),
        ("{{ 'a.b.c' | substringBefore('.') }}", "a"),
        ("{{ 'a.b.c' | substringBeforeLast('.') }}", "a.b"),
        ("{{ '   padded text   ' | trim }}", "padded text"),
        ("{{ 'quiet sentence' | upper }}", "QUIET SENTENCE"),
        ("{{ 'The+string+%C3%BC%40foo-bar' | urldecode }}", "The string ü@foo-bar"),
        ("{{ 'The string ü@foo-bar' | urlencode }}", "The+string+%C3%BC%40foo-bar"),
        ("{{ 123 | string }}", "123"),
        ("{{ 'key: value' | indent(2) }}", "key: value"),
        ("{{ 'a\\n\\nb' | indent(2) }}", "a\n  \n  b"),  # Kestra indents blank lines too
        ("{{ 'a\\nb' | nindent(2) }}", "\n  a\n  b"),
        ("{{ 'a\\nb' | indent(2, '-') }}", "a\n--b"),
        # Pebble's text filters give null for null: nothing is printed, not `None`
        ("[{{ inputs.optional | upper }}]", "[]"),
        ("[{{ inputs.optional | trim | capitalize }}]", "[]"),
    ],
)  # fmt: skip
def test_filters(template: str, expected: Any) -> None:
    assert render(template) == expected


# ------------------------------------------------------------ dates


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        # Kestra's docs: now() prints ISO with 6 fraction digits and Z
        ("{{ now() }}", "2024-07-09T06:17:01.171193Z"),
        ("{{ now() | date('yyyy-MM-dd') }}", "2024-07-09"),
        ("{{ now() | dateAdd(-1, 'DAYS') }}", "2024-07-08T06:17:01.171193Z"),
        ("{{ now() | dateAdd(1, 'DAYS') }}", "2024-07-10T06:17:01.171193Z"),
        ("{{ now() | timestamp(timeZone='Europe/Paris') }}", 1720505821),
        ("{{ now() | timestampMilli }}", 1720505821171),
        ("{{ now() | timestampMicro }}", "1720505821000171193"),  # as Kestra computes it
        ("{{ now() | timestampNano }}", "1720505821171193000"),
        ("{{ now(timeZone='Europe/Paris') }}", "2024-07-09T08:17:01.171193+02:00"),
        ("{{ now(format='yyyy') }}", "2024"),
        ("{{ now() | date(\"yyyy-MM-dd'T'HH:mm:ssX\", timeZone='UTC') }}", "2024-07-09T06:17:01Z"),
        ("{{ now() | date(\"EEE, d MMM yyyy HH:mm\") }}", "Tue, 9 Jul 2024 06:17"),
        ("{{ now() | date('EEEE MMMM dd h:mm a') }}", "Tuesday July 09 6:17 AM"),
        ("{{ now() | date('yyyy-MM-dd HH:mm:ss.SSS') }}", "2024-07-09 06:17:01.171"),
        ("{{ execution.startDate | date('yyyy-MM-dd HH:mm:ss.SSSSSS') }}",
         "2024-05-01 08:00:00.500000"),  # in UTC, as a Kestra server formats it
        ("{{ execution.startDate | date('HH:mm xxx', timeZone='Europe/Paris') }}",
         "10:00 +02:00"),
        ("{{ now() | date('iso') }}", "2024-07-09T06:17:01.171193Z"),
        ("{{ now() | date('iso_sec') }}", "2024-07-09T06:17:01Z"),
        ("{{ now() | date('sql') }}", "2024-07-09 06:17:01.171193"),
        ("{{ now() | date('iso_local_date') }}", "2024-07-09"),
        ("{{ now() | date('iso_instant') }}", "2024-07-09T06:17:01.171193Z"),
        ("{{ now() | date('iso_date_time', timeZone='Europe/Paris') }}",
         "2024-07-09T08:17:01.171193+02:00[Europe/Paris]"),
        ("{{ now() | date('rfc_1123_date_time') }}", "Tue, 9 Jul 2024 06:17:01 GMT"),
        ("{{ now() | date('iso_week_date') }}", "2024-W28-2Z"),
        ("{{ 'July 24, 2001' | date('yyyy-MM-dd', existingFormat='MMMM dd, yyyy') }}",
         "2001-07-24"),
        ("{{ stringDate | date(existingFormat='yyyy-MMMM-d', format='yyyy/MMMM/d') }}",
         "2001/July/4"),
        ("{{ 0 | date('yyyy-MM-dd HH:mm') }}", "1970-01-01 00:00"),  # epoch seconds
        ("{{ '2024-03-31T00:00:00Z' | dateAdd(-1, 'MONTHS') | date('yyyy-MM-dd') }}",
         "2024-02-29"),
        # headrace's strftime form keeps working
        ("{{ now() | date('%Y/%m/%d') }}", "2024/07/09"),
        ("{{ now() | date('%H:%M', 'Europe/Paris') }}", "08:17"),
    ],
)  # fmt: skip
def test_dates_as_kestra_formats_them(template: str, expected: Any) -> None:
    context = {**CONTEXT, "stringDate": "2001-July-4"}
    assert render_value(template, context, "p") == expected


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("{{ now() | date('YYYY-ww') }}", "depends on the locale's week rules"),
        ("{{ now() | date('medium') }}", "localized date style"),
        ("{{ now() | date('yyyy T') }}", "unknown date pattern letter 'T'"),
        ("{{ now() | date('zzzz') }}", "full time-zone names"),
        ("{{ now() | date('yyyy', locale='fr') }}", "only English date names"),
        ("{{ now() | date('yyyy', timeZone='Mars/Olympus') }}", "unknown time zone"),
        ("{{ now() | dateAdd(1, 'FORTNIGHTS') }}", "unknown unit 'FORTNIGHTS'"),
        ("{{ 'x' | date('yyyy', existingFormat='yyyy-MM') }}", "does not match"),
    ],
)
def test_dates_headrace_cannot_format_exactly_are_errors(template: str, reason: str) -> None:
    with pytest.raises(ExpressionError, match=reason):
        render(template)


# ------------------------------------------------------------ functions


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ max(20, 80, inputs.n) }}", 80),
        ("{{ min(20, 80, inputs.n) }}", 3),
        ("{{ range(0, 3) }}", [0, 1, 2, 3]),  # Pebble's range includes the end
        ("{{ range(0, 6, 2) }}", [0, 2, 4, 6]),
        ("{% for i in range(0, 3) %}{{ i }},{% endfor %}", "0,1,2,3,"),
        ("{{ range(3) | list }}", [0, 1, 2]),  # one argument: Jinja's form
        ("{{ fromJson('[1, 2, 3]')[0] }}", 1),
        ("{{ fromJson('{\"foo\": [666, 1, 2]}').foo[0] }}", 666),
        ("{{ json('{\"a\": 1}').a }}", 1),
        ("{{ yaml('foo: [666, 1, 2]').foo[0] }}", 666),
        ("{{ currentEachOutput(outputs.first).value }}", "x-b"),
        ("{{ render('{{ inputs.n }}') }}", "3"),
        ("{{ renderOnce('{{ inputs.n }}') }}", "3"),
    ],
)
def test_functions(template: str, expected: Any) -> None:
    assert render(template) == expected


def test_render_is_recursive_unless_asked_not_to() -> None:
    context = {**CONTEXT, "vars": {"inner": "{{ inputs.n }}", "outer": "{{ vars.inner }}"}}
    assert render_value("{{ render(vars.outer) }}", context, "p") == "3"
    assert render_value("{{ renderOnce(vars.outer) }}", context, "p") == "{{ inputs.n }}"
    assert render_value("{{ render(vars.outer, false) }}", context, "p") == "{{ inputs.n }}"


def test_print_context_leaves_out_the_executor_keys() -> None:
    printed = render("{{ printContext() }}")
    assert '"inputs":' in printed
    assert '"flow":' in printed
    assert "_now" not in printed
    assert "secret" not in printed


# ------------------------------------------------------------ refused at validation


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("{{ randomInt(1, 10) }}", "randomInt() is not supported: random values would differ"),
        ("{{ uuid() }}", "uuid() is not supported"),
        ("{{ kv('KEY') }}", "kv() is not supported: headrace has no KV store"),
        ("{{ fileURI('f.txt') }}", "fileURI() is not supported"),
        ("{{ http(uri='https://x') }}", "http() is not supported"),
        ("{{ nosuchfunction() }}", "nosuchfunction() is not supported: no such function"),
        ("{{ x | toIon }}", "filter 'toIon' is not supported: headrace has no Ion"),
        ("{{ x | yaml }}", "filter 'yaml' is not supported"),
        ("{{ envs.foo }}", "'envs' is not available"),
        ("{{ globals.foo }}", "'globals' is not available"),
        ('{{ "Hello #{name}" }}', "string interpolation"),
        ("{% include 'other.peb' %}", "cannot include, import or extend"),
        ("{{ 'a' ~ inputs.name | upper }}", "ambiguous filter or test after `~`"),
        ("{{ 'n=' ~ inputs.n * 2 }}", "ambiguous `~` next to `*`"),
        ("{{ 1 + 1 is even }}", "ambiguous `is` after an operator"),
        ("{{ inputs.n == 3 is defined }}", "ambiguous `is` after an operator"),
    ],
)
def test_what_headrace_cannot_do_is_refused_at_validation(template: str, reason: str) -> None:
    assert reason in refusal(template)


def test_parentheses_make_the_ambiguous_forms_valid() -> None:
    assert render("{{ ('a' ~ inputs.name) | upper }}") == "AHELLO"
    assert render("{{ 'a' ~ (inputs.name | upper) }}") == "aHELLO"
    assert render("{{ 'n=' ~ (inputs.n * 2) }}") == "n=6"
    assert render("{{ 1 + (1 is even) }}") == 1


def test_a_refused_expression_fails_the_flow_with_its_line() -> None:
    source = (
        "id: pebble\n"
        "namespace: company.team\n"
        "tasks:\n"
        "  - id: hello\n"
        "    type: io.kestra.plugin.core.log.Log\n"
        "    message: |\n"
        "      {{ inputs.x ?? 'd' }}\n"
        "      {{ randomInt(1, 10) }}\n"
    )
    with pytest.raises(FlowValidationError) as caught:
        load_flow(source)
    text = str(caught.value)
    assert ":6:" in text  # the property's line in the file
    assert "(line 2)" in text  # the line within the template
    assert "randomInt() is not supported" in text


def test_a_kestra_flow_with_pebble_expressions_loads() -> None:
    flow = load_flow(
        "id: render_complex_expressions\n"
        "namespace: company.team\n"
        "inputs:\n"
        "  - id: mydate\n"
        "    type: DATETIME\n"
        "    required: false\n"
        "variables:\n"
        "  trigger_or_yesterday: \"{{ trigger.date ?? (execution.startDate | dateAdd(-1, 'DAYS')) }}\"\n"
        "  input_or_yesterday: \"{{ inputs.mydate ?? (execution.startDate | dateAdd(-1, 'DAYS')) }}\"\n"
        "tasks:\n"
        "  - id: yesterday\n"
        "    type: io.kestra.plugin.core.log.Log\n"
        "    message: \"{{ render(vars.trigger_or_yesterday) }}\"\n"
    )  # fmt: skip
    assert flow.id == "render_complex_expressions"


# ------------------------------------------------------------ jq is kept deterministic


@pytest.mark.parametrize("program", ["now", "now | todate", "input_filename", "[inputs]"])
def test_jq_cannot_read_the_clock_files_or_other_inputs(program: str) -> None:
    with pytest.raises(ExpressionError, match="is not allowed in expressions"):
        render_value("{{ {} | jq(p) }}", {"p": program}, "p")


# Whichever comes first on this machine, the time limit or the memory limit, stops it.
_STOPPED = "took longer than 1 s and was stopped|ran out of memory"


@pytest.mark.parametrize(
    "program",
    [
        "[range(1e9)]",
        "[[0,1,2,3,4,5,6,7,8,9] | combinations(9)] | length",
        '"abcdefgh" * 100000000 | length',
        "def f: f; f",
    ],
)
def test_jq_programs_that_run_long_or_grow_large_are_stopped(program: str) -> None:
    """libjq cannot be interrupted: the sandbox process is killed instead, and the next
    program runs in a new one."""
    with pytest.raises(ExpressionError, match=_STOPPED):
        render_value("{{ {} | jq(p) }}", {"p": program}, "p")
    assert render_value("{{ [1, 2] | jq('add') }}", {}, "p") == [3]


def test_jq_sees_fields_named_like_builtins_and_no_environment_of_the_service() -> None:
    payload = {"env": "prod", "now": 1, "input": {"range": 2}}
    context = {"inputs": {"payload": payload}}
    assert render_value("{{ inputs.payload | jq('.env, .now, .input.range') }}", context, "p") == [
        "prod",
        1,
        2,
    ]
    environment = render_value("{{ {} | jq('$ENV | keys') | first }}", {}, "p")
    assert "PATH" not in environment and "HEADRACE_TOKEN" not in environment


def test_a_constant_jq_program_is_not_run_while_the_flow_is_validated() -> None:
    slow = "{{ [0] | jq('[[0,1,2,3,4,5,6,7,8,9] | combinations(9)] | length') }}"
    assert template_syntax_errors(slow, "p") == []


def test_jq_text_in_strings_is_not_mistaken_for_a_builtin() -> None:
    assert render("{{ {'a': 'now'} | jq('.a == \"now\"') }}") == [True]


# ------------------------------------------------------------ bounded like every filter


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        # Patterns that take exponential or high polynomial time in a backtracking
        # engine run in linear time on RE2: on long texts, at once.
        ("{{ inputs.text | split('(a+)+b') | length }}", 1),
        ("{{ inputs.text | split('a*a*a*a*x') | length }}", 1),
        ("{{ inputs.text | replace({'(a|aa)*c': ''}, regexp=true) | length }}", 100001),
    ],
)
def test_regular_expressions_run_in_linear_time(template: str, expected: int) -> None:
    context = {"inputs": {"text": "a" * 100000 + "!"}}
    assert render_value(template, context, "p") == expected


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("{{ 'aa' | split(inputs.backref) }}", "no back-references or look-arounds"),
        ("{{ 'x' | replace({'x': '$5'}, regexp=true) }}", "bad replacement '$5'"),
        ("{{ 'x' | replace({'x': inputs.backslash}, regexp=true) }}", "bad replacement"),
    ],
)
def test_bad_patterns_and_replacements_are_expression_errors(template: str, reason: str) -> None:
    context = {"inputs": {"backref": "(a)\\1", "backslash": "\\"}}
    with pytest.raises(ExpressionError, match=re.escape(reason)):
        render_value(template, context, "p")


def test_a_zoned_date_time_text_is_read_and_many_brackets_are_fast() -> None:
    zoned = "{{ '2024-05-01T10:00+02:00[Europe/Paris]' | date('HH:mm', timeZone='UTC') }}"
    assert render(zoned) == "08:00"
    context = {"inputs": {"text": "x" + "[" * 200000}}
    with pytest.raises(ExpressionError, match="not an ISO-8601 date-time"):
        render_value("{{ inputs.text | date('yyyy') }}", context, "p")


def test_yaml_reads_within_the_flow_reader_limits() -> None:
    laughs = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(9)
    )
    with pytest.raises(ExpressionError, match="expands to more than"):
        render_value("{{ yaml(doc) }}", {**CONTEXT, "doc": laughs}, "p")


def test_kestra_is_in_and_ternaries_in_tags() -> None:
    assert render("{{ 'SUCCESS' isIn ['SUCCESS', 'KILLED'] }}") is True
    assert render("{% if inputs.n > 2 ? true : false %}yes{% endif %}") == "yes"
    assert render("{% set x = inputs.optional ?? 'd' %}{{ x }}") == "d"
