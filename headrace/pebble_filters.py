"""Pebble's and Kestra's filters, tests and functions, with the values Kestra gives.

Each function here follows one Pebble (`io.pebbletemplates.pebble.extension.core`) or
Kestra (`io.kestra.core.runners.pebble`) class of the same name; where Jinja has a filter
of the same name with other results (`slice`, `replace` with a map, `default` on an empty
text, `length` of null, `sort`, `capitalize`, `title`, `urlencode`), Kestra's results win
and Jinja's forms that Pebble does not have keep working.

How values print follows Kestra's writer (`JsonWriter`): null prints nothing, booleans
`true`/`false`, maps and lists as JSON, decimals as Java prints a double.

Pure: no I/O, no clock (the event time comes from the caller), no randomness.
"""

from __future__ import annotations

import decimal
import hashlib
import math
import re
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime, timedelta, tzinfo
from functools import lru_cache
from typing import Any, NamedTuple

import orjson
import re2  # google-re2: linear-time regular expressions for patterns flows give
from jinja2.exceptions import UndefinedError
from jinja2.runtime import Undefined
from jinja2.sandbox import safe_range

from headrace import java_dates, jq_sandbox
from headrace.render_budget import check_size, check_width


class Entry(NamedTuple):
    """One item of a map in `{% for e in map %}`: Pebble's `Map.Entry` (`e.key`, `e.value`)."""

    key: Any
    value: Any

    def __str__(self) -> str:
        return f"{java_string(self.key)}={java_string(self.value)}"


# ------------------------------------------------------------ how values become text


def java_double(value: float) -> str:
    """Java's `Double.toString`: `2.5`, `100.0`, `1.0E7`, `1.5E-4`, `Infinity`, `NaN`."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    if 1e-3 <= abs(value) < 1e7:
        text = repr(value)
        return text if "." in text else text + ".0"
    sign, digits, exponent = decimal.Decimal(repr(value)).normalize().as_tuple()
    mantissa = "".join(map(str, digits))
    power = len(mantissa) - 1 + int(exponent)
    fraction = mantissa[1:] or "0"
    return f"{'-' if sign else ''}{mantissa[0]}.{fraction}E{power}"


def java_string(value: Any) -> str:
    """Java's `String.valueOf`: what Pebble's `+` and collections' `toString` print."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return java_double(value)
    if isinstance(value, str):
        return value
    if isinstance(value, Entry):
        return str(value)
    if isinstance(value, Mapping):
        items = ", ".join(f"{java_string(k)}={java_string(v)}" for k, v in value.items())
        return "{" + items + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(java_string(item) for item in value) + "]"
    return str(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, tuple | set | frozenset | range):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def to_json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS, default=_json_default).decode()


