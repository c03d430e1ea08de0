"""Renders the `{{ … }}` expressions of task properties, safely and fast.

Jinja2 in an immutable sandbox: an expression reads its context and cannot reach Python
internals or mutate what it reads. An undefined name is an error, never an empty string.

The context (built by the core, `headrace.core.context`):
- `flow`: `id`, `namespace`, `revision`;  `execution`: `id`, `startDate`;
- `inputs`: the coerced inputs;  `outputs`: `{task id: outputs}` of finished tasks;
- `vars`: the flow's `variables`, rendered once per execution (`render_variables`);
- `labels`, `trigger` (what started the execution), `taskrun` (`id`, `attempt`, `value`
  inside a for-each), `parents` (for a subflow: the parent executions);
- `_now` (NOW_KEY): the time of the event being processed, an aware `datetime` or ISO
  text. `now()` returns it: the core never reads the clock, so the caller passes it.

Kestra's flows are written in Pebble, which headrace reads too: its operators (`a ? b :
c`, `??`, `???`, `contains`, `equals`, `..`) and `{% elseif %}` are parsed at Pebble's
precedence (`headrace.pebble_syntax`), and its and Kestra's filters, tests and functions give
Kestra's values (`headrace.pebble_filters`, dates in `headrace.java_dates`): a value
prints as Kestra prints it (`true`, null as nothing, maps as JSON), integers divide as
Java's, `loop.index` counts from 0, a map iterates as entries (`e.key`, `e.value`).
What headrace cannot give exactly as Kestra does is refused when the flow is validated.

Functions: `secret(name)`, `now(format?, timeZone?)`, `render(text, recursive?)`,
`renderOnce(text)` (render text that itself holds an expression, with the same context;
at most MAX_RENDER_DEPTH levels), `range`, `max`, `min`, `fromJson`/`json`, `yaml`,
`currentEachOutput`, `printContext`. Filters beyond Jinja's own: Kestra's (`date` with a
Java pattern or a named format, `dateAdd`, `timestamp*`, `jq`, `toJson`, `keys`,
`values`, `chunk`, `className`, `number`, `numberFormat`, `escapeChar`, `slugify`,
`substring*`, `startsWith`, `endsWith`, `split`, `merge`, `distinct`, `flatten`,
`indent`, `nindent`, `sha1`, `sha256`, `sha512`, `md5`, `base64encode`, ...), and
Pebble's versions of `default`, `length`, `slice`, `replace` (with a map), `sort`,
`capitalize`, `title`, `urlencode`. A `date` format with `%` is headrace's strftime form.

Secrets never exist where expressions are rendered (the executor): `secret('NAME')`
renders to a marker that only the attempt it was rendered for can resolve, and the
worker, which holds the secrets, swaps markers for values just before the task runs
(`headrace.secret_markers`). Filters never output NUL (it delimits markers, and
PostgreSQL cannot store it): outside secret markers, NUL becomes U+FFFD in every
filter's text, in `fromJson`'s values and in the rendered text.

Every render runs on a budget (`headrace.render_budget`): bounded text, values, steps
and time, integers within 64 bits; whatever goes over, recurses too deep or runs out of
memory is an `ExpressionError` naming the property and the expression, never a raw
exception in the executor.

This module does no I/O and reads no clock but the budget's deadline: what a render
gives is a pure function of its inputs.
"""

from __future__ import annotations

import base64
import binascii
import decimal
import hashlib
import math
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sized
from contextvars import ContextVar
from datetime import UTC, date, datetime
from functools import lru_cache, wraps
from itertools import chain
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from jinja2 import (
    ChainableUndefined,
    StrictUndefined,
    TemplateError,
    TemplateSyntaxError,
    nodes,
    pass_context,
    pass_environment,
    pass_eval_context,
)
from jinja2 import filters as jinja_filters
from jinja2.environment import Environment, Template, TemplateExpression
from jinja2.exceptions import SecurityError
from jinja2.nodes import EvalContext
from jinja2.runtime import Context, Undefined, new_context
from jinja2.sandbox import ImmutableSandboxedEnvironment, safe_range
from jinja2.utils import missing

from headrace import pebble_filters as pf
from headrace import pebble_syntax, render_budget, secret_markers, stored_reads
from headrace.errors import PathError
from headrace.render_budget import (
    MAX_RENDERED_CHARS,
    LimitExceeded,
    check_size,
    check_text_of,
    check_width,
)

# Strings rendered per second in the executor are many and mostly the same few hundred:
# compiling is ~100x slower than rendering, so compiled templates are kept by source.
TEMPLATE_CACHE_SIZE = 4096

# The context key holding the event time that `now()` returns (the core passes it).
NOW_KEY = "_now"
# `render()` may render text that renders text ...: bounded so a variable that renders
# itself fails instead of recursing until the stack ends.
MAX_RENDER_DEPTH = 5
_render_depth: ContextVar[int] = ContextVar("headrace_render_depth", default=0)

