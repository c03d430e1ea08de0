"""The render budget: every expression ends fast, small and as an `ExpressionError`.

The executor renders task properties inside a Faust agent: an expression that takes
seconds or gigabytes stalls or kills a whole partition of executions. Each template
below used to do one of those (or escaped as a raw exception); each must now be refused
before it allocates or loops, in milliseconds.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from headrace import render_budget
from headrace.expressions import (
    ExpressionError,
    render_properties,
    render_value,
    template_syntax_errors,
)
from headrace.render_budget import MAX_RENDERED_CHARS

# A test that hangs has found a hole: it fails here instead of stalling the suite.
pytestmark = pytest.mark.timeout(10)

BIG = "x" * 100_000  # a plausible value read from the context (outputs are at most 256 KiB)


class _FailsToAllocate:
    """Context data whose attribute fails as a failed allocation would."""

    @property
    def rows(self) -> Any:
        raise MemoryError


CONTEXT: dict[str, Any] = {
    "inputs": {"name": "Ada", "n": 3, "big": BIG, "json": '{"a": "x\\u0000y"}'},
    "flow": {"id": "nightly", "namespace": "company.data", "revision": 4},
    "huge": _FailsToAllocate(),
}


def refused(template: str) -> str:
    """The reason `template` is refused, checked to name the property and the template."""
    with pytest.raises(ExpressionError) as caught:
        render_value(template, CONTEXT, "p")
    assert caught.value.path == "p"
    assert repr(template[:20])[1:-1] in caught.value.reason  # the expression is named
    return caught.value.reason


# ------------------------------------------------------------------ output and time


def test_rendered_text_is_capped() -> None:
    template = "{% for i in range(30) %}{{ inputs.big }}{% endfor %}"  # 3 MB
    assert f"exceeds {MAX_RENDERED_CHARS} characters" in refused(template)


def test_a_lone_expression_passes_data_through_up_to_the_value_limit() -> None:
    # A lone `{{ … }}` gives a value, often data passed through, not text it built.
    context = {**CONTEXT, "inputs": {"large": "y" * 500_000}}
    assert render_value("{{ inputs.large }}", context) == "y" * 500_000
    with pytest.raises(
        ExpressionError, match="the value as JSON would exceed 1000000 characters or items"
    ):
        render_value("{{ [inputs.large, inputs.large, inputs.large] }}", context)


def test_text_up_to_the_cap_renders() -> None:
    template = "{% for i in range(2) %}{{ inputs.big }}{% endfor %}{{ 'y' * 62144 }}"
    assert render_value(template, CONTEXT) == BIG * 2 + "y" * 62_144
    assert len(render_value(template, CONTEXT)) == MAX_RENDERED_CHARS


def test_a_render_has_a_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    # Time is injected, not slept: each clock reading is a quarter of a second later.
    ticks = itertools.count()
    monkeypatch.setattr(render_budget, "_cpu_clock", lambda: next(ticks) * 0.25)
    reason = refused("{% for i in range(100) %}{% if i | string %}{% endif %}{% endfor %}")
    assert "took longer than 1 s" in reason


def test_loops_without_output_are_bounded() -> None:
    # 10 billion empty iterations: no output to check between, no call to intercept.
    reason = refused(
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    )
    assert "steps" in reason


def test_the_budget_is_per_render(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render_budget, "MAX_STEPS", 1_000)
    template = "{% for i in range(600) %}{% endfor %}done"
    for _ in range(5):
        assert render_value(template, CONTEXT) == "done"


def test_a_task_shares_one_budget_across_its_properties(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render_budget, "MAX_STEPS", 1_000)
    loop = "{% for i in range(600) %}{% endfor %}done"
    with pytest.raises(ExpressionError, match="steps") as caught:
        render_properties({"a": loop, "b": loop}, CONTEXT)
    assert caught.value.path == "b"


# ------------------------------------------------------------------ amplification

_HUGE_LIST = "([inputs.big] * 100000)"  # 100,000 references to 100 KB: 10 GB as text


@pytest.mark.parametrize(
    "template",
    [
        # widths and paddings
        "{{ 'a'.ljust(10**9) }}",
        "{{ 'a'.rjust(10**9) }}",
        "{{ 'a'.center(10**9) }}",
        "{{ 'a'.zfill(10**9) }}",
        "{{ 'a\tb'.expandtabs(10**9) }}",
        "{{ 'a' | center(10**9) }}",
        "{{ 'a' | indent(10**9) }}",
        # printf and format widths, literal or passed
        "{{ '%1000000000d' % 1 }}",
        "{{ '%.1000000000f' % 1.5 }}",
        "{{ '%*d' % (10**9, 1) }}",
        "{{ '%1000000000d' | format(1) }}",
        "{{ '{:>1000000000}'.format(1) }}",
        "{{ '{:.1000000000f}'.format(1.5) }}",
        "{{ '{:{}}'.format(1, 10**9) }}",
        # replacements that multiply
        "{{ inputs.big.replace('x', inputs.big) }}",
        "{{ inputs.big | replace('x', inputs.big) }}",
        "{{ inputs.big.translate({120: inputs.big}) }}",
        # a list of references turned into text or JSON
        f"{{{{ {_HUGE_LIST} | join }}}}",
        f"{{{{ inputs.name.join({_HUGE_LIST}) }}}}",
        f"{{{{ {_HUGE_LIST} | tojson }}}}",
        f"{{{{ {_HUGE_LIST} | string }}}}",
        f"{{{{ {_HUGE_LIST} ~ '' }}}}",
        f"{{{{ '%s' % ({_HUGE_LIST},) }}}}",
        f"{{{{ '{{}}'.format({_HUGE_LIST}) }}}}",
        f"x{{{{ {_HUGE_LIST} }}}}",
        f"{{{{ {_HUGE_LIST} }}}}",  # the executor would serialise it
        # doubling through a namespace, a macro's arguments or a block
        "{% set ns = namespace(l=[inputs.big]) %}{% for i in range(20) %}"
        "{% set ns.l = [ns.l, ns.l] %}{% endfor %}{{ ns.l | length }}{{ ns.l ~ '' }}",
        "{% macro d(s, n) %}{% if n %}{{ d(s ~ s, n - 1) }}{% else %}{{ s | length }}"
        "{% endif %}{% endmacro %}{{ d(inputs.big, 20) }}",
        "{% set s %}{% for i in range(100000) %}{{ inputs.big }}{% endfor %}{% endset %}"
        "{{ s | length }}",
        # many pieces, each under every size limit
        "{{ range(100000) | map('string') | map('center', 999999) | list | length }}",
        # loops hidden in a filter or a function
        "{{ [1] | slice(10**9) | list | length }}",
    ],
)
def test_amplification_is_refused(template: str) -> None:
    refused(template)


def test_lipsum_is_refused_when_the_flow_is_validated() -> None:
    (problem,) = template_syntax_errors("{{ lipsum(1, false, 10**8, 10**8 + 1) }}", "p")
    assert problem[0] == "p"
    assert "lipsum() is not supported: random text of any size" in problem[1]


def test_summing_lists_takes_linear_time() -> None:
    # Python's sum copies the growing list for every item: 200,000 items took minutes.
    assert render_value("{{ ([[1]] * 200000) | sum(start=[]) | length }}", CONTEXT) == 200_000


@pytest.mark.parametrize(
    "template",
    [
        "{{ 2 ** 63 }}",
        "{{ 9223372036854775807 + 1 }}",
        "{{ -9223372036854775807 - 2 }}",
        "{{ 4294967296 * 4294967296 }}",
        "{{ ((9 ** 10000) ** 10000) ** 10000 }}",  # each exponent under the old limit
        "{% set ns = namespace(x=3) %}{% for i in range(64) %}"
        "{% set ns.x = ns.x * ns.x %}{% endfor %}{{ ns.x > 0 }}",
    ],
)
def test_integers_stay_within_64_bits(template: str) -> None:
    assert "64-bit" in refused(template)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ 2 ** 62 }}", 2**62),
        ("{{ 9223372036854775807 }}", 2**63 - 1),
        ("{{ -9223372036854775807 - 1 }}", -(2**63)),
        ("{{ 3037000499 * 3037000499 }}", 3037000499**2),
        ("{{ 10 ** 18 // 7 % 1000 }}", 10**18 // 7 % 1000),
        ("{{ 2.0 ** 100 }}", 2.0**100),
    ],
)
def test_integers_within_64_bits_compute(template: str, expected: Any) -> None:
    assert render_value(template, CONTEXT) == expected


def test_range_keeps_the_sandbox_limit() -> None:
    # Already refused by Jinja's sandbox (MAX_RANGE = 100,000): kept as a regression test.
    assert "Range too big" in refused("{{ range(10**9) | list }}")


# ------------------------------------------------------------ recursion and memory


def test_recursion_is_an_expression_error() -> None:
    assert "nested too deeply" in refused("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}")


def test_deeply_nested_expressions_are_expression_errors() -> None:
    template = "{{ " + "(" * 200 + "1" + ")" * 200 + " }}"
    assert "nested too deeply" in refused(template)
    [(path, reason)] = template_syntax_errors({"p": template})
    assert path == "p"
    assert "nested too deeply" in reason


def test_memory_errors_are_expression_errors() -> None:
    assert "out of memory" in refused("{{ huge.rows }}")


# ------------------------------------------------------------------ NUL characters


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ 'AA==' | b64decode }}", "\ufffd"),
        ("a{{ 'AA==' | b64decode }}b", "a\ufffdb"),
        ("{{ (inputs.json | fromjson).a }}", "x\ufffdy"),
        ("{{ inputs.json | fromjson }}", {"a": "x\ufffdy"}),
        ("{{ '%c' % 0 }}", "\ufffd"),
        ("<{{ '%c' % 0 }}>", "<\ufffd>"),
        ("{{ '%c' | format(0) }}", "\ufffd"),
        ("{{ 'a' | replace('a', '%c' % 0) }}", "\ufffd"),
        ("{{ ['a', 'b'] | join('%c' % 0) }}", "a\ufffdb"),
        ("{{ '{:c}'.format(0) }}", "\ufffd"),
    ],
)
def test_nul_characters_become_replacement_characters(template: str, expected: Any) -> None:
    # PostgreSQL stores no NUL in text or jsonb; the worker and the indexer use U+FFFD too.
    assert render_value(template, CONTEXT) == expected


@pytest.mark.parametrize(
    "template",
    [
        "{{ secret('TOKEN') | trim }}",
        "{{ secret('TOKEN') | default('') }}",
        "{{ [secret('TOKEN')] | join(',') }}",
        "{{ 'x' ~ secret('TOKEN') }}",
        "x{{ secret('TOKEN') }}",
    ],
)
def test_secret_markers_pass_through_filters(template: str) -> None:
    # A marker's NULs are its delimiters: cleaning filter outputs must keep them.
    marker = render_value("{{ secret('TOKEN') }}", CONTEXT)
    assert "\x00" in marker
    assert marker in render_value(template, CONTEXT)


# ------------------------------------------------------- normal templates unaffected


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ flow.namespace }}.{{ flow.id }} r{{ flow.revision }}", "company.data.nightly r4"),
        ("{{ inputs.name | upper }} has {{ inputs.n }}", "ADA has 3"),
        ("{{ 'a' * 3 }}-{{ [1, 2] + [3] }}-{{ 'x' ~ 1 }}", "aaa-[1,2,3]-x1"),
        ("{{ '%5.2f|%-4s|%d' % (3.14159, 'ab', 10**12) }}", " 3.14|ab  |1000000000000"),
        ("{{ '{:>6}|{:.3f}|{}'.format('ab', 2.5, 10**12) }}", "    ab|2.500|1000000000000"),
        ("{{ '%(a)s=%(b)03d' % {'a': 'k', 'b': 7} }}", "k=007"),
        ("{{ 'ab' | center(6) }}|{{ 'x\ny' | indent(2) }}", "  ab  |x\n  y"),
        ("{{ 'a-b-c' | replace('-', '+') }}{{ 'ab'.replace('', '.') }}", "a+b+c.a.b."),
        ("{{ range(5) | join(',') }} {{ ['a', 'b'] | join }}", "0,1,2,3,4 ab"),
        ("{{ [1, 2, 3] | sum }} {{ [[1], [2]] | sum(start=[]) }}", "6 [1,2]"),
        ("{{ {'a': [1, 2]} | tojson }} {{ [1, 2] | string }}", '{"a":[1,2]} [1, 2]'),
        ("{{ range(7) | batch(3) | list }}", [[0, 1, 2], [3, 4, 5], [6]]),
        (
            "{% set ns = namespace(n=0) %}{% for i in range(10) %}{% set ns.n = ns.n + i %}"
            "{% endfor %}{{ ns.n }}",
            "45",
        ),
        ("{% macro hi(who) %}hi {{ who }}{% endmacro %}{{ hi(inputs.name) }}", "hi Ada"),
        ("{% for i in range(10000) %}{{ i % 10 }}{% endfor %}", "0123456789" * 1000),
        ("{{ 'a\tb'.expandtabs(4) }}{{ 'x'.ljust(3, '.') }}{{ '7'.zfill(3) }}", "a   bx..007"),
    ],
)
def test_normal_templates_are_unaffected(template: str, expected: Any) -> None:
    assert render_value(template, CONTEXT) == expected