def text(value: Any) -> str:
    """A `{{ }}` inside text, as Kestra prints it."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return java_double(value)
    if isinstance(value, Entry):
        return str(value)
    if isinstance(value, Mapping | list | tuple):
        return to_json(value)
    return str(value)


def concat(values: Iterable[Any]) -> str:
    """Pebble's `~`: each side's `toString`, null as nothing."""
    return "".join("" if value is None else java_string(value) for value in values)


# ------------------------------------------------------------ operators


def coalesce(left: Callable[[], Any], right: Callable[[], Any], undefined_only: bool) -> Any:
    """`??` (and `???`): the left value unless undefined (or, for `??`, null)."""
    try:
        value = left()
    except UndefinedError:
        return right()
    if isinstance(value, Undefined) or (value is None and not undefined_only):
        return right()
    return value


def contains(container: Any, item: Any) -> bool:
    """Pebble's `contains`: a key of a map, an item of a list, a part of a text; with a
    list on the right, all of them."""
    if container is None:
        return False
    items = item if isinstance(item, list | tuple) else [item]
    if isinstance(container, str):
        return all(java_string(part) in container for part in items)
    if isinstance(container, Mapping | list | tuple | set | frozenset):
        return all(part in container for part in items)
    raise TypeError(f"contains needs a map, a list or a text, got {type(container).__name__}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def divide(left: Any, right: Any) -> Any:
    """Pebble's `/`: integers divide as Java's long (truncated), the rest as doubles."""
    if _is_int(left) and _is_int(right):
        if right == 0:
            raise ZeroDivisionError("integer division by zero")
        quotient = abs(left) // abs(right)
        return quotient if (left < 0) == (right < 0) else -quotient
    return left / right


def modulo(left: Any, right: Any) -> Any:
    """Pebble's `%` on numbers: Java's remainder, with the sign of the left side."""
    if _is_int(left) and _is_int(right):
        if right == 0:
            raise ZeroDivisionError("integer modulo by zero")
        remainder = abs(left) % abs(right)
        return remainder if left >= 0 else -remainder
    return math.fmod(left, right)


def add_text(left: Any, right: Any) -> str:
    """Pebble's `+` with a text on either side: both sides' `String.valueOf`."""
    return java_string(left) + java_string(right)


def inclusive_range(start: Any, end: Any, step: Any = 1) -> list[Any]:
    """Pebble's `range(start, end, step)` and `start..end`: the end included."""
    if not _is_int(step) or step == 0:
        raise ValueError(f"the step of a range is a non-zero integer, got {step!r}")
    if isinstance(start, str) and isinstance(end, str):
        if len(start) != 1 or len(end) != 1:
            raise ValueError("a range of characters goes from one character to another")
        return [chr(c) for c in _bounded_range(ord(start), ord(end), step)]
    if isinstance(start, int | float) and isinstance(end, int | float):
        return list(_bounded_range(int(start), int(end), step))
    raise TypeError("a range goes from a number to a number, or a character to a character")


def _bounded_range(start: int, end: int, step: int) -> range:
    # Jinja's sandbox range: at most MAX_RANGE items.
    numbers: range = safe_range(start, end + (1 if step > 0 else -1), step)
    return numbers


# ------------------------------------------------------------ tests


def is_empty(value: Any) -> bool:
    """Pebble's `empty`: null, blank text, an empty list or map."""
    if value is None or isinstance(value, Undefined):
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, Mapping | list | tuple | set):
        return not value
    return False


def is_json(value: Any) -> bool:
    """Kestra's `json` test: a map, a list, or text that parses as JSON."""
    if isinstance(value, Mapping | list):
        return True
    if not isinstance(value, str):
        return False
    try:
        orjson.loads(value)
    except orjson.JSONDecodeError:
        return False
    return True


def is_iterable(value: Any) -> bool:
    """Pebble's `iterable`: a list (Java `Iterable` or array), not a text nor a map."""
    return isinstance(value, list | tuple | set | frozenset)


def is_map(value: Any) -> bool:
    return isinstance(value, Mapping)


def is_null(value: Any) -> bool:
    return value is None


def _whole(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"even/odd needs a number, got {type(value).__name__}")
    return int(value)


def is_even(value: Any) -> bool:
    return _whole(value) % 2 == 0


def is_odd(value: Any) -> bool:
    return _whole(value) % 2 == 1


# ------------------------------------------------------------ text filters


def null_passes(function: Callable[..., Any]) -> Callable[..., Any]:
    """Pebble's text filters give null for null (Jinja's would print `None`)."""

    def filtered(value: Any, *args: Any, **kwargs: Any) -> Any:
        if value is None:
            return None
        return function(value, *args, **kwargs)

    filtered.__name__ = function.__name__
    filtered.__doc__ = function.__doc__
    return filtered


def capitalize(value: Any) -> str:
    """Pebble's: the first letter in title case, the rest as it was."""
    text_value = str(value)
    stripped = text_value.lstrip()
    if not stripped:
        return text_value
    start = len(text_value) - len(stripped)
    return text_value[:start] + stripped[0].title() + stripped[1:]


def title(value: Any) -> str:
    """Pebble's: the first letter of each word (after whitespace) in title case."""
    return re.sub(r"(^|\s)(\S)", lambda m: m.group(1) + m.group(2).title(), str(value))


def trim(value: Any, chars: str | None = None) -> str:
    """Java's `String.trim()` (control characters and spaces; not NUL, which delimits a
    secret marker); Jinja's `chars` too."""
    if chars is not None:
        return str(value).strip(chars)
    return str(value).strip(_JAVA_BLANKS)