# `{{ x }}` alone, optionally with whitespace control and surrounding blanks.
_SINGLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>.*)\}\}\s*$", re.DOTALL)


class ExpressionError(PathError):
    """An expression could not be rendered: syntax, undefined name, forbidden access."""


class _Undefined(ChainableUndefined, StrictUndefined):
    """StrictUndefined whose message says which key is missing and which ones exist.

    Chainable, as Pebble's attribute access is for `??`, `default` and `is defined`:
    `trigger.body.x` with no `trigger` is undefined, not an error, until it is used."""

    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        if self._undefined_hint:
            return self._undefined_hint
        name = self._undefined_name
        obj = self._undefined_obj
        if obj is missing:
            return f"{name!r} is undefined"
        if isinstance(obj, Mapping):
            keys = ", ".join(sorted(str(key) for key in obj)) or "none"
            return f"{name!r} is undefined (available keys: {keys})"
        return f"{type(obj).__name__} value has no attribute {name!r}"


@pass_context
def _secret(context: Context, name: Any) -> str:
    # render() may render text from outside (an input): that text must not reach secrets.
    if _render_depth.get() > 0:
        raise SecurityError("secret() cannot be called in text rendered by render()")
    if not secret_markers.is_valid_name(name):
        raise SecurityError(f"invalid secret name {name!r}")
    scope = context.get(secret_markers.SCOPE_KEY)
    if scope is None:  # not a task's properties: a marker that never resolves
        return secret_markers.marker(name, "")
    if not scope.nonce:
        raise SecurityError("secret() needs the executor's secret seed (core.secret_seed)")
    if name not in scope.names:
        scope.names.append(name)
    return secret_markers.marker(name, scope.nonce)


_NUL = "\x00"


def _without_nul(value: Any) -> Any:
    """`value` with NUL replaced by U+FFFD in every string (keys too, at any depth)."""
    if isinstance(value, str):
        return value.replace(_NUL, "\ufffd")
    if isinstance(value, dict):
        return {_without_nul(key): _without_nul(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_nul(item) for item in value]
    return value


# A marker's own NULs are its delimiters: cleaning keeps marker-shaped text whole (the
# worker resolves only markers with the attempt's nonce, so a forged one stays data).
# Secret markers and read() markers (headrace.stored_reads) alike.
_MARKER_TEXT = re.compile(
    "(?:"
    + re.escape(secret_markers.MARKER_PREFIX)
    + "|"
    + re.escape(stored_reads.MARKER_PREFIX)
    + ")[^\x00]*"
    + re.escape(secret_markers.MARKER_SUFFIX)
)


def _clean_text(text: str) -> str:
    """`text` with every NUL outside secret markers replaced by U+FFFD.

    Replaced rather than refused, as the worker and the indexer do: PostgreSQL cannot
    store NUL in text or jsonb, and `'%c' % 0` or a decoded value is no reason to fail."""
    if _NUL not in text:
        return text
    pieces: list[str] = []
    start = 0
    for match in _MARKER_TEXT.finditer(text):
        pieces.append(text[start : match.start()].replace(_NUL, "\ufffd"))
        pieces.append(match.group())
        start = match.end()
    pieces.append(text[start:].replace(_NUL, "\ufffd"))
    return "".join(pieces)


def _tojson(value: Any) -> str:
    check_text_of(value)  # orjson would build the whole text first (and crash when it cannot)
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS, default=_json_default).decode()


def _fromjson(value: Any) -> Any:
    parsed = orjson.loads(value)
    # JSON holds NUL only as the escape \u0000: skip the walk for all other text.
    return _without_nul(parsed) if "\\u0000" in str(value) else parsed


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, tuple | set | frozenset | range):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


# ------------------------------------------------------------ functions and filters


def _as_datetime(value: Any) -> datetime:
    """An aware datetime from a datetime, a date, ISO text or epoch seconds (UTC if naive)."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        moment = datetime.fromtimestamp(value, UTC)
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"not an ISO-8601 date-time: {value!r}") from None
    else:
        raise ValueError(f"not a date-time: {value!r}")
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@pass_context
def _now(
    context: Context,
    format: str | None = None,
    timeZone: str | None = None,
    locale: str | None = None,
) -> str:
    """Kestra's `now(format?, timeZone?)`: the event time, formatted (ISO by default)."""
    moment = context.get(NOW_KEY)
    if moment is None:
        raise ValueError(f"now() needs the event time in the context key {NOW_KEY!r}")
    return pf.format_date(_as_datetime(moment), format, timeZone, None, locale) or ""


@pass_context
def _render(context: Context, text: Any, recursive: bool = True) -> Any:
    """Kestra's `render(text, recursive=true)`: renders until no expression is left
    (at most MAX_RENDER_DEPTH rounds); `recursive=false` (or `renderOnce`) once."""
    if not isinstance(text, str) or not has_template(text):
        return text
    rendered = _render_once(context, text)
    rounds = 1
    while recursive and has_template(rendered) and rendered != text:
        if rounds >= MAX_RENDER_DEPTH:
            raise SecurityError(f"render() still finds expressions after {rounds} rounds")
        text, rendered = rendered, _render_once(context, rendered)
        rounds += 1
    return rendered


