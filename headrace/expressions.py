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

Functions: `secret(name)`, `now()`, `render(text)` (renders text that itself holds an
expression, with the same context; at most MAX_RENDER_DEPTH levels). Filters beyond
Jinja's own (`default`, `upper`, `lower`, `trim`, `replace`, `join`, `length`, ...):
`date(format)`, `dateAdd(amount, unit)`, `timestamp`, `timestampMilli`,
`toJson`/`tojson`, `fromJson`/`fromjson`, `slugify`, `substringBefore`,
`substringAfter`, `substringBeforeLast`, `substringAfterLast`, `b64encode`/`base64encode`,
`b64decode`/`base64decode`, `sha256`, `sha512`, `md5`; `default(x)` also replaces null.
Dates are ISO-8601 text in and out.

Secrets never exist where expressions are rendered (the executor): `secret('NAME')`
renders to a marker that only the attempt it was rendered for can resolve, and the
worker, which holds the secrets, swaps markers for values just before the task runs
(`headrace.secret_markers`). Filters never output NUL (it delimits markers, and
PostgreSQL cannot store it): `b64decode` and `fromJson` give U+FFFD instead.

This module does no I/O and reads no clock: rendering is a pure function of its inputs.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import hashlib
import math
import re
import unicodedata
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, pass_context
from jinja2.environment import Template, TemplateExpression
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import missing

from headrace import secret_markers
from headrace.errors import HeadraceError

# Strings rendered per second in the executor are many and mostly the same few hundred:
# compiling is ~100x slower than rendering, so compiled templates are kept by source.
TEMPLATE_CACHE_SIZE = 4096

# One-liner memory bombs (`'x' * 10**10`) are refused; loops are bounded by the
# sandbox's `range` limit (100,000 items), not here.
MAX_SEQUENCE_LENGTH = 1_000_000
MAX_EXPONENT = 10_000

# The context key holding the event time that `now()` returns (the core passes it).
NOW_KEY = "_now"
# `render()` may render text that renders text ...: bounded so a variable that renders
# itself fails instead of recursing until the stack ends.
MAX_RENDER_DEPTH = 5
_render_depth: ContextVar[int] = ContextVar("headrace_render_depth", default=0)

# `{{ x }}` alone, optionally with whitespace control and surrounding blanks.
_SINGLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>.*)\}\}\s*$", re.DOTALL)


class ExpressionError(HeadraceError):
    """An expression could not be rendered: syntax, undefined name, forbidden access."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}" if self.path else self.reason


class _Undefined(StrictUndefined):
    """StrictUndefined whose message says which key is missing and which ones exist."""

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


def _tojson(value: Any) -> str:
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
def _now(context: Context) -> str:
    moment = context.get(NOW_KEY)
    if moment is None:
        raise ValueError(f"now() needs the event time in the context key {NOW_KEY!r}")
    return _as_datetime(moment).isoformat()


@pass_context
def _render(context: Context, text: Any) -> Any:
    if not isinstance(text, str) or not has_template(text):
        return text
    depth = _render_depth.get()
    if depth >= MAX_RENDER_DEPTH:
        raise SecurityError(f"render() nested more than {MAX_RENDER_DEPTH} levels")
    token = _render_depth.set(depth + 1)
    try:
        return _compile_template(text).render(context.get_all())
    finally:
        _render_depth.reset(token)


def _date(value: Any, format: str = "%Y-%m-%dT%H:%M:%S%z", timezone: str | None = None) -> str:
    moment = _as_datetime(value)
    if timezone is not None:
        try:
            moment = moment.astimezone(ZoneInfo(timezone))
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {timezone!r}") from None
    return moment.strftime(format)


_UNITS = {
    "SECONDS": timedelta(seconds=1),
    "MINUTES": timedelta(minutes=1),
    "HOURS": timedelta(hours=1),
    "DAYS": timedelta(days=1),
    "WEEKS": timedelta(weeks=1),
}


def _date_add(value: Any, amount: int, unit: str) -> str:
    """Kestra's `dateAdd(-1, 'DAYS')`; months and years keep the day (clamped)."""
    moment = _as_datetime(value)
    name = str(unit).upper()
    name = name if name.endswith("S") else name + "S"
    if not isinstance(amount, int) or isinstance(amount, bool):
        raise ValueError(f"dateAdd amount must be an integer, got {amount!r}")
    if name in _UNITS:
        return (moment + _UNITS[name] * amount).isoformat()
    if name in ("MONTHS", "YEARS"):
        months = moment.month - 1 + amount * (12 if name == "YEARS" else 1)
        year, month = moment.year + months // 12, months % 12 + 1
        day = min(moment.day, calendar.monthrange(year, month)[1])
        return moment.replace(year=year, month=month, day=day).isoformat()
    units = ", ".join([*_UNITS, "MONTHS", "YEARS"])
    raise ValueError(f"unknown unit {unit!r} (units: {units})")