_JAVA_BLANKS = "".join(chr(c) for c in range(1, 33))


def abbreviate(value: Any, length: int) -> str:
    """Pebble's `abbreviate(length)`: at most `length` characters, `...` included."""
    text_value = str(value)
    if length < 0:
        raise ValueError("abbreviate needs a length of zero or more")
    if len(text_value) < length or len(text_value) <= 3:
        return text_value
    if length <= 3:
        return text_value[:length]
    return text_value[: length - 3] + "..."


def starts_with(value: Any, prefix: Any) -> bool:
    return str(value).startswith(str(prefix))


def ends_with(value: Any, suffix: Any) -> bool:
    return str(value).endswith(str(suffix))


_ESCAPES = {"single": ("'", "\\'"), "double": ('"', '\\"'), "shell": ("'", "'\\''")}


def escape_char(value: Any, type: str) -> Any:
    """Kestra's `escapeChar('single' | 'double' | 'shell')`, through maps and lists."""
    escape = _ESCAPES.get(str(type).lower())
    if escape is None:
        raise ValueError("escapeChar takes 'single', 'double' or 'shell'")
    return _each_text(value, lambda s: s.replace(*escape))


def _each_text(value: Any, change: Callable[[str], str]) -> Any:
    if isinstance(value, Mapping):
        return {key: _each_text(item, change) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_each_text(item, change) for item in value]
    return change(java_string(value))


def replace_pairs(value: Any, pairs: Mapping[Any, Any], regexp: bool = False) -> Any:
    """Kestra's `replace({'old': 'new'}, regexp=false)`, through maps and lists."""

    def change(text_value: str) -> str:
        for old, new in pairs.items():
            if regexp:
                pattern = safe_regex(java_string(old))
                try:
                    text_value = pattern.sub(_java_replacement(java_string(new)), text_value)
                except (re.error, re2.error, IndexError, ValueError) as exc:
                    raise ValueError(
                        f"replace: bad replacement {java_string(new)!r}: {exc}"
                    ) from None
            else:
                text_value = text_value.replace(java_string(old), java_string(new))
            check_size(len(text_value))
        return text_value

    return _each_text(value, change)


# A regular expression's length: longer ones are data, not a flow author's pattern.
MAX_REGEX_CHARS = 1000
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a bad pattern is the flow's error, not a line on stderr


@lru_cache(maxsize=256)
def safe_regex(pattern: str) -> Any:
    """`pattern` compiled by RE2, which matches in time linear in the text: Python's
    regular expressions can take exponential (or high polynomial) time on a crafted text
    and cannot be stopped once started, and the text is often trigger data. RE2 has no
    back-references or look-arounds: such a pattern is refused, saying so."""
    if len(pattern) > MAX_REGEX_CHARS:
        raise ValueError(f"regular expression longer than {MAX_REGEX_CHARS} characters")
    try:
        return re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as exc:
        reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc
        raise ValueError(
            f"regular expression {pattern!r} is refused: {reason} (patterns run on RE2: no"
            " back-references or look-arounds)"
        ) from None


def _java_replacement(replacement: str) -> str:
    """Java's `$1` group references as Python's `\\g<1>`; `\\$` a dollar."""
    out = re.sub(r"\\(.)|\$(\d+)|\$\{(\w+)\}", _replacement_part, replacement)
    return out


def _replacement_part(match: re.Match[str]) -> str:
    if match.group(1) is not None:
        return match.group(1).replace("\\", "\\\\")
    return f"\\g<{match.group(2) or match.group(3)}>"


def split(value: Any, delimiter: str, limit: int = 0) -> list[str]:
    """Java's `String.split(regex, limit)`, which Pebble's `split` calls."""
    text_value = str(value)
    pattern = safe_regex(delimiter)
    first = pattern.search(text_value)
    if first is None:
        return [text_value]
    parts = _split_without_groups(pattern, text_value, limit)
    if limit == 0:
        while parts and parts[-1] == "":
            parts.pop()
    return parts