@pass_context
def _render_once_function(context: Context, text: Any) -> Any:
    return _render(context, text, False)


def _render_once(context: Context, text: str) -> str:
    depth = _render_depth.get()
    if depth >= MAX_RENDER_DEPTH:
        raise SecurityError(f"render() nested more than {MAX_RENDER_DEPTH} levels")
    token = _render_depth.set(depth + 1)
    try:
        rendered = _text(_compile_template(text), context.get_all())
    finally:
        _render_depth.reset(token)
    # Text from outside may name a value that holds a secret marker (`{{ vars.auth }}`);
    # markers are the only text with NUL, so none may come out of render(), not even
    # a piece of one.
    from headrace.flow.inputs import has_nul  # headrace.flow imports this module

    if has_nul(rendered):
        raise SecurityError(
            "text rendered by render() may not use a secret (it may come from outside)"
        )
    return rendered


def _strftime_date(value: Any, format: str, timezone: str | None = None) -> str:
    """headrace's first `date` form: Python `strftime` codes, in the value's own offset."""
    moment = _as_datetime(value)
    if timezone is not None:
        try:
            moment = moment.astimezone(ZoneInfo(timezone))
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {timezone!r}") from None
    return moment.strftime(format)


def _date(
    value: Any,
    format: str | None = None,
    timeZone: str | None = None,
    existingFormat: str | None = None,
    locale: str | None = None,
    timezone: str | None = None,
) -> str | None:
    """Kestra's `date(format, timeZone, existingFormat, locale)` with a Java pattern or a
    named format; a format with `%` is headrace's strftime form (no `%` letter exists
    in Java patterns, so the two never meet)."""
    if format is not None and "%" in str(format) and existingFormat is None:
        return _strftime_date(value, str(format), timezone or timeZone)
    return pf.format_date(value, format, timeZone or timezone, existingFormat, locale)


def _slugify(value: Any) -> str:
    text = unicodedata.normalize("NFKD", str(value)).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _substring_before(value: Any, separator: str) -> str:
    text = str(value)
    index = text.find(separator)
    return text if index < 0 else text[:index]


def _substring_after(value: Any, separator: str) -> str:
    text = str(value)
    index = text.find(separator)
    return "" if index < 0 else text[index + len(separator) :]


def _substring_before_last(value: Any, separator: str) -> str:
    text = str(value)
    index = text.rfind(separator)
    return text if index < 0 else text[:index]


def _substring_after_last(value: Any, separator: str) -> str:
    text = str(value)
    index = text.rfind(separator)
    return "" if index < 0 else text[index + len(separator) :]


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _b64encode(value: Any) -> str:
    return base64.b64encode(_bytes(value)).decode("ascii")


def _b64decode(value: Any) -> str:
    try:
        return _without_nul(base64.b64decode(_bytes(value), validate=True).decode())
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise ValueError(f"not base64-encoded text: {exc}") from None


def _digest(name: str) -> Callable[[Any], str]:
    return lambda value: hashlib.new(name, _bytes(value)).hexdigest()


def _range(*args: Any) -> Any:
    """Pebble's `range(start, end, step)`, the end included; `range(n)` is 0 to n-1."""
    if len(args) == 1:
        return safe_range(args[0])
    return pf.inclusive_range(*args)


@pass_context
def _current_each_output(context: Context, outputs: Any) -> Any:
    return pf.current_each_output(outputs, context.get_all())


# What printContext() leaves out: the executor's own keys (the event time, secrets).
_PRIVATE_KEYS = frozenset({NOW_KEY, secret_markers.SCOPE_KEY})


@pass_context
def _print_context(context: Context) -> str:
    """Kestra's `printContext()`: the context as JSON (globals and private keys left out)."""
    values = {
        key: value
        for key, value in context.parent.items()
        if key not in _PRIVATE_KEYS and key not in _ENV.globals and not key.startswith("_")
    }
    return _tojson(values)


def _string(value: Any) -> Any:
    """Kestra's `string`: a number's text (`1.5`, a numeric text normalised as Java's
    BigDecimal prints it); other values their `String.valueOf`."""
    if isinstance(value, str):
        try:
            return str(decimal.Decimal(value.strip()))
        except decimal.InvalidOperation:
            return value
    return None if value is None else pf.java_string(value)


@pass_context  # never folded while compiling: validation must not run a jq program
def _jq(context: Context, value: Any, expression: str) -> Any:
    check_text_of(value)
    results = pf.jq(value, expression)
    if results is not None:
        check_size(render_budget.measure(results), "the jq results as JSON")
    return results


# ------------------------------------------------------------ the render budget
# Jinja's filters that can multiply their input, on the budget (`headrace.render_budget`).


def _center(value: Any, width: int = 80) -> str:
    check_width(width)
    return jinja_filters.do_center(value, width)


