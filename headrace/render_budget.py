"""The render budget: what rendering expressions may cost, and the checks that hold it.

The executor renders task properties inside a Faust agent: an expression that takes
seconds or gigabytes stalls or kills a whole partition of executions. The sandbox's
hooks in `headrace.expressions` (operators, calls, filters, loops, output) call these
checks so that an expression is refused *before* it allocates or loops too much.

One budget covers one top-level render (`render_value`, `render_properties`,
`render_variables`); nested renders (`render()`) share it. Its limits are deterministic
(sizes, steps), so a replay refuses what the first run refused; the deadline, read from
this thread's CPU clock, is only a backstop: it decides whether a render is refused, never
what a render gives.

No I/O; the only clock read is the deadline's.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from contextvars import ContextVar, Token
from string import Formatter
from typing import Any

from jinja2.exceptions import SecurityError

# The text one template renders to: 256 Ki characters are at most 1 MiB of UTF-8
# (Kafka's default max.message.bytes, which the task request must fit), and match the
# gateway's body limit and the worker's cap on an attempt's outputs (both 256 KiB).
MAX_RENDERED_CHARS = 256 * 1024
# One value inside an expression, or given by a lone `{{ … }}` (often data passed
# through, up to a 1 MiB message): a text's characters, a collection's items (counted
# as JSON would spell them), a width or a precision. `'x' * 10**10` and
# `'a'.ljust(10**9)` are refused before they allocate.
MAX_SEQUENCE_LENGTH = 1_000_000
# Characters and items that the filters, calls and operators of one render produce in
# all: each piece may be under MAX_SEQUENCE_LENGTH and the sum still be gigabytes
# (`range(100000) | map('center', 999999) | list`). 16 M is tens of MB at most.
MAX_PRODUCED = 16 * MAX_SEQUENCE_LENGTH
# Loop iterations, calls and filter applications of one render: a normal template takes
# tens, a million calls about a second. Bounds what no size sees: nested loops that
# output nothing (`range(100000)` twice is 10^10 iterations).
MAX_STEPS = 1_000_000
# CPU-time backstop for what the counts above do not see (one slow call, e.g. sorting
# a million items): typical renders take microseconds. CPU time of this thread, not the
# wall clock: a busy machine or a stalled process must not fail a template that would
# pass on a quiet one (a refused template is refused for good, not retried).
RENDER_TIMEOUT_S = 1.0
# Integers stay within 64 bits, as everywhere downstream (orjson refuses larger ones,
# Avro long, PostgreSQL bigint); this also stops `(9 ** 10000) ** 10000` before it runs.
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
# Digits of a width or precision read from a format string ('%1000000000d').
_MAX_WIDTH_DIGITS = len(str(MAX_SEQUENCE_LENGTH))

_cpu_clock = time.thread_time  # replaced by tests to move time without spinning


class LimitExceeded(SecurityError):
    """An expression went over the render budget (rendered as an `ExpressionError`)."""


class Budget:
    """What one render has spent, and when its time is up."""

    __slots__ = ("deadline", "produced", "steps")

    def __init__(self) -> None:
        self.deadline = _cpu_clock() + RENDER_TIMEOUT_S
        self.steps = 0
        self.produced = 0


_current: ContextVar[Budget | None] = ContextVar("headrace_render_budget", default=None)


def open_budget() -> Token[Budget | None] | None:
    """Start a budget, unless one runs already (nested renders share the outer one)."""
    if _current.get() is not None:
        return None
    return _current.set(Budget())


def close_budget(token: Token[Budget | None] | None) -> None:
    if token is not None:
        _current.reset(token)


def check_deadline() -> None:
    budget = _current.get()
    if budget is not None and _cpu_clock() > budget.deadline:
        raise LimitExceeded(f"rendering took longer than {RENDER_TIMEOUT_S:g} s")


def step(count: int = 1) -> None:
    """Count loop iterations, calls or filter applications; check the deadline."""
    budget = _current.get()
    if budget is None:
        return
    budget.steps += count
    if budget.steps > MAX_STEPS:
        raise LimitExceeded(f"more than {MAX_STEPS} steps (loop iterations, calls, filters)")
    if _cpu_clock() > budget.deadline:
        raise LimitExceeded(f"rendering took longer than {RENDER_TIMEOUT_S:g} s")


def produce(size: int) -> None:
    """Count `size` characters or items that an expression has just built."""
    budget = _current.get()
    if budget is None:
        return
    budget.produced += size
    if budget.produced > MAX_PRODUCED:
        raise LimitExceeded(f"expressions built more than {MAX_PRODUCED} characters and items")


def check_size(size: int, what: str = "the text") -> None:
    if size > MAX_SEQUENCE_LENGTH:
        # Not the size: a measure stops counting past the limit.
        raise LimitExceeded(f"{what} would exceed {MAX_SEQUENCE_LENGTH} characters or items")


def check_width(width: Any) -> None:
    """A width, precision or count (`ljust(n)`, `slice(n)`) within MAX_SEQUENCE_LENGTH."""
    if isinstance(width, int) and width > MAX_SEQUENCE_LENGTH:
        raise LimitExceeded(f"width {width} is too large (max {MAX_SEQUENCE_LENGTH})")


def check_int(value: int) -> None:
    if not INT64_MIN <= value <= INT64_MAX:
        raise LimitExceeded("integer beyond the 64-bit range")


def measure(value: Any, limit: int = MAX_SEQUENCE_LENGTH) -> int:
    """The characters and items `value` turns into as text or JSON, counting a shared
    reference each time (`[s] * 1000` is 1000 * len(s)); stops once past `limit`.

    Iterative: a value nested a thousand deep does not exhaust the stack."""
    total = 0
    stack = [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, str | bytes):
            total += len(item)
        elif isinstance(item, Mapping):
            total += 1 + len(item)
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            total += 1
            stack.extend(item)
        else:
            total += 1
            if isinstance(item, int):
                check_int(item)
    return total


def check_text_of(value: Any) -> None:
    """`value` may be turned into text or JSON (`str()`, `tojson`, `'%s' %`)."""
    if not isinstance(value, str):
        check_size(measure(value), "the value as text")


# A printf directive: mapping key, flags, width, precision, length modifier, conversion.
_PERCENT = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d*))?[hlL]?(.)", re.DOTALL)


def check_percent(template: str, values: Any) -> None:
    """`template % values` without a width or precision over the limit, literal
    (`'%1000000000d'`) or passed (`'%*d' % (10**9, 1)`)."""
    positional = values if isinstance(values, tuple) else (values,)
    index = 0
    for match in _PERCENT.finditer(template):
        width, precision, conversion = match.groups()
        if conversion == "%":
            continue
        for number in (width, precision):
            if number == "*":
                if index < len(positional):
                    check_width(positional[index])
                index += 1
            elif number:
                _check_digits(number)
        index += 1
    check_text_of(values)


def check_format(template: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    """`template.format(*args, **kwargs)` without a width or precision over the limit."""
    nested = False
    for _, _, spec, _ in Formatter().parse(template):
        if spec and "{" in spec:
            nested = True  # `{:{}}`: the width is one of the arguments
        elif spec:
            for number in re.findall(r"\d+", spec):
                _check_digits(number)
    values = [*args, *kwargs.values()]
    if nested:
        for value in values:
            check_width(value)
    check_text_of(values)


def _check_digits(number: str) -> None:
    if len(number) > _MAX_WIDTH_DIGITS:  # int() of a long digit run is slow, or refused
        shown = number if len(number) <= 12 else number[:12] + "…"
        raise LimitExceeded(f"width {shown} is too large (max {MAX_SEQUENCE_LENGTH})")
    check_width(int(number))


def check_replace(text: str | bytes, old: Any, new: Any, count: Any = -1) -> None:
    """`text.replace(old, new, count)` would stay within MAX_SEQUENCE_LENGTH."""
    kind = str if isinstance(text, str) else bytes
    if not isinstance(old, kind) or not isinstance(new, kind):
        return  # the call fails with a TypeError of its own
    found = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    check_size(len(text) + found * max(len(new) - len(old), 0))


def check_method(method: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> tuple[Any, ...]:
    """Refuse a text method call that would build more than MAX_SEQUENCE_LENGTH.

    Returns the arguments to call it with: `join` reads its iterable once, here."""
    text = getattr(method, "__self__", None)
    if not isinstance(text, str | bytes):
        return args
    name = getattr(method, "__name__", "")
    if name in ("ljust", "rjust", "center", "zfill"):
        check_width(args[0] if args else kwargs.get("width"))
    elif name == "expandtabs":
        tabsize = args[0] if args else kwargs.get("tabsize", 8)
        if isinstance(tabsize, int):
            check_size(len(text) + text.count("\t" if isinstance(text, str) else b"\t") * tabsize)
    elif name == "replace" and len(args) >= 2:
        check_replace(text, *args[:3])
    elif name == "translate" and args and isinstance(args[0], Mapping):
        longest = max((len(v) for v in args[0].values() if isinstance(v, str | bytes)), default=1)
        check_size(len(text) * longest)
    elif name == "join" and args:
        items = list(args[0])
        check_size(measure(items) + len(text) * len(items))
        return (items, *args[1:])
    return args