def _split_without_groups(pattern: Any, text_value: str, limit: int) -> list[str]:
    parts, start = [], 0
    for match in pattern.finditer(text_value):
        if limit > 0 and len(parts) == limit - 1:
            break
        if match.end() == 0:  # Java never splits before the first character
            continue
        parts.append(text_value[start : match.start()])
        start = match.end()
    parts.append(text_value[start:])
    return parts


def url_encode(value: Any) -> str:
    """Java's `URLEncoder.encode(text, UTF-8)`: spaces as `+`, `.-*_` kept."""
    if isinstance(value, Mapping):
        return urllib.parse.urlencode({k: java_string(v) for k, v in value.items()})
    return urllib.parse.quote_plus(java_string(value), safe="*").replace("~", "%7E")


def url_decode(value: Any) -> str:
    return urllib.parse.unquote_plus(str(value))


def sha1(value: Any) -> str:
    data = value if isinstance(value, bytes) else str(value).encode()
    return hashlib.sha1(data, usedforsecurity=False).hexdigest()


# ------------------------------------------------------------ collection filters


def default(value: Any, fallback: Any = "", boolean: bool = False) -> Any:
    """Pebble's `default`: replaces an undefined, null or empty value (blank text, empty
    list or map); Jinja's `boolean=true` also replaces any false value."""
    if is_empty(value) or (boolean and not value):
        return fallback
    return value


def length(value: Any) -> int:
    """Pebble's `length`: 0 for null (and for what has no length)."""
    if isinstance(value, str | Mapping | list | tuple | set | frozenset):
        return len(value)
    if isinstance(value, Undefined):
        return len(value)  # raises: an undefined name stays an error
    return 0


def first(value: Any) -> Any:
    if value is None or (isinstance(value, str | list | tuple) and not value):
        return None
    if isinstance(value, str | list | tuple):
        return value[0]
    return next(iter(value), None)


def last(value: Any) -> Any:
    if value is None or (isinstance(value, str | list | tuple) and not value):
        return None
    if isinstance(value, str | list | tuple):
        return value[-1]
    return list(value)[-1] if value else None


def keys(value: Any) -> list[Any] | None:
    """Kestra's `keys`: a map's keys, a list's indexes."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        return list(value)
    if isinstance(value, list | tuple):
        return list(range(len(value)))
    raise TypeError(f"keys can only be applied to a map or a list, not {type(value).__name__}")


def values(value: Any) -> list[Any] | None:
    """Kestra's `values`: a map's values."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        return list(value.values())
    raise TypeError(f"values can only be applied to a map, not {type(value).__name__}")


def merge(value: Any, items: Any) -> Any:
    """Pebble's `merge`: the left side's kind (map or list) decides the result's."""
    if value is None:
        if items is None:
            raise ValueError("the two values to merge are null")
        return items
    if items is None:
        return value
    if isinstance(value, Mapping):
        if isinstance(items, Mapping):
            return {**value, **items}
        if isinstance(items, list | tuple):
            return {**value, **{item: item for item in items}}
    elif isinstance(value, list | tuple):
        if isinstance(items, Mapping):
            return [*value, *(Entry(k, v) for k, v in items.items())]
        if isinstance(items, list | tuple):
            return [*value, *items]
    raise TypeError("merge takes a map or a list on each side")


def reverse(value: Any) -> Any:
    if isinstance(value, str):
        return value[::-1]
    return list(reversed(list(value)))


def sort(
    value: Any, reverse: bool = False, case_sensitive: bool = True, attribute: Any = None
) -> Any:
    """Java's natural order (Pebble's `sort`): upper case before lower case."""
    if value is None:
        return None
    if attribute is not None:
        key = attribute

        def by_attribute(item: Any) -> Any:
            return item[key] if isinstance(item, Mapping) else getattr(item, str(key))

        return sorted(value, key=by_attribute, reverse=reverse)
    if not case_sensitive:
        return sorted(value, key=lambda item: item.lower() if isinstance(item, str) else item,
                      reverse=reverse)  # fmt: skip
    return sorted(value, reverse=reverse)


def rsort(value: Any) -> Any:
    return None if value is None else sorted(value, reverse=True)