def _indent(s: Any, width: int | str = 4, first: Any = None, blank: Any = None) -> Any:
    """Kestra's `indent(amount, prefix?)` (every line but the first, blank ones too);
    Jinja's `indent(width, first, blank)` when given a boolean or a text width."""
    if isinstance(width, int) and not isinstance(first, bool) and not isinstance(blank, bool):
        return pf.indent(s, width, " " if first is None else first)
    return _jinja_indent(s, width, bool(first), bool(blank))


def _jinja_indent(s: Any, width: int | str, first: bool, blank: bool) -> str:
    text = str(s)
    pad = len(width) if isinstance(width, str) else width
    check_width(pad)
    check_size(len(text) + (text.count("\n") + 1) * pad)
    return jinja_filters.do_indent(s, width, first, blank)


def _format(value: Any, *args: Any, **kwargs: Any) -> str:
    render_budget.check_percent(str(value), kwargs or args)
    return jinja_filters.do_format(value, *args, **kwargs)


@pass_eval_context
def _replace(
    eval_ctx: EvalContext, s: Any, old: Any, new: Any = None, count: Any = None, regexp: Any = None
) -> Any:
    """Kestra's `replace({'old': 'new'}, regexp?)`, or Jinja's `replace(old, new, count)`."""
    if isinstance(old, Mapping):
        check_text_of(s)
        use_regexp = bool(new if regexp is None else regexp)  # replace(map, true) too
        return None if s is None else pf.replace_pairs(s, old, use_regexp)
    check_text_of(s)
    render_budget.check_replace(str(s), str(old), str(new), -1 if count is None else count)
    return jinja_filters.do_replace(eval_ctx, s, old, new, count)


@pass_environment
def _wordwrap(
    environment: Environment,
    s: Any,
    width: int = 79,
    break_long_words: bool = True,
    wrapstring: str | None = None,
    break_on_hyphens: bool = True,
) -> str:
    text = str(s)
    if isinstance(width, int) and isinstance(wrapstring, str):
        # A full line holds at least half the width (else the next word would fit).
        lines = len(text) // max(width // 2, 1) + text.count("\n") + 1
        check_size(len(text) + lines * len(wrapstring))
    return jinja_filters.do_wordwrap(
        environment, s, width, break_long_words, wrapstring, break_on_hyphens
    )


@pass_environment
def _sum(
    environment: Environment, iterable: Iterable[Any], attribute: Any = None, start: Any = 0
) -> Any:
    if not isinstance(start, list | tuple):
        return jinja_filters.sync_do_sum(environment, iterable, attribute, start)
    # `lists | sum(start=[])` concatenates: in linear time here, where Python's sum copies
    # the growing result for every item (100,000 one-item lists: minutes).
    if attribute is not None:
        iterable = map(jinja_filters.make_attrgetter(environment, attribute), iterable)
    kind = list if isinstance(start, list) else tuple
    items = list(iterable)
    for item in items:
        if not isinstance(item, kind):
            raise TypeError(f"can only concatenate {kind.__name__}s, not {type(item).__name__}")
    check_size(len(start) + sum(map(len, items)))
    return kind(chain(start, *items))


# Filters that turn their whole value into text: measured first (`[s] * 100000 | string`).
_TEXT_FILTERS = frozenset({"string", "pprint", "urlencode", "xmlattr"})