def _timestamp(value: Any) -> int:
    return int(_as_datetime(value).timestamp())


def _timestamp_milli(value: Any) -> int:
    moment = _as_datetime(value)
    return int(moment.timestamp()) * 1000 + moment.microsecond // 1000


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


def _default(value: Any, fallback: Any = "", boolean: bool = False) -> Any:
    """Jinja's `default`, which also replaces null as Kestra's does (inputs left unset)."""
    if value is None or isinstance(value, Undefined) or (boolean and not value):
        return fallback
    return value


def _digest(name: str) -> Callable[[Any], str]:
    return lambda value: hashlib.new(name, _bytes(value)).hexdigest()


class _Environment(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            if isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
                raise SecurityError(f"exponent {right} is too large (max {MAX_EXPONENT})")
        else:
            for seq, count in ((left, right), (right, left)):
                if (
                    isinstance(seq, str | list | tuple)
                    and isinstance(count, int)
                    and len(seq) * count > MAX_SEQUENCE_LENGTH
                ):
                    raise SecurityError(
                        f"repetition would create {len(seq) * count} items "
                        f"(max {MAX_SEQUENCE_LENGTH})"
                    )
        return super().call_binop(context, operator, left, right)

    def getattr(self, obj: Any, attribute: str) -> Any:
        # `outputs.extract.items` must mean the output named "items", not dict.items.
        if isinstance(obj, Mapping) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)


_ENV = _Environment(
    undefined=_Undefined,
    autoescape=False,
    keep_trailing_newline=True,  # scripts keep their final newline
)
_ENV.globals.update(secret=_secret, now=_now, render=_render)
_ENV.filters.update(
    {
        "tojson": _tojson,
        "toJson": _tojson,
        "fromjson": _fromjson,
        "fromJson": _fromjson,
        "date": _date,
        "dateAdd": _date_add,
        "timestamp": _timestamp,
        "timestampMilli": _timestamp_milli,
        "slugify": _slugify,
        "substringBefore": _substring_before,
        "substringAfter": _substring_after,
        "substringBeforeLast": _substring_before_last,
        "substringAfterLast": _substring_after_last,
        "b64encode": _b64encode,
        "base64encode": _b64encode,
        "b64decode": _b64decode,
        "base64decode": _b64decode,
        "sha256": _digest("sha256"),
        "sha512": _digest("sha512"),
        "md5": _digest("md5"),
        "default": _default,
        "d": _default,
    }
)


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
    """A JSON-friendly value from an expression's result."""
    if value is None or isinstance(value, str | bool | int | float | dict | list):
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        return value
    if isinstance(value, tuple | range):
        return list(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def _render_string(source: str, context: Mapping[str, Any], path: str) -> Any:
    try:
        expression = _compile_single(source)
        if expression is not None:
            result = expression(context)
            if isinstance(result, Undefined):
                result._fail_with_undefined_error()
            return _native(result)
        return _compile_template(source).render(context)
    except TemplateSyntaxError as exc:
        raise ExpressionError(path, f"template syntax error: {exc.message}") from exc
    except TemplateError as exc:
        raise ExpressionError(path, f"{exc.message} in {_preview(source)}") from exc
    except (ArithmeticError, LookupError, TypeError, ValueError) as exc:
        # Errors of the user's expression (`1/0`, `'a' + 1`, bad JSON for fromjson).
        raise ExpressionError(path, f"{type(exc).__name__}: {exc} in {_preview(source)}") from exc


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
    as is. Raises `ExpressionError` naming `path` (e.g. `commands[1]`).
    """
    if isinstance(value, str):
        if not has_template(value):
            return value
        return _render_string(value, context, path)
    if isinstance(value, Mapping):
        return {key: render_value(item, context, _join(path, key)) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [render_value(item, context, _join(path, i)) for i, item in enumerate(value)]
    return value


def render_properties(properties: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    """Render a task's properties; error paths are property names (`env.TOKEN`)."""
    return {key: render_value(value, context, str(key)) for key, value in properties.items()}


def render_variables(
    variables: Mapping[str, Any], context: Mapping[str, Any], path: str = "variables"
) -> dict[str, Any]:
    """A flow's `variables` rendered with `context` (which need not hold `vars` yet).

    Each variable sees the ones declared before it as `vars` (Kestra renders them
    lazily; declaration order is the simple, predictable equivalent). Errors name
    `variables.<key>`.
    """
    rendered: dict[str, Any] = {}
    for key, value in variables.items():
        scope = {**context, "vars": dict(rendered)}
        rendered[key] = render_value(value, scope, _join(path, key))
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
    elif isinstance(value, Mapping):
        for key, item in value.items():
            found.extend(template_syntax_errors(item, _join(path, key)))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found.extend(template_syntax_errors(item, _join(path, i)))
    return found