def slice_(value: Any, fromIndex: int = 0, toIndex: int | None = None) -> Any:
    """Pebble's `slice(fromIndex, toIndex)`: from inclusive, to exclusive."""
    if value is None:
        return None
    if isinstance(value, range | tuple):
        value = list(value)
    if not isinstance(value, str | list):
        raise TypeError(f"slice applies to a text or a list, not {type(value).__name__}")
    end = len(value) if toIndex is None else toIndex
    if not 0 <= fromIndex <= len(value):
        raise ValueError(f"fromIndex must be from 0 to the length ({len(value)})")
    if end > len(value):
        raise ValueError(f"toIndex must be at most the length ({len(value)})")
    if fromIndex >= end and toIndex is not None:
        raise ValueError("toIndex must be greater than fromIndex")
    return value[fromIndex:end]


def chunk(value: Any, size: int) -> list[list[Any]] | None:
    """Kestra's `chunk(size)`: the list in lists of `size` items."""
    if value is None:
        return None
    if not isinstance(value, list | tuple):
        raise TypeError("chunk applies to a list")
    if not _is_int(size) or size <= 0:
        raise ValueError("chunk needs a size of 1 or more")
    return [list(value[i : i + size]) for i in range(0, len(value), size)]


def distinct(value: Any) -> Any:
    """Kestra's `distinct`: the list without repeats, first ones kept."""
    if value is None:
        return "null"  # Kestra's DistinctFilter returns the text "null"
    if not isinstance(value, list | tuple):
        raise TypeError("distinct applies to a list")
    unique: list[Any] = []
    for item in value:
        if item not in unique:
            unique.append(item)
    return unique


def flatten(value: Any) -> Any:
    """Kestra's `flatten`: one level of nested lists."""
    if value is None:
        return None
    if not isinstance(value, list | tuple):
        raise TypeError("flatten applies to a list")
    flat: list[Any] = []
    for item in value:
        flat.extend(item if isinstance(item, list | tuple) else [item])
    return flat


def join(value: Any, separator: str = "", attribute: Any = None) -> str | None:
    """Pebble's `join`: each item's `String.valueOf`."""
    if value is None:
        return None
    items = list(value)
    if attribute is not None:
        items = [item[attribute] if isinstance(item, Mapping) else getattr(item, attribute)
                 for item in items]  # fmt: skip
    check_size(sum(len(java_string(i)) for i in items) + len(str(separator)) * len(items))
    return str(separator).join(java_string(item) for item in items)


def indent(value: Any, amount: int, prefix: str = " ") -> Any:
    """Kestra's `indent(amount, prefix)`: every line but the first gets `amount`
    prefixes (blank lines too)."""
    return _indent(value, amount, str(prefix), leading_newline=False)


def nindent(value: Any, amount: int, prefix: str = " ") -> Any:
    """Kestra's `nindent`: a newline first, then every line indented."""
    return _indent(value, amount, prefix, leading_newline=True)


def _indent(value: Any, amount: Any, prefix: str, leading_newline: bool) -> Any:
    if value is None:
        return None
    text_value = java_string(value)
    if not text_value:
        return text_value
    if not _is_int(amount) or amount < 0:
        raise ValueError("indent needs an amount of 0 or more")
    check_width(amount * len(prefix))
    newline = next((n for n in ("\r\n", "\n\r", "\n", "\r") if n in text_value), "\n")
    if leading_newline:
        text_value = newline + text_value
    check_size(len(text_value) + text_value.count(newline) * amount * len(prefix))
    return text_value.replace(newline, newline + prefix * amount)


# ------------------------------------------------------------ numbers