def _guarded(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """`function` as a filter on the budget: one step, its result counted, no NUL in it."""
    value_at = 0 if getattr(function, "jinja_pass_arg", None) is None else 1
    makes_text = name in _TEXT_FILTERS

    @wraps(function)  # keeps `jinja_pass_arg` (pass_context and the like)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        render_budget.step()
        if makes_text and len(args) > value_at:
            check_text_of(args[value_at])
        result = function(*args, **kwargs)
        _count_built(result, args)
        return _clean_text(result) if isinstance(result, str) else result

    return guarded


# Tuples, not `X | Y`: isinstance with a tuple is twice as fast, and these run per call.
_BUILT_TYPES = (str, bytes, list, tuple, dict)
_TEXT_TYPES = (str, bytes)
_SCALAR_TYPES = (str, int, float)


def _count_built(result: Any, args: tuple[Any, ...]) -> None:
    """Count a text or collection a filter or call returned, unless it is an argument."""
    if not isinstance(result, _BUILT_TYPES):
        return
    for arg in args:
        if result is arg:
            return  # passed through (`default`): nothing was built
    if isinstance(result, _TEXT_TYPES):
        check_size(len(result))
    render_budget.produce(len(result))


def _check_product(left: Any, right: Any) -> None:
    if isinstance(left, int) and isinstance(right, int):
        # The product has at least bit_length(left) + bit_length(right) - 1 bits.
        if left.bit_length() + right.bit_length() > 65:
            raise LimitExceeded("integer beyond the 64-bit range")
        return
    for sequence, count in ((left, right), (right, left)):
        if isinstance(sequence, str | list | tuple) and isinstance(count, int):
            check_size(len(sequence) * count, "a repetition")


def _check_power(left: Any, right: Any) -> None:
    if not (isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1):
        return
    # |left| ** right has more than (bit_length(left) - 1) * right bits.
    if (abs(left).bit_length() - 1) * right > 64:
        raise LimitExceeded("integer beyond the 64-bit range")


def _finalize(value: Any) -> Any:
    """Each `{{ … }}` of a template before it becomes text: a collection is measured
    first (`str()` of 100,000 references to one big text would be gigabytes)."""
    if type(value) is str:
        return value
    if not isinstance(value, _SCALAR_TYPES):
        check_text_of(value)
    return pf.text(value)  # as Kestra prints it: `true`, null as nothing, maps as JSON


def _check_secret_calls(tree: nodes.Template) -> None:
    """`secret()` takes its name as a literal string, called directly: a name computed
    when the flow runs (`secret(inputs.which)`) would let whoever starts the flow choose
    which secret its task gets. Any other use of the name (`{% set s = secret %}`) too."""
    literal_calls = {
        id(call.node)
        for call in tree.find_all(nodes.Call)
        if isinstance(call.node, nodes.Name)
        and call.node.name == "secret"
        and len(call.args) == 1
        and isinstance(call.args[0], nodes.Const)
        and isinstance(call.args[0].value, str)
        and not (call.kwargs or call.dyn_args or call.dyn_kwargs)
    }
    for name in tree.find_all(nodes.Name):
        if name.name == "secret" and id(name) not in literal_calls:
            raise TemplateSyntaxError(
                "secret() takes the secret's name as one literal string, as in "
                "secret('DB_PASSWORD'), never a value computed when the flow runs",
                name.lineno,
            )


def _check_calls(environment: Environment, tree: nodes.Template) -> None:
    """A call to a function that does not exist fails when the flow is validated, not
    when it runs (Kestra's functions that headrace lacks name their alternative)."""
    for name, lineno in pebble_syntax.unknown_calls(tree, environment.globals):
        reason = pebble_syntax.REFUSED_FUNCTIONS.get(name, "no such function")
        raise TemplateSyntaxError(f"{name}() is not supported: {reason}", lineno)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _call_environment(name: str, argument: nodes.Expr) -> nodes.Call:
    return nodes.Call(nodes.EnvironmentAttribute(name), [argument], [], None, None, lineno=1)


class _Environment(ImmutableSandboxedEnvironment):
    # The operators that can build big values, or integers beyond 64 bits; `/` and `%`
    # compute as Pebble does (integers divide as integers).
    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})
    code_generator_class = pebble_syntax.PebbleCodeGenerator

    # Pebble's operators, called by the code `pebble_syntax.PebbleParser` builds.
    pebble_coalesce = staticmethod(pf.coalesce)
    pebble_contains = staticmethod(pf.contains)
    pebble_range = staticmethod(pf.inclusive_range)

    @property
    def lexer(self) -> pebble_syntax.PebbleLexer:  # type: ignore[override]
        lexer = self.__dict__.get("_pebble_lexer")
        if lexer is None:
            lexer = self.__dict__["_pebble_lexer"] = pebble_syntax.PebbleLexer(self)
        return lexer

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        return pebble_syntax.PebbleParser(self, source, name, filename).parse()

    def compile_expression(self, source: str, undefined_to_none: bool = True) -> TemplateExpression:
        """Jinja's, with Pebble's parser (Jinja builds its own parser here)."""
        parser = pebble_syntax.PebbleParser(self, source, state="variable")
        try:
            expr = parser.parse_expression()
            if not parser.stream.eos:
                raise TemplateSyntaxError("chunk after expression", parser.stream.current.lineno)
            pebble_syntax.check_tree(expr)
            expr.set_environment(self)
        except TemplateSyntaxError:
            self.handle_exception(source=source)
        body = [nodes.Assign(nodes.Name("result", "store"), expr, lineno=1)]
        template = self.from_string(nodes.Template(body, lineno=1))
        return TemplateExpression(template, undefined_to_none)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "/" and _is_number(left) and _is_number(right):
            return pf.divide(left, right)
        if operator == "%" and _is_number(left) and _is_number(right):
            return pf.modulo(left, right)
        if operator == "+" and (type(left) is str) != (type(right) is str):
            # Pebble: "n=" + 1 is "n=1" (a text subclass, such as Markup, stays Jinja's)
            result = pf.add_text(left, right)
            check_size(len(result))
            return result
        if operator == "*":
            _check_product(left, right)
        elif operator == "**":
            _check_power(left, right)
        elif operator == "+" and isinstance(left, str | list | tuple):
            if isinstance(right, str | list | tuple):
                check_size(len(left) + len(right))
        elif operator == "%" and isinstance(left, str):
            render_budget.check_percent(left, right)
        result = super().call_binop(context, operator, left, right)
        if type(result) is int:  # not bool
            render_budget.check_int(result)
        elif isinstance(result, str | list | tuple):
            render_budget.produce(len(result))
        return result

    def call(
        __self,  # Jinja's names: no keyword argument of the call can clash with them
        __context: Context,
        __obj: Any,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        render_budget.step()
        args = render_budget.check_method(__obj, args, kwargs)
        result = super().call(__context, __obj, *args, **kwargs)
        _count_built(result, args)
        return result

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        template: str = value.__self__
        is_map = value.__name__ == "format_map"

        def checked(*args: Any, **kwargs: Any) -> str:
            if is_map and args and isinstance(args[0], Mapping):
                render_budget.check_format(template, (), args[0])
            else:
                render_budget.check_format(template, args, kwargs)
            return wrapped(*args, **kwargs)

        return checked

    def getattr(self, obj: Any, attribute: str) -> Any:
        # `outputs.extract.items` must mean the output named "items", not dict.items.
        if isinstance(obj, Mapping) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def concat(self, pieces: Iterable[str]) -> str:  # type: ignore[override]  # "".join in Jinja
        """The text of a macro, a `{% set %}` block or a `{% call %}`: measured before
        it is joined (a loop inside may have gathered gigabytes of references)."""
        parts = pieces if isinstance(pieces, list) else list(pieces)
        size = sum(map(len, parts))
        check_size(size)
        render_budget.produce(size)
        return "".join(parts)

    def join_values(self, values: tuple[Any, ...]) -> str:
        """`a ~ b`: the text of the parts (as Pebble: null is nothing, `true`, a map as
        `{a=1}`), measured before it is built."""
        size = sum(len(v) if isinstance(v, str) else render_budget.measure(v) for v in values)
        check_size(size)
        return pf.concat(values)

    def budget_loop(self, iterable: Iterable[Any]) -> Iterable[Any]:
        """The items of a `{% for %}`, a step each: a loop that outputs nothing and calls
        nothing (`{% for i in r %}{% for j in r %}{% endfor %}{% endfor %}`) counts too.
        A list, a range or a dict pays for all its items at once, before the first."""
        if isinstance(iterable, Sized):
            render_budget.step(len(iterable))
            if isinstance(iterable, Mapping):  # Pebble iterates a map's entries
                return [pf.Entry(key, value) for key, value in iterable.items()]
            return iterable
        return self._stepped(iterable)

    @staticmethod
    def _stepped(iterable: Iterable[Any]) -> Iterator[Any]:
        for item in iterable:
            render_budget.step()
            yield item

    def _generate(
        self,
        source: nodes.Template,
        name: str | None,
        filename: str | None,
        defer_init: bool = False,
    ) -> str:
        _check_secret_calls(source)
        _check_calls(self, source)
        # Jinja has no hook for loop iterations or `~`: both are rewritten to call the
        # methods above. `_generate` sees every tree, of templates and of expressions.
        for loop in list(source.find_all(nodes.For)):
            loop.iter = _call_environment("budget_loop", loop.iter)
        for concat in list(source.find_all(nodes.Concat)):
            concat.nodes = [_call_environment("join_values", nodes.Tuple(concat.nodes, "load"))]
        source.set_environment(self)
        return super()._generate(source, name, filename, defer_init)


class _Template(Template):
    """Jinja's Template, whose render copies the globals from a plain dict: Jinja copies
    them from a ChainMap at every render, key by key in Python (a third of a short
    render). The globals are all set when this module is imported."""

    def new_context(
        self,
        vars: dict[str, Any] | None = None,
        shared: bool = False,
        locals: Mapping[str, Any] | None = None,
    ) -> Context:
        flat = self.__dict__.get("_flat_globals")
        if flat is None:
            flat = self.__dict__["_flat_globals"] = dict(self.globals)
        return new_context(self.environment, self.name, self.blocks, vars, shared, flat, locals)


_ENV = _Environment(
    undefined=_Undefined,
    autoescape=False,
    keep_trailing_newline=True,  # scripts keep their final newline
    finalize=_finalize,
)
_ENV.template_class = _Template
_ENV.globals.update(
    secret=_secret,
    now=_now,
    render=_render,
    renderOnce=_render_once_function,
    range=_range,
    max=pf.pebble_max,
    min=pf.pebble_min,
    fromJson=_fromjson,
    json=_fromjson,
    yaml=pf.from_yaml,
    currentEachOutput=_current_each_output,
    printContext=_print_context,
)
stored_reads.register(_ENV)  # read(): a file's text, resolved on the worker
# Random text of any size (`lipsum(n=10**6)`): unbounded, and random, so replays diverge.
del _ENV.globals["lipsum"]
_ENV.filters.update(
    {
        "tojson": _tojson,
        "toJson": _tojson,
        "json": _tojson,  # Kestra's name before 0.18
        "fromjson": _fromjson,
        "fromJson": _fromjson,
        "date": _date,
        "dateAdd": pf.date_add,
        "timestamp": pf.timestamp,
        "timestampMilli": pf.timestamp_milli,
        "timestampMicro": pf.timestamp_micro,
        "timestampNano": pf.timestamp_nano,
        "slugify": pf.null_passes(_slugify),
        "substringBefore": pf.null_passes(_substring_before),
        "substringAfter": pf.null_passes(_substring_after),
        "substringBeforeLast": pf.null_passes(_substring_before_last),
        "substringAfterLast": pf.null_passes(_substring_after_last),
        "b64encode": pf.null_passes(_b64encode),
        "base64encode": pf.null_passes(_b64encode),
        "b64decode": pf.null_passes(_b64decode),
        "base64decode": pf.null_passes(_b64decode),
        "sha1": pf.null_passes(pf.sha1),
        "sha256": pf.null_passes(_digest("sha256")),
        "sha512": pf.null_passes(_digest("sha512")),
        "md5": pf.null_passes(_digest("md5")),
        "default": pf.default,
        "d": pf.default,
        "center": _center,
        "indent": _indent,
        "nindent": pf.nindent,
        "format": _format,
        "join": pf.join,
        "replace": _replace,
        "wordwrap": _wordwrap,
        "sum": _sum,
        "slice": pf.slice_,
        "abbreviate": pf.null_passes(pf.abbreviate),
        "abs": pf.abs_,
        "capitalize": pf.null_passes(pf.capitalize),
        "title": pf.null_passes(pf.title),
        "upper": pf.null_passes(jinja_filters.do_upper),
        "lower": pf.null_passes(jinja_filters.do_lower),
        "trim": pf.null_passes(pf.trim),
        "startsWith": pf.null_passes(pf.starts_with),
        "endsWith": pf.null_passes(pf.ends_with),
        "escapeChar": pf.null_passes(pf.escape_char),
        "urlencode": pf.null_passes(pf.url_encode),
        "urldecode": pf.null_passes(pf.url_decode),
        "split": pf.null_passes(pf.split),
        "length": pf.length,
        "count": pf.length,
        "first": pf.first,
        "last": pf.last,
        "keys": pf.keys,
        "values": pf.values,
        "merge": pf.merge,
        "reverse": pf.null_passes(pf.reverse),
        "sort": pf.sort,
        "rsort": pf.rsort,
        "chunk": pf.chunk,
        "distinct": pf.distinct,
        "flatten": pf.flatten,
        "number": pf.number,
        "numberFormat": pf.number_format,
        "numberformat": pf.number_format,
        "className": pf.class_name,
        "string": _string,
        "jq": _jq,
    }
)
_ENV.tests.update(
    {
        "null": pf.is_null,
        "empty": pf.is_empty,
        "map": pf.is_map,
        "json": pf.is_json,
        "iterable": pf.is_iterable,
        "even": pf.is_even,
        "odd": pf.is_odd,
    }
)
_ENV.filters = {name: _guarded(name, function) for name, function in _ENV.filters.items()}


def has_template(text: str) -> bool:
    """True when `text` holds Jinja syntax and must be rendered."""
    return "{{" in text or "{%" in text


@lru_cache(maxsize=TEMPLATE_CACHE_SIZE)
def _compile_template(source: str) -> Template:
    return _ENV.from_string(source)


@lru_cache(maxsize=TEMPLATE_CACHE_SIZE)
def _compile_single(source: str) -> TemplateExpression | None:
    """The expression of a string that is exactly one `{{ … }}`, else None."""
    match = _SINGLE_EXPRESSION.match(source)
    if match is None:
        return None
    expr = match.group("expr")
    if "{{" in expr or "}}" in expr or "{%" in expr:
        return None  # several expressions: `{{ a }}-{{ b }}`
    # Whitespace control marks (`{{- x -}}`) touch the braces; `{{ -1 }}` has a blank.
    if expr[:1] in "-+":
        expr = expr[1:]
    if expr[-1:] in "-+":
        expr = expr[:-1]
    return _ENV.compile_expression(expr, undefined_to_none=False)


def cache_info() -> Any:
    """Hit/miss counters of the compiled-template cache (for tests and metrics)."""
    return _compile_template.cache_info()


def _native(value: Any) -> Any:
    """A JSON-friendly value from an expression's result, within the budget."""
    if isinstance(value, str):
        check_size(len(value), "the value")
        return _clean_text(value)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        render_budget.check_int(value)
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, tuple | range):
        value = list(value)
    if isinstance(value, dict | list):
        # Often data passed through (`{{ trigger.body }}`), which the edges have bounded;
        # the executor serialises it into a message, so it is measured as JSON would be.
        check_size(render_budget.measure(value), "the value as JSON")
        # As JSON has it (text keys, dates as ISO text): the message that carries it must
        # encode, or the executor would fail after sending part of a step.
        return orjson.loads(
            orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS, default=_json_default)
        )
    if isinstance(value, datetime | date):
        return value.isoformat()
    check_text_of(value)
    return _native(str(value))