def number(value: Any, type: str = "") -> Any:
    """Kestra's `number(type?)`: text to a number (INT, LONG, FLOAT, DOUBLE,
    BIGDECIMAL, BIGINTEGER; inferred without a type)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"number applies to a text, got {value.__class__.__name__}")
    text_value = value.strip()
    kind = str(type).upper()
    if kind in ("INT", "LONG", "BIGINTEGER"):
        return (
            int(text_value, 0) if text_value.lower().startswith(("0x", "-0x")) else int(text_value)
        )
    if kind in ("FLOAT", "DOUBLE"):
        return _finite(float(text_value), text_value)
    if kind == "BIGDECIMAL":
        parsed = decimal.Decimal(text_value)
        if not parsed.is_finite():
            raise ValueError(f"{text_value!r} is not a finite number")
        return int(parsed) if parsed == parsed.to_integral_value() else float(parsed)
    if kind:
        raise ValueError(f"unknown number type {type!r}")
    if re.fullmatch(r"[+-]?(0[xX][0-9a-fA-F]+|\d+)[lL]?", text_value):
        return int(text_value.rstrip("lL"), 0 if "x" in text_value.lower() else 10)
    return _finite(float(text_value), text_value)


def _finite(number: float, text_value: str) -> float:
    """Java would give Infinity or NaN; neither is JSON, nor a value later tasks can use."""
    if not math.isfinite(number):
        raise ValueError(f"{text_value!r} is not a finite number")
    return number


def abs_(value: Any) -> Any:
    return None if value is None else abs(value)


_DECIMAL_FORMAT = re.compile(r"(?P<int>[#,0]*)(?:\.(?P<frac>[0#]*))?")


def number_format(value: Any, pattern: str) -> str | None:
    """Java's `DecimalFormat(pattern)` (`#`, `0`, `,` and `.`), rounding half to even."""
    if value is None:
        return None
    match = _DECIMAL_FORMAT.fullmatch(str(pattern))
    if match is None or not str(pattern):
        raise ValueError(
            f"number format {pattern!r} is not supported: use only # 0 , and . (e.g. #,##0.00)"
        )
    int_part, frac_part = match.group("int") or "", match.group("frac") or ""
    check_width(len(str(pattern)))  # digits to compute and print
    exact = (
        decimal.Decimal(value) if isinstance(value, int | float) else decimal.Decimal(str(value))
    )
    rounded = exact.quantize(decimal.Decimal(1).scaleb(-len(frac_part)), decimal.ROUND_HALF_EVEN)
    whole, _, fraction = f"{abs(rounded):f}".partition(".")
    fraction = fraction.ljust(len(frac_part), "0")
    min_frac = frac_part.count("0")
    while len(fraction) > min_frac and fraction.endswith("0"):
        fraction = fraction[:-1]
    whole = _group(_pad_whole(whole, int_part.count("0"), bool(fraction)), int_part)
    sign = "-" if exact < 0 else ""
    return sign + whole + ("." + fraction if fraction else "")


def _pad_whole(whole: str, min_int: int, has_fraction: bool) -> str:
    whole = whole.lstrip("0")
    if len(whole) < min_int:
        whole = whole.zfill(min_int)
    return whole or ("" if has_fraction else "0")


def _group(whole: str, int_part: str) -> str:
    if "," not in int_part or not whole:
        return whole
    size = len(int_part) - int_part.rindex(",") - 1
    if size <= 0:
        return whole
    groups = []
    while len(whole) > size:
        groups.insert(0, whole[-size:])
        whole = whole[:-size]
    return ",".join([whole, *groups])


_JAVA_CLASSES = (
    (bool, "java.lang.Boolean"),
    (str, "java.lang.String"),
    (float, "java.lang.Double"),
    (Mapping, "java.util.LinkedHashMap"),
    (list, "java.util.ArrayList"),
    (tuple, "java.util.ArrayList"),
)


def class_name(value: Any) -> str | None:
    """Kestra's `className`: the Java class the value would have in Kestra."""
    if value is None:
        return None
    if _is_int(value):
        return "java.lang.Integer" if -(2**31) <= value < 2**31 else "java.lang.Long"
    for kind, name in _JAVA_CLASSES:
        if isinstance(value, kind):
            return name
    return type(value).__name__


def pebble_max(*args: Any) -> Any:
    """Pebble's `max(a, b, ...)`; one list argument: its largest item (Jinja's form)."""
    items = list(args[0]) if len(args) == 1 and isinstance(args[0], list | tuple) else list(args)
    return max(items)


def pebble_min(*args: Any) -> Any:
    items = list(args[0]) if len(args) == 1 and isinstance(args[0], list | tuple) else list(args)
    return min(items)


# ------------------------------------------------------------ dates