# Reading the clock costs more than a chunk; whatever is slow between chunks (loops,
# calls, filters) reads it anyway, at each step.
_CHUNKS_PER_CLOCK_READ = 64


def _text(template: Template, context: Mapping[str, Any]) -> str:
    """`template`'s text, refused as soon as it passes MAX_RENDERED_CHARS.

    Checked chunk by chunk as Jinja generates them, for size and time both: a size cap
    alone misses a loop that outputs little for minutes, a deadline alone lets a fast
    loop output gigabytes within its second, and checking the whole text at the end is
    too late for either."""
    pieces: list[str] = []
    size = 0
    chunks = template.generate(context)
    try:
        for chunk in chunks:
            size += len(chunk)
            if size > MAX_RENDERED_CHARS:
                raise LimitExceeded(f"rendered text exceeds {MAX_RENDERED_CHARS} characters")
            pieces.append(chunk)
            if not len(pieces) % _CHUNKS_PER_CLOCK_READ:
                render_budget.check_deadline()
    finally:
        chunks.close()
    return "".join(pieces)


def _render_string(source: str, context: Mapping[str, Any], path: str) -> Any:
    try:
        expression = _compile_single(source)
        if expression is not None:
            result = expression(context)
            if isinstance(result, Undefined):
                result._fail_with_undefined_error()
            return _native(result)
        return _clean_text(_text(_compile_template(source), context))
    except TemplateSyntaxError as exc:
        raise ExpressionError(path, f"template syntax error: {exc.message}") from exc
    except TemplateError as exc:
        raise ExpressionError(path, f"{exc.message} in {_preview(source)}") from exc
    except (ArithmeticError, LookupError, TypeError, ValueError) as exc:
        # Errors of the user's expression (`1/0`, `'a' + 1`, bad JSON for fromjson).
        raise ExpressionError(path, f"{type(exc).__name__}: {exc} in {_preview(source)}") from exc
    # `from None`: these tracebacks hold thousands of frames, and what the frames hold.
    except RecursionError:
        reason = f"expression nested too deeply (recursion) in {_preview(source)}"
        raise ExpressionError(path, reason) from None
    except MemoryError:
        raise ExpressionError(path, f"out of memory rendering {_preview(source)}") from None


def _preview(source: str, limit: int = 80) -> str:
    return repr(source if len(source) <= limit else source[: limit - 1] + "…")


def _join(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def render_value(value: Any, context: Mapping[str, Any], path: str = "") -> Any:
    """Render every template string inside `value` (dicts and lists recursively).

    A string that is exactly one expression gives that expression's native value
    (`"{{ inputs.n }}"` -> 3); other template strings give text; the rest is returned
    as is. Raises `ExpressionError` naming `path` (e.g. `commands[1]`). One render
    budget covers all of `value` (or the call's that this one is part of).
    """
    if isinstance(value, str) and not has_template(value):
        return value
    token = render_budget.open_budget()
    try:
        if isinstance(value, str):
            return _render_string(value, context, path)
        if isinstance(value, Mapping):
            return {
                key: render_value(item, context, _join(path, key)) for key, item in value.items()
            }
        if isinstance(value, list | tuple):
            return [render_value(item, context, _join(path, i)) for i, item in enumerate(value)]
        return value
    finally:
        render_budget.close_budget(token)


def render_properties(properties: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    """Render a task's properties on one budget; error paths are property names (`env.TOKEN`)."""
    token = render_budget.open_budget()
    try:
        return {key: render_value(value, context, str(key)) for key, value in properties.items()}
    finally:
        render_budget.close_budget(token)


def render_variables(
    variables: Mapping[str, Any], context: Mapping[str, Any], path: str = "variables"
) -> dict[str, Any]:
    """A flow's `variables` rendered with `context` (which need not hold `vars` yet).

    Each variable sees the ones declared before it as `vars` (Kestra renders them
    lazily; declaration order is the simple, predictable equivalent). Errors name
    `variables.<key>`. One render budget covers them all.
    """
    rendered: dict[str, Any] = {}
    token = render_budget.open_budget()
    try:
        for key, value in variables.items():
            scope = {**context, "vars": dict(rendered)}
            rendered[key] = render_value(value, scope, _join(path, key))
    finally:
        render_budget.close_budget(token)
    return rendered


def template_syntax_errors(value: Any, path: str = "") -> list[tuple[str, str]]:
    """(path, reason) for every string inside `value` that is not a valid template."""
    found: list[tuple[str, str]] = []
    if isinstance(value, str):
        if has_template(value):
            try:
                _compile_template(value)
            except TemplateSyntaxError as exc:
                where = f" (line {exc.lineno})" if "\n" in value else ""
                found.append((path, f"template syntax error: {exc.message}{where}"))
            except RecursionError:  # Jinja's parser recurses: ~70 nested brackets suffice
                found.append((path, "template syntax error: expression nested too deeply"))
    elif isinstance(value, Mapping):
        for key, item in value.items():
            found.extend(template_syntax_errors(item, _join(path, key)))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found.extend(template_syntax_errors(item, _join(path, i)))
    return found