def to_moment(value: Any, zone: tzinfo, existing_format: str | None = None) -> datetime:
    """Kestra's `AbstractDate.convert`: a date-time from a date-time, ISO text (with an
    offset, or read in `zone`), epoch seconds, or text in `existing_format`."""
    if existing_format is not None and isinstance(value, str):
        return java_dates.parse_pattern(value, existing_format, zone)
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=zone)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, 12, tzinfo=zone)  # Kestra: noon
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, zone)
    if isinstance(value, str):
        return _parse_iso(value.strip(), zone)
    raise ValueError(f"not a date-time: {value!r}")


def _parse_iso(value: str, zone: tzinfo) -> datetime:
    region = None
    # `2024-05-01T10:00+02:00[Europe/Paris]`: Java's zoned form. No regex: the text is
    # often trigger data, and a backtracking pattern is quadratic on `[[[[…`.
    if value.endswith("]"):
        moment, bracket, zone_name = value[:-1].rpartition("[")
        if bracket and moment and zone_name and "]" not in zone_name:
            value, region = moment, java_dates.zone(zone_name)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"not an ISO-8601 date-time: {value!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=region or zone)
    return moment.astimezone(region) if region is not None else moment


def format_date(
    value: Any,
    format: str | None = None,
    timeZone: str | None = None,
    existingFormat: str | None = None,
    locale: str | None = None,
) -> str | None:
    """Kestra's `date(format, timeZone, existingFormat, locale)`."""
    if value is None:
        return None
    java_dates.check_locale(locale)
    zone = java_dates.zone(timeZone)
    moment = to_moment(value, zone, existingFormat).astimezone(zone)
    return java_dates.format_moment(moment, format or java_dates.DEFAULT_FORMAT)


_CHRONO_UNITS = {
    "NANOS": timedelta(microseconds=0.001),
    "MICROS": timedelta(microseconds=1),
    "MILLIS": timedelta(milliseconds=1),
    "SECONDS": timedelta(seconds=1),
    "MINUTES": timedelta(minutes=1),
    "HOURS": timedelta(hours=1),
    "HALF_DAYS": timedelta(hours=12),
    "DAYS": timedelta(days=1),
    "WEEKS": timedelta(weeks=1),
}
_CALENDAR_UNITS = {"MONTHS": 1, "YEARS": 12, "DECADES": 120, "CENTURIES": 1200, "MILLENNIA": 12000}


def add_to_date(moment: datetime, amount: int, unit: str) -> datetime:
    """Java's `ZonedDateTime.plus(amount, ChronoUnit)`; months keep the day (clamped)."""
    if not _is_int(amount):
        raise ValueError(f"dateAdd amount must be an integer, got {amount!r}")
    name = str(unit).upper()
    name = name if name.endswith("S") or name == "MILLENNIA" else name + "S"
    if name in _CHRONO_UNITS:
        return moment + _CHRONO_UNITS[name] * amount
    if name in _CALENDAR_UNITS:
        months = moment.month - 1 + amount * _CALENDAR_UNITS[name]
        year, month = moment.year + months // 12, months % 12 + 1
        import calendar

        day = min(moment.day, calendar.monthrange(year, month)[1])
        return moment.replace(year=year, month=month, day=day)
    units = ", ".join([*_CHRONO_UNITS, *_CALENDAR_UNITS])
    raise ValueError(f"unknown unit {unit!r} (units: {units})")


def date_add(
    value: Any,
    amount: int,
    unit: str,
    format: str | None = None,
    timeZone: str | None = None,
    existingFormat: str | None = None,
    locale: str | None = None,
) -> str | None:
    """Kestra's `dateAdd(amount, unit, format?, ...)`: the moment moved, formatted."""
    if value is None:
        return None
    zone = java_dates.zone(timeZone)
    moved = add_to_date(to_moment(value, zone, existingFormat), amount, unit)
    return format_date(moved, format, timeZone, None, locale)


def _epoch(value: Any, time_zone: str | None, existing_format: str | None) -> tuple[int, int]:
    """(epoch seconds, microseconds) of a moment."""
    moment = to_moment(value, java_dates.zone(time_zone), existing_format)
    seconds = math.floor(moment.timestamp())
    return seconds, moment.microsecond


def timestamp(value: Any, timeZone: str | None = None, existingFormat: str | None = None) -> Any:
    return None if value is None else _epoch(value, timeZone, existingFormat)[0]


def timestamp_milli(
    value: Any,
    timeZone: str | None = None,
    existingFormat: str | None = None,
) -> Any:
    if value is None:
        return None
    seconds, micros = _epoch(value, timeZone, existingFormat)
    return seconds * 1000 + micros // 1000


def timestamp_micro(
    value: Any,
    timeZone: str | None = None,
    existingFormat: str | None = None,
) -> Any:
    """Kestra's `timestampMicro`, as Kestra computes it: seconds in nanoseconds plus the
    microseconds (`TimestampMicroFilter`), as text."""
    if value is None:
        return None
    seconds, micros = _epoch(value, timeZone, existingFormat)
    return str(seconds * 1_000_000_000 + micros)


def timestamp_nano(
    value: Any,
    timeZone: str | None = None,
    existingFormat: str | None = None,
) -> Any:
    if value is None:
        return None
    seconds, micros = _epoch(value, timeZone, existingFormat)
    return str(seconds * 1_000_000_000 + micros * 1000)


# ------------------------------------------------------------ jq

# jq builtins that read the clock, files or other inputs: a template must give the same
# result on replay. Programs that run long or grow large are stopped by the sandbox
# (`headrace.jq_sandbox`); a name after `.` or `$` is a field or a variable, not these.
_JQ_REFUSED = re.compile(
    r"\$__loc__|\$__prog_args|(?<![.\w$])(input|inputs|include|import|now|mktime|"
    r"localtime|strflocaltime|debug|stderr|input_filename|input_line_number|"
    r"get_search_list)\b"
)


def check_jq(program: str) -> None:
    """Refuse a jq program that reads the clock, files or other inputs."""
    found = _JQ_REFUSED.search(re.sub(r'"(?:\\.|[^"\\])*"', '""', program))
    if found:
        raise ValueError(
            f"jq: {found.group(0)!r} is not allowed in expressions (it reads the clock,"
            " files or other inputs, so a replay could differ); transform the data in a"
            " task instead"
        )


def jq(value: Any, expression: str) -> list[Any] | None:
    """Kestra's `jq(expression)`: the list of all results (text input is read as JSON),
    computed in the jq sandbox (a child process stopped after a second)."""
    if value is None:
        return None
    program = str(expression)
    check_jq(program)
    if isinstance(value, str):
        return jq_sandbox.SANDBOX.run(program, value, None)
    return jq_sandbox.SANDBOX.run(program, None, orjson.loads(to_json(value)))


# ------------------------------------------------------------ functions


def current_each_output(outputs: Any, context: Mapping[str, Any]) -> Any:
    """Kestra's `currentEachOutput(outputs.t)`: `t`'s outputs for the current item
    (through the enclosing loops' items, outermost first)."""
    if not isinstance(outputs, Mapping):
        raise TypeError("currentEachOutput takes the outputs of a task, e.g. outputs.first")
    for parent in reversed(list(context.get("parents") or [])):
        taskrun = parent.get("taskrun") if isinstance(parent, Mapping) else None
        if isinstance(taskrun, Mapping):
            outputs = outputs.get(taskrun.get("value"))
            if not isinstance(outputs, Mapping):
                raise LookupError("no outputs for the current loop items")
    taskrun = context.get("taskrun")
    if not isinstance(taskrun, Mapping):
        raise LookupError("currentEachOutput() is for tasks inside a for-each")
    return outputs.get(taskrun.get("value"))


def from_yaml(value: Any) -> Any:
    """Kestra's `yaml('a: 1')` function: YAML text to a value, read as a flow is, within
    the same limits (depth, aliases, "billion laughs")."""
    # headrace.flow imports headrace.expressions, which imports this module.
    from headrace.flow.yaml_reader import YamlProblem, read_yaml

    try:
        return read_yaml(str(value)).data
    except YamlProblem as exc:
        raise ValueError(f"yaml(): {exc.error.message}") from None
